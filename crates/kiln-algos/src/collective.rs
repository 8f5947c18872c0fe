//! A small collective layer over TCP, so that the hosts of a job train one model together (what
//! SageMaker's XGBoost does with Rabit): every host holds a [`Collective`] and calls the same
//! operations in the same order; each operation returns on every host with the same result.
//!
//! **Topology: a star through the first host.** `algo-1` (rank 0) listens, by default on port
//! 9099 (the port of SageMaker's XGBoost tracker); every other host connects to it once, with
//! retries until a deadline (hosts start at slightly different times and their names may take
//! a moment to resolve). An allreduce sends each host's buffer to algo-1, which combines them in
//! rank order and sends the result back: every host ends with the same bits. That moves the
//! whole buffer 2(N-1) times through algo-1's link; a ring allreduce (reduce-scatter, then
//! all-gather around the ring) moves 2(N-1)/N of it per host and spreads the load, the better
//! choice beyond a handful of hosts. Two hosts (the common case) skip the relay: each sends its
//! buffer straight to the other while receiving the other's (large ones a piece at a time
//! each way, as far as the socket takes and gives without blocking, so neither host blocks on
//! full socket buffers), and both combine in rank order, so the
//! result is the same bits with half the time on the wire. Histogram sums travel as `i32`
//! when every value fits ([`Collective::sum_i64_slices`]).
//!
//! **Failures are errors, never hangs.** Every socket read and write has a timeout (a peer
//! silent for longer is lost), a closed or reset connection is an error at once, and errors name
//! the host: `lost contact with algo-2: connection closed (its process ended)`. After the first
//! error the collective is broken: every later operation fails at once with the same error, so
//! a trainer that carries on until it next checks cannot block. A host that fails on its own
//! sends [`Collective::abort`] with its reason, which the others report as `algo-2 failed: ...`.
//!
//! Frames are a 24-byte header (kind, sequence number, length) and a payload. Every operation
//! has the next sequence number, so hosts that fall out of step (one calls an allreduce the
//! others do not) fail with an error instead of mixing unrelated buffers.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Port algo-1 listens on unless `KILN_XGB_PORT` says otherwise (SageMaker XGBoost's tracker).
pub const DEFAULT_PORT: u16 = 9099;

/// How long a peer may stay silent, and how long hosts wait for each other to connect, unless
/// `KILN_XGB_TIMEOUT` (seconds) says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a new connection has to introduce itself.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest payload accepted (a corrupt header must not allocate the machine away).
const MAX_PAYLOAD: u64 = 1 << 36;

const HEADER: usize = 24;
/// Payloads small enough that two hosts may both send one before either reads (far below the
/// socket buffers of any TCP stack).
const BUFFERED: usize = 16 << 10;
const KIND_DATA: u8 = 1;
const KIND_ABORT: u8 = 2;
const KIND_HELLO: u8 = 3;
const KIND_WELCOME: u8 = 4;
const KIND_REJECT: u8 = 5;

/// Why a collective operation failed. Every variant names the host concerned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommError {
    /// The connection to a host broke, timed out or carried something unexpected.
    #[error("lost contact with {host}: {why}")]
    Lost {
        /// The host.
        host: String,
        /// What happened.
        why: String,
    },
    /// A host failed on its own and said why.
    #[error("{host} failed: {reason}")]
    PeerFailed {
        /// The host.
        host: String,
        /// Its failure reason.
        reason: String,
    },
    /// The hosts could not be connected.
    #[error("{0}")]
    Setup(String),
}

/// Where this host sits in the job, and how to reach algo-1.
#[derive(Debug, Clone)]
pub struct CommConfig {
    /// Every host, rank order (`algo-1` first).
    pub hosts: Vec<String>,
    /// This host's index in `hosts`.
    pub rank: usize,
    /// The port algo-1 listens on.
    pub port: u16,
    /// The address the other hosts connect to (algo-1's host name unless overridden).
    pub master_addr: String,
    /// The job's name: a connection from another job's host is turned away.
    pub job: String,
    /// Longest silence of a peer, and longest wait for the hosts to connect.
    pub timeout: Duration,
}

impl CommConfig {
    /// The configuration of host `current` of `hosts` (`resourceconfig.json`), with the port,
    /// timeout and algo-1's address from `KILN_XGB_PORT`, `KILN_XGB_TIMEOUT` (seconds) and
    /// `KILN_XGB_MASTER_ADDR`, and the job's name from `TRAINING_JOB_NAME`.
    pub fn from_env(hosts: &[String], current: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let rank = hosts.iter().position(|h| h == current).ok_or_else(|| {
            format!(
                "resourceconfig.json: current_host '{current}' is not one of its hosts ({})",
                hosts.join(", ")
            )
        })?;
        let port = match env("KILN_XGB_PORT") {
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("KILN_XGB_PORT '{p}' is not a port number (1-65535)"))?,
            None => DEFAULT_PORT,
        };
        let timeout = match env("KILN_XGB_TIMEOUT") {
            Some(t) => t
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|&t| t > 0.0 && t.is_finite())
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("KILN_XGB_TIMEOUT '{t}' is not a positive number of seconds"))?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(Self {
            hosts: hosts.to_vec(),
            rank,
            port,
            master_addr: env("KILN_XGB_MASTER_ADDR").unwrap_or_else(|| hosts[0].clone()),
            job: env("TRAINING_JOB_NAME").unwrap_or_default(),
            timeout,
        })
    }
}

/// A connection to one host.
struct Link {
    host: String,
    stream: TcpStream,
    timeout: Duration,
}

/// Describes an I/O error on a link as the reader of a failure reason needs it.
fn describe(e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("no answer for {} s (KILN_XGB_TIMEOUT)", timeout.as_secs_f64())
        }
        ErrorKind::UnexpectedEof => "connection closed (its process ended)".into(),
        ErrorKind::ConnectionReset => "connection reset (its process ended)".into(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => "connection closed (its process ended)".into(),
        _ => e.to_string(),
    }
}

/// How long a host polls for the next message before it sleeps in a blocking read.
const SPIN: Duration = Duration::from_micros(SPIN_MICROS);
const SPIN_MICROS: u64 = 300;

