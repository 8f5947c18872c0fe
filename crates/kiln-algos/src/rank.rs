//! Rows ranked by score for the area metrics (`auc`, `aucpr`), fast enough to run every round.
//!
//! Each row's score becomes a `u32` key whose unsigned order is descending score
//! (`f32::total_cmp` inverted, `-0.0` as `0.0`). Positive and negative rows go to two lists,
//! each sorted by a least significant digit radix sort over only the bits that differ
//! between its keys (about 28 on probabilities: three passes of at most 11 bits), the two
//! sorted at the same time, in buffers kept from one round to the next. One merge of the two
//! lists then yields each distinct score with its positive and negative weight (unweighted
//! ROC areas skip the groups: a merge that does not branch on the data counts the pairs, an
//! exact integer, [`Ranked::plain_roc_area`]). Several times
//! faster than a comparison sort of the rows, whose cost had exceeded training's (issue 22).
//! Distributed, each host cuts its rows into one range of keys per host without sorting them
//! ([`RankScratch::cut`]) and sorts the range it is sent ([`RankScratch::sort_range`]).
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
    /// Whether the range kept by [`RankScratch::cut`] is in `weighted` (else in `unweighted`).
    cut_weighted: bool,
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
    rank_rows(scores, labels, weights, pos, scratch).fold(Before::NONE, start, add)
}

/// The rows `(scores[i], pos(labels[i]), weights[i])` ranked in `scratch`: the positive and
/// the negative words, each list sorted.
pub fn rank_rows<'s>(
    scores: &[f32],
    labels: &[f32],
    weights: Option<&[f32]>,
    pos: impl Fn(f32) -> bool + Sync + Copy,
    scratch: &'s mut RankScratch,
) -> Ranked<'s> {
    match weights {
        None => {
            let (p, q) = rank(&mut scratch.unweighted, labels, pos, |i| key(scores[i]));
            Ranked::Plain(p, q)
        }
        Some(w) => {
            let (p, q) = rank(&mut scratch.weighted, labels, pos, |i| weighted_word(scores[i], w[i]));
            Ranked::Weighted(p, q)
        }
    }
}

/// Twice the ROC area (not divided by the positive and negative totals) of unweighted rows:
/// over the negative rows, the positive rows ranked above each (a smaller key) counted twice
/// and those tied with it once. An exact integer, whatever the order of the rows or the split
/// of the work, found by one merge of the sorted lists `p` and `q` that does not branch on
/// the data (a fold over groups mispredicts a branch or two per group: several times slower).
fn roc_pairs2(p: &[u32], q: &[u32]) -> u64 {
    let Some(&first) = p.first() else { return 0 };
    let (mut i, mut j, mut sum) = (0usize, 0usize, 0u64);
    // The key of the last positive word taken and where its run of equal keys began; before
    // any, a key unequal to the first (a negative word equal to it then finds `run` = `i` = 0).
    let (mut last, mut run) = (first ^ 1, 0usize);
    while i < p.len() && j < q.len() {
        let (a, b) = (p[i], q[j]);
        // Ties go positive first: a negative word is taken after every positive word up to
        // its key (`i` of them), of which those below its key are all but its key's run.
        let take_pos = a <= b;
        let below = if last == b { run } else { i };
        let neg_adds = (i + below) as u64;
        let run_if_pos = if last == a { run } else { i };
        sum += if take_pos { 0 } else { neg_adds };
        run = if take_pos { run_if_pos } else { run };
        last = if take_pos { a } else { last };
        i += usize::from(take_pos);
        j += usize::from(!take_pos);
    }
    // Negative words after the last positive one (positive words after the last negative
    // one add nothing).
    for &b in &q[j..] {
        let below = if last == b { run } else { i };
        sum += (i + below) as u64;
    }
    sum
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

/// A host's range of a distributed ranking (see `crate::metric::eval_all_global`), sorted:
/// the positive and the negative words of every host's rows in that range of keys, each
/// list sorted, in the host's [`RankScratch`].
#[derive(Debug)]
pub enum Ranked<'s> {
    /// Keys only.
    Plain(&'s [u32], &'s [u32]),
    /// Keys above weights.
    Weighted(&'s [u64], &'s [u64]),
}

