//! Retry policy as data (pure): how every outcome of a WeChat call is classified, and when
//! the next try happens. No I/O, no clocks: callers pass `now` and a random source.

use std::time::Duration;

use rand::Rng;

use crate::wechat::client::ApiError;
use crate::wechat::errcode::{answer, errcode_of, of_errcode, Answer};

/// What to do after one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// WeChat accepted it.
    Delivered,
    /// 40001/40014/42001: the token is bad. Invalidate it if it is still the current one,
    /// refresh once and retry the call once, immediately.
    TokenInvalid,
    /// `-1`, 932001, timeouts, network errors, 5xx, 429: retry on the schedule.
    Transient,
    /// 45011: the minute quota is spent; retry after the next minute starts.
    MinuteQuota,
    /// 45009: the daily quota is spent; pause this API until the quota resets.
    DailyQuota,
    /// 40097, 41001, 150004, 932002, 932003, other 4xx: retrying cannot help until someone
    /// fixes data or configuration; the entry goes dead (and can be redriven).
    Permanent,
}

/// Classify one call's result.
pub fn classify<T>(result: &Result<T, ApiError>) -> Class {
    match errcode_of(result) {
        Some(errcode) => classify_errcode(errcode),
        None => of_answer(answer(result)),
    }
}

/// WeChat's errcodes from the spec (express §2.3/§3.6, token §3).
pub fn classify_errcode(errcode: i64) -> Class {
    match errcode {
        // The reverse query failed on WeChat's side: the push may be tried again.
        932001 => Class::Transient,
        _ => of_answer(of_errcode(errcode)),
    }
}

/// The shared meaning ([`crate::wechat::errcode`]) as a push's class.
fn of_answer(a: Answer) -> Class {
    match a {
        Answer::Ok => Class::Delivered,
        Answer::TokenInvalid => Class::TokenInvalid,
        Answer::Transient => Class::Transient,
        Answer::MinuteQuota => Class::MinuteQuota,
        Answer::DailyQuota => Class::DailyQuota,
        Answer::Other => Class::Permanent,
    }
}

/// Whether the spec lists this errcode for the express APIs. One nobody listed is classified
/// permanent (never retried forever) and logged loudly with its rid: someone must ask WeChat.
pub fn is_listed(errcode: i64) -> bool {
    errcode_name(errcode) != "other"
}

/// Human name of an errcode for the attempt log and the API.
pub fn errcode_name(errcode: i64) -> &'static str {
    match errcode {
        -1 => "system busy",
        40001 | 40014 => "access_token invalid",
        42001 => "access_token expired",
        41001 => "access_token missing",
        40097 => "invalid parameter",
        45009 => "daily quota reached",
        45011 => "minute quota reached",
        150004 => "carrier configuration does not exist",
        932001 => "reverse query failed (callback unreachable, timed out or unreadable)",
        932002 => "reverse query inconsistent with the push",
        932003 => "reverse query returned abnormal waybill data",
        _ => "other",
    }
}

/// Delays between tries, stored in configuration; each is jittered by ±`jitter` (0..1).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub delays: Vec<Duration>,
    pub jitter: f64,
}

impl Default for Schedule {
    /// 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h: about 10.7 hours in all, long enough to
    /// ride out a WeChat incident, short enough that a tracking step is still worth showing.
    fn default() -> Self {
        let secs = [5, 30, 120, 600, 1800, 3600, 10_800, 21_600];
        Schedule {
            delays: secs.iter().map(|s| Duration::from_secs(*s)).collect(),
            jitter: 0.2,
        }
    }
}

/// What follows a failed try that may be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// The schedule is spent: the entry goes dead with this error.
    Dead(String),
}

impl Schedule {
    /// After a failed try whose entry had `tries` failed tries before it, its `detail` and
    /// the time `now_ms`: the next try's time, or the error that ends the entry.
    pub fn after_failure(
        &self,
        tries: i64,
        detail: &str,
        now_ms: i64,
        rng: &mut impl Rng,
    ) -> AfterFailure {
        let tries_done = tries as u32 + 1;
        match self.next_delay(tries_done, rng) {
            Some(d) => AfterFailure::RetryAt(now_ms + d.as_millis() as i64),
            None => AfterFailure::Dead(format!(
                "retry schedule spent after {tries_done} tries; last: {detail}"
            )),
        }
    }

    /// Delay before try number `tries_done + 1`, or `None` when the schedule is spent.
    pub fn next_delay(&self, tries_done: u32, rng: &mut impl Rng) -> Option<Duration> {
        let base = *self.delays.get(tries_done.checked_sub(1)? as usize)?;
        if self.jitter <= 0.0 {
            return Some(base);
        }
        let factor = 1.0 + rng.gen_range(-self.jitter..=self.jitter);
        Some(base.mul_f64(factor.max(0.0)))
    }