/// Polls `stream` for a moment until a byte is there to read (or the peer closed it). Hosts
/// wait for each other many times a second, mostly briefly; a thread that sleeps each time is
/// woken on the waker's core (hosts on one machine then keep sharing a core) and costs a wake-up
/// each time. The blocking read after it handles timeouts and errors.
fn spin_until_readable(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let start = Instant::now();
        let mut byte = 0u8;
        loop {
            // SAFETY: a one-byte peek into a live local buffer on an open socket's descriptor.
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    (&raw mut byte).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 || std::io::Error::last_os_error().kind() != ErrorKind::WouldBlock || start.elapsed() >= SPIN {
                return;
            }
            // Lets another thread of this process that has work run (off Linux, the sender of
            // an exchange).
            std::thread::yield_now();
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// Writes one frame: the header, then the payload (in one segment when it is small, as the
/// connection has no Nagle delay to merge them).
fn write_frame(stream: &mut TcpStream, kind: u8, seq: u64, payload: &[u8]) -> std::io::Result<()> {
    let head = frame_head(kind, seq, payload.len());
    if payload.len() <= 64 << 10 {
        let mut msg = Vec::with_capacity(HEADER + payload.len());
        msg.extend_from_slice(&head);
        msg.extend_from_slice(payload);
        stream.write_all(&msg)
    } else {
        stream.write_all(&head).and_then(|()| stream.write_all(payload))
    }
}

/// A frame's header: its kind, the operation's sequence number and the payload's length.
fn frame_head(kind: u8, seq: u64, len: usize) -> [u8; HEADER] {
    let mut head = [0u8; HEADER];
    head[0] = kind;
    head[8..16].copy_from_slice(&seq.to_le_bytes());
    head[16..24].copy_from_slice(&(len as u64).to_le_bytes());
    head
}

impl Link {
    fn new(host: String, stream: TcpStream, timeout: Duration) -> Result<Self, CommError> {
        let setup = |e: std::io::Error| CommError::Lost {
            host: host.clone(),
            why: format!("cannot configure the connection: {e}"),
        };
        stream.set_nodelay(true).map_err(setup)?;
        stream.set_read_timeout(Some(timeout)).map_err(setup)?;
        stream.set_write_timeout(Some(timeout)).map_err(setup)?;
        Ok(Self { host, stream, timeout })
    }

    fn lost(&self, e: &std::io::Error) -> CommError {
        CommError::Lost {
            host: self.host.clone(),
            why: describe(e, self.timeout),
        }
    }

    fn send(&mut self, kind: u8, seq: u64, payload: &[u8]) -> Result<(), CommError> {
        write_frame(&mut self.stream, kind, seq, payload).map_err(|e| self.lost(&e))
    }

    /// Sends `payload` to the peer and receives its data frame of operation `seq`, both at
    /// once: two hosts that send each other large buffers before reading would otherwise both
    /// block once the socket buffers are full. Small payloads fit in those buffers and are
    /// sent before reading; larger ones are written while the peer's is read (in this thread on
    /// Linux, [`Self::exchange_unblocked`]; elsewhere by a second thread).
    fn exchange(&mut self, seq: u64, payload: &[u8]) -> Result<Vec<u8>, CommError> {
        if payload.len() <= BUFFERED {
            self.send(KIND_DATA, seq, payload)?;
            return self.recv(seq);
        }
        #[cfg(target_os = "linux")]
        {
            let frame = self.exchange_unblocked(seq, payload)?;
            self.data_of(seq, frame)
        }
        #[cfg(not(target_os = "linux"))]
        self.exchange_by_thread(seq, payload)
    }

    /// [`Self::exchange`] of a large payload: written by a second thread while this one reads.
    #[cfg(not(target_os = "linux"))]
    fn exchange_by_thread(&mut self, seq: u64, payload: &[u8]) -> Result<Vec<u8>, CommError> {
        let mut writer = self.stream.try_clone().map_err(|e| self.lost(&e))?;
        std::thread::scope(|s| {
            let sending = s.spawn(move || write_frame(&mut writer, KIND_DATA, seq, payload));
            let got = self.recv(seq);
            if got.is_err() {
                // Unblocks the writer (the peer may have stopped reading); the link is broken.
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
            }
            let sent = sending
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the sending thread panicked")));
            let got = got?;
            sent.map_err(|e| self.lost(&e))?;
            Ok(got)
        })
    }

    /// [`Self::exchange`] of a large payload, in this thread: the frame is written and the
    /// peer's read as far as the socket takes and gives without blocking, waiting in `poll`
    /// when neither moves (a writing thread spawned per exchange cost ~70 us, and the two
    /// threads then took turns on the host's core). Returns the peer's frame (kind, sequence
    /// number, payload) for [`Self::data_of`].
    #[cfg(target_os = "linux")]
    fn exchange_unblocked(&mut self, seq: u64, payload: &[u8]) -> Result<(u8, u64, Vec<u8>), CommError> {
        use std::os::fd::AsRawFd;
        let fd = self.stream.as_raw_fd();
        let head_out = frame_head(KIND_DATA, seq, payload.len());
        let total = HEADER + payload.len();
        let (mut sent, mut send_failed) = (0, None);
        let (mut head, mut got_head) = ([0u8; HEADER], 0);
        // The peer's frame once its header is in: kind, sequence number, length, payload.
        let mut frame: Option<(u8, u64, usize, Vec<u8>)> = None;
        let mut last_move = Instant::now();
        let pending = |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted);
        loop {
            let mut moved = false;
            if sent < total {
                let out = if sent < HEADER {
                    &head_out[sent..]
                } else {
                    &payload[sent - HEADER..]
                };
                // SAFETY: a send of `out.len()` initialized bytes on an open socket's descriptor.
                let n = unsafe {
                    libc::send(
                        fd,
                        out.as_ptr().cast(),
                        out.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if n >= 0 {
                    sent += n as usize;
                    moved |= n > 0;
                } else {
                    let e = std::io::Error::last_os_error();
                    if !pending(&e) {
                        // Read what the peer sent before it went (its reason, if it failed).
                        send_failed = Some(e);
                        sent = total;
                    }
                }
            }
            let reading = frame.as_ref().is_none_or(|f| f.3.len() != f.2);
            if reading {
                // Where the next bytes go: the rest of the header, then the payload's spare
                // capacity (a zero-filled buffer would be written twice).
                let (to, room) = match &mut frame {
                    None => (head[got_head..].as_mut_ptr(), HEADER - got_head),
                    Some((.., len, body)) => (body.spare_capacity_mut().as_mut_ptr().cast::<u8>(), *len - body.len()),
                };
                // SAFETY: a receive into `room` writable bytes at `to` (the header's rest, or
                // the body's spare capacity, which is at least its length's rest).
                let n = unsafe { libc::recv(fd, to.cast(), room, libc::MSG_DONTWAIT) };
                if n == 0 {
                    return Err(self.lost(&ErrorKind::UnexpectedEof.into()));
                }
                if n > 0 {
                    moved = true;
                    let n = n as usize;
                    match &mut frame {
                        None => {
                            got_head += n;
                            if got_head == HEADER {
                                let (kind, got_seq, len) = self.parse_head(&head)?;
                                frame = Some((kind, got_seq, len as usize, Vec::with_capacity(len as usize)));
                            }
                        }
                        // SAFETY: `recv` initialized the `n` bytes after the body's length.
                        Some((.., body)) => unsafe { body.set_len(body.len() + n) },
                    }
                } else {
                    let e = std::io::Error::last_os_error();
                    if !pending(&e) {
                        return Err(self.lost(&e));
                    }
                }
            }
            if sent == total
                && let Some((kind, got_seq, _, body)) = frame.take_if(|f| f.3.len() == f.2)
            {
                if let Some(e) = send_failed.filter(|_| kind != KIND_ABORT) {
                    return Err(self.lost(&e));
                }
                return Ok((kind, got_seq, body));
            }
            if moved {
                last_move = Instant::now();
                continue;
            }
            let Some(left) = self.timeout.checked_sub(last_move.elapsed()) else {
                return Err(self.lost(&ErrorKind::TimedOut.into()));
            };
            let waiting = Instant::now();
            let mut events = if reading { libc::POLLIN } else { 0 };
            if sent < total {
                events |= libc::POLLOUT;
            } else {
                // Only the peer's frame is missing: it usually comes within moments.
                spin_until_readable(&self.stream);
            }
            let mut p = libc::pollfd { fd, events, revents: 0 };
            // SAFETY: one valid `pollfd` for the duration of the call.
            unsafe { libc::poll(&mut p, 1, left.as_millis().clamp(1, i32::MAX as u128) as i32) };
            if sent == total {
                crate::prof::add_waiting(waiting.elapsed());
            }
        }
    }

    /// A frame's kind, sequence number and payload length, from its header; fails on a header
    /// no kiln host writes.
    fn parse_head(&self, head: &[u8; HEADER]) -> Result<(u8, u64, u64), CommError> {
        let kind = head[0];
        let seq = u64::from_le_bytes(head[8..16].try_into().expect("eight bytes"));
        let len = u64::from_le_bytes(head[16..24].try_into().expect("eight bytes"));
        if len > MAX_PAYLOAD || !(KIND_DATA..=KIND_REJECT).contains(&kind) {
            return Err(CommError::Lost {
                host: self.host.clone(),
                why: format!("it sent something that is not a kiln XGBoost message (kind {kind}, {len} bytes)"),
            });
        }
        Ok((kind, seq, len))
    }

    /// The next frame: (kind, sequence number, payload).
    fn recv_any(&mut self) -> Result<(u8, u64, Vec<u8>), CommError> {
        let mut head = [0u8; HEADER];
        let waiting = Instant::now();
        spin_until_readable(&self.stream);
        self.stream.read_exact(&mut head).map_err(|e| self.lost(&e))?;
        crate::prof::add_waiting(waiting.elapsed());
        let (kind, seq, len) = self.parse_head(&head)?;
        // Read into spare capacity: a zero-filled buffer would be written twice.
        let mut payload = Vec::with_capacity(len as usize);
        let got = (&mut self.stream)
            .take(len)
            .read_to_end(&mut payload)
            .map_err(|e| self.lost(&e))?;
        if got as u64 != len {
            return Err(self.lost(&ErrorKind::UnexpectedEof.into()));
        }
        Ok((kind, seq, payload))
    }

    /// The data frame of operation `seq`.
    fn recv(&mut self, seq: u64) -> Result<Vec<u8>, CommError> {
        let frame = self.recv_any()?;
        self.data_of(seq, frame)
    }

    /// The payload of `frame` if it is the data of operation `seq`; else why not (the peer
    /// failed, or the hosts are out of step).
    fn data_of(&self, seq: u64, (kind, got, payload): (u8, u64, Vec<u8>)) -> Result<Vec<u8>, CommError> {
        match kind {
            KIND_ABORT => Err(CommError::PeerFailed {
                host: self.host.clone(),
                reason: String::from_utf8_lossy(&payload).into_owned(),
            }),
            KIND_DATA if got == seq => Ok(payload),
            _ => Err(CommError::Lost {
                host: self.host.clone(),
                why: format!(
                    "the hosts are out of step: it sent message {got} (kind {kind}) where operation {seq} was \
                     expected"
                ),
            }),
        }
    }
}

/// Element types a collective can carry (little-endian on the wire).
pub trait Wire: Copy {
    /// Bytes per element.
    const SIZE: usize;
    /// Writes `self` into `out` (`SIZE` bytes).
    fn put(self, out: &mut [u8]);
    /// Reads one element from `b` (`SIZE` bytes).
    fn get(b: &[u8]) -> Self;
}

macro_rules! wire {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("element size"))
            }
        }
    )*};
}
wire!(u8, u32, u64, i64, f32, f64);