impl RankScratch {
    /// A distributed ranking's first step: this host's rows `(scores[i], pos(labels[i]),
    /// weights[i])` cut at `splitters` (ascending keys) into one range of keys per host (`[..,
    /// s0)`, `[s0, s1)`, ..., `[s_last, ..]`: no group of tied rows straddles two), none of
    /// them sorted: one branch-free pass for two hosts, a pass that counts and one that
    /// scatters for more. Range `me`
    /// stays here for [`Self::sort_range`]; every other range `r` is returned as bytes for host
    /// `r` (`out[me]` is empty): a flag (1 if weighted), the number of positive words (`u64`),
    /// then the positive and the negative words, little-endian (4 bytes each, 8 weighted).
    pub fn cut(
        &mut self,
        scores: &[f32],
        labels: &[f32],
        weights: Option<&[f32]>,
        pos: impl Fn(f32) -> bool + Copy,
        splitters: &[u32],
        me: usize,
    ) -> Vec<Vec<u8>> {
        self.cut_weighted = weights.is_some();
        match weights {
            None => cut_into(&mut self.unweighted, false, labels, pos, splitters, me, || {
                scores.iter().map(|&s| key(s))
            }),
            Some(w) => cut_into(&mut self.weighted, true, labels, pos, splitters, me, || {
                scores.iter().zip(w).map(|(&s, &w)| weighted_word(s, w))
            }),
        }
    }

    /// A distributed ranking's second step: the range kept by [`Self::cut`] with the other
    /// hosts' parts of it (their [`Self::cut`] bytes for this host) added, sorted. The lists
    /// are exactly those one host would sort from all the rows in this range (equal words are
    /// indistinguishable). Unweighted parts join weighted ones with weight 1. Fails on bytes
    /// that are not such a part.
    pub fn sort_range<B: AsRef<[u8]>>(&mut self, parts: &[B]) -> Result<Ranked<'_>, String> {
        if self.cut_weighted || parts.iter().any(|b| b.as_ref().first() == Some(&1)) {
            if !self.cut_weighted {
                // This host's words join weighted ones: as words of weight 1.
                let (u, w) = (&self.unweighted, &mut self.weighted);
                w.pos.clear();
                w.pos.extend(u.pos.iter().map(|&k| u64::from_u32(k)));
                w.neg.clear();
                w.neg.extend(u.neg.iter().map(|&k| u64::from_u32(k)));
                self.cut_weighted = true;
            }
            let (p, q) = sort_lists(&mut self.weighted, parts)?;
            Ok(Ranked::Weighted(p, q))
        } else {
            let (p, q) = sort_lists(&mut self.unweighted, parts)?;
            Ok(Ranked::Plain(p, q))
        }
    }
}

