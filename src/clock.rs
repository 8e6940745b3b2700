//! The wall clock, in the units the store and WeChat use, and the freshness check of a
//! timestamp a request carries.

/// Unix seconds now.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Whether `timestamp` (Unix s, as a request gave it) is within `window` seconds of `now`.
/// Checked arithmetic: the timestamp is chosen by whoever sends the request, and an extreme
/// value must neither overflow nor wrap into a "fresh" difference.
pub fn within_window(now: i64, timestamp: i64, window: i64) -> bool {
    now.checked_sub(timestamp)
        .and_then(i64::checked_abs)
        .is_some_and(|d| d <= window)
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::within_window;

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        let now = 1_764_000_000;
        assert!(within_window(now, now - 300, 300));
        assert!(within_window(now, now + 300, 300));
        assert!(!within_window(now, now - 301, 300));
        for t in [i64::MIN, i64::MIN + 1, i64::MAX, -1, 0] {
            assert!(!within_window(now, t, 300), "{t}");
        }
        assert!(!within_window(i64::MIN, i64::MAX, i64::MAX));
    }
}