/// `xs` as bytes.
pub fn encode<T: Wire>(xs: &[T]) -> Vec<u8> {
    let mut out = vec![0u8; xs.len() * T::SIZE];
    for (o, &x) in out.chunks_exact_mut(T::SIZE).zip(xs) {
        x.put(o);
    }
    out
}

/// Bytes as elements (a trailing partial element is ignored).
pub fn decode<T: Wire>(b: &[u8]) -> Vec<T> {
    b.chunks_exact(T::SIZE).map(T::get).collect()
}

/// Byte strings as one: their count, then each one's length and bytes.
fn frame(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + parts.iter().map(|p| 8 + p.len()).sum::<usize>());
    out.extend_from_slice(&(parts.len() as u64).to_le_bytes());
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// The byte strings [`frame`] joined; None if `b` is not such a join.
fn unframe(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let word = |at: usize| {
        b.get(at..at + 8)
            .map(|x| u64::from_le_bytes(x.try_into().expect("eight bytes")))
    };
    let n = usize::try_from(word(0)?).ok()?;
    let mut at = 8;
    let mut out = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let len = usize::try_from(word(at)?).ok()?;
        at += 8;
        out.push(b.get(at..at.checked_add(len)?)?.to_vec());
        at += len;
    }
    (at == b.len()).then_some(out)
}

