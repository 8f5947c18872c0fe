//! Rows ranked by score for the area metrics (`auc`, `aucpr`), fast enough to run every round.
//!
//! Each row's score becomes a `u32` key whose unsigned order is descending score
//! (`f32::total_cmp` inverted, `-0.0` as `0.0`). Positive and negative rows go to two lists,
//! each sorted by a least significant digit radix sort over only the bits that differ
//! between its keys (about 28 on probabilities: three passes of at most 11 bits), the two
//! sorted at the same time, in buffers kept from one round to the next. One merge of the two
//! lists then yields each distinct score with its positive and negative weight. Several times
//! faster than a comparison sort of the rows, whose cost had exceeded training's (issue 22).
//!
//! Weighted rows carry their weight's bits below the key (a `u64`), so the sort orders the
//! weights of tied rows by their bits: the order, and with it every sum, is the same whatever
//! the thread count or the order of the rows.

/// Digit width of the radix sort: 2048 buckets, whose counters and write positions fit in L1.
const DIGIT_BITS: u32 = 11;

/// Buffers reused by successive rankings of data sets of about the same size.
#[derive(Debug, Default)]
pub struct RankScratch {
    unweighted: Lists<u32>,
    weighted: Lists<u64>,
    /// Distributed evaluation: the keys that cut this data set's ranking into one range per
    /// host, agreed by the hosts in the previous round (see `crate::metric::eval_all_global`).
    pub(crate) splitters: Option<Vec<u32>>,
}

/// The keys of the positive and the negative rows, and scratch space to sort each.
#[derive(Debug, Default)]
struct Lists<W> {
    pos: Vec<W>,
    neg: Vec<W>,
    pos_tmp: Vec<W>,
    neg_tmp: Vec<W>,
}

/// A sortable row: the key of its score in its high 32 bits (see [`key`]), and its weight.
trait Word: Copy + Default + Send + Sync {
    fn bits(self) -> u64;
    fn key(self) -> u32;
    /// The total weight of a run of words, in their order.
    fn weight_of(run: &[Self]) -> f64;
    /// The word's little-endian bytes (`BYTES` of them).
    fn le_bytes(self) -> [u8; 8];
    /// Appends the words' little-endian bytes to `out`, `BYTES` each.
    fn put_all(words: &[Self], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + words.len() * Self::BYTES, 0);
        for (b, &w) in out[start..].chunks_exact_mut(Self::BYTES).zip(words) {
            b.copy_from_slice(&w.le_bytes()[..Self::BYTES]);
        }
    }
    /// Bytes per word on the wire.
    const BYTES: usize;
    /// The word of `BYTES` little-endian bytes.
    fn get(b: &[u8]) -> Self;
}

impl Word for u32 {
    #[inline]
    fn bits(self) -> u64 {
        u64::from(self)
    }
    #[inline]
    fn key(self) -> u32 {
        self
    }
    /// Unweighted: a count (no chain of floating-point adds).
    #[inline]
    fn weight_of(run: &[Self]) -> f64 {
        run.len() as f64
    }
    #[inline]
    fn le_bytes(self) -> [u8; 8] {
        u64::from(self).to_le_bytes()
    }
    const BYTES: usize = 4;
    fn get(b: &[u8]) -> Self {
        u32::from_le_bytes(b.try_into().expect("four bytes"))
    }
}

/// The key above the weight's bits (weights are not negative: the sign bit is dropped).
impl Word for u64 {
    #[inline]
    fn bits(self) -> u64 {
        self
    }
    #[inline]
    fn key(self) -> u32 {
        (self >> 32) as u32
    }
    #[inline]
    fn weight_of(run: &[Self]) -> f64 {
        run.iter()
            .map(|&w| f64::from(f32::from_bits(w as u32 & 0x7fff_ffff)))
            .sum()
    }
    #[inline]
    fn le_bytes(self) -> [u8; 8] {
        self.to_le_bytes()
    }
    const BYTES: usize = 8;
    fn get(b: &[u8]) -> Self {
        u64::from_le_bytes(b.try_into().expect("eight bytes"))
    }
}