    /// Parse a comma-separated list of seconds (`"5,30,120"`).
    pub fn parse(list: &str, jitter: f64) -> Result<Schedule, String> {
        let delays = list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{s:?} is not a number of seconds"))
                    .map(Duration::from_secs_f64)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err("the retry schedule is empty".into());
        }
        if !(0.0..1.0).contains(&jitter) {
            return Err("jitter must be in 0..1".into());
        }
        Ok(Schedule { delays, jitter })
    }
}

/// Seconds until 00:00 Beijing time (UTC+8), when WeChat's daily quotas reset.
pub fn secs_until_quota_reset(now: i64) -> i64 {
    let day = 86_400;
    let local = now + 8 * 3600;
    day - local.rem_euclid(day)
}

/// Seconds until the next minute starts (45011).
pub fn secs_until_next_minute(now: i64) -> i64 {
    60 - now.rem_euclid(60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn classes_come_from_the_errcode_never_from_the_text() {
        // 40001's text now recommends getStableAccessToken; only the code counts.
        let e = ApiError::WeChat {
            errcode: 40001,
            errmsg: "invalid credential, could get access_token by getStableAccessToken rid: x"
                .into(),
        };
        assert_eq!(classify::<()>(&Err(e)), Class::TokenInvalid);
        let busy_text = ApiError::WeChat {
            errcode: 61234,
            errmsg: "system busy, please retry".into(),
        };
        assert_eq!(classify::<()>(&Err(busy_text)), Class::Permanent);
        assert!(!is_listed(61234) && is_listed(932001) && is_listed(-1));
    }

    #[test]
    fn every_errcode_of_the_spec_has_a_class() {
        for (code, class) in [
            (-1, Class::Transient),
            (40001, Class::TokenInvalid),
            (40014, Class::TokenInvalid),
            (42001, Class::TokenInvalid),
            (41001, Class::Permanent),
            (40097, Class::Permanent),
            (45009, Class::DailyQuota),
            (45011, Class::MinuteQuota),
            (150004, Class::Permanent),
            (932001, Class::Transient),
            (932002, Class::Permanent),
            (932003, Class::Permanent),
        ] {
            assert_eq!(classify_errcode(code), class, "{code}");
        }
    }

    #[test]
    fn transport_failures_are_transient_and_client_errors_permanent() {
        let r = |e: ApiError| classify::<()>(&Err(e));
        assert_eq!(r(ApiError::Timeout), Class::Transient);
        assert_eq!(r(ApiError::Network("reset".into())), Class::Transient);
        assert_eq!(r(ApiError::Http(502)), Class::Transient);
        assert_eq!(r(ApiError::Http(429)), Class::Transient);
        assert_eq!(r(ApiError::Http(404)), Class::Permanent);
        assert_eq!(classify::<()>(&Ok(())), Class::Delivered);
    }

    #[test]
    fn the_schedule_is_jittered_within_bounds_and_ends() {
        let s = Schedule::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let d = s.next_delay(1, &mut rng).unwrap().as_secs_f64();
            assert!((4.0..=6.0).contains(&d), "{d}");
        }
        assert!(s.next_delay(8, &mut rng).is_some());
        assert!(s.next_delay(9, &mut rng).is_none());
        assert!(s.next_delay(0, &mut rng).is_none());
        assert_eq!(
            Schedule::parse("1, 2.5", 0.0).unwrap().delays[1],
            Duration::from_millis(2500)
        );
        assert!(Schedule::parse("x", 0.1).is_err());
    }

    #[test]
    fn quota_resets_at_beijing_midnight() {
        // 2024-01-01 15:59:59 UTC = 23:59:59 in Beijing.
        assert_eq!(secs_until_quota_reset(1_704_124_799), 1);
        assert_eq!(secs_until_next_minute(120), 60);
    }

    #[test]
    fn after_a_failure_the_schedule_says_when_or_that_the_entry_is_dead() {
        let s = Schedule::parse("1, 2.5", 0.0).unwrap();
        let rng = &mut rand::thread_rng();
        assert_eq!(
            s.after_failure(0, "x", 1_000, rng),
            AfterFailure::RetryAt(2_000)
        );
        assert_eq!(
            s.after_failure(1, "x", 1_000, rng),
            AfterFailure::RetryAt(3_500)
        );
        assert_eq!(
            s.after_failure(2, "pathnotify: timed out", 1_000, rng),
            AfterFailure::Dead(
                "retry schedule spent after 3 tries; last: pathnotify: timed out".into()
            )
        );
    }
}
