//! MD5 of uploads for their ETags, many uploads at once.
//!
//! MD5 is a chain: each 64-byte block needs the state the previous block left, so one stream
//! cannot go faster than one core (about 600 MB/s here), and MD5 was close to half of a PUT's CPU.
//! Independent streams can share a core, though: with AVX-512 one instruction advances sixteen
//! MD5 states at the cost of one. Uploads in flight at the same moment (the parts of a multipart
//! upload, concurrent PUTs) hand their bytes to one hashing thread that advances all of their
//! states together, lane by lane, and the writer threads are left with writing.
//!
//! On a CPU without AVX-512 (or another architecture) each upload hashes its own bytes, as before.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use s3s::crypto::{Checksum as _, Md5 as SoftMd5};

/// How many streams one step advances.
const LANES: usize = 16;
/// How many bytes of one stream a round hashes at most, so rounds stay short and every stream
/// with bytes waiting gets its turn.
const ROUND_BYTES: usize = 1 << 20;
/// How many bytes a stream may have waiting for the hashing thread before its writer waits.
const MAX_QUEUED: usize = 32 << 20;
/// A round costs the same whether one lane is busy or sixteen, so the hashing thread waits until
/// every open stream has this much waiting (or is finishing) before it starts one...
const GATHER: usize = 512 << 10;
/// ...but not longer than this after bytes arrived: a stream may be waiting for its network.
const GATHER_WAIT: Duration = Duration::from_millis(2);

const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// `floor(abs(sin(i + 1)) * 2^32)`, the additive constant of step `i`.
const K: [u32; 64] = [
    0xd76a_a478,
    0xe8c7_b756,
    0x2420_70db,
    0xc1bd_ceee,
    0xf57c_0faf,
    0x4787_c62a,
    0xa830_4613,
    0xfd46_9501,
    0x6980_98d8,
    0x8b44_f7af,
    0xffff_5bb1,
    0x895c_d7be,
    0x6b90_1122,
    0xfd98_7193,
    0xa679_438e,
    0x49b4_0821,
    0xf61e_2562,
    0xc040_b340,
    0x265e_5a51,
    0xe9b6_c7aa,
    0xd62f_105d,
    0x0244_1453,
    0xd8a1_e681,
    0xe7d3_fbc8,
    0x21e1_cde6,
    0xc337_07d6,
    0xf4d5_0d87,
    0x455a_14ed,
    0xa9e3_e905,
    0xfcef_a3f8,
    0x676f_02d9,
    0x8d2a_4c8a,
    0xfffa_3942,
    0x8771_f681,
    0x6d9d_6122,
    0xfde5_380c,
    0xa4be_ea44,
    0x4bde_cfa9,
    0xf6bb_4b60,
    0xbebf_bc70,
    0x289b_7ec6,
    0xeaa1_27fa,
    0xd4ef_3085,
    0x0488_1d05,
    0xd9d4_d039,
    0xe6db_99e5,
    0x1fa2_7cf8,
    0xc4ac_5665,
    0xf429_2244,
    0x432a_ff97,
    0xab94_23a7,
    0xfc93_a039,
    0x655b_59c3,
    0x8f0c_cc92,
    0xffef_f47d,
    0x8584_5dd1,
    0x6fa8_7e4f,
    0xfe2c_e6e0,
    0xa301_4314,
    0x4e08_11a1,
    0xf753_7e82,
    0xbd3a_f235,
    0x2ad7_d2bb,
    0xeb86_d391,
];

/// The left rotation of step `i`.
const S: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, //
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, //
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, //
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

/// The message word step `i` adds.
const fn word(i: usize) -> usize {
    match i / 16 {
        0 => i,
        1 => (5 * i + 1) % 16,
        2 => (3 * i + 5) % 16,
        _ => (7 * i) % 16,
    }
}

/// One block into one state, the plain way (the tail of every stream, and the reference the
/// lane kernel is tested against).
fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
    let mut m = [0u32; 16];
    for (w, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let f = match i / 16 {
            0 => (b & c) | (!b & d),
            1 => (b & d) | (c & !d),
            2 => b ^ c ^ d,
            _ => c ^ (b | !d),
        };
        let t = a.wrapping_add(f).wrapping_add(K[i]).wrapping_add(m[word(i)]);
        (a, d, c) = (d, c, b);
        b = b.wrapping_add(t.rotate_left(S[i]));
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d]) {
        *s = s.wrapping_add(v);
    }
}