/// The sort key of a score: unsigned order is descending `f32::total_cmp` order, with `-0.0`
/// as `0.0` (they compare equal, so they are one group).
#[inline]
fn key(score: f32) -> u32 {
    let b = if score == 0.0 { 0 } else { score.to_bits() };
    let ascending = if b >> 31 == 1 { !b } else { b | 1 << 31 };
    !ascending
}

/// The score a key stands for.
#[inline]
fn score_of(key: u32) -> f32 {
    let asc = !key;
    f32::from_bits(if asc >> 31 == 1 { asc & !(1 << 31) } else { !asc })
}

/// Sorts `a` ascending, using `b` (as long as `a`) as scratch; returns the one of the two
/// that holds the sorted words. Passes run only over the bits that differ between words.
fn radix_sort<'a, W: Word>(a: &'a mut [W], b: &'a mut [W]) -> &'a [W] {
    let Some(&first) = a.first() else { return a };
    let first = first.bits();
    let varying = a.iter().fold(0u64, |acc, &w| acc | (w.bits() ^ first));
    if varying == 0 {
        return a;
    }
    let lo = varying.trailing_zeros();
    let span = 64 - varying.leading_zeros() - lo;
    let passes = span.div_ceil(DIGIT_BITS) as usize;
    let width = span.div_ceil(passes as u32);
    let mask = (1u64 << width) - 1;
    const BUCKETS: usize = 1 << DIGIT_BITS;
    // One read of the data counts the digits of every pass.
    let mut counts = vec![[0u32; BUCKETS]; passes];
    for &w in a.iter() {
        let w = w.bits() >> lo;
        for (p, c) in counts.iter_mut().enumerate() {
            c[((w >> (p as u32 * width)) & mask) as usize] += 1;
        }
    }
    let (mut src, mut dst) = (a, b);
    for (p, c) in counts.iter().enumerate() {
        if c.iter().any(|&x| x as usize == src.len()) {
            continue; // every word has the same digit here
        }
        let mut at = [0usize; BUCKETS];
        let mut sum = 0;
        for (o, &x) in at.iter_mut().zip(c) {
            *o = sum;
            sum += x as usize;
        }
        let shift = lo + p as u32 * width;
        for &w in src.iter() {
            let d = ((w.bits() >> shift) & mask) as usize;
            dst[at[d]] = w;
            at[d] += 1;
        }
        std::mem::swap(&mut src, &mut dst);
    }
    src
}

/// Rows below which the ranking is not split across threads.
const MIN_SPLIT: usize = 1 << 15;

/// What came before a part of the ranking: the positive and negative weight of the rows
/// with higher scores, and whether there are any such rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Before {
    /// Positive weight of the rows ranked before the part.
    pub pos: f64,
    /// Negative weight of the rows ranked before the part.
    pub neg: f64,
    /// Whether any row is ranked before the part.
    pub any: bool,
}

impl Before {
    /// Nothing before: the start of the ranking.
    pub const NONE: Before = Before {
        pos: 0.0,
        neg: 0.0,
        any: false,
    };
}

/// Folds the groups of tied rows (see [`for_each_group`]) in parts of consecutive score
/// ranges, the parts at the same time: `start(before)` begins a part, `add(acc, positive
/// weight, negative weight)` takes its groups by descending score. Returns the parts'
/// accumulators in order (one or two; the split depends only on the data). Unweighted, the
/// totals in [`Before`] are exact counts; weighted, they are sums in another order than a
/// single pass would add them (the same value to within rounding).
pub fn fold_groups<A: Send>(
    scores: &[f32],
    labels: &[f32],
    weights: Option<&[f32]>,
    pos: impl Fn(f32) -> bool + Sync + Copy,
    scratch: &mut RankScratch,
    start: impl Fn(Before) -> A + Sync,
    add: impl Fn(&mut A, f64, f64) + Sync,
) -> Vec<A> {
    match weights {
        None => {
            let (p, q) = rank(&mut scratch.unweighted, labels, pos, |i| key(scores[i]));
            fold(p, q, Before::NONE, start, add)
        }
        Some(w) => {
            let (p, q) = rank(&mut scratch.weighted, labels, pos, |i| weighted_word(scores[i], w[i]));
            fold(p, q, Before::NONE, start, add)
        }
    }
}

