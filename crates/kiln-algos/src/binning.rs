//! Quantile binning: every feature value becomes a `u8` bin code once, before training.
//!
//! Feature `f` has cut points `c[0] < c[1] < ... < c[k-1]`; value `x` goes to bin
//! `#{j : c[j] <= x}` (0..=k), and a missing value to code `k + 1`. A split "bin <= b goes left"
//! is therefore exactly `x < c[b]` — the test xgboost's predictor applies to `split_conditions` —
//! so a model evaluated on raw floats routes every training row as the binned trainer did.
//!
//! The cuts are weighted quantiles of a sketch sample of about `SKETCH_ROWS` rows. A training
//! job chooses the sample by a hash of each row's content ([`in_sketch`] of [`line_key`] or
//! [`values_key`]), not by the row's position, so the cuts, hence the model, do not depend on
//! the order of the rows or files, nor on how the rows are split among hosts.

use rayon::prelude::*;

use crate::data::DenseMatrix;

/// Most value bins a feature can have: one `u8` code is kept for "missing".
pub const MAX_VALUE_BINS: usize = 255;

/// Histogram slots per feature (value bins and the missing code all fit in a `u8`).
pub const SLOTS_PER_FEATURE: usize = 256;

/// Readable bytes after each feature's column (see [`BinnedMatrix::column_padded`]).
pub const COLUMN_PAD: usize = 3;

/// Rows sampled to choose cut points (all rows when there are fewer).
pub const SKETCH_ROWS: usize = 1 << 18;

/// The sketch sample of `n_rows` rows is one row in `sketch_step(n_rows)`: the smallest power of
/// two that keeps about `SKETCH_ROWS` rows. Which rows is [`in_sketch`]'s choice, by each row's
/// key; a power of two so that the sample at a larger step is part of the sample at a smaller
/// one (a streaming reader halves its sample as rows arrive; a host thins its own to the step of
/// all hosts' rows).
pub fn sketch_step(n_rows: usize) -> usize {
    n_rows.div_ceil(SKETCH_ROWS).max(1).next_power_of_two()
}

/// Whether the row with `key` ([`line_key`], [`values_key`]) is in the sketch sample at `step`
/// (a power of two). The key is a hash of the row's content, not its position, so the sample,
/// hence the cuts and the model, do not depend on the order of the rows or on how they are split
/// among files or hosts.
#[inline]
pub fn in_sketch(key: u64, step: usize) -> bool {
    key & (step as u64 - 1) == 0
}

const MIX_A: u64 = 0x9E37_79B9_7F4A_7C15;
const MIX_B: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// One 8-byte word into the running hash (the low bits of a product depend only on the low bits
/// of its factors, hence the rotation before the second multiply).
#[inline(always)]
fn mix_word(h: u64, w: u64) -> u64 {
    (h ^ w.wrapping_mul(MIX_A)).rotate_left(31).wrapping_mul(MIX_B)
}

/// murmur3's 64-bit finaliser: every input bit reaches every output bit, so the low bits that
/// [`in_sketch`] tests are uniform.
#[inline(always)]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// The sketch key of a CSV row: a hash of its line's bytes (without the `\n`, and without a `\r`
/// before it, so that CRLF and LF files sample the same rows).
#[inline]
pub fn line_key(line: &[u8]) -> u64 {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut h = (line.len() as u64).wrapping_mul(MIX_B);
    let mut words = line.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = mix_word(h, u64::from_le_bytes(b));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = mix_word(h, u64::from_le_bytes(b));
    }
    fmix64(h)
}

/// The sketch key of a parsed row (formats read as floats): a hash of its features' and its
/// label's bits.
pub fn values_key(features: &[f32], label: f32) -> u64 {
    let mut h = (features.len() as u64).wrapping_mul(MIX_B);
    let mut pairs = features.chunks_exact(2);
    for p in &mut pairs {
        h = mix_word(h, u64::from(p[0].to_bits()) | u64::from(p[1].to_bits()) << 32);
    }
    let last = pairs.remainder().first().map_or(0, |x| u64::from(x.to_bits()));
    fmix64(mix_word(h, last | u64::from(label.to_bits()) << 32))
}

/// [`values_key`] of every row of `m` with its label.
pub fn values_keys(m: &DenseMatrix, labels: &[f32]) -> Vec<u64> {
    (0..m.n_rows())
        .into_par_iter()
        .map(|r| values_key(m.row(r), labels.get(r).copied().unwrap_or(f32::NAN)))
        .collect()
}

