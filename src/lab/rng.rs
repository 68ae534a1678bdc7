//! [`Rng`]: a tiny seeded generator for reproducible lab timings.

use std::time::Duration;

/// A small seeded pseudo-random generator (splitmix64): the same seed gives the same
/// sequence on every platform, so a lab run with random delays can be replayed. Not
/// for anything that needs real randomness.
///
/// ```
/// use std::time::Duration;
/// use closefirst::lab::Rng;
///
/// let (mut a, mut b) = (Rng::new(7), Rng::new(7));
/// assert_eq!(a.next_u64(), b.next_u64());
/// let d = a.duration_between(Duration::from_millis(10), Duration::from_millis(20));
/// assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
/// ```
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..=max` (slightly biased; fine for timings).
    pub fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }

    /// A duration in `lo..=hi` with microsecond resolution (`lo` when `hi < lo`).
    pub fn duration_between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo);
        let micros = u64::try_from(span.as_micros()).unwrap_or(u64::MAX);
        lo.saturating_add(Duration::from_micros(self.up_to(micros)))
    }
}