/// [`fold_groups`] of sorted positive (`p`) and negative (`q`) words that come after the rows
/// summed up in `first`: split at the median key of the longer list (so the split depends
/// only on the data), the two parts at the same time.
fn fold<W: Word, A: Send>(
    p: &[W],
    q: &[W],
    first: Before,
    start: impl Fn(Before) -> A + Sync,
    add: impl Fn(&mut A, f64, f64) + Sync,
) -> Vec<A> {
    let part = |p: &[W], q: &[W], before: Before| {
        let mut acc = start(before);
        merge_groups(p, q, |_, wp, wq| add(&mut acc, wp, wq));
        acc
    };
    // Split at the median key of the longer list: no group straddles the split.
    let longer = if p.len() >= q.len() { p } else { q };
    if longer.len() + p.len().min(q.len()) < MIN_SPLIT {
        return vec![part(p, q, first)];
    }
    let pivot = longer[longer.len() / 2].key();
    let (ps, qs) = (
        p.partition_point(|x| x.key() < pivot),
        q.partition_point(|x| x.key() < pivot),
    );
    let before = Before {
        pos: first.pos + W::weight_of(&p[..ps]),
        neg: first.neg + W::weight_of(&q[..qs]),
        any: first.any || ps + qs > 0,
    };
    let (a, b) = rayon::join(|| part(&p[..ps], &q[..qs], first), || part(&p[ps..], &q[qs..], before));
    vec![a, b]
}

/// One host's rows sorted for distributed evaluation (see `crate::metric`'s `ranked_area`):
/// the positive and the negative words, each list sorted, in the host's [`RankScratch`].
pub enum SortedRows<'s> {
    /// Keys only.
    Plain(&'s [u32], &'s [u32]),
    /// Keys above weights.
    Weighted(&'s [u64], &'s [u64]),
}

/// Sorts one host's rows `(scores[i], pos(labels[i]), weights[i])` into `scratch`.
pub fn sort_rows<'s>(
    scores: &[f32],
    labels: &[f32],
    weights: Option<&[f32]>,
    pos: impl Fn(f32) -> bool + Sync + Copy,
    scratch: &'s mut RankScratch,
) -> SortedRows<'s> {
    match weights {
        None => {
            let (p, q) = rank(&mut scratch.unweighted, labels, pos, |i| key(scores[i]));
            SortedRows::Plain(p, q)
        }
        Some(w) => {
            let (p, q) = rank(&mut scratch.weighted, labels, pos, |i| weighted_word(scores[i], w[i]));
            SortedRows::Weighted(p, q)
        }
    }
}