/// Cut points per feature.
#[derive(Debug, Clone)]
pub struct BinCuts {
    cuts: Vec<Vec<f32>>,
    /// The cuts padded to 256 with NaN (never `<=` anything, even +inf), for a fixed-depth
    /// branch-free search.
    padded: Vec<[f32; 256]>,
    /// The last of each sixteen padded cuts, for [`Self::bin_row`].
    pivots: Vec<[f32; 16]>,
}

impl PartialEq for BinCuts {
    /// The padding is derived (and NaN), so equal cuts mean equal binning.
    fn eq(&self, other: &Self) -> bool {
        self.cuts == other.cuts
    }
}

impl BinCuts {
    /// Cuts with their search tables.
    fn with_tables(cuts: Vec<Vec<f32>>) -> Self {
        let padded: Vec<[f32; 256]> = cuts
            .iter()
            .map(|c| {
                let mut p = [f32::NAN; 256];
                p[..c.len()].copy_from_slice(c);
                p
            })
            .collect();
        let pivots = padded.iter().map(|p| std::array::from_fn(|k| p[16 * k + 15])).collect();
        Self { cuts, padded, pivots }
    }

    /// Chooses at most `max_bin` (capped at 255) value bins per feature from weighted quantiles of
    /// a systematic sample of rows, those whose index is a multiple of `sketch_step(n_rows)`;
    /// features with few distinct values get one bin per value. For callers without row keys
    /// (the library's `train`, tests); training jobs sample by key ([`Self::compute_keyed`]).
    pub fn compute(m: &DenseMatrix, weights: Option<&[f32]>, max_bin: usize) -> Self {
        let rows: Vec<usize> = (0..m.n_rows()).step_by(sketch_step(m.n_rows())).collect();
        Self::compute_rows(m, weights, max_bin, &rows)
    }

    /// [`Self::compute`] from the rows of `m` in the sketch sample at `step` ([`in_sketch`] of
    /// `keys`, one per row of `m`).
    pub fn compute_keyed(m: &DenseMatrix, weights: Option<&[f32]>, keys: &[u64], step: usize, max_bin: usize) -> Self {
        let rows: Vec<usize> = (0..m.n_rows()).filter(|&r| in_sketch(keys[r], step)).collect();
        Self::compute_rows(m, weights, max_bin, &rows)
    }

    /// [`Self::compute`] from every row of `m` however many (`m` is already a sample: the
    /// hosts' sketch samples put together).
    pub fn compute_all(m: &DenseMatrix, weights: Option<&[f32]>, max_bin: usize) -> Self {
        let rows: Vec<usize> = (0..m.n_rows()).collect();
        Self::compute_rows(m, weights, max_bin, &rows)
    }

    /// The cuts of the rows `rows` of `m`; they depend on the rows' values and weights, not on
    /// their order.
    fn compute_rows(m: &DenseMatrix, weights: Option<&[f32]>, max_bin: usize, rows: &[usize]) -> Self {
        let max_bins = max_bin.clamp(2, MAX_VALUE_BINS);
        let nf = m.n_cols();
        // A few features per task: each task reads every sampled row once (one or two cache
        // lines of it) instead of once per feature, and there are still several tasks per
        // thread to balance.
        let per_task = nf.div_ceil(4 * rayon::current_num_threads()).clamp(1, 8);
        let cuts = (0..nf)
            .step_by(per_task)
            .collect::<Vec<_>>()
            .into_par_iter()
            .flat_map_iter(|f0| {
                let fs = f0..(f0 + per_task).min(nf);
                let mut cols: Vec<Vec<u64>> = fs.clone().map(|_| Vec::with_capacity(rows.len())).collect();
                for &r in rows {
                    let w = weights.map_or(1.0, |w| w[r]);
                    // Rows without weight (or a NaN one) are not in the sample.
                    let counted = w > 0.0;
                    if !counted {
                        continue;
                    }
                    for (col, &v) in cols.iter_mut().zip(&m.row(r)[fs.clone()]) {
                        if !v.is_nan() {
                            col.push(sort_entry(v, w));
                        }
                    }
                }
                cols.into_iter()
                    .map(move |mut col| cuts_from_distinct(&distinct_values(&mut col), max_bins))
            })
            .collect::<Vec<Vec<f32>>>();
        Self::with_tables(cuts)
    }