/// The digest of a stream whose whole blocks are in `state`: `tail` (under 64 bytes) and the
/// padding are hashed here.
fn finish(mut state: [u32; 4], tail: &[u8], total: u64) -> [u8; 16] {
    let mut last = [0u8; 128];
    last[..tail.len()].copy_from_slice(tail);
    last[tail.len()] = 0x80;
    let len = if tail.len() < 56 { 64 } else { 128 };
    last[len - 8..len].copy_from_slice(&total.wrapping_mul(8).to_le_bytes());
    for block in last[..len].chunks_exact(64) {
        let block: &[u8; 64] = block.try_into().unwrap_or(&[0; 64]);
        compress(&mut state, block);
    }
    let mut out = [0u8; 16];
    for (o, s) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&s.to_le_bytes());
    }
    out
}

/// Sixteen MD5 states advanced by one block each, where `mask` has the lane's bit.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{K, LANES, S, word};

    /// The states, one vector per word: `state[w][lane]`.
    pub(super) type States = [[u32; LANES]; 4];

    /// Whether this CPU can run [`step`].
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// Advances the lanes in `mask` by one block each: `msg[w][lane]` is word `w` of the lane's block.
    ///
    /// Safe to call only where [`available`] is true (the caller checks once, when the hashing
    /// thread starts). It reads and writes nothing but its arguments: every load and store is of
    /// a whole `[u32; 16]` row, which is 64 bytes, the width of one `__m512i` (unaligned access).
    #[target_feature(enable = "avx512f")]
    pub(super) fn step(state: &mut States, msg: &[[u32; LANES]; 16], mask: u16) {
        // SAFETY: each pointer is to a `[u32; 16]`, 64 readable (and, for the state, writable)
        // bytes; `loadu`/`storeu` need no alignment.
        let load = |row: &[u32; LANES]| unsafe { _mm512_loadu_si512(row.as_ptr().cast()) };
        let m: [__m512i; 16] = std::array::from_fn(|w| load(&msg[w]));
        let (a0, b0, c0, d0) = (load(&state[0]), load(&state[1]), load(&state[2]), load(&state[3]));
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        macro_rules! round {
            ($from:expr, $f:literal) => {
                for i in $from..$from + 16 {
                    // The round function of b, c, d as a truth table (b: 0xF0, c: 0xCC, d: 0xAA):
                    // F 0xCA, G 0xE4, H 0x96, I 0x39.
                    let f = _mm512_ternarylogic_epi32::<$f>(b, c, d);
                    let k = _mm512_add_epi32(_mm512_set1_epi32(K[i] as i32), m[word(i)]);
                    let t = _mm512_add_epi32(_mm512_add_epi32(a, f), k);
                    let r = _mm512_rolv_epi32(t, _mm512_set1_epi32(S[i] as i32));
                    (a, d, c) = (d, c, b);
                    b = _mm512_add_epi32(b, r);
                }
            };
        }
        round!(0, 0xCA);
        round!(16, 0xE4);
        round!(32, 0x96);
        round!(48, 0x39);
        let out = [
            _mm512_mask_add_epi32(a0, mask, a0, a),
            _mm512_mask_add_epi32(b0, mask, b0, b),
            _mm512_mask_add_epi32(c0, mask, c0, c),
            _mm512_mask_add_epi32(d0, mask, d0, d),
        ];
        for (row, v) in state.iter_mut().zip(out) {
            // SAFETY: as for the loads above.
            unsafe { _mm512_storeu_si512(row.as_mut_ptr().cast(), v) };
        }
    }
}

/// Where a stream's bytes go.
pub(crate) struct Md5Stream(Inner);

enum Inner {
    /// Hashed by the writer itself.
    Own(SoftMd5),
    /// Hashed by the shared thread.
    Shared(Lane),
}