impl SortedRows<'_> {
    /// The keys at 1/n, 2/n, ... (n - 1)/n of the rows, positive and negative together (where
    /// the rows would be cut into n ranges of about equal size: the work of each range is
    /// its rows); None without rows.
    pub fn quantile_keys(&self, n: usize) -> Option<Vec<u32>> {
        fn keys<W: Word>(p: &[W], q: &[W], n: usize) -> Option<Vec<u32>> {
            let total = p.len() + q.len();
            if total == 0 {
                return None;
            }
            // Rows whose key is at most `k`, in both lists.
            let at_most = |k: u32| p.partition_point(|x| x.key() <= k) + q.partition_point(|x| x.key() <= k);
            Some(
                (1..n)
                    .map(|i| {
                        // The key of the row at position i·total/n of the union: the smallest
                        // key with more rows at or below it than that position.
                        let at = i * total / n;
                        let (mut lo, mut hi) = (0u32, u32::MAX);
                        while lo < hi {
                            let mid = lo + (hi - lo) / 2;
                            if at_most(mid) > at {
                                hi = mid;
                            } else {
                                lo = mid + 1;
                            }
                        }
                        lo
                    })
                    .collect(),
            )
        }
        match self {
            SortedRows::Plain(p, q) => keys(p, q, n),
            SortedRows::Weighted(p, q) => keys(p, q, n),
        }
    }

    /// The rows cut at `splitters` (ascending keys) into `splitters.len() + 1` ranges of
    /// keys (`[.., s0)`, `[s0, s1)`, ..., `[s_last, ..]`: no group of tied rows straddles two),
    /// each as bytes [`merge_ranked`] reads: a flag (1 if weighted), the number of positive
    /// words (`u64`), then the positive and the negative words, little-endian (4 bytes each,
    /// 8 weighted).
    pub fn range_bytes(&self, splitters: &[u32]) -> Vec<Vec<u8>> {
        fn ranges<W: Word>(weighted: bool, p: &[W], q: &[W], splitters: &[u32]) -> Vec<Vec<u8>> {
            let cut = |list: &[W]| -> Vec<usize> {
                let mut at = vec![0];
                at.extend(splitters.iter().map(|&s| list.partition_point(|x| x.key() < s)));
                at.push(list.len());
                at
            };
            let (cp, cq) = (cut(p), cut(q));
            (0..=splitters.len())
                .map(|r| {
                    let (p, q) = (&p[cp[r]..cp[r + 1].max(cp[r])], &q[cq[r]..cq[r + 1].max(cq[r])]);
                    let mut out = Vec::with_capacity(9 + (p.len() + q.len()) * W::BYTES);
                    out.push(u8::from(weighted));
                    out.extend_from_slice(&(p.len() as u64).to_le_bytes());
                    W::put_all(p, &mut out);
                    W::put_all(q, &mut out);
                    out
                })
                .collect()
        }
        match self {
            SortedRows::Plain(p, q) => ranges(false, p, q, splitters),
            SortedRows::Weighted(p, q) => ranges(true, p, q, splitters),
        }
    }
}

/// Sorted positive and negative words of rows gathered from several hosts ([`merge_ranked`]).
#[derive(Debug)]
pub enum Merged {
    /// Keys only.
    Plain(Vec<u32>, Vec<u32>),
    /// Keys above weights.
    Weighted(Vec<u64>, Vec<u64>),
}