    /// Builds cuts directly (each list must be strictly increasing and at most 254 long).
    pub fn from_cuts(cuts: Vec<Vec<f32>>) -> Self {
        Self::with_tables(cuts)
    }

    /// Number of features.
    pub fn n_features(&self) -> usize {
        self.cuts.len()
    }

    /// Cut points of feature `f`.
    pub fn cuts(&self, f: usize) -> &[f32] {
        &self.cuts[f]
    }

    /// Value bins of feature `f` (the missing code is this number).
    pub fn n_value_bins(&self, f: usize) -> usize {
        self.cuts[f].len() + 1
    }

    /// Bin code of `x` for feature `f`.
    #[inline]
    pub fn bin(&self, f: usize, x: f32) -> u8 {
        if x.is_nan() {
            return self.cuts[f].len() as u8 + 1;
        }
        // Eight halvings over 256 slots; NaN padding never counts. The data-dependent
        // comparisons become conditional moves instead of mispredicted branches.
        let p = &self.padded[f];
        let mut i = 0usize;
        for step in [128, 64, 32, 16, 8, 4, 2, 1] {
            i += usize::from(p[i + step - 1] <= x) * step;
        }
        i as u8
    }

    /// Bin codes of one row's values: `out[f] = self.bin(f, xs[f])` for every `f` of `xs`
    /// (`out` as long, at most [`Self::n_features`]). With AVX-512 where the CPU has it: two
    /// sixteen-lane compares per value instead of eight dependent halvings, several times
    /// faster (a row has only a few dozen values whose chains of dependent loads can overlap).
    pub fn bin_row(&self, xs: &[f32], out: &mut [u8]) {
        assert!(
            xs.len() == out.len() && xs.len() <= self.cuts.len(),
            "one code per value, one feature per value"
        );
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has AVX-512F and POPCNT (checked just above); `xs` and `out` are
            // as long as each other and at most the number of features (asserted above).
            unsafe { self.bin_row_avx512(xs, out) };
            return;
        }
        for (f, (o, &x)) in out.iter_mut().zip(xs).enumerate() {
            *o = self.bin(f, x);
        }
    }

    /// [`Self::bin_row`] with AVX-512. A feature's 256 padded cuts are sixteen blocks of
    /// sixteen, and its pivots the last cut of each block. The number `c` of pivots `<= x`
    /// is the block the code falls in: every cut of the blocks before it is `<= x` (the cuts
    /// ascend) and none after it (its own last cut is `> x`, or NaN padding; `c < 16`, as the
    /// last pivot is always padding). The code is `16 c` plus the cuts `<= x` in block `c`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F and POPCNT; `xs.len() == out.len() <= self.n_features()`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,popcnt")]
    unsafe fn bin_row_avx512(&self, xs: &[f32], out: &mut [u8]) {
        use std::arch::x86_64::*;
        for (f, (o, &x)) in out.iter_mut().zip(xs).enumerate() {
            let v = _mm512_set1_ps(x);
            // SAFETY: `f` is a feature (`xs` has at most `n_features` values), so its pivots
            // and padded cuts exist; `c <= 15`, so block `c` is inside the 256 padded cuts.
            let code = unsafe {
                let pivots = _mm512_loadu_ps(self.pivots.as_ptr().add(f).cast());
                let c = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(pivots, v).count_ones() as usize;
                let block = _mm512_loadu_ps(self.padded.as_ptr().add(f).cast::<f32>().add(16 * c));
                16 * c + _mm512_cmp_ps_mask::<_CMP_LE_OQ>(block, v).count_ones() as usize
            };
            // A NaN compares false everywhere: it is missing.
            *o = if x.is_nan() {
                self.cuts[f].len() as u8 + 1
            } else {
                code as u8
            };
        }
    }

    /// The split threshold for "bin <= b goes left". The last value bin has no cut above it: a
    /// split there sends every present value left and the missing ones by their default
    /// direction, and its threshold is `f32::MAX` (finite, so the model file can hold it, and
    /// above every value).
    pub fn threshold(&self, f: usize, b: u8) -> f32 {
        self.cuts[f].get(b as usize).copied().unwrap_or(f32::MAX)
    }
}

/// A sampled value and its weight as one word that sorts by value (`f32::total_cmp` order) and
/// then by weight: the value's bits, flipped so that unsigned order is that order, above the
/// weight's bits: one integer compare instead of a float `total_cmp`.
#[inline]
fn sort_entry(v: f32, w: f32) -> u64 {
    let b = v.to_bits();
    let key = if b >> 31 == 1 { !b } else { b | 1 << 31 };
    (u64::from(key) << 32) | u64::from(w.to_bits())
}

