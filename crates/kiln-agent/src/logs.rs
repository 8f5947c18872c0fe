//! The algorithm's output on its way to the job's log stream: bytes are cut into lines
//! ([`LineSplitter`]), timestamped, echoed to the agent's stdout and queued in a bounded buffer
//! ([`LogSink`]) that a shipper drains in batches (`POST .../logs`). While the control plane is
//! away the buffer keeps filling; past its limit the oldest lines give way to one marker line, and
//! every line still buffered is sent once the control plane answers again.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// The longest line sent as one event; longer lines are cut into pieces of this size.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Cuts a byte stream into lines: split on `\n`, a trailing `\r` dropped, invalid UTF-8 replaced,
/// lines longer than [`MAX_LINE_BYTES`] cut (on a character boundary where there is one).
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new() -> LineSplitter {
        LineSplitter::default()
    }

    /// Feeds bytes; returns the lines they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(nl) = bytes.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&bytes[..nl]);
            bytes = &bytes[nl + 1..];
            self.cut_long(&mut out);
            let mut line = std::mem::take(&mut self.pending);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            out.push(String::from_utf8_lossy(&line).into_owned());
        }
        self.pending.extend_from_slice(bytes);
        self.cut_long(&mut out);
        out
    }

    /// The unterminated last line, if any (at end of stream).
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let mut line = std::mem::take(&mut self.pending);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    /// Emits full-size pieces while the pending line is longer than the limit.
    fn cut_long(&mut self, out: &mut Vec<String>) {
        while self.pending.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            // Back up to the start of a UTF-8 sequence (at most 3 continuation bytes).
            while cut > MAX_LINE_BYTES - 3 && (self.pending[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            if (self.pending[cut] & 0xC0) == 0x80 {
                cut = MAX_LINE_BYTES;
            }
            let rest = self.pending.split_off(cut);
            let piece = std::mem::replace(&mut self.pending, rest);
            out.push(String::from_utf8_lossy(&piece).into_owned());
        }
    }
}

/// Bytes a buffered line is charged (its text plus bookkeeping).
fn cost(line: &str) -> usize {
    line.len() + 32
}

#[derive(Debug, Default)]
struct Buffer {
    lines: VecDeque<(i64, String)>,
    bytes: usize,
    /// Lines dropped since the last batch was taken, and the time of the first of them.
    dropped: u64,
    dropped_since: i64,
    closed: bool,
}

/// Where lines go: a bounded queue shared by the output readers and the shipper.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<(Mutex<Buffer>, Notify)>,
    max_bytes: usize,
    echo: bool,
}