/// [`RankScratch::cut`] of the rows' words (`words()`, one per label), this host's range left
/// in `lists.pos` and `lists.neg`.
fn cut_into<W: Word, I: Iterator<Item = W>>(
    lists: &mut Lists<W>,
    weighted: bool,
    labels: &[f32],
    pos: impl Fn(f32) -> bool + Copy,
    splitters: &[u32],
    me: usize,
    words: impl Fn() -> I,
) -> Vec<Vec<u8>> {
    let n = splitters.len() + 1;
    let part = |p: &[W], q: &[W]| {
        let mut out = Vec::with_capacity(9 + (p.len() + q.len()) * W::BYTES);
        out.push(u8::from(weighted));
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        W::put_all(p, &mut out);
        W::put_all(q, &mut out);
        out
    };
    if let &[splitter] = splitters {
        // Two hosts: one pass. Each list has one spare slot; the words of range 0 fill it from
        // the front, those of range 1 from the back, and every word is written at both ends
        // of both lists, kept only where its cursor moves (no branch on label or range): a
        // slot written and not kept is free, and is overwritten by the next word kept there,
        // or is the spare one once the list is full.
        let np = labels.iter().filter(|&&y| pos(y)).count();
        let (p, q) = (&mut lists.pos, &mut lists.neg);
        // Every slot but the spare one is written below: the lists need no clearing first.
        p.resize(np + 1, W::default());
        q.resize(labels.len() - np + 1, W::default());
        let (mut p_lo, mut p_hi, mut q_lo, mut q_hi) = (0, np, 0, labels.len() - np);
        let (ps, qs) = (&mut p[..], &mut q[..]);
        for (w, &y) in words().zip(labels) {
            let (is_pos, high) = (pos(y), w.key() >= splitter);
            ps[p_lo] = w;
            ps[p_hi] = w;
            qs[q_lo] = w;
            qs[q_hi] = w;
            p_lo += usize::from(is_pos & !high);
            p_hi -= usize::from(is_pos & high);
            q_lo += usize::from(!is_pos & !high);
            q_hi -= usize::from(!is_pos & high);
        }
        // Range 0: [0, lo); range 1: (hi, end); lo == hi, the spare slot.
        let theirs = if me == 0 {
            let out = part(&p[p_lo + 1..], &q[q_lo + 1..]);
            p.truncate(p_lo);
            q.truncate(q_lo);
            out
        } else {
            let out = part(&p[..p_lo], &q[..q_lo]);
            p.drain(..=p_lo);
            q.drain(..=q_lo);
            out
        };
        let mut out = vec![Vec::new(); 2];
        out[1 - me] = theirs;
        return out;
    }
    // Any number of hosts: a pass that counts the words of each bucket (2r: the positive words
    // of range r; 2r + 1: its negative words) and one that scatters them.
    let bucket = |w: W, y: f32| {
        let k = w.key();
        2 * splitters.iter().filter(|&&s| s <= k).count() + usize::from(!pos(y))
    };
    let mut counts = vec![0usize; 2 * n];
    for (w, &y) in words().zip(labels) {
        counts[bucket(w, y)] += 1;
    }
    let mut others: Vec<Vec<W>> = counts
        .iter()
        .enumerate()
        .map(|(b, &c)| if b / 2 == me { Vec::new() } else { vec![W::default(); c] })
        .collect();
    lists.pos.clear();
    lists.pos.resize(counts[2 * me], W::default());
    lists.neg.clear();
    lists.neg.resize(counts[2 * me + 1], W::default());
    let mut dst: Vec<&mut [W]> = others.iter_mut().map(|v| &mut v[..]).collect();
    dst[2 * me] = &mut lists.pos[..];
    dst[2 * me + 1] = &mut lists.neg[..];
    let mut at = vec![0usize; 2 * n];
    for (w, &y) in words().zip(labels) {
        let b = bucket(w, y);
        dst[b][at[b]] = w;
        at[b] += 1;
    }
    (0..n)
        .map(|r| {
            if r == me {
                Vec::new()
            } else {
                part(&others[2 * r], &others[2 * r + 1])
            }
        })
        .collect()
}

/// The words of `parts` appended to `lists.pos` and `lists.neg`, and each list sorted.
fn sort_lists<'a, W: FromPart, B: AsRef<[u8]>>(
    lists: &'a mut Lists<W>,
    parts: &[B],
) -> Result<(&'a [W], &'a [W]), String> {
    for b in parts {
        decode_part_into(b.as_ref(), &mut lists.pos, &mut lists.neg)?;
    }
    Ok(lists.sorted())
}

impl<W: Word> Lists<W> {
    /// The positive and the negative words, each list sorted (the two at the same time).
    fn sorted(&mut self) -> (&[W], &[W]) {
        let Lists {
            pos,
            neg,
            pos_tmp,
            neg_tmp,
        } = self;
        pos_tmp.resize(pos.len(), W::default());
        neg_tmp.resize(neg.len(), W::default());
        rayon::join(|| radix_sort(pos, pos_tmp), || radix_sort(neg, neg_tmp))
    }
}