/// The (value, weight) of a [`sort_entry`].
#[inline]
fn entry_parts(e: u64) -> (f32, f32) {
    let key = (e >> 32) as u32;
    let b = if key >> 31 == 1 { key & !(1 << 31) } else { !key };
    (f32::from_bits(b), f32::from_bits(e as u32))
}

/// Most distinct values [`distinct_values`] counts in a table before it sorts instead.
const TABLE_VALUES: usize = 4096;

/// The distinct values of [`sort_entry`] words, ascending, with the total weight of each.
///
/// Features with a few thousand values or fewer (integers, codes, rounded measurements) are
/// counted in a small open-addressing table and only their distinct values sorted: several
/// times faster than sorting the whole sample. A feature with more values gives up on the
/// table after `TABLE_VALUES` of them and sorts its words (by value, then weight, so the
/// weights are summed in the same order on every run).
fn distinct_values(entries: &mut [u64]) -> Vec<(f32, f64)> {
    const SLOTS: usize = 4 * TABLE_VALUES;
    // Slot: the value's key + 1 (0 is empty) and its weight so far.
    let mut table = vec![(0u64, 0f64); SLOTS];
    let mut used = 0;
    let counted = entries.iter().all(|&e| {
        let key = e >> 32;
        let (_, w) = entry_parts(e);
        // Fibonacci hashing: the product's top bits index the table.
        let mut slot = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize;
        loop {
            let (k, acc) = &mut table[slot];
            if *k == key + 1 {
                *acc += f64::from(w);
                return true;
            }
            if *k == 0 {
                if used == TABLE_VALUES {
                    return false;
                }
                used += 1;
                (*k, *acc) = (key + 1, f64::from(w));
                return true;
            }
            slot = (slot + 1) % SLOTS;
        }
    });
    let ascending: Box<dyn Iterator<Item = (f32, f64)>> = if counted {
        let mut found: Vec<(u64, f64)> = table.into_iter().filter(|t| t.0 != 0).collect();
        found.sort_unstable_by_key(|t| t.0);
        Box::new(found.into_iter().map(|(k, acc)| (entry_parts((k - 1) << 32).0, acc)))
    } else {
        entries.sort_unstable();
        Box::new(entries.iter().map(|&e| entry_parts(e)).map(|(v, w)| (v, f64::from(w))))
    };
    // Equal values are adjacent (and -0 and +0, different words, are one value).
    let mut distinct: Vec<(f32, f64)> = Vec::new();
    for (v, w) in ascending {
        match distinct.last_mut() {
            Some((last, acc)) if *last == v => *acc += w,
            _ => distinct.push((v, w)),
        }
    }
    distinct
}

/// Cut points from the distinct values of a feature's sample, ascending, with their weights.
fn cuts_from_distinct(distinct: &[(f32, f64)], max_bins: usize) -> Vec<f32> {
    if distinct.len() <= max_bins {
        return distinct.iter().skip(1).map(|d| d.0).collect();
    }
    let total: f64 = distinct.iter().map(|d| d.1).sum();
    let mut cuts = Vec::with_capacity(max_bins - 1);
    let mut before = 0.0;
    let mut next_q = 1;
    for (i, &(v, w)) in distinct.iter().enumerate() {
        // Cut before the first value whose preceding weight reaches the next quantile.
        if i > 0 && before >= total * next_q as f64 / max_bins as f64 {
            cuts.push(v);
            while next_q < max_bins && before >= total * next_q as f64 / max_bins as f64 {
                next_q += 1;
            }
            if next_q >= max_bins {
                break;
            }
        }
        before += w;
    }
    cuts
}

/// Features whose codes share one byte of each row (a bundle), or one feature alone.
///
/// The group's code of a row is `sum(code(f) * stride)` over its members, below `slots <= 256`:
/// one histogram add then counts every member, and each member's histogram is recovered by
/// summing the group histogram over the other members' codes. On data with several
/// low-cardinality features (months, weekdays, flags) this removes adds from the histogram
/// kernel, whose cost is one add per (row, group). The model is unchanged: the recovered
/// histograms are the same exact integers.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeGroup {
    /// `(feature, stride)`, strides ascending from 1.
    pub members: Vec<(usize, usize)>,
    /// Codes a member can take (its value bins, plus one if it has missing values), by member.
    pub sizes: Vec<usize>,
    /// Joint codes: the product of `sizes`.
    pub slots: usize,
}