/// The rows of `parts` ([`SortedRows::range_bytes`], one per host) as one host would have
/// sorted them: merging sorted lists gives exactly the sorted lists of the union (equal words
/// are indistinguishable). O(rows) with few hosts. Unweighted parts join weighted ones with
/// weight 1. Fails on bytes that are not such a part.
pub fn merge_ranked<B: AsRef<[u8]>>(parts: &[B]) -> Result<Merged, String> {
    if parts.iter().any(|b| b.as_ref().first() == Some(&1)) {
        let lists = parts
            .iter()
            .map(|b| decode_part::<u64>(b.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let (p, q) = merge_parts(lists);
        Ok(Merged::Weighted(p, q))
    } else {
        let lists = parts
            .iter()
            .map(|b| decode_part::<u32>(b.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let (p, q) = merge_parts(lists);
        Ok(Merged::Plain(p, q))
    }
}

impl Merged {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Merged::Plain(p, q) => p.len() + q.len(),
            Merged::Weighted(p, q) => p.len() + q.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The positive and negative weight of the rows (unweighted: exact counts).
    pub fn totals(&self) -> (f64, f64) {
        match self {
            Merged::Plain(p, q) => (u32::weight_of(p), u32::weight_of(q)),
            Merged::Weighted(p, q) => (u64::weight_of(p), u64::weight_of(q)),
        }
    }

    /// [`fold_groups`] of these rows, which come after the rows summed up in `before`.
    pub fn fold<A: Send>(
        &self,
        before: Before,
        start: impl Fn(Before) -> A + Sync,
        add: impl Fn(&mut A, f64, f64) + Sync,
    ) -> Vec<A> {
        match self {
            Merged::Plain(p, q) => fold(p, q, before, start, add),
            Merged::Weighted(p, q) => fold(p, q, before, start, add),
        }
    }
}

/// The words wanted by a flag's width: an unweighted word (a bare key) as a weighted one is
/// the key above the bits of weight 1.
trait FromPart: Word {
    fn from_u32(key: u32) -> Self;
}

impl FromPart for u32 {
    fn from_u32(key: u32) -> Self {
        key
    }
}

impl FromPart for u64 {
    fn from_u32(key: u32) -> Self {
        u64::from(key) << 32 | u64::from(1.0f32.to_bits())
    }
}

/// A part's (positive, negative) words, as `W`.
fn decode_part<W: FromPart>(b: &[u8]) -> Result<(Vec<W>, Vec<W>), String> {
    let bad = || format!("a ranked part of {} bytes is malformed", b.len());
    let (&flag, rest) = b.split_first().ok_or_else(bad)?;
    let n_pos = rest.get(..8).ok_or_else(bad)?;
    let n_pos = u64::from_le_bytes(n_pos.try_into().expect("eight bytes")) as usize;
    let words = &rest[8..];
    let size = if flag == 1 { 8 } else { 4 };
    if words.len() % size != 0 || n_pos > words.len() / size {
        return Err(bad());
    }
    let list = |b: &[u8]| -> Vec<W> {
        if flag == 1 {
            b.chunks_exact(8).map(W::get).collect()
        } else {
            b.chunks_exact(4).map(|c| W::from_u32(u32::get(c))).collect()
        }
    };
    let (p, q) = words.split_at(n_pos * size);
    Ok((list(p), list(q)))
}

/// The positive and the negative lists of every part, each merged into one sorted list.
fn merge_parts<W: Word + Ord>(lists: Vec<(Vec<W>, Vec<W>)>) -> (Vec<W>, Vec<W>) {
    let (ps, qs): (Vec<Vec<W>>, Vec<Vec<W>>) = lists.into_iter().unzip();
    rayon::join(|| merge_all(ps), || merge_all(qs))
}

/// Sorted lists merged pairwise into one sorted list.
fn merge_all<W: Copy + Ord>(mut lists: Vec<Vec<W>>) -> Vec<W> {
    while lists.len() > 1 {
        let mut next = Vec::with_capacity(lists.len().div_ceil(2));
        let mut it = lists.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => merge_two(&a, &b),
                None => a,
            });
        }
        lists = next;
    }
    lists.pop().unwrap_or_default()
}

/// Two sorted lists as one.
fn merge_two<W: Copy + Ord>(a: &[W], b: &[W]) -> Vec<W> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        // Branch-free choice: random scores make the comparison unpredictable.
        let take_b = b[j] < a[i];
        out.push(if take_b { b[j] } else { a[i] });
        j += usize::from(take_b);
        i += usize::from(!take_b);
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Calls `f(score, positive weight, negative weight)` for each distinct score, descending
/// (rows with equal scores are one group), of the rows `(scores[i], pos(labels[i]),
/// weights[i])`. Within a group, weights add up in the order of their bits.
pub fn for_each_group(
    scores: &[f32],
    labels: &[f32],
    weights: Option<&[f32]>,
    pos: impl Fn(f32) -> bool + Sync + Copy,
    scratch: &mut RankScratch,
    f: impl FnMut(f32, f64, f64),
) {
    match weights {
        None => {
            let (p, q) = rank(&mut scratch.unweighted, labels, pos, |i| key(scores[i]));
            merge_groups(p, q, f);
        }
        Some(w) => {
            let (p, q) = rank(&mut scratch.weighted, labels, pos, |i| weighted_word(scores[i], w[i]));
            merge_groups(p, q, f);
        }
    }
}

/// A weighted row's word: the score's key above the weight's bits.
#[inline]
fn weighted_word(score: f32, weight: f32) -> u64 {
    u64::from(key(score)) << 32 | u64::from(weight.to_bits() & 0x7fff_ffff)
}

/// The words `word(i)` of the positive and of the negative rows, each list sorted.
fn rank<'a, W: Word>(
    lists: &'a mut Lists<W>,
    labels: &[f32],
    pos: impl Fn(f32) -> bool + Sync + Copy,
    word: impl Fn(usize) -> W + Sync,
) -> (&'a [W], &'a [W]) {
    let n = labels.len();
    let Lists {
        pos: p,
        neg: q,
        pos_tmp,
        neg_tmp,
    } = lists;
    // Two halves of the rows are split at the same time, each into its own part of the two
    // lists (the first half's positives first).
    let half = if n >= MIN_SPLIT { n / 2 } else { n };
    let (ya, yb) = labels.split_at(half);
    let pos_a = ya.iter().filter(|&&y| pos(y)).count();
    let np = pos_a + yb.iter().filter(|&&y| pos(y)).count();
    for (list, len) in [
        (&mut *p, np),
        (&mut *q, n - np),
        (&mut *pos_tmp, np),
        (&mut *neg_tmp, n - np),
    ] {
        list.clear();
        list.resize(len, W::default());
    }
    let (pa, pb) = p.split_at_mut(pos_a);
    let (qa, qb) = q.split_at_mut(half - pos_a);
    rayon::join(
        || split(ya, 0, pos, &word, pa, qa),
        || split(yb, half, pos, &word, pb, qb),
    );
    rayon::join(|| radix_sort(p, pos_tmp), || radix_sort(q, neg_tmp))
}

