//! A small deterministic random number generator (xoshiro256++ seeded by SplitMix64).
//!
//! Hand-written rather than taken from `rand` on purpose: a suggestion must be reproducible from
//! (seed, trial index, history) across restarts *and* across dependency upgrades, and `rand`
//! does not promise stable value streams between versions. The generator is 40 lines; the
//! property we need (same seed, same stream) is tested below.

/// Streams separate independent uses of randomness for the same trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Independent random samples (Random strategy, random fallbacks).
    Sample = 1,
    /// The shift of the quasi-random initial design (depends on the seed only).
    Design = 2,
    /// GP hyperparameter restarts.
    GpFit = 3,
    /// Acquisition-function candidates and local search.
    Acquisition = 4,
}

/// xoshiro256++ state.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator seeded from a single 64-bit value.
    pub(crate) fn from_seed(seed: u64) -> Self {
        let mut st = seed;
        let s = [
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
            splitmix64(&mut st),
        ];
        Rng { s }
    }

    /// The generator for one use (`stream`) of one trial of one tuning job.
    pub(crate) fn for_trial(seed: u64, trial_index: usize, stream: Stream) -> Self {
        // Mix the three inputs through SplitMix64 so nearby seeds/indices give unrelated streams.
        let mut st = seed;
        let a = splitmix64(&mut st);
        let mut st = a ^ (trial_index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let b = splitmix64(&mut st);
        let mut st = b ^ (stream as u64).wrapping_mul(0xA24B_AED4_963E_E407);
        Rng::from_seed(splitmix64(&mut st))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = (self.s[0].wrapping_add(self.s[3]))
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in 0..n (n > 0); the modulo bias is below 2^-40 for the n we use.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() >> 11) % n as u64) as usize
    }

    /// Standard normal via Box–Muller.
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // in (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_stream() {
        let mut a = Rng::for_trial(7, 3, Stream::Sample);
        let mut b = Rng::for_trial(7, 3, Stream::Sample);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn different_trials_differ() {
        let mut a = Rng::for_trial(7, 3, Stream::Sample);
        let mut b = Rng::for_trial(7, 4, Stream::Sample);
        let mut c = Rng::for_trial(7, 3, Stream::Acquisition);
        let x = a.next_u64();
        assert_ne!(x, b.next_u64());
        assert_ne!(x, c.next_u64());
    }

    #[test]
    fn uniform_in_range_and_roughly_centred() {
        let mut r = Rng::from_seed(1);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            sum += u;
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.02);
    }
}
