//! The sandbox's controllable clock: wall time plus an offset that only the control API
//! moves, so tests and the demo can expire tokens and legacy credentials without waiting.
//!
//! Everything in the sandbox that WeChat would judge by time (token lifetimes, daily quotas,
//! the 7-day credential window, `CreateTime` of reverse queries) reads this clock; it never
//! reads the system clock directly.

use std::sync::atomic::{AtomicI64, Ordering};

/// WeChat's daily quotas reset at midnight Beijing time (UTC+8).
const BEIJING_OFFSET_SECS: i64 = 8 * 3600;
const DAY_SECS: i64 = 86_400;

/// Wall clock plus an offset in seconds. Lock-free.
#[derive(Debug, Default)]
pub struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    /// Unix seconds as the sandbox sees them.
    pub fn now(&self) -> i64 {
        chrono::Utc::now().timestamp() + self.offset_secs.load(Ordering::Relaxed)
    }

    /// Moves the clock by `secs` (negative moves it back) and returns the new offset.
    pub fn advance(&self, secs: i64) -> i64 {
        self.offset_secs.fetch_add(secs, Ordering::Relaxed) + secs
    }

    /// Seconds the sandbox clock is ahead of the wall clock.
    pub fn offset(&self) -> i64 {
        self.offset_secs.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.offset_secs.store(0, Ordering::Relaxed);
    }

    /// The quota day (days since the epoch, Beijing time) that `now` falls in.
    pub fn quota_day(now: i64) -> i64 {
        (now + BEIJING_OFFSET_SECS).div_euclid(DAY_SECS)
    }

    /// The quota minute that `now` falls in.
    pub fn quota_minute(now: i64) -> i64 {
        now.div_euclid(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_by_the_offset() {
        let c = Clock::default();
        let before = c.now();
        assert_eq!(c.advance(3600), 3600);
        assert!(c.now() - before >= 3600);
        c.reset();
        assert_eq!(c.offset(), 0);
    }

    #[test]
    fn quota_days_turn_at_beijing_midnight() {
        // 2024-01-01T15:59:59Z is 23:59:59 in Beijing; one second later is the next day.
        let t = 1_704_124_799;
        assert_eq!(Clock::quota_day(t) + 1, Clock::quota_day(t + 1));
    }
}