impl Md5Stream {
    /// A new stream: on the shared hashing thread where the CPU has AVX-512.
    pub fn new() -> Self {
        match Hub::get() {
            Some(hub) => Self(Inner::Shared(Lane::open(hub))),
            None => Self(Inner::Own(SoftMd5::new())),
        }
    }

    /// Hashes `chunk` (or queues it for the hashing thread, waiting if this stream is far behind).
    pub fn update(&mut self, chunk: &Bytes) {
        match &mut self.0 {
            Inner::Own(md5) => md5.update(chunk),
            Inner::Shared(lane) => lane.update(chunk),
        }
    }

    /// The digest of every byte given.
    pub fn finalize(self) -> [u8; 16] {
        match self.0 {
            Inner::Own(md5) => md5.finalize(),
            Inner::Shared(lane) => lane.finalize(),
        }
    }
}

/// A stream's place on the hashing thread.
struct Lane {
    hub: &'static Hub,
    id: u64,
    /// The bytes after the last whole block queued.
    carry: [u8; 64],
    carry_len: usize,
    total: u64,
}

impl Lane {
    fn open(hub: &'static Hub) -> Self {
        let mut s = hub.lock();
        let id = s.next_id;
        s.next_id += 1;
        s.lanes.insert(
            id,
            Queue {
                state: INIT,
                blocks: VecDeque::new(),
                queued: 0,
                finishing: false,
            },
        );
        drop(s);
        Self {
            hub,
            id,
            carry: [0; 64],
            carry_len: 0,
            total: 0,
        }
    }

    fn update(&mut self, chunk: &Bytes) {
        self.total += chunk.len() as u64;
        let mut data = chunk.clone();
        if self.carry_len > 0 {
            let take = (64 - self.carry_len).min(data.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&data[..take]);
            self.carry_len += take;
            data = data.slice(take..);
            if self.carry_len < 64 {
                return;
            }
            self.carry_len = 0;
            self.queue(Bytes::copy_from_slice(&self.carry));
        }
        let whole = data.len() / 64 * 64;
        self.carry_len = data.len() - whole;
        self.carry[..self.carry_len].copy_from_slice(&data[whole..]);
        if whole > 0 {
            self.queue(data.slice(..whole));
        }
    }

    /// Queues whole blocks (the bytes are shared, not copied).
    fn queue(&self, blocks: Bytes) {
        let mut s = self.hub.lock();
        while s.lanes.get(&self.id).is_some_and(|q| q.queued >= MAX_QUEUED) {
            s = self.hub.wait(&self.hub.hashed, s);
        }
        let mut wake = false;
        if let Some(q) = s.lanes.get_mut(&self.id) {
            // The thread needs waking when it may be idle, or when this stream becomes ready.
            wake = q.queued == 0 || (q.queued < GATHER && q.queued + blocks.len() >= GATHER);
            q.queued += blocks.len();
            q.blocks.push_back(blocks);
        }
        drop(s);
        if wake {
            self.hub.queued.notify_one();
        }
    }

    fn finalize(self) -> [u8; 16] {
        let mut s = self.hub.lock();
        if let Some(q) = s.lanes.get_mut(&self.id) {
            q.finishing = true;
        }
        self.hub.queued.notify_one();
        while s.lanes.get(&self.id).is_some_and(|q| q.queued > 0) {
            s = self.hub.wait(&self.hub.hashed, s);
        }
        let state = s.lanes.get(&self.id).map_or(INIT, |q| q.state);
        drop(s);
        finish(state, &self.carry[..self.carry_len], self.total)
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.hub.lock().lanes.remove(&self.id);
    }
}

/// A stream's blocks waiting for the hashing thread, and its state so far.
struct Queue {
    state: [u32; 4],
    /// Whole blocks, oldest first.
    blocks: VecDeque<Bytes>,
    queued: usize,
    /// Whether the writer waits for the digest (no more bytes will come).
    finishing: bool,
}

#[derive(Default)]
struct HubState {
    lanes: HashMap<u64, Queue>,
    next_id: u64,
    /// Where the next round starts looking for streams, so each gets its turn.
    next_turn: u64,
}

/// The hashing thread and the streams it serves.
struct Hub {
    state: Mutex<HubState>,
    /// Signalled when a stream queues bytes.
    queued: Condvar,
    /// Signalled after each round.
    hashed: Condvar,
}

