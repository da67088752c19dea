//! Retrying a connection that failed for a passing reason (a busy server dropping
//! unauthenticated connections, a refused or timed-out connect): jittered exponential
//! backoff, 1 s, 2 s, 4 s … capped at 30 s, each ±50 %, so that hosts dropped together do
//! not come back together.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The first delay.
pub const FIRST: Duration = Duration::from_secs(1);
/// No delay (before jitter) is longer.
pub const CAP: Duration = Duration::from_secs(30);

/// The delay before retry number `attempt` (0 for the first retry): `FIRST · 2^attempt`,
/// at most `CAP`, scaled by `0.5 + jitter` where `jitter` is in `[0, 1)` (values outside
/// are clamped): between half and one and a half times the nominal delay.
pub fn delay(attempt: u32, jitter: f64) -> Duration {
    let nominal = FIRST
        .checked_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .unwrap_or(CAP)
        .min(CAP);
    let jitter = if jitter.is_nan() {
        0.5
    } else {
        jitter.clamp(0.0, 1.0)
    };
    nominal.mul_f64(0.5 + jitter)
}

/// A number in `[0, 1)` that differs between processes and calls: std's hasher keys are
/// drawn from the OS random source once per process, and each call hashes a fresh counter
/// and the time with new keys.
pub fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    // 53 random bits make an f64 in [0, 1).
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_up_to_the_cap() {
        let nominal: Vec<u64> = (0..8).map(|a| delay(a, 0.5).as_millis() as u64).collect();
        assert_eq!(nominal, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        // Far attempts neither overflow nor pass the cap.
        assert_eq!(delay(31, 0.5), CAP);
        assert_eq!(delay(u32::MAX, 0.5), CAP);
    }

    #[test]
    fn jitter_spans_half_to_one_and_a_half() {
        assert_eq!(delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(delay(2, 1.0), Duration::from_secs(6));
        assert_eq!(delay(10, 0.0), Duration::from_secs(15));
        assert_eq!(delay(10, 1.0), Duration::from_secs(45));
        // Out of range or NaN: clamped, never a negative or huge delay.
        assert_eq!(delay(0, -3.0), Duration::from_millis(500));
        assert_eq!(delay(0, 7.0), Duration::from_millis(1500));
        assert_eq!(delay(0, f64::NAN), Duration::from_secs(1));
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)), "{draws:?}");
        let mut distinct = draws.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        assert!(distinct.len() > 60, "{draws:?}");
    }
}
