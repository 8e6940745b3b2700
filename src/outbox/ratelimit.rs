//! A per-API outbound rate limit in this process, by `governor`: calls are spaced at least
//! `1/rate` apart (a burst of one), and a caller over the rate waits for its turn.

use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub struct RateLimit {
    limiter: Option<DefaultDirectRateLimiter>,
}

/// One call every `1/per_sec` seconds, no burst; `None` for no limit (`per_sec` <= 0).
pub(crate) fn quota(per_sec: f64) -> Option<Quota> {
    if !(per_sec > 0.0 && per_sec.is_finite()) {
        return None;
    }
    // At most one call a nanosecond: `with_period` refuses a zero period.
    Quota::with_period(Duration::from_secs_f64(1.0 / per_sec).max(Duration::from_nanos(1)))
}

impl RateLimit {
    /// `per_sec` <= 0 means unlimited.
    pub fn new(per_sec: f64) -> RateLimit {
        RateLimit {
            limiter: quota(per_sec).map(RateLimiter::direct),
        }
    }

    /// Wait for this call's turn.
    pub async fn acquire(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn the_rate_spaces_calls_one_period_apart_with_no_burst() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(quota(10.0).unwrap(), clock.clone());
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_err(), "a second call at once waits");
        clock.advance(Duration::from_millis(99));
        assert!(limiter.check().is_err());
        clock.advance(Duration::from_millis(1));
        assert!(limiter.check().is_ok(), "one period later");
        // Half a call a second: two seconds apart.
        let slow = RateLimiter::direct_with_clock(quota(0.5).unwrap(), clock.clone());
        assert!(slow.check().is_ok());
        clock.advance(Duration::from_millis(1_999));
        assert!(slow.check().is_err());
        clock.advance(Duration::from_millis(1));
        assert!(slow.check().is_ok());
    }

    #[tokio::test]
    async fn no_rate_is_no_limit() {
        for per_sec in [0.0, -1.0, f64::NAN] {
            assert!(quota(per_sec).is_none());
        }
        let rl = RateLimit::new(0.0);
        for _ in 0..1_000 {
            rl.acquire().await;
        }
    }
}