/// With `hosts` = 2, the link to the other host (each side has exactly one).
fn pair(links: &mut [Option<Link>], hosts: usize) -> Option<&mut Link> {
    if hosts == 2 {
        links.iter_mut().flatten().next()
    } else {
        None
    }
}

/// Integers on the wire: a width byte (4 or 8), then every value at that width.
fn encode_ints(parts: &[&mut [i64]]) -> Vec<u8> {
    let fits = parts.iter().all(|p| p.iter().all(|&x| i32::try_from(x).is_ok()));
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let width = if fits { 4 } else { 8 };
    let mut out = Vec::with_capacity(1 + width * total);
    out.push(width as u8);
    for p in parts {
        if fits {
            out.extend(p.iter().flat_map(|&x| (x as i32).to_le_bytes()));
        } else {
            out.extend(p.iter().flat_map(|&x| x.to_le_bytes()));
        }
    }
    out
}

/// Adds the integers [`encode_ints`] wrote to `parts` (or, with `replace`, sets them); None if
/// `b` does not hold exactly as many.
fn add_ints(parts: &mut [&mut [i64]], b: &[u8], replace: bool) -> Option<()> {
    let (&width, body) = b.split_first()?;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if !matches!(width, 4 | 8) || body.len() != total * width as usize {
        return None;
    }
    let width = usize::from(width);
    let mut at = 0;
    for p in parts.iter_mut() {
        let bytes = &body[at..at + p.len() * width];
        at += bytes.len();
        let put = |x: &mut i64, v: i64| *x = if replace { v } else { x.wrapping_add(v) };
        if width == 4 {
            for (x, c) in p.iter_mut().zip(bytes.chunks_exact(4)) {
                put(x, i64::from(i32::from_le_bytes(c.try_into().expect("four bytes"))));
            }
        } else {
            for (x, c) in p.iter_mut().zip(bytes.chunks_exact(8)) {
                put(x, i64::from_le_bytes(c.try_into().expect("eight bytes")));
            }
        }
    }
    Some(())
}

struct State {
    /// Rank 0: one link per other rank (index 0 unused); other ranks: the link to rank 0 at 0.
    links: Vec<Option<Link>>,
    seq: u64,
    broken: Option<CommError>,
}

/// One host's end of the job's collective (see the module documentation).
pub struct Collective {
    hosts: Vec<String>,
    rank: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for Collective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Collective({} of {:?})", self.hosts[self.rank], self.hosts)
    }
}

/// What a connecting host says first.
#[derive(serde::Serialize, serde::Deserialize)]
struct Hello {
    magic: String,
    job: String,
    hosts: Vec<String>,
    rank: usize,
}

const MAGIC: &str = "kiln-xgboost-collective-1";

impl Collective {
    /// A collective of one host: every operation returns its input, without sockets.
    pub fn single() -> Self {
        Self {
            hosts: vec!["algo-1".into()],
            rank: 0,
            state: Mutex::new(State {
                links: Vec::new(),
                seq: 0,
                broken: None,
            }),
        }
    }

    /// Connects the hosts of `cfg`: algo-1 listens and waits for every other host; the others
    /// connect to it, retrying until `cfg.timeout` has passed.
    pub fn connect(cfg: &CommConfig) -> Result<Self, CommError> {
        let n = cfg.hosts.len();
        if n <= 1 {
            return Ok(Self::single());
        }
        let deadline = Instant::now() + cfg.timeout;
        let links = if cfg.rank == 0 {
            accept_all(cfg, deadline)?
        } else {
            vec![Some(connect_to_root(cfg, deadline)?)]
        };
        Ok(Self {
            hosts: cfg.hosts.clone(),
            rank: cfg.rank,
            state: Mutex::new(State {
                links,
                seq: 0,
                broken: None,
            }),
        })
    }

    /// This host's rank (0 is algo-1).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of hosts.
    pub fn size(&self) -> usize {
        self.hosts.len()
    }

    /// Whether this host is algo-1, the one that prints and writes the model.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Name of host `rank`.
    pub fn host(&self, rank: usize) -> &str {
        &self.hosts[rank]
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one operation with the next sequence number; a failure breaks the collective.
    fn op<R>(&self, f: impl FnOnce(&mut [Option<Link>], u64) -> Result<R, CommError>) -> Result<R, CommError> {
        let mut st = self.lock();
        if let Some(e) = &st.broken {
            return Err(e.clone());
        }
        st.seq += 1;
        let seq = st.seq;
        let r = f(&mut st.links, seq);
        if let Err(e) = &r {
            st.broken = Some(e.clone());
        }
        r
    }

    /// Combines every host's `buf` (equal lengths) with `combine(acc, other)`, algo-1's first
    /// and then in rank order; every host ends with the result.
    pub fn allreduce_bytes(&self, buf: &mut [u8], combine: &dyn Fn(&mut [u8], &[u8])) -> Result<(), CommError> {
        if self.size() == 1 {
            return Ok(());
        }
        let (rank, len, n) = (self.rank, buf.len(), self.size());
        self.op(|links, seq| {
            let out_of_step = |host: &str, got: usize| CommError::Lost {
                host: host.to_string(),
                why: format!("the hosts are out of step: it sent {got} bytes for operation {seq}, this host has {len}"),
            };
            if let Some(link) = pair(links, n) {
                // Two hosts: each sends its buffer to the other at once and both combine,
                // algo-1's first, so both end with the bits algo-1 alone would compute.
                let mut other = link.exchange(seq, buf)?;
                if other.len() != len {
                    return Err(out_of_step(&link.host, other.len()));
                }
                if rank == 0 {
                    combine(buf, &other);
                } else {
                    combine(&mut other, buf);
                    buf.copy_from_slice(&other);
                }
                return Ok(());
            }
            if rank == 0 {
                for link in links.iter_mut().flatten() {
                    let data = link.recv(seq)?;
                    if data.len() != buf.len() {
                        return Err(out_of_step(&link.host, data.len()));
                    }
                    combine(buf, &data);
                }
                for link in links.iter_mut().flatten() {
                    link.send(KIND_DATA, seq, buf)?;
                }
            } else {
                let link = links[0].as_mut().expect("a link to algo-1");
                link.send(KIND_DATA, seq, buf)?;
                let data = link.recv(seq)?;
                if data.len() != buf.len() {
                    return Err(out_of_step(&link.host, data.len()));
                }
                buf.copy_from_slice(&data);
            }
            Ok(())
        })
    }

    /// Element-wise `combine` of every host's `xs` (a generic function, not a pointer, so that
    /// it is inlined into the loop over the histograms' millions of elements).
    pub fn allreduce<T: Wire>(&self, xs: &mut [T], combine: impl Fn(T, T) -> T) -> Result<(), CommError> {
        if self.size() == 1 {
            return Ok(());
        }
        let mut bytes = encode(xs);
        self.allreduce_bytes(&mut bytes, &|acc, other| {
            for (a, b) in acc.chunks_exact_mut(T::SIZE).zip(other.chunks_exact(T::SIZE)) {
                combine(T::get(a), T::get(b)).put(a);
            }
        })?;
        for (x, b) in xs.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
            *x = T::get(b);
        }
        Ok(())
    }

