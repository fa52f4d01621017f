//! Event-loop time for per-request stamps: microseconds since the proxy started.
//!
//! Invariants:
//! - The loop reads the OS clock once per tick and stamps every request of that tick with the
//!   same value, so a request costs no clock read and no `Instant` arithmetic.
//! - Stamps come from one monotonic source and only grow; `since` saturates, so a stamp taken
//!   later than `now` (never expected) reads as zero elapsed rather than wrapping.

/// Microseconds since the proxy started.
pub type Micros = u64;

/// Microseconds elapsed from `then` to `now`.
#[inline]
pub fn since(now: Micros, then: Micros) -> Micros {
    now.saturating_sub(then)
}

/// A duration in milliseconds as microseconds.
#[inline]
pub fn ms(v: u64) -> Micros {
    v.saturating_mul(1000)
}