/// Groups features into bundles whose joint codes fit a `u8` (first fit, largest features
/// first); features too large to share a byte stay alone. `sizes[f]` is the number of codes
/// feature `f` takes. Groups keep the order of their first feature.
pub fn code_groups(sizes: &[usize]) -> Vec<CodeGroup> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&f| (std::cmp::Reverse(sizes[f]), f));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for f in order {
        let size = sizes[f].max(1);
        let product = |g: &Vec<usize>| g.iter().map(|&m| sizes[m].max(1)).product::<usize>();
        match groups.iter_mut().find(|g| product(g) * size <= SLOTS_PER_FEATURE) {
            Some(g) => g.push(f),
            None => groups.push(vec![f]),
        }
    }
    groups.sort_by_key(|g| g.iter().copied().min());
    groups
        .into_iter()
        .map(|mut g| {
            g.sort_unstable();
            let (mut stride, mut members, mut gs) = (1, Vec::new(), Vec::new());
            for f in g {
                members.push((f, stride));
                gs.push(sizes[f].max(1));
                stride *= sizes[f].max(1);
            }
            CodeGroup {
                members,
                sizes: gs,
                slots: stride,
            }
        })
        .collect()
}

/// Training data as bin codes, plus the histogram layout.
#[derive(Debug, Clone)]
pub struct BinnedMatrix {
    n_rows: usize,
    n_features: usize,
    /// Row-major group codes (one byte per [`CodeGroup`]), for histogram building.
    codes: Vec<u8>,
    groups: Vec<CodeGroup>,
    /// The same codes feature-major: partitioning reads one feature of many rows, and a 1-byte
    /// column stays in cache where the row-major layout would touch one cache line per row.
    columns: Vec<u8>,
    cuts: BinCuts,
    /// Start of each feature's slots in a node histogram (value bins, then missing).
    offsets: Vec<usize>,
    hist_len: usize,
    has_missing: Vec<bool>,
}

impl BinnedMatrix {
    /// Bins every value of `m` with `cuts`.
    pub fn new(m: &DenseMatrix, cuts: BinCuts) -> Self {
        let nf = m.n_cols();
        let mut codes = vec![0u8; m.n_rows() * nf];
        if nf > 0 {
            codes
                .par_chunks_mut(nf * 4096)
                .zip(m.values().par_chunks(nf * 4096))
                .for_each(|(out, vals)| {
                    for (o, v) in out.chunks_mut(nf).zip(vals.chunks(nf)) {
                        cuts.bin_row(v, o);
                    }
                });
        }
        Self::from_codes(m.n_rows(), nf, codes, cuts)
    }