impl Hub {
    /// The process's hashing thread, started on first use; none without AVX-512.
    fn get() -> Option<&'static Hub> {
        static HUB: OnceLock<Option<&'static Hub>> = OnceLock::new();
        *HUB.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if avx512::available() {
                let hub: &'static Hub = Box::leak(Box::new(Hub {
                    state: Mutex::default(),
                    queued: Condvar::new(),
                    hashed: Condvar::new(),
                }));
                let started = std::thread::Builder::new()
                    .name("kiln-md5".into())
                    .spawn(move || hub.run());
                return started.is_ok().then_some(hub);
            }
            None
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent queues.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, cv: &Condvar, guard: MutexGuard<'a, HubState>) -> MutexGuard<'a, HubState> {
        cv.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a round's worth of work (see [`GATHER`]) and picks it.
    fn next_round(&self) -> Vec<(u64, [u32; 4], Vec<Bytes>)> {
        let mut s = self.lock();
        let mut since: Option<Instant> = None;
        loop {
            let waiting = s.lanes.values().filter(|q| q.queued > 0).count();
            if waiting == 0 {
                since = None;
                s = self.wait(&self.queued, s);
                continue;
            }
            let ready = s
                .lanes
                .values()
                .filter(|q| q.queued >= GATHER || (q.finishing && q.queued > 0))
                .count();
            let waited = since.get_or_insert_with(Instant::now).elapsed();
            if ready >= s.lanes.len().min(LANES) || waited >= GATHER_WAIT {
                return s.pick();
            }
            s = self
                .queued
                .wait_timeout(s, GATHER_WAIT - waited)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn run(&self) {
        loop {
            let picked = self.next_round();
            let mut states: avx512::States = [[0; LANES]; 4];
            for (lane, (_, state, _)) in picked.iter().enumerate() {
                for (row, v) in states.iter_mut().zip(state) {
                    row[lane] = *v;
                }
            }
            let mut cursors: Vec<Blocks<'_>> = picked.iter().map(|(_, _, bytes)| Blocks::new(bytes)).collect();
            let mut msg = [[0u32; LANES]; 16];
            loop {
                let mut mask = 0u16;
                for (lane, cursor) in cursors.iter_mut().enumerate() {
                    if let Some(block) = cursor.next() {
                        mask |= 1 << lane;
                        for (w, bytes) in block.chunks_exact(4).enumerate() {
                            msg[w][lane] = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                        }
                    }
                }
                if mask == 0 {
                    break;
                }
                // SAFETY: the hub exists only where `avx512::available()` (see `get`).
                unsafe { avx512::step(&mut states, &msg, mask) };
            }
            let mut s = self.lock();
            for (lane, (id, _, bytes)) in picked.iter().enumerate() {
                if let Some(q) = s.lanes.get_mut(id) {
                    q.state = std::array::from_fn(|w| states[w][lane]);
                    let done: usize = bytes.iter().map(Bytes::len).sum();
                    q.queued -= done;
                    let mut left = done;
                    while left > 0 {
                        let Some(front) = q.blocks.front_mut() else { break };
                        if front.len() <= left {
                            left -= front.len();
                            q.blocks.pop_front();
                        } else {
                            *front = front.slice(left..);
                            left = 0;
                        }
                    }
                }
            }
            drop(s);
            self.hashed.notify_all();
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn run(&self) {}
}

impl HubState {
    /// Up to [`LANES`] streams with bytes waiting, each with its state and up to
    /// [`ROUND_BYTES`] of its blocks, starting after the stream served first last time.
    fn pick(&mut self) -> Vec<(u64, [u32; 4], Vec<Bytes>)> {
        let mut ids: Vec<u64> = self
            .lanes
            .iter()
            .filter(|(_, q)| q.queued > 0)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let start = ids.iter().position(|id| *id >= self.next_turn).unwrap_or(0);
        ids.rotate_left(start);
        ids.truncate(LANES);
        if let Some(first) = ids.first() {
            self.next_turn = first + 1;
        }
        ids.into_iter()
            .filter_map(|id| {
                let q = self.lanes.get(&id)?;
                let mut taken = Vec::new();
                let mut size = 0;
                for b in &q.blocks {
                    if size >= ROUND_BYTES {
                        break;
                    }
                    let b = b.slice(..b.len().min(ROUND_BYTES - size));
                    size += b.len();
                    taken.push(b);
                }
                Some((id, q.state, taken))
            })
            .collect()
    }
}

/// The 64-byte blocks of a list of block-aligned byte runs, in order.
struct Blocks<'a> {
    runs: std::slice::Iter<'a, Bytes>,
    current: std::slice::ChunksExact<'a, u8>,
}

impl<'a> Blocks<'a> {
    fn new(runs: &'a [Bytes]) -> Self {
        Self {
            runs: runs.iter(),
            current: [].chunks_exact(64),
        }
    }

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if let Some(block) = self.current.next() {
                return Some(block);
            }
            self.current = self.runs.next()?.chunks_exact(64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that are not all alike, from a seed.
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_plain_digest_matches_md5() {
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 4096 + 7] {
            let d = data(len, len as u64);
            let mut state = INIT;
            let whole = len / 64 * 64;
            for block in d[..whole].chunks_exact(64) {
                compress(&mut state, block.try_into().expect("64 bytes"));
            }
            assert_eq!(
                finish(state, &d[whole..], len as u64),
                SoftMd5::checksum(&d),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn streams_hashed_together_match_md5_whatever_the_chunking() {
        // More streams than lanes, of different lengths, fed in chunks that split blocks, from
        // several threads at once.
        let threads: Vec<_> = (0..20u64)
            .map(|i| {
                std::thread::spawn(move || {
                    let len = (i as usize * 977_313) % 5_000_000 + i as usize;
                    let d = Bytes::from(data(len, i));
                    let mut s = Md5Stream::new();
                    let mut at = 0;
                    let mut step = 1 + (i as usize * 7919) % 300_000;
                    while at < d.len() {
                        let end = (at + step).min(d.len());
                        s.update(&d.slice(at..end));
                        at = end;
                        step = step * 3 % 700_001 + 1;
                    }
                    assert_eq!(s.finalize(), SoftMd5::checksum(&d), "stream {i}, {len} bytes");
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a stream failed");
        }
    }

    #[test]
    fn a_stream_dropped_unfinished_leaves_the_others_alone() {
        let d = Bytes::from(data(3 << 20, 1));
        let mut dropped = Md5Stream::new();
        dropped.update(&d);
        let mut kept = Md5Stream::new();
        kept.update(&d);
        drop(dropped);
        assert_eq!(kept.finalize(), SoftMd5::checksum(&d));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_lanes_step_like_the_plain_function() {
        if !avx512::available() {
            return;
        }
        let blocks: Vec<Vec<u8>> = (0..LANES as u64).map(|i| data(64, i + 100)).collect();
        let mut plain: Vec<[u32; 4]> = (0..LANES).map(|i| [i as u32, 1, 2, 3]).collect();
        let mut states: avx512::States = [[0; LANES]; 4];
        let mut msg = [[0u32; LANES]; 16];
        for (lane, (state, block)) in plain.iter().zip(&blocks).enumerate() {
            for (row, v) in states.iter_mut().zip(state) {
                row[lane] = *v;
            }
            for (row, bytes) in msg.iter_mut().zip(block.chunks_exact(4)) {
                row[lane] = u32::from_le_bytes(bytes.try_into().expect("4 bytes"));
            }
        }
        let mask = 0b1011_0111_0110_1101u16;
        // SAFETY: checked above that the CPU has AVX-512.
        unsafe { avx512::step(&mut states, &msg, mask) };
        for (lane, (state, block)) in plain.iter_mut().zip(&blocks).enumerate() {
            let before = *state;
            if mask & (1 << lane) != 0 {
                compress(state, block[..].try_into().expect("64 bytes"));
            }
            let got: [u32; 4] = std::array::from_fn(|w| states[w][lane]);
            assert_eq!(got, *state, "lane {lane}");
            if mask & (1 << lane) == 0 {
                assert_eq!(got, before, "lane {lane} is masked out");
            }
        }
    }
}