    /// Sums of every host's `xs` (exact: integers wrap, as the histograms' sums never do).
    pub fn sum_i64(&self, xs: &mut [i64]) -> Result<(), CommError> {
        self.sum_i64_slices(&mut [xs])
    }

    /// [`Self::sum_i64`] of several slices in one message, sent as `i32` when every value
    /// fits (histograms of quantized gradients mostly do: half the bytes).
    pub fn sum_i64_slices(&self, parts: &mut [&mut [i64]]) -> Result<(), CommError> {
        if self.size() == 1 {
            return Ok(());
        }
        let (rank, n) = (self.rank, self.size());
        let total: usize = parts.iter().map(|p| p.len()).sum();
        self.op(|links, seq| {
            let unreadable = |host: &str| CommError::Lost {
                host: host.to_string(),
                why: format!("the hosts are out of step: operation {seq} is not a sum of {total} integers"),
            };
            if let Some(link) = pair(links, n) {
                // Two hosts: integer sums do not depend on the order of adding.
                let got = link.exchange(seq, &encode_ints(parts))?;
                return add_ints(parts, &got, false).ok_or_else(|| unreadable(&link.host));
            }
            if rank == 0 {
                for link in links.iter_mut().flatten() {
                    let got = link.recv(seq)?;
                    add_ints(parts, &got, false).ok_or_else(|| unreadable(&link.host))?;
                }
                let sum = encode_ints(parts);
                for link in links.iter_mut().flatten() {
                    link.send(KIND_DATA, seq, &sum)?;
                }
            } else {
                let link = links[0].as_mut().expect("a link to algo-1");
                link.send(KIND_DATA, seq, &encode_ints(parts))?;
                let got = link.recv(seq)?;
                add_ints(parts, &got, true).ok_or_else(|| unreadable(&link.host))?;
            }
            Ok(())
        })
    }

    /// Sums of every host's `xs`, added in rank order (the same bits on every host).
    pub fn sum_f64(&self, xs: &mut [f64]) -> Result<(), CommError> {
        self.allreduce(xs, |a, b| a + b)
    }

    /// Maxima of every host's `xs` (NaN ignored, as `f32::max` does).
    pub fn max_f32(&self, xs: &mut [f32]) -> Result<(), CommError> {
        self.allreduce(xs, f32::max)
    }

    /// Whether any host's flag is set, flag by flag.
    pub fn any(&self, flags: &mut [bool]) -> Result<(), CommError> {
        let mut b: Vec<u8> = flags.iter().map(|&f| u8::from(f)).collect();
        self.allreduce(&mut b, u8::max)?;
        for (f, x) in flags.iter_mut().zip(b) {
            *f = x != 0;
        }
        Ok(())
    }

    /// algo-1's `bytes` on every host (the others' `bytes` are ignored).
    pub fn broadcast(&self, bytes: Vec<u8>) -> Result<Vec<u8>, CommError> {
        if self.size() == 1 {
            return Ok(bytes);
        }
        let rank = self.rank;
        self.op(|links, seq| {
            if rank == 0 {
                for link in links.iter_mut().flatten() {
                    link.send(KIND_DATA, seq, &bytes)?;
                }
                Ok(bytes)
            } else {
                links[0].as_mut().expect("a link to algo-1").recv(seq)
            }
        })
    }

    /// Every host's `bytes`, by rank, on algo-1 (`None` on the others).
    pub fn gather(&self, bytes: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>, CommError> {
        if self.size() == 1 {
            return Ok(Some(vec![bytes]));
        }
        let rank = self.rank;
        self.op(|links, seq| {
            if rank == 0 {
                let mut all = vec![bytes];
                for link in links.iter_mut().flatten() {
                    all.push(link.recv(seq)?);
                }
                Ok(Some(all))
            } else {
                links[0]
                    .as_mut()
                    .expect("a link to algo-1")
                    .send(KIND_DATA, seq, &bytes)?;
                Ok(None)
            }
        })
    }

    /// Personalized exchange: `parts[r]` goes to host `r` (one per host, this host's own
    /// included); returns what each host sent to this one, by rank. Through algo-1, as every
    /// operation here: the others send it their parts, and it sends each host its share.
    pub fn all_to_all(&self, mut parts: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, CommError> {
        let n = self.size();
        assert_eq!(parts.len(), n, "one part per host");
        if n == 1 {
            return Ok(parts);
        }
        let rank = self.rank;
        self.op(|links, seq| {
            let unreadable = |host: &str| CommError::Lost {
                host: host.to_string(),
                why: format!("the hosts are out of step: operation {seq} is not an exchange of {n} parts"),
            };
            if let Some(link) = pair(links, n) {
                // Two hosts: straight to each other, both ways at once.
                let other = 1 - rank;
                parts[other] = link.exchange(seq, &parts[other])?;
                return Ok(parts);
            }
            if rank == 0 {
                // Row r: what host r sent; column c: for host c.
                let mut sent: Vec<Vec<Vec<u8>>> = vec![std::mem::take(&mut parts)];
                for link in links.iter_mut().flatten() {
                    let got = unframe(&link.recv(seq)?).filter(|p| p.len() == n);
                    sent.push(got.ok_or_else(|| unreadable(&link.host))?);
                }
                for (c, link) in links.iter_mut().enumerate().skip(1) {
                    let link = link.as_mut().expect("a link to every host");
                    let col: Vec<Vec<u8>> = sent.iter_mut().map(|row| std::mem::take(&mut row[c])).collect();
                    link.send(KIND_DATA, seq, &frame(&col))?;
                }
                Ok(sent.iter_mut().map(|row| std::mem::take(&mut row[0])).collect())
            } else {
                // This host's own part stays here.
                let own = std::mem::take(&mut parts[rank]);
                let link = links[0].as_mut().expect("a link to algo-1");
                link.send(KIND_DATA, seq, &frame(&parts))?;
                let mut got = unframe(&link.recv(seq)?)
                    .filter(|p| p.len() == n)
                    .ok_or_else(|| unreadable(&link.host))?;
                got[rank] = own;
                Ok(got)
            }
        })
    }

    /// Tells the other hosts (best effort, briefly) that this one failed and why, and closes
    /// the connections; later operations fail.
    pub fn abort(&self, reason: &str) {
        let mut st = self.lock();
        let seq = st.seq;
        for link in st.links.iter_mut().flatten() {
            let _ = link.stream.set_write_timeout(Some(Duration::from_secs(2)));
            let _ = link.send(KIND_ABORT, seq, reason.as_bytes());
            let _ = link.stream.shutdown(std::net::Shutdown::Both);
        }
        st.links.clear();
        st.broken
            .get_or_insert_with(|| CommError::Setup(format!("this host failed: {reason}")));
    }
}

/// Binds algo-1's port, retrying while another process still holds it.
fn bind(cfg: &CommConfig, deadline: Instant) -> Result<TcpListener, CommError> {
    loop {
        match TcpListener::bind(("0.0.0.0", cfg.port)) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(CommError::Setup(format!(
                    "{} cannot listen on port {} for the other hosts: {e} (set KILN_XGB_PORT to a free port)",
                    cfg.hosts[0], cfg.port
                )));
            }
        }
    }
}

