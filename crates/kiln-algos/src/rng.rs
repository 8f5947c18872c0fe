//! A small seeded PRNG (SplitMix64) so sampling is reproducible without a `rand` dependency.

/// SplitMix64: fast, statistically fine for row/column sampling, fully determined by the seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The generator of round `round` of a model trained with `seed`: a stream of its own,
    /// determined by (seed, round) alone, so a run resumed at any round draws what an
    /// uninterrupted run draws there.
    pub fn for_round(seed: u64, round: usize) -> Self {
        let mut mix = Rng::new(round as u64 ^ 0xA076_1D64_78BD_642F);
        Rng::new(seed ^ mix.next_u64())
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// `k` distinct items of `items`, returned in their original order.
    pub fn sample_sorted(&mut self, items: &[usize], k: usize) -> Vec<usize> {
        if k >= items.len() {
            return items.to_vec();
        }
        let mut idx: Vec<usize> = (0..items.len()).collect();
        for i in 0..k {
            let j = i + self.below(items.len() - i);
            idx.swap(i, j);
        }
        let mut chosen: Vec<usize> = idx[..k].to_vec();
        chosen.sort_unstable();
        chosen.into_iter().map(|i| items[i]).collect()
    }
}

/// How many of `n` features a `colsample_*` fraction keeps (at least one).
pub fn n_sampled(n: usize, frac: f64) -> usize {
    ((n as f64 * frac).round() as usize).clamp(1, n.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            let x = a.next_f64();
            assert_eq!(x, b.next_f64());
            assert!((0.0..1.0).contains(&x));
            assert!(a.below(10) < 10);
            b.below(10);
        }
        let s = a.sample_sorted(&[1, 3, 5, 7, 9], 3);
        assert_eq!(s.len(), 3);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(n_sampled(28, 0.5), 14);
        assert_eq!(n_sampled(3, 0.01), 1);
    }
}