    /// Wraps row-major codes made with `cuts` (`codes.len() == n_rows * n_features`).
    pub fn from_codes(n_rows: usize, nf: usize, codes: Vec<u8>, cuts: BinCuts) -> Self {
        let n = n_rows;
        // `COLUMN_PAD` zero bytes after the last column: see `column_padded`.
        let mut columns = vec![0u8; n * nf + COLUMN_PAD];
        if n > 0 && nf > 0 {
            // Transposed a block of rows at a time: the block's codes stay in cache while
            // every column gets its piece, so the codes are read once instead of once per
            // feature (a pass over all rows per feature reads a cache line per row or two).
            const ROWS: usize = 4096;
            let mut pieces: Vec<Vec<&mut [u8]>> = (0..n.div_ceil(ROWS)).map(|_| Vec::with_capacity(nf)).collect();
            for col in columns[..n * nf].chunks_mut(n) {
                for (b, piece) in col.chunks_mut(ROWS).enumerate() {
                    pieces[b].push(piece);
                }
            }
            pieces
                .into_par_iter()
                .zip(codes.par_chunks(ROWS * nf))
                .for_each(|(mut cols, block)| {
                    for (f, col) in cols.iter_mut().enumerate() {
                        for (c, row) in col.iter_mut().zip(block.chunks_exact(nf)) {
                            *c = row[f];
                        }
                    }
                });
        }
        let has_missing: Vec<bool> = (0..nf)
            .into_par_iter()
            .map(|f| {
                let miss = cuts.n_value_bins(f) as u8;
                columns[f * n..(f + 1) * n].contains(&miss)
            })
            .collect();
        let sizes: Vec<usize> = (0..nf)
            .map(|f| cuts.n_value_bins(f) + usize::from(has_missing[f]))
            .collect();
        let groups = code_groups(&sizes);
        let codes = if groups.len() == nf {
            codes
        } else {
            drop(codes);
            let ng = groups.len();
            let mut grouped = vec![0u8; n * ng];
            grouped.par_chunks_mut(ng * 4096).enumerate().for_each(|(chunk, out)| {
                let r0 = chunk * 4096;
                for (i, row) in out.chunks_mut(ng).enumerate() {
                    for (o, g) in row.iter_mut().zip(&groups) {
                        let code: usize = g
                            .members
                            .iter()
                            .map(|&(f, stride)| usize::from(columns[f * n + r0 + i]) * stride)
                            .sum();
                        *o = code as u8;
                    }
                }
            });
            grouped
        };
        // Node histograms are compact: each feature gets its value bins plus the missing slot
        // (the histogram kernel accumulates into `[i64; 256]` per feature and is unpacked into
        // this layout, so reducing, subtracting and scanning skip the unused slots).
        let mut offsets = Vec::with_capacity(nf);
        let mut hist_len = 0;
        for f in 0..nf {
            offsets.push(hist_len);
            hist_len += cuts.n_value_bins(f) + 1;
        }
        Self {
            n_rows: n,
            n_features: nf,
            codes,
            groups,
            columns,
            cuts,
            offsets,
            hist_len,
            has_missing,
        }
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of features.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Group codes, row-major: [`Self::n_groups`] bytes per row.
    pub fn group_codes(&self) -> &[u8] {
        &self.codes
    }

    /// How features share the bytes of [`Self::group_codes`].
    pub fn groups(&self) -> &[CodeGroup] {
        &self.groups
    }

    /// Number of code groups (bytes per row of [`Self::group_codes`]).
    pub fn n_groups(&self) -> usize {
        self.groups.len()
    }

    /// The code of feature `f` in row `r`.
    #[inline]
    pub fn code(&self, r: usize, f: usize) -> u8 {
        self.columns[f * self.n_rows + r]
    }

    /// Codes of feature `f` for every row.
    #[inline]
    pub fn column(&self, f: usize) -> &[u8] {
        &self.columns[f * self.n_rows..(f + 1) * self.n_rows]
    }

    /// Feature `f`'s codes followed by at least `COLUMN_PAD` readable bytes (the next column's
    /// codes, or zeros after the last column), so a 4-byte read at any row's code stays in
    /// bounds (vector gathers read whole 32-bit lanes).
    pub fn column_padded(&self, f: usize) -> &[u8] {
        &self.columns[f * self.n_rows..(f + 1) * self.n_rows + COLUMN_PAD]
    }

    /// The cut points.
    pub fn cuts(&self) -> &BinCuts {
        &self.cuts
    }

    /// Start of each feature's slots in a node histogram (its value bins, then missing).
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Slots in one node histogram.
    pub fn hist_len(&self) -> usize {
        self.hist_len
    }

    /// Whether feature `f` has any missing value.
    pub fn has_missing(&self, f: usize) -> bool {
        self.has_missing[f]
    }

    /// Counts feature `f` as having missing values where `missing[f]` (another part of the
    /// data, on another host, has some), so that split finding tries sending them left as
    /// it does on the whole data. The codes and their layout do not change.
    pub fn mark_missing(&mut self, missing: &[bool]) {
        for (h, &m) in self.has_missing.iter_mut().zip(missing) {
            *h |= m;
        }
    }

    /// The rows `keep` (ascending row indices) of this matrix, with the same cuts.
    pub fn select_rows(&self, keep: &[u32]) -> BinnedMatrix {
        let nf = self.n_features;
        let mut codes = vec![0u8; keep.len() * nf];
        codes
            .par_chunks_mut(4096 * nf.max(1))
            .zip(keep.par_chunks(4096))
            .for_each(|(out, rows)| {
                for (o, &r) in out.chunks_mut(nf.max(1)).zip(rows) {
                    for (f, c) in o.iter_mut().enumerate().take(nf) {
                        *c = self.code(r as usize, f);
                    }
                }
            });
        BinnedMatrix::from_codes(keep.len(), nf, codes, self.cuts.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn few_distinct_values_get_one_bin_each() {
        let m = DenseMatrix::new(6, 1, vec![3.0, 1.0, 2.0, f32::NAN, 1.0, 3.0]).unwrap();
        let cuts = BinCuts::compute(&m, None, 256);
        assert_eq!(cuts.cuts(0), &[2.0, 3.0]);
        let b = BinnedMatrix::new(&m, cuts);
        assert_eq!(b.column(0), &[2, 0, 1, 3, 0, 2]);
        assert!(b.has_missing(0));
        assert_eq!(b.hist_len(), 4);
    }

    #[test]
    fn quantile_cuts_are_balanced_and_bounded() {
        let vals: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let m = DenseMatrix::new(10_000, 1, vals).unwrap();
        let cuts = BinCuts::compute(&m, None, 16);
        assert!(cuts.cuts(0).len() <= 15 && cuts.cuts(0).len() >= 14);
        let b = BinnedMatrix::new(&m, cuts);
        let mut counts = [0usize; 17];
        for &c in b.column(0) {
            counts[c as usize] += 1;
        }
        for &c in &counts[..cuts_len(&b)] {
            assert!((600..=700).contains(&c), "{counts:?}");
        }
        fn cuts_len(b: &BinnedMatrix) -> usize {
            b.cuts().n_value_bins(0)
        }
    }

    #[test]
    fn weights_shift_quantiles() {
        // Heavy weights on the large values pull the cuts up.
        let vals: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let w: Vec<f32> = (0..1000).map(|i| if i >= 900 { 100.0 } else { 1.0 }).collect();
        let m = DenseMatrix::new(1000, 1, vals).unwrap();
        let cuts = BinCuts::compute(&m, Some(&w), 4);
        assert!(cuts.cuts(0)[0] >= 900.0, "{:?}", cuts.cuts(0));
    }

    #[test]
    fn infinities_bin_like_partition_point() {
        let cuts = BinCuts::from_cuts(vec![vec![-1.0, 0.0, 2.5]]);
        assert_eq!(cuts.bin(0, f32::INFINITY), 3);
        assert_eq!(cuts.bin(0, f32::NEG_INFINITY), 0);
        assert_eq!(cuts.bin(0, 2.5), 3);
        assert_eq!(cuts.bin(0, f32::NAN), 4);
        let full: Vec<f32> = (0..254).map(|i| i as f32).collect();
        let cuts = BinCuts::from_cuts(vec![full]);
        assert_eq!(cuts.bin(0, 1e9), 254);
        assert_eq!(cuts.bin(0, f32::INFINITY), 254);
        assert_eq!(cuts.bin(0, 100.5), 101);
    }

    #[test]
    fn small_features_share_a_byte() {
        // Sizes 12, 200, 7, 3, 2, 40, largest first: 200 and 40 open groups, 12 can't join
        // 40 (480), 7 joins 12 (84), 3 and 2 join 40 (240).
        let g = code_groups(&[12, 200, 7, 3, 2, 40]);
        let members: Vec<Vec<usize>> = g.iter().map(|g| g.members.iter().map(|m| m.0).collect()).collect();
        assert_eq!(members, vec![vec![0, 2], vec![1], vec![3, 4, 5]]);
        assert_eq!(g[2].members, vec![(3, 1), (4, 3), (5, 6)]);
        assert_eq!((g[0].slots, g[1].slots, g[2].slots), (84, 200, 240));
        // Nothing to share: one group per feature, in order.
        let alone = code_groups(&[256, 200, 255]);
        assert!(alone.iter().enumerate().all(|(i, g)| g.members == vec![(i, 1)]));
    }

    #[test]
    fn sort_entries_order_values_like_total_cmp() {
        let vals = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-40,
            -0.0,
            0.0,
            1e-40,
            1.0,
            2.5e30,
            f32::INFINITY,
        ];
        let mut entries: Vec<u64> = vals.iter().rev().map(|&v| sort_entry(v, 0.5)).collect();
        entries.sort_unstable();
        let back: Vec<(f32, f32)> = entries.iter().map(|&e| entry_parts(e)).collect();
        for (&(v, w), &want) in back.iter().zip(&vals) {
            assert_eq!((v.to_bits(), w), (want.to_bits(), 0.5));
        }
    }

    #[test]
    fn distinct_values_by_table_and_by_sort_agree() {
        // Few values (the table) and many (the sort), with signed zeros and weights.
        for n_values in [7u64, 3 * TABLE_VALUES as u64] {
            let mut entries: Vec<u64> = (0..20_000u64)
                .map(|i| {
                    let v = match i % 11 {
                        0 => 0.0,
                        1 => -0.0,
                        _ => ((i * 7919) % n_values) as f32 - 3.0,
                    };
                    sort_entry(v, 1.0 + (i % 3) as f32)
                })
                .collect();
            let d = distinct_values(&mut entries.clone());
            assert!(d.windows(2).all(|w| w[0].0 < w[1].0), "strictly ascending");
            let total: f64 = d.iter().map(|x| x.1).sum();
            let want: f64 = (0..20_000u64).map(|i| 1.0 + (i % 3) as f64).sum();
            assert_eq!(total, want);
            // Sorting every word gives the same values and weights.
            entries.sort_unstable();
            let mut by_sort: Vec<(f32, f64)> = Vec::new();
            for (v, w) in entries.iter().map(|&e| entry_parts(e)) {
                match by_sort.last_mut() {
                    Some((last, acc)) if *last == v => *acc += f64::from(w),
                    _ => by_sort.push((v, f64::from(w))),
                }
            }
            assert_eq!(d, by_sort);
        }
    }

    proptest! {
        /// A row binned at once equals each value binned alone, whatever the values (NaN,
        /// infinities, signed zeros, the cut points themselves) and however many cuts.
        #[test]
        fn bin_row_is_bin_of_each_value(
            cut_counts in proptest::collection::vec(0usize..=254, 1..40),
            seed in any::<u64>(),
        ) {
            let mut x = seed | 1;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let cuts: Vec<Vec<f32>> = cut_counts
                .iter()
                .map(|&k| {
                    let mut c: Vec<f32> = (0..k).map(|_| (next() % 2001) as f32 / 10.0 - 100.0).collect();
                    c.sort_by(f32::total_cmp);
                    c.dedup();
                    c
                })
                .collect();
            let cuts = BinCuts::from_cuts(cuts);
            let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e30, -1e30];
            for _ in 0..50 {
                let xs: Vec<f32> = (0..cuts.n_features())
                    .map(|f| match next() % 4 {
                        0 => special[(next() % special.len() as u64) as usize],
                        1 if !cuts.cuts(f).is_empty() => cuts.cuts(f)[(next() as usize) % cuts.cuts(f).len()],
                        _ => (next() % 2101) as f32 / 10.0 - 105.0,
                    })
                    .collect();
                let mut out = vec![0u8; xs.len()];
                cuts.bin_row(&xs, &mut out);
                let each: Vec<u8> = xs.iter().enumerate().map(|(f, &v)| cuts.bin(f, v)).collect();
                prop_assert_eq!(out, each);
            }
        }

        /// Group codes decode to every member's own code.
        #[test]
        fn group_codes_decode_to_feature_codes(
            rows in proptest::collection::vec(proptest::collection::vec(proptest::option::of(0u8..9), 5), 1..200),
        ) {
            let vals: Vec<f32> = rows.iter().flatten().map(|v| v.map_or(f32::NAN, f32::from)).collect();
            let m = DenseMatrix::new(rows.len(), 5, vals).unwrap();
            let b = BinnedMatrix::new(&m, BinCuts::compute(&m, None, 256));
            let ng = b.n_groups();
            // At most 10 codes each: features always share bytes.
            prop_assert!(ng < 5);
            for r in 0..rows.len() {
                for (g, group) in b.groups().iter().enumerate() {
                    let code = usize::from(b.group_codes()[r * ng + g]);
                    prop_assert!(code < group.slots);
                    for (&(f, stride), &size) in group.members.iter().zip(&group.sizes) {
                        prop_assert_eq!((code / stride % size) as u8, b.code(r, f));
                    }
                }
            }
        }

        #[test]
        fn bin_order_matches_threshold(vals in proptest::collection::vec(-100f32..100.0, 1..400), max_bin in 2usize..40) {
            let m = DenseMatrix::new(vals.len(), 1, vals.clone()).unwrap();
            let cuts = BinCuts::compute(&m, None, max_bin);
            prop_assert!(cuts.n_value_bins(0) <= max_bin);
            prop_assert!(cuts.cuts(0).windows(2).all(|w| w[0] < w[1]));
            for &x in &vals {
                let b = cuts.bin(0, x);
                for s in 0..cuts.cuts(0).len() as u8 {
                    // "bin <= s" must be the same test as "x < threshold(s)".
                    prop_assert_eq!(b <= s, x < cuts.threshold(0, s));
                }
            }
        }
    }
}