/// algo-1: waits until every other host has connected and introduced itself.
fn accept_all(cfg: &CommConfig, deadline: Instant) -> Result<Vec<Option<Link>>, CommError> {
    let listener = bind(cfg, deadline)?;
    listener
        .set_nonblocking(true)
        .map_err(|e| CommError::Setup(format!("cannot listen on port {}: {e}", cfg.port)))?;
    let n = cfg.hosts.len();
    let mut links: Vec<Option<Link>> = (0..n).map(|_| None).collect();
    let mut turned_away = Vec::new();
    while links[1..].iter().any(Option::is_none) {
        let (stream, addr) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                if Instant::now() >= deadline {
                    let missing: Vec<&str> = (1..n)
                        .filter(|&r| links[r].is_none())
                        .map(|r| cfg.hosts[r].as_str())
                        .collect();
                    let mut msg = format!(
                        "{} waited {} s for {} to connect on port {} (KILN_XGB_TIMEOUT); lost contact with {}",
                        cfg.hosts[0],
                        cfg.timeout.as_secs_f64(),
                        missing.join(", "),
                        cfg.port,
                        missing.join(", ")
                    );
                    if !turned_away.is_empty() {
                        msg.push_str(&format!("; turned away: {}", turned_away.join("; ")));
                    }
                    return Err(CommError::Setup(msg));
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => {
                return Err(CommError::Setup(format!(
                    "cannot accept connections on port {}: {e}",
                    cfg.port
                )));
            }
        };
        match welcome(cfg, stream, addr) {
            Ok((rank, link)) => links[rank] = Some(link),
            Err(why) => turned_away.push(why),
        }
    }
    Ok(links)
}

/// algo-1: reads a new connection's hello; accepts it (its rank and link) or turns it away.
fn welcome(cfg: &CommConfig, stream: TcpStream, addr: SocketAddr) -> Result<(usize, Link), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let mut link = Link::new(format!("the host at {addr}"), stream, HELLO_TIMEOUT).map_err(|e| e.to_string())?;
    let (kind, _, payload) = link.recv_any().map_err(|e| e.to_string())?;
    let hello: Option<Hello> = serde_json::from_slice(&payload).ok();
    let verdict = match &hello {
        _ if kind != KIND_HELLO => Err(format!("{addr} did not introduce itself")),
        None => Err(format!("{addr} sent an unreadable introduction")),
        Some(h) if h.magic != MAGIC => Err(format!("{addr} speaks another protocol ({})", h.magic)),
        Some(h) if h.job != cfg.job => Err(format!(
            "{addr} belongs to job '{}', not '{}' (two jobs on one port? set KILN_XGB_PORT)",
            h.job, cfg.job
        )),
        Some(h) if h.hosts != cfg.hosts || h.rank == 0 || h.rank >= cfg.hosts.len() => Err(format!(
            "{addr} has other hosts ({:?}, rank {}) than {} ({:?})",
            h.hosts, h.rank, cfg.hosts[0], cfg.hosts
        )),
        Some(h) => Ok(h.rank),
    };
    match verdict {
        Ok(rank) => {
            link.host = cfg.hosts[rank].clone();
            link.send(KIND_WELCOME, 0, &[]).map_err(|e| e.to_string())?;
            let Link { host, stream, .. } = link;
            let link = Link::new(host, stream, cfg.timeout).map_err(|e| e.to_string())?;
            Ok((rank, link))
        }
        Err(why) => {
            let _ = link.send(KIND_REJECT, 0, why.as_bytes());
            Err(why)
        }
    }
}

