//! A per-API outbound rate limit: calls are spaced at least `1/rate` apart in this process.
//! Reserving a slot takes a short lock with no `.await` inside; the wait happens outside it.

use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so a paused test clock governs the spacing too.
use tokio::time::Instant;

pub struct RateLimit {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl RateLimit {
    /// `per_sec` <= 0 means unlimited.
    pub fn new(per_sec: f64) -> RateLimit {
        let interval = (per_sec > 0.0).then(|| Duration::from_secs_f64(1.0 / per_sec));
        RateLimit {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Wait for this call's slot.
    pub async fn acquire(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_by_the_rate() {
        let rl = RateLimit::new(10.0);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            rl.acquire().await;
        }
        // Four intervals of 100 ms after the first call (paused clock: exact, not timed).
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}