impl LogSink {
    /// A sink that holds at most about `max_bytes` of lines; `echo` also writes each line to the
    /// agent's stdout.
    pub fn new(max_bytes: usize, echo: bool) -> LogSink {
        LogSink {
            inner: Arc::new((Mutex::new(Buffer::default()), Notify::new())),
            max_bytes,
            echo,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A panic while holding the lock cannot leave the queue inconsistent (every mutation is a
        // single push/pop), so a poisoned lock is still usable.
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one line with its timestamp.
    pub fn push(&self, ts: i64, line: String) {
        if self.echo {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
        }
        {
            let mut b = self.lock();
            b.bytes += cost(&line);
            b.lines.push_back((ts, line));
            while b.bytes > self.max_bytes && b.lines.len() > 1 {
                if let Some((t, old)) = b.lines.pop_front() {
                    b.bytes -= cost(&old);
                    if b.dropped == 0 {
                        b.dropped_since = t;
                    }
                    b.dropped += 1;
                }
            }
        }
        self.inner.1.notify_one();
    }

    /// Queues a line stamped now.
    pub fn line(&self, line: impl Into<String>) {
        self.push(now_ms(), line.into());
    }

    /// No more lines will come; the shipper ends once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.1.notify_one();
    }

    /// Whether [`LogSink::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Lines waiting to be taken.
    pub fn queued(&self) -> usize {
        self.lock().lines.len()
    }

    /// Takes up to `max_lines` lines and about `max_bytes` bytes (at least one line), in order,
    /// with a marker line first if lines had to be dropped. `None` when empty.
    pub fn take(&self, max_lines: usize, max_bytes: usize) -> Option<Vec<(i64, String)>> {
        let mut b = self.lock();
        let mut batch = Vec::new();
        if b.dropped > 0 {
            batch.push((
                b.dropped_since,
                format!(
                    "[kiln agent] {} log lines were dropped here: the control plane was unreachable and the agent's log buffer ({} MB) was full",
                    b.dropped,
                    self.max_bytes / (1024 * 1024)
                ),
            ));
            b.dropped = 0;
        }
        let mut bytes = 0;
        while batch.len() < max_lines {
            let Some(front) = b.lines.front() else { break };
            if !batch.is_empty() && bytes + front.1.len() > max_bytes {
                break;
            }
            bytes += front.1.len();
            if let Some(item) = b.lines.pop_front() {
                b.bytes -= cost(&item.1);
                batch.push(item);
            }
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// Whether the sink is closed and empty.
    pub fn finished(&self) -> bool {
        let b = self.lock();
        b.closed && b.lines.is_empty() && b.dropped == 0
    }

    /// Waits until a line arrives, the sink is closed, or `timeout` passes.
    pub async fn wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.1.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines() {
        let mut s = LineSplitter::new();
        assert_eq!(s.push(b"a\r\nb\nc"), vec!["a", "b"]);
        assert_eq!(s.push(b"d\n\n"), vec!["cd", ""]);
        assert_eq!(s.push(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("tail"));
        assert_eq!(s.finish(), None);
        // A `\r` in the middle of a line stays (progress bars); only the one before `\n` goes.
        assert_eq!(s.push(b"x\ry\r\n"), vec!["x\ry"]);
        assert_eq!(s.push(b"no newline\r"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("no newline"));
    }

    #[test]
    fn invalid_utf8_is_kept_lossily() {
        let mut s = LineSplitter::new();
        assert_eq!(s.push(b"ok \xff\xfe end\n"), vec!["ok \u{fffd}\u{fffd} end"]);
        // A character split across reads is reassembled.
        assert_eq!(s.push(b"\xc3"), Vec::<String>::new());
        assert_eq!(s.push(b"\xa9\n"), vec!["é"]);
    }

    #[test]
    fn huge_lines_are_cut() {
        let mut s = LineSplitter::new();
        let big = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let mut lines = s.push(&big);
        lines.extend(s.push(b"\n"));
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(lines[1].len(), MAX_LINE_BYTES);
        assert_eq!(lines[2].len(), 10);
        // A multi-byte character straddling the cut moves whole into the next piece.
        let mut text = vec![b'a'; MAX_LINE_BYTES - 1];
        text.extend_from_slice("é".as_bytes());
        text.push(b'\n');
        let lines = s.push(&text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES - 1);
        assert_eq!(lines[1], "é");
    }

    #[test]
    fn buffer_is_bounded_and_marks_drops() {
        let sink = LogSink::new(10 * cost("line-00"), false);
        for i in 0..25 {
            sink.push(i, format!("line-{i:02}"));
        }
        assert_eq!(sink.queued(), 10);
        let batch = sink.take(1000, 1 << 20).unwrap_or_default();
        assert_eq!(batch.len(), 11);
        assert!(batch[0].1.contains("15 log lines were dropped"), "{}", batch[0].1);
        assert_eq!(batch[0].0, 0);
        assert_eq!(batch[1].1, "line-15");
        assert_eq!(batch[10].1, "line-24");
        assert!(sink.take(1000, 1 << 20).is_none());
        sink.close();
        assert!(sink.finished());
    }

    #[test]
    fn batches_respect_limits_in_order() {
        let sink = LogSink::new(1 << 30, false);
        for i in 0..2500 {
            sink.push(i, format!("{i}"));
        }
        let a = sink.take(1000, 1 << 20).unwrap_or_default();
        let b = sink.take(1000, 1 << 20).unwrap_or_default();
        let c = sink.take(1000, 1 << 20).unwrap_or_default();
        assert_eq!((a.len(), b.len(), c.len()), (1000, 1000, 500));
        assert_eq!(a[0].1, "0");
        assert_eq!(b[0].1, "1000");
        assert_eq!(c[499].1, "2499");
        sink.push(0, "x".repeat(100));
        sink.push(1, "y".repeat(100));
        assert_eq!(sink.take(1000, 150).map(|b| b.len()), Some(1));
        assert_eq!(sink.take(1000, 50).map(|b| b.len()), Some(1), "at least one line");
    }
}