/// A host other than algo-1: connects to algo-1 (retrying until `deadline`) and introduces
/// itself.
fn connect_to_root(cfg: &CommConfig, deadline: Instant) -> Result<Link, CommError> {
    let root = &cfg.hosts[0];
    let target = format!("{}:{}", cfg.master_addr, cfg.port);
    let mut last = String::from("not tried");
    let mut tries = 0;
    let stream = loop {
        let attempt = match target.to_socket_addrs() {
            Ok(addrs) => {
                let mut got = None;
                for a in addrs {
                    match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
                        Ok(s) => {
                            got = Some(s);
                            break;
                        }
                        Err(e) => last = format!("{a}: {e}"),
                    }
                }
                got
            }
            Err(e) => {
                last = format!("cannot resolve {}: {e}", cfg.master_addr);
                None
            }
        };
        if let Some(s) = attempt {
            break s;
        }
        if Instant::now() >= deadline {
            return Err(CommError::Setup(format!(
                "lost contact with {root}: {} could not connect to {root} at {target} within {} s \
                 (KILN_XGB_TIMEOUT): {last}",
                cfg.hosts[cfg.rank],
                cfg.timeout.as_secs_f64()
            )));
        }
        // Hosts start together, so algo-1 usually listens within moments: retry soon at
        // first, then every 100 ms.
        tries += 1;
        std::thread::sleep(Duration::from_millis(if tries < 50 { 5 } else { 100 }));
    };
    let mut link = Link::new(root.clone(), stream, cfg.timeout)?;
    let hello = Hello {
        magic: MAGIC.into(),
        job: cfg.job.clone(),
        hosts: cfg.hosts.clone(),
        rank: cfg.rank,
    };
    let bytes = serde_json::to_vec(&hello).map_err(|e| CommError::Setup(e.to_string()))?;
    link.send(KIND_HELLO, 0, &bytes)?;
    match link.recv_any()? {
        (KIND_WELCOME, _, _) => Ok(link),
        (KIND_REJECT, _, why) => Err(CommError::Setup(format!(
            "{root} at {target} turned {} away: {}",
            cfg.hosts[cfg.rank],
            String::from_utf8_lossy(&why)
        ))),
        (kind, _, _) => Err(CommError::Lost {
            host: root.clone(),
            why: format!("it answered the introduction with message kind {kind}"),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A port nobody listens on right now.
    pub(crate) fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// Configurations of `n` hosts on localhost sharing `port`.
    pub(crate) fn configs(n: usize, port: u16, timeout: Duration) -> Vec<CommConfig> {
        let hosts: Vec<String> = (1..=n).map(|i| format!("algo-{i}")).collect();
        (0..n)
            .map(|rank| CommConfig {
                hosts: hosts.clone(),
                rank,
                port,
                master_addr: "127.0.0.1".into(),
                job: "test-job".into(),
                timeout,
            })
            .collect()
    }

    /// Runs `f(collective)` on `n` threads acting as hosts; results by rank.
    pub(crate) fn run_hosts<R: Send>(n: usize, f: impl Fn(&Collective) -> R + Sync) -> Vec<R> {
        let cfgs = configs(n, free_port(), Duration::from_secs(20));
        std::thread::scope(|s| {
            let handles: Vec<_> = cfgs
                .iter()
                .map(|cfg| {
                    let f = &f;
                    s.spawn(move || f(&Collective::connect(cfg).unwrap()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn allreduce_broadcast_and_gather_across_two_and_three_hosts() {
        // Two hosts talk straight to each other, more go through algo-1: both ways are checked.
        for n in [2usize, 3] {
            let out = run_hosts(n, |c| {
                let r = c.rank() as i64;
                let mut ints = vec![r, 10 * r, -1, i64::MAX / 4];
                c.sum_i64(&mut ints).unwrap();
                let mut floats = vec![0.5 * r as f64, 1e300, -(r as f64)];
                c.sum_f64(&mut floats).unwrap();
                let mut maxes = vec![r as f32, -(r as f32), f32::NAN];
                c.max_f32(&mut maxes).unwrap();
                let mut flags = vec![r == 1, false, true];
                c.any(&mut flags).unwrap();
                let b = c.broadcast(format!("from {}", c.host(c.rank())).into_bytes()).unwrap();
                let g = c.gather(vec![r as u8; r as usize + 1]).unwrap();
                // A large buffer (several socket buffers, sent both ways at once by two hosts).
                let mut big = vec![1i64; 3 << 20];
                c.sum_i64(&mut big).unwrap();
                assert!(big.iter().all(|&x| x == n as i64));
                // Several slices in one message; one host's values need 64 bits, which the
                // others then receive whatever width they sent.
                let (mut a, mut b2) = (vec![r; 5000], vec![-r; 70_000]);
                if r == 1 {
                    a[7] = 1 << 40;
                }
                c.sum_i64_slices(&mut [&mut a[..], &mut b2[..]]).unwrap();
                let sum: i64 = (0..n as i64).sum();
                assert_eq!(a[7], (1 << 40) + sum - 1);
                assert!(a.iter().enumerate().all(|(i, &x)| i == 7 || x == sum));
                assert!(b2.iter().all(|&x| x == -sum));
                (ints, floats, maxes, flags, b, g)
            });
            let n = n as i64;
            for (rank, (ints, floats, maxes, flags, b, g)) in out.into_iter().enumerate() {
                let sum: i64 = (0..n).sum();
                assert_eq!(ints, vec![sum, 10 * sum, -n, n * (i64::MAX / 4)]);
                assert_eq!(floats, vec![0.5 * sum as f64, n as f64 * 1e300, -sum as f64]);
                assert_eq!(maxes[..2], [(n - 1) as f32, 0.0]);
                assert!(maxes[2].is_nan());
                assert_eq!(flags, vec![true, false, true]);
                assert_eq!(b, b"from algo-1");
                if rank == 0 {
                    let want: Vec<Vec<u8>> = (0..n as u8).map(|r| vec![r; usize::from(r) + 1]).collect();
                    assert_eq!(g, Some(want));
                } else {
                    assert_eq!(g, None);
                }
            }
        }
    }

    #[test]
    fn all_to_all_delivers_each_part_to_its_host() {
        for n in [2u8, 3] {
            // Host r sends host c the bytes [r, c] repeated r + c times (nothing from 0 to 0),
            // and then parts of several megabytes.
            let out = run_hosts(usize::from(n), |c| {
                let me = c.rank() as u8;
                let small = c.all_to_all((0..n).map(|to| [me, to].repeat(usize::from(me + to))).collect());
                let big = c.all_to_all((0..n).map(|to| vec![me ^ to; 3 << 20]).collect());
                (small.unwrap(), big.unwrap())
            });
            for (to, (small, big)) in out.into_iter().enumerate() {
                let want: Vec<Vec<u8>> = (0..n)
                    .map(|from| [from, to as u8].repeat(usize::from(from) + to))
                    .collect();
                assert_eq!(small, want);
                let want: Vec<Vec<u8>> = (0..n).map(|from| vec![from ^ to as u8; 3 << 20]).collect();
                assert!(big == want);
            }
        }
        assert_eq!(Collective::single().all_to_all(vec![vec![5]]).unwrap(), vec![vec![5]]);
        assert_eq!(unframe(&frame(&[vec![], vec![1, 2]])), Some(vec![vec![], vec![1, 2]]));
        assert_eq!(unframe(&[1, 0, 0, 0, 0, 0, 0, 0, 9]), None);
    }

    #[test]
    fn one_host_needs_no_sockets() {
        let c = Collective::single();
        let mut x = vec![1.5, 2.0];
        c.sum_f64(&mut x).unwrap();
        assert_eq!(x, vec![1.5, 2.0]);
        assert_eq!(c.gather(vec![7]).unwrap(), Some(vec![vec![7]]));
        assert_eq!(c.broadcast(vec![1, 2]).unwrap(), vec![1, 2]);
    }

    /// Lengths of the allreduce in the failure tests: one sent before reading, and one larger
    /// than the socket buffers, sent while reading.
    const FAILING_LENGTHS: [usize; 2] = [1000, 1 << 20];

    /// algo-1 and a thread playing algo-2 that does `peer(collective)` instead of joining an
    /// allreduce of `len` floats; returns algo-1's error and how long it took.
    fn root_error_when(timeout: Duration, len: usize, peer: impl FnOnce(Collective) + Send) -> (CommError, Duration) {
        let cfgs = configs(2, free_port(), timeout);
        std::thread::scope(|s| {
            let c1 = &cfgs[1];
            s.spawn(move || peer(Collective::connect(c1).unwrap()));
            let root = Collective::connect(&cfgs[0]).unwrap();
            let start = Instant::now();
            let mut buf = vec![1.0f64; len];
            let e = root.sum_f64(&mut buf).unwrap_err();
            // Broken for good: the next operation fails at once with the same error.
            assert_eq!(root.broadcast(vec![1]).unwrap_err(), e);
            (e, start.elapsed())
        })
    }

    #[test]
    fn a_peer_that_drops_mid_allreduce_is_named_at_once() {
        for len in FAILING_LENGTHS {
            a_peer_that_drops(len);
        }
    }

    fn a_peer_that_drops(len: usize) {
        let (e, took) = root_error_when(Duration::from_secs(30), len, |c| {
            // The process "dies" during the operation.
            drop(c);
        });
        // Closed or reset, depending on whether algo-1's send reached the closed socket first.
        let said = e.to_string();
        assert!(
            said == "lost contact with algo-2: connection closed (its process ended)"
                || said == "lost contact with algo-2: connection reset (its process ended)",
            "{said}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn a_silent_peer_times_out_with_its_name() {
        for len in FAILING_LENGTHS {
            a_silent_peer(len);
        }
    }

    fn a_silent_peer(len: usize) {
        let (e, took) = root_error_when(Duration::from_millis(800), len, |c| {
            std::thread::sleep(Duration::from_millis(2500));
            drop(c);
        });
        assert!(
            e.to_string()
                .starts_with("lost contact with algo-2: no answer for 0.8 s"),
            "{e}"
        );
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_millis(2400),
            "{took:?}"
        );
    }

    #[test]
    fn a_peer_that_fails_says_why_and_a_dead_root_is_named() {
        for len in FAILING_LENGTHS {
            let (e, _) = root_error_when(Duration::from_secs(30), len, |c| c.abort("channel 'train' is empty"));
            assert_eq!(e.to_string(), "algo-2 failed: channel 'train' is empty", "{len} floats");
        }
        // The other way round: algo-2 waits on algo-1, which goes away.
        let cfgs = configs(2, free_port(), Duration::from_secs(30));
        let e = std::thread::scope(|s| {
            let c0 = &cfgs[0];
            s.spawn(move || {
                let root = Collective::connect(c0).unwrap();
                let mut x = vec![0i64; 4];
                root.sum_i64(&mut x).unwrap();
            });
            let peer = Collective::connect(&cfgs[1]).unwrap();
            let mut x = vec![0i64; 4];
            peer.sum_i64(&mut x).unwrap();
            peer.sum_i64(&mut x).unwrap_err()
        });
        assert!(e.to_string().starts_with("lost contact with algo-1: connection"), "{e}");
    }

    #[test]
    fn hosts_out_of_step_fail_instead_of_mixing_buffers() {
        let out = run_hosts(2, |c| {
            let mut x = vec![0i64; 4 + c.rank()];
            c.sum_i64(&mut x).map_err(|e| e.to_string())
        });
        assert!(out[0].as_ref().unwrap_err().contains("out of step"), "{out:?}");
        assert!(out[1].is_err());
    }

    #[test]
    fn another_jobs_host_is_turned_away_and_a_missing_host_named() {
        let port = free_port();
        let mut cfgs = configs(2, port, Duration::from_millis(1500));
        cfgs[1].job = "other-job".into();
        let (root, peer) = std::thread::scope(|s| {
            let c1 = &cfgs[1];
            let peer = s.spawn(move || Collective::connect(c1).map(|_| ()));
            let root = Collective::connect(&cfgs[0]).map(|_| ());
            (root, peer.join().unwrap())
        });
        let root = root.unwrap_err().to_string();
        assert!(
            root.contains("for algo-2 to connect") && root.contains("belongs to job 'other-job'"),
            "{root}"
        );
        let peer = peer.unwrap_err().to_string();
        assert!(peer.contains("turned algo-2 away"), "{peer}");
        // Nobody listening: the connecting host names algo-1.
        let cfg = &configs(2, free_port(), Duration::from_millis(300))[1];
        let e = Collective::connect(cfg).unwrap_err().to_string();
        assert!(
            e.starts_with("lost contact with algo-1: algo-2 could not connect"),
            "{e}"
        );
    }

    #[test]
    fn config_from_the_environment() {
        let hosts = vec!["algo-1".to_string(), "algo-2".to_string()];
        let env = |k: &str| match k {
            "KILN_XGB_PORT" => Some("9123".to_string()),
            "TRAINING_JOB_NAME" => Some("j".to_string()),
            _ => None,
        };
        let c = CommConfig::from_env(&hosts, "algo-2", &env).unwrap();
        assert_eq!(
            (c.rank, c.port, c.master_addr.as_str(), c.job.as_str()),
            (1, 9123, "algo-1", "j")
        );
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert!(CommConfig::from_env(&hosts, "algo-3", &env).is_err());
        let bad = |k: &str| (k == "KILN_XGB_PORT").then(|| "x".to_string());
        assert!(
            CommConfig::from_env(&hosts, "algo-1", &bad)
                .unwrap_err()
                .contains("KILN_XGB_PORT")
        );
    }
}