impl Ranked<'_> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Ranked::Plain(p, q) => p.len() + q.len(),
            Ranked::Weighted(p, q) => p.len() + q.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The positive and negative weight of the rows (unweighted: exact counts).
    pub fn totals(&self) -> (f64, f64) {
        match self {
            Ranked::Plain(p, q) => (u32::weight_of(p), u32::weight_of(q)),
            Ranked::Weighted(p, q) => (u64::weight_of(p), u64::weight_of(q)),
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
            Ranked::Plain(p, q) => fold(p, q, before, start, add),
            Ranked::Weighted(p, q) => fold(p, q, before, start, add),
        }
    }

    /// The ROC area of these rows alone (from recall zero, not divided by the totals), exact,
    /// when they are unweighted; None when weighted (see [`Self::fold`]).
    pub fn plain_roc_area(&self) -> Option<f64> {
        let Ranked::Plain(p, q) = *self else { return None };
        // Large lists: in two parts, at the same time. The negative words of the second part
        // rank below every positive word of the first.
        let longer = if p.len() >= q.len() { p } else { q };
        let twice = if longer.len() + p.len().min(q.len()) < MIN_SPLIT {
            roc_pairs2(p, q)
        } else {
            let pivot = longer[longer.len() / 2];
            let (ps, qs) = (p.partition_point(|&x| x < pivot), q.partition_point(|&x| x < pivot));
            let (a, b) = rayon::join(|| roc_pairs2(&p[..ps], &q[..qs]), || roc_pairs2(&p[ps..], &q[qs..]));
            a + b + 2 * (ps as u64) * (q.len() - qs) as u64
        };
        // Exact in an f64 below 2^53 (2^26 positive times 2^26 negative rows).
        Some(twice as f64 / 2.0)
    }

    /// The keys of the rows at positions `j * len / g` for `j` in `0..g`, positive and
    /// negative rows together (a grid over the range from which hosts place the next
    /// splitters); empty without rows.
    pub fn grid_keys(&self, g: usize) -> Vec<u32> {
        fn keys<W: Word>(p: &[W], q: &[W], g: usize) -> Vec<u32> {
            let total = p.len() + q.len();
            if total == 0 {
                return Vec::new();
            }
            // Rows whose key is at most `k`, in both lists.
            let at_most = |k: u32| p.partition_point(|x| x.key() <= k) + q.partition_point(|x| x.key() <= k);
            (0..g)
                .map(|j| {
                    // The key of the row at position j·total/g of the union: the smallest key
                    // with more rows at or below it than that position.
                    let at = j * total / g;
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
                .collect()
        }
        match self {
            Ranked::Plain(p, q) => keys(p, q, g),
            Ranked::Weighted(p, q) => keys(p, q, g),
        }
    }
}

/// The keys that cut `scores` into `n` ranges of about equal size, from a sample of at most
/// about 4096 of them (the first round's splitters, before any ranking); None without rows.
pub fn sample_quantile_keys(scores: &[f32], n: usize) -> Option<Vec<u32>> {
    if scores.is_empty() {
        return None;
    }
    let step = scores.len().div_ceil(4096);
    let mut sample: Vec<u32> = scores.iter().step_by(step).map(|&s| key(s)).collect();
    sample.sort_unstable();
    Some((1..n).map(|i| sample[i * sample.len() / n]).collect())
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

/// A part's positive and negative words (as `W`) appended to `p` and `q`.
fn decode_part_into<W: FromPart>(b: &[u8], p: &mut Vec<W>, q: &mut Vec<W>) -> Result<(), String> {
    let bad = || format!("a ranked part of {} bytes is malformed", b.len());
    let (&flag, rest) = b.split_first().ok_or_else(bad)?;
    let n_pos = rest.get(..8).ok_or_else(bad)?;
    let n_pos = u64::from_le_bytes(n_pos.try_into().expect("eight bytes")) as usize;
    let words = &rest[8..];
    let size = if flag == 1 { 8 } else { 4 };
    if flag > 1 || words.len() % size != 0 || n_pos > words.len() / size {
        return Err(bad());
    }
    let append = |b: &[u8], list: &mut Vec<W>| {
        if flag == 1 {
            list.extend(b.chunks_exact(8).map(W::get));
        } else {
            list.extend(b.chunks_exact(4).map(|c| W::from_u32(u32::get(c))));
        }
    };
    let (bp, bq) = words.split_at(n_pos * size);
    append(bp, p);
    append(bq, q);
    Ok(())
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
    // Two halves of the rows are split at the same time, each into its own part of the two
    // lists (the first half's positives first).
    let half = if n >= MIN_SPLIT { n / 2 } else { n };
    let (ya, yb) = labels.split_at(half);
    let pos_a = ya.iter().filter(|&&y| pos(y)).count();
    let np = pos_a + yb.iter().filter(|&&y| pos(y)).count();
    for (list, len) in [(&mut lists.pos, np), (&mut lists.neg, n - np)] {
        list.clear();
        list.resize(len, W::default());
    }
    let (pa, pb) = lists.pos.split_at_mut(pos_a);
    let (qa, qb) = lists.neg.split_at_mut(half - pos_a);
    rayon::join(
        || split(ya, 0, pos, &word, pa, qa),
        || split(yb, half, pos, &word, pb, qb),
    );
    lists.sorted()
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

    /// The groups of rows cut into host parts, folded as the hosts fold them: each host cuts
    /// its part into ranges at splitters (from the hosts' samples), range r of every host is
    /// sorted by host r, its totals summed up before the next range. Returns each range's
    /// (before, groups).
    fn fold_as_hosts(s: &[f32], y: &[f32], w: Option<&[f32]>, cuts: &[usize]) -> Vec<(Before, Vec<(f64, f64)>)> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(s.len());
        let n = bounds.len() - 1;
        let quantiles: Vec<Vec<u32>> = bounds
            .windows(2)
            .filter_map(|r| sample_quantile_keys(&s[r[0]..r[1]], n))
            .collect();
        let splitters: Vec<u32> = (0..n - 1)
            .map(|i| (quantiles.iter().map(|q| u64::from(q[i])).sum::<u64>() / quantiles.len() as u64) as u32)
            .collect();
        let mut scratches: Vec<RankScratch> = (0..n).map(|_| RankScratch::default()).collect();
        let sent: Vec<Vec<Vec<u8>>> = bounds
            .windows(2)
            .zip(&mut scratches)
            .enumerate()
            .map(|(me, (r, scratch))| {
                let (a, b) = (r[0], r[1]);
                scratch.cut(&s[a..b], &y[a..b], w.map(|w| &w[a..b]), |t| t > 0.5, &splitters, me)
            })
            .collect();
        let mut before = Before::NONE;
        let mut out = Vec::new();
        for (r, scratch) in scratches.iter_mut().enumerate() {
            let parts: Vec<Vec<u8>> = (0..n).filter(|&h| h != r).map(|h| sent[h][r].clone()).collect();
            assert!(sent[r][r].is_empty());
            let ranked = scratch.sort_range(&parts).unwrap();
            let folded = ranked.fold(
                before,
                |b| (b, Vec::new()),
                |a: &mut (Before, Vec<(f64, f64)>), p, q| a.1.push((p, q)),
            );
            out.extend(folded);
            let (p, q) = ranked.totals();
            before = Before {
                pos: before.pos + p,
                neg: before.neg + q,
                any: before.any || !ranked.is_empty(),
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
        let mut scratch = RankScratch::default();
        scratch.cut(&[], &[], None, |t| t > 0.5, &[], 0);
        assert!(scratch.sort_range(&[vec![0, 1]]).is_err());
        assert!(
            scratch
                .sort_range(&[vec![0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]])
                .is_err()
        );
        assert!(scratch.sort_range(&[vec![2, 0, 0, 0, 0, 0, 0, 0, 0]]).is_err());
    }

    #[test]
    fn unweighted_parts_join_weighted_ones_with_weight_one() {
        let s = [0.5f32, 0.25, 0.5, 0.75, 0.25];
        let y = [1.0f32, 0.0, 0.0, 1.0, 1.0];
        let ones = [1.0f32; 5];
        let want = vec![vec![(1.0, 0.0), (1.0, 1.0), (1.0, 1.0)]];
        // Either host's words weighted, the other's not; all rows in host 0's range.
        for weighted_host in 0..2 {
            let (mut a, mut b) = (RankScratch::default(), RankScratch::default());
            let w = |h: usize, r: std::ops::Range<usize>| (h == weighted_host).then(|| &ones[r]);
            a.cut(&s[..2], &y[..2], w(0, 0..2), |t| t > 0.5, &[u32::MAX], 0);
            let part = b
                .cut(&s[2..], &y[2..], w(1, 2..5), |t| t > 0.5, &[u32::MAX], 1)
                .remove(0);
            let ranked = a.sort_range(&[part]).unwrap();
            assert!(matches!(ranked, Ranked::Weighted(..)));
            let got = ranked.fold(
                Before::NONE,
                |_| Vec::new(),
                |a: &mut Vec<(f64, f64)>, p, q| a.push((p, q)),
            );
            assert_eq!(got, want);
        }
    }

    /// The ROC area (from zero, not divided) by trapezoids over the groups of a comparison
    /// sort: the definition the merge count must meet.
    fn roc_area_by_groups(s: &[f32], y: &[f32]) -> f64 {
        let (mut tp, mut area) = (0.0, 0.0);
        for (_, p, n) in groups_by_comparison(s, y, None) {
            area += n * (2.0 * tp + p) / 2.0;
            tp += p;
        }
        area
    }

    #[test]
    fn plain_roc_area_counts_the_pairs_of_one_merge_or_two_parts() {
        // Few distinct scores (long runs of ties, runs at either list's end) and many, below
        // and above the size split into two parts.
        for (n, distinct) in [
            (1usize, 3u64),
            (9, 2),
            (300, 5),
            (300, 1 << 20),
            (100_000, 7),
            (100_000, 1 << 30),
        ] {
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let s: Vec<f32> = (0..n).map(|_| (next() % distinct) as f32 / 4.0).collect();
            let y: Vec<f32> = (0..n).map(|_| (next() % 3 == 0) as u8 as f32).collect();
            let mut scratch = RankScratch::default();
            let got = rank_rows(&s, &y, None, |t| t > 0.5, &mut scratch).plain_roc_area();
            assert_eq!(got, Some(roc_area_by_groups(&s, &y)), "{n} rows, {distinct} scores");
        }
        // Only positive or only negative rows: no pairs.
        let mut scratch = RankScratch::default();
        for y in [[1.0f32; 4], [0.0; 4]] {
            let m = rank_rows(&[0.1, 0.2, 0.2, 0.3], &y, None, |t| t > 0.5, &mut scratch);
            assert_eq!(m.plain_roc_area(), Some(0.0));
        }
        let w = [1.0f32; 2];
        let m = rank_rows(&[0.1, 0.2], &[0.0, 1.0], Some(&w), |t| t > 0.5, &mut scratch);
        assert_eq!(m.plain_roc_area(), None, "weighted rows are folded");
    }

    proptest! {
        #[test]
        fn plain_roc_area_matches_the_groups(
            v in proptest::collection::vec((-6i8..6, 0u8..2), 0..300),
        ) {
            let s: Vec<f32> = v.iter().map(|x| f32::from(x.0) * 0.5).collect();
            let y: Vec<f32> = v.iter().map(|x| f32::from(x.1)).collect();
            let got = rank_rows(&s, &y, None, |t| t > 0.5, &mut RankScratch::default()).plain_roc_area();
            prop_assert_eq!(got, Some(roc_area_by_groups(&s, &y)));
        }

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