/// Writes the words of rows `first..first + labels.len()` to `p` (positives, in row order)
/// and `q` (negatives), which have exactly the room for them.
fn split<W: Word>(
    labels: &[f32],
    first: usize,
    pos: impl Fn(f32) -> bool + Sync + Copy,
    word: impl Fn(usize) -> W,
    p: &mut [W],
    q: &mut [W],
) {
    // Each word goes to both lists and is kept by one (no branch on the label): the other's
    // slot is overwritten by its next word, or is past its end once it is full.
    let (mut np, mut nq) = (0, 0);
    for (i, &y) in labels.iter().enumerate() {
        let w = word(first + i);
        let is_pos = pos(y);
        if let Some(x) = p.get_mut(np) {
            *x = w;
        }
        if let Some(x) = q.get_mut(nq) {
            *x = w;
        }
        np += usize::from(is_pos);
        nq += usize::from(!is_pos);
    }
}

/// Merges sorted positive and negative words: `f(score, positive weight, negative weight)`
/// for each distinct key, in order.
fn merge_groups<W: Word>(p: &[W], q: &[W], mut f: impl FnMut(f32, f64, f64)) {
    let (mut i, mut j) = (0, 0);
    loop {
        let k = match (p.get(i), q.get(j)) {
            (Some(a), Some(b)) => a.key().min(b.key()),
            (Some(a), None) => a.key(),
            (None, Some(b)) => b.key(),
            (None, None) => break,
        };
        let run_p = p[i..].iter().take_while(|x| x.key() == k).count();
        let run_q = q[j..].iter().take_while(|x| x.key() == k).count();
        f(
            score_of(k),
            W::weight_of(&p[i..i + run_p]),
            W::weight_of(&q[j..j + run_q]),
        );
        i += run_p;
        j += run_q;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The groups by a comparison sort of the rows: the plain definition.
    fn groups_by_comparison(s: &[f32], y: &[f32], w: Option<&[f32]>) -> Vec<(f32, f64, f64)> {
        let mut idx: Vec<usize> = (0..s.len()).collect();
        idx.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
        let mut out: Vec<(f32, f64, f64)> = Vec::new();
        for i in idx {
            let wi = f64::from(w.map_or(1.0, |w| w[i]));
            let (p, q) = if y[i] > 0.5 { (wi, 0.0) } else { (0.0, wi) };
            match out.last_mut() {
                Some(g) if g.0 == s[i] => {
                    g.1 += p;
                    g.2 += q;
                }
                _ => out.push((s[i], p, q)),
            }
        }
        out
    }

    fn groups(s: &[f32], y: &[f32], w: Option<&[f32]>, scratch: &mut RankScratch) -> Vec<(f32, f64, f64)> {
        let mut out = Vec::new();
        for_each_group(s, y, w, |t| t > 0.5, scratch, |s, p, q| out.push((s, p, q)));
        out
    }

    fn same(a: &[(f32, f64, f64)], b: &[(f32, f64, f64)]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.0 == y.0 && (x.1 - y.1).abs() <= 1e-9 * x.1.abs() && (x.2 - y.2).abs() <= 1e-9 * x.2.abs()
            })
    }

    #[test]
    fn radix_sort_sorts_words_of_any_bits() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut a: Vec<u64> = (0..5000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Runs of words that differ only in a few bits, and words of any bits.
                if i % 3 == 0 {
                    x
                } else {
                    0xffff_0000_0000_0000 | (x & 0x3ff) << 20
                }
            })
            .collect();
        let mut want = a.clone();
        want.sort_unstable();
        let mut b = vec![0; a.len()];
        assert_eq!(radix_sort(&mut a, &mut b), &want[..]);
        let mut same = vec![7u64; 10];
        assert_eq!(radix_sort(&mut same.clone(), &mut same), &[7u64; 10][..]);
    }

    #[test]
    fn signed_zeros_tie_and_negative_scores_rank_below() {
        let s = [0.0, -0.0, -1.0, 2.0, f32::NEG_INFINITY, f32::INFINITY];
        let y = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let g = groups(&s, &y, None, &mut RankScratch::default());
        let want = vec![
            (f32::INFINITY, 1.0, 0.0),
            (2.0, 0.0, 1.0),
            (0.0, 1.0, 1.0),
            (-1.0, 1.0, 0.0),
            (f32::NEG_INFINITY, 0.0, 1.0),
        ];
        assert_eq!(g, want);
    }

    /// Real sizes, on three threads; the scratch reused across sizes.
    #[test]
    fn large_inputs_match_a_comparison_sort() {
        let mut scratch = RankScratch::default();
        let mut x = 12345u64;
        for n in [300_000usize, 70_000, 1] {
            let mut next = || {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) as u32
            };
            // Probabilities with many ties (a few thousand distinct values) and weights.
            let s: Vec<f32> = (0..n).map(|_| (next() % 4000) as f32 / 4000.0).collect();
            let y: Vec<f32> = (0..n).map(|_| (next() % 2) as f32).collect();
            let w: Vec<f32> = (0..n).map(|_| (next() % 1000) as f32 / 100.0).collect();
            let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
            pool.install(|| {
                assert!(same(
                    &groups(&s, &y, None, &mut scratch),
                    &groups_by_comparison(&s, &y, None)
                ));
                assert!(same(
                    &groups(&s, &y, Some(&w), &mut scratch),
                    &groups_by_comparison(&s, &y, Some(&w))
                ));
            });
        }
    }

    /// The groups of rows cut into host parts, folded as the hosts fold them: each host sorts
    /// its part and cuts it into ranges at splitters (the mean of the hosts' quantile keys);
    /// range r of every host is merged (host r's job), its totals summed up before the next
    /// range. Returns each range's (before, groups).
    fn fold_as_hosts(s: &[f32], y: &[f32], w: Option<&[f32]>, cuts: &[usize]) -> Vec<(Before, Vec<(f64, f64)>)> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(s.len());
        let n = bounds.len() - 1;
        let mut scratches: Vec<RankScratch> = (0..n).map(|_| RankScratch::default()).collect();
        let sorted: Vec<SortedRows<'_>> = bounds
            .windows(2)
            .zip(&mut scratches)
            .map(|(r, scratch)| {
                let (a, b) = (r[0], r[1]);
                sort_rows(&s[a..b], &y[a..b], w.map(|w| &w[a..b]), |t| t > 0.5, scratch)
            })
            .collect();
        let quantiles: Vec<Vec<u32>> = sorted.iter().filter_map(|x| x.quantile_keys(n)).collect();
        let splitters: Vec<u32> = (0..n - 1)
            .map(|i| (quantiles.iter().map(|q| u64::from(q[i])).sum::<u64>() / quantiles.len() as u64) as u32)
            .collect();
        let sent: Vec<Vec<Vec<u8>>> = sorted.iter().map(|x| x.range_bytes(&splitters)).collect();
        let mut before = Before::NONE;
        let mut out = Vec::new();
        for r in 0..n {
            let parts: Vec<Vec<u8>> = sent.iter().map(|host| host[r].clone()).collect();
            let merged = merge_ranked(&parts).unwrap();
            let folded = merged.fold(
                before,
                |b| (b, Vec::new()),
                |a: &mut (Before, Vec<(f64, f64)>), p, q| a.1.push((p, q)),
            );
            out.extend(folded);
            let (p, q) = merged.totals();
            before = Before {
                pos: before.pos + p,
                neg: before.neg + q,
                any: before.any || p + q > 0.0 || !parts.iter().all(|b| b.len() == 9),
            };
        }
        out
    }

    /// The hosts' groups are one host's, in order, and each range starts after the weight
    /// of the groups before it.
    fn check_hosts(s: &[f32], y: &[f32], w: Option<&[f32]>, cuts: &[usize]) {
        let one = groups(s, y, w, &mut RankScratch::default());
        let hosts = fold_as_hosts(s, y, w, cuts);
        let flat: Vec<(f64, f64)> = hosts.iter().flat_map(|h| h.1.clone()).collect();
        let want: Vec<(f64, f64)> = one.iter().map(|g| (g.1, g.2)).collect();
        assert_eq!(flat, want);
        let mut at = 0;
        for (before, groups) in &hosts {
            let (p, q) = want[..at].iter().fold((0.0, 0.0), |a, g| (a.0 + g.0, a.1 + g.1));
            assert!((before.pos - p).abs() <= 1e-9 * p && (before.neg - q).abs() <= 1e-9 * q);
            assert_eq!(before.any, at > 0);
            at += groups.len();
        }
    }

    #[test]
    fn hosts_ranking_their_parts_fold_one_hosts_groups() {
        let mut x = 99u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u32
        };
        // Large enough for each range's parallel split; scores with ties across parts; weights.
        let n = 90_000;
        let s: Vec<f32> = (0..n).map(|_| (next() % 5000) as f32 / 5000.0).collect();
        let y: Vec<f32> = (0..n).map(|_| (next() % 2) as f32).collect();
        let w: Vec<f32> = (0..n).map(|_| (next() % 1000) as f32 / 64.0).collect();
        for cuts in [&[][..], &[40_000], &[1, 2, 50_000], &[30_000, 30_000, 89_999], &[0, 0]] {
            check_hosts(&s, &y, None, cuts);
            check_hosts(&s, &y, Some(&w), cuts);
        }
        // Few rows, all tied: every range but one empty.
        check_hosts(&[0.5; 7], &[1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0], None, &[3, 5]);
        assert!(merge_ranked(&[vec![0, 1]]).is_err());
        assert!(merge_ranked(&[vec![0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]]).is_err());
    }

    #[test]
    fn unweighted_parts_join_weighted_ones_with_weight_one() {
        let s = [0.5f32, 0.25, 0.5, 0.75, 0.25];
        let y = [1.0f32, 0.0, 0.0, 1.0, 1.0];
        let ones = [1.0f32; 5];
        let (mut a, mut b) = (RankScratch::default(), RankScratch::default());
        let parts = vec![
            sort_rows(&s[..2], &y[..2], None, |t| t > 0.5, &mut a)
                .range_bytes(&[])
                .remove(0),
            sort_rows(&s[2..], &y[2..], Some(&ones[2..]), |t| t > 0.5, &mut b)
                .range_bytes(&[])
                .remove(0),
        ];
        let merged = merge_ranked(&parts).unwrap();
        assert!(matches!(merged, Merged::Weighted(..)));
        let got = merged.fold(
            Before::NONE,
            |_| Vec::new(),
            |a: &mut Vec<(f64, f64)>, p, q| a.push((p, q)),
        );
        assert_eq!(got, vec![vec![(1.0, 0.0), (1.0, 1.0), (1.0, 1.0)]]);
    }

    proptest! {
        #[test]
        fn groups_match_a_comparison_sort(
            v in proptest::collection::vec((-20i8..20, 0u8..2, 0u16..500), 1..400),
            scale in prop_oneof![Just(1.0f32), Just(0.37), Just(1e-30), Just(3e30)],
            weighted in any::<bool>(),
        ) {
            let s: Vec<f32> = v.iter().map(|x| f32::from(x.0) * scale).collect();
            let y: Vec<f32> = v.iter().map(|x| f32::from(x.1)).collect();
            let w: Vec<f32> = v.iter().map(|x| f32::from(x.2) / 7.0).collect();
            let w = weighted.then_some(&w[..]);
            let got = groups(&s, &y, w, &mut RankScratch::default());
            prop_assert!(same(&got, &groups_by_comparison(&s, &y, w)), "{got:?}");
        }
    }
}
