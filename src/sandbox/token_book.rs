//! access_token issuing and checking, with WeChat's rules (spec `wechat-access-token.md`):
//! `/cgi-bin/token` issues a new token on every call and keeps the previous one valid for the
//! overlap; `/cgi-bin/stable_token` returns the current token while it has more than the
//! overlap left, renews it in the last overlap window, and limits `force_refresh`.
//!
//! The two endpoints keep separate chains (tokens of one never invalidate the other's, §2
//! "isolation"). Checking a token on the business hot path is one sharded map read; the chain
//! mutexes are taken only when a token is issued.

use std::sync::Mutex;

use dashmap::DashMap;
use rand::distributions::Alphanumeric;
use rand::Rng as _;

use super::api::{errcode, WxError};
use super::clock::Clock;

/// `/cgi-bin/stable_token` calls allowed per day (spec §2 "rate limit").
pub const STABLE_DAILY_LIMIT: u32 = 500_000;
/// `/cgi-bin/stable_token` calls allowed per minute (spec §2 "rate limit").
pub const STABLE_MINUTE_LIMIT: u32 = 10_000;
/// Consecutive `force_refresh` calls closer than this do not refresh (spec §2 "force mode quota").
pub const FORCE_MIN_GAP_SECS: i64 = 30;
/// Issued tokens are forgotten this long after they stopped working; afterwards they answer
/// 40014 (never issued) instead of 40001/42001.
const FORGET_AFTER_SECS: i64 = 86_400;
/// WeChat tokens are long; the spec asks clients to reserve 512 characters.
const TOKEN_LEN: usize = 136;

/// Lifetimes and limits, from [`super::SandboxSettings`].
#[derive(Debug, Clone, Copy)]
pub struct TokenRules {
    pub ttl_secs: i64,
    pub overlap_secs: i64,
    pub token_daily_limit: u32,
    pub force_refresh_daily_limit: u32,
}

/// A token handed out, with the `expires_in` to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
}

#[derive(Debug, Clone, Copy)]
struct TokenEntry {
    /// Natural end of life: after it the token answers 42001.
    expires_at: i64,
    /// Superseded by a newer token of its chain: after it the token answers 40001.
    retired_at: Option<i64>,
}

impl TokenEntry {
    fn valid_at(&self, now: i64) -> bool {
        now < self.expires_at && self.retired_at.is_none_or(|r| now < r)
    }
}

/// A per-day (or per-minute) counter that restarts when its period changes.
#[derive(Debug, Default, Clone, Copy)]
struct Quota {
    period: i64,
    used: u32,
}

impl Quota {
    /// Counts one call in `period`; false when `limit` calls were already counted.
    fn take(&mut self, period: i64, limit: u32) -> bool {
        if self.period != period {
            *self = Quota { period, used: 0 };
        }
        if self.used >= limit {
            return false;
        }
        self.used += 1;
        true
    }
}

#[derive(Debug, Default)]
struct Chain {
    /// Tokens of this chain that may still work, oldest first; the last is the current one.
    live: Vec<String>,
    daily: Quota,
    minute: Quota,
    force_daily: Quota,
    last_force_at: Option<i64>,
}

/// Every token the sandbox issued, and the two issuing chains.
#[derive(Debug, Default)]
pub struct TokenBook {
    tokens: DashMap<String, TokenEntry>,
    classic: Mutex<Chain>,
    stable: Mutex<Chain>,
}

impl TokenBook {
    /// Business-API check of `access_token` (spec §3): unknown -> 40014, superseded past its
    /// overlap -> 40001, past its lifetime -> 42001. Whichever ended first decides.
    pub fn check(&self, token: &str, now: i64) -> Result<(), WxError> {
        let Some(entry) = self.tokens.get(token).map(|e| *e) else {
            return Err(WxError::new(errcode::INVALID_ACCESS_TOKEN));
        };
        if entry.valid_at(now) {
            return Ok(());
        }
        match entry.retired_at {
            Some(r) if r < entry.expires_at => Err(WxError::new(errcode::INVALID_CREDENTIAL)),
            _ => Err(WxError::new(errcode::ACCESS_TOKEN_EXPIRED)),
        }
    }

    /// `/cgi-bin/token`, credentials already checked: a new token every call; the previous
    /// one keeps working for the overlap, anything older stops now.
    pub fn issue_classic(&self, rules: &TokenRules, now: i64) -> Result<Issued, WxError> {
        let issued = {
            let mut chain = lock(&self.classic);
            if !chain
                .daily
                .take(Clock::quota_day(now), rules.token_daily_limit)
            {
                return Err(WxError::with(
                    errcode::DAILY_QUOTA,
                    "/cgi-bin/token daily limit",
                ));
            }
            self.issue(&mut chain, rules, now, now + rules.overlap_secs)
        };
        self.forget_old(now);
        Ok(issued)
    }

    /// `/cgi-bin/stable_token`, credentials already checked.
    pub fn issue_stable(
        &self,
        rules: &TokenRules,
        now: i64,
        force_refresh: bool,
    ) -> Result<Issued, WxError> {
        let issued = {
            let mut chain = lock(&self.stable);
            if !chain
                .minute
                .take(Clock::quota_minute(now), STABLE_MINUTE_LIMIT)
            {
                return Err(WxError::with(
                    errcode::MINUTE_QUOTA,
                    "stable_token minute limit",
                ));
            }
            if !chain.daily.take(Clock::quota_day(now), STABLE_DAILY_LIMIT) {
                return Err(WxError::with(
                    errcode::DAILY_QUOTA,
                    "stable_token daily limit",
                ));
            }
            let mut refresh = false;
            if force_refresh {
                if !chain
                    .force_daily
                    .take(Clock::quota_day(now), rules.force_refresh_daily_limit)
                {
                    return Err(WxError::with(
                        errcode::DAILY_QUOTA,
                        "force_refresh daily limit",
                    ));
                }
                // Closer than 30 s to the previous force call: "no refresh happens".
                refresh = chain
                    .last_force_at
                    .is_none_or(|t| now - t >= FORCE_MIN_GAP_SECS);
                if refresh {
                    chain.last_force_at = Some(now);
                }
            }
            let current = chain
                .live
                .last()
                .and_then(|t| self.tokens.get(t).map(|e| (t.clone(), *e)));
            match current {
                Some((token, entry))
                    if !refresh
                        && entry.valid_at(now)
                        && entry.expires_at - now > rules.overlap_secs =>
                {
                    Issued {
                        access_token: token,
                        expires_in: entry.expires_at - now,
                    }
                }
                // Normal mode in the last overlap window renews: the old token simply runs out.
                Some((_, entry)) if !refresh && entry.valid_at(now) => {
                    self.issue(&mut chain, rules, now, entry.expires_at)
                }
                _ => self.issue(&mut chain, rules, now, now + rules.overlap_secs),
            }
        };
        self.forget_old(now);
        Ok(issued)
    }

    /// Issues a new current token: the previous current one stops at `previous_until` (or
    /// earlier, by its own lifetime), every older one stops now. Caller holds the chain lock.
    fn issue(
        &self,
        chain: &mut Chain,
        rules: &TokenRules,
        now: i64,
        previous_until: i64,
    ) -> Issued {
        let newest = chain.live.len().checked_sub(1);
        for (i, t) in chain.live.iter().enumerate() {
            let until = if Some(i) == newest {
                previous_until
            } else {
                now
            };
            if let Some(mut e) = self.tokens.get_mut(t) {
                e.retired_at = Some(e.retired_at.map_or(until, |r| r.min(until)));
            }
        }
        let token = new_token();
        self.tokens.insert(
            token.clone(),
            TokenEntry {
                expires_at: now + rules.ttl_secs,
                retired_at: None,
            },
        );
        chain
            .live
            .retain(|t| self.tokens.get(t).is_some_and(|e| e.valid_at(now)));
        chain.live.push(token.clone());
        Issued {
            access_token: token,
            expires_in: rules.ttl_secs,
        }
    }

    fn forget_old(&self, now: i64) {
        // Cheap enough: the maps hold at most a few thousand tokens a day.
        self.tokens.retain(|_, e| {
            e.expires_at.min(e.retired_at.unwrap_or(i64::MAX)) > now - FORGET_AFTER_SECS
        });
    }

    pub fn reset(&self) {
        *lock(&self.classic) = Chain::default();
        *lock(&self.stable) = Chain::default();
        self.tokens.clear();
    }
}

/// A poisoned chain lock only means another request panicked mid-issue; the chain is still
/// usable (worst case one token too many), so recover instead of failing every later call.
fn lock(m: &Mutex<Chain>) -> std::sync::MutexGuard<'_, Chain> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn new_token() -> String {
    let mut s = String::with_capacity(TOKEN_LEN);
    s.push_str("86_");
    s.extend(
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(TOKEN_LEN - 3)
            .map(char::from),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: TokenRules = TokenRules {
        ttl_secs: 7200,
        overlap_secs: 300,
        token_daily_limit: 3,
        force_refresh_daily_limit: 2,
    };

    #[test]
    fn classic_previous_token_overlaps_then_is_invalid() {
        let b = TokenBook::default();
        let t1 = b.issue_classic(&RULES, 1000).unwrap().access_token;
        let t2 = b.issue_classic(&RULES, 1010).unwrap().access_token;
        assert_ne!(t1, t2);
        assert!(b.check(&t1, 1309).is_ok());
        assert_eq!(b.check(&t1, 1310).unwrap_err().errcode, 40001);
        assert!(b.check(&t2, 1010 + 7199).is_ok());
        assert_eq!(b.check(&t2, 1010 + 7200).unwrap_err().errcode, 42001);
        assert_eq!(b.check("nope", 1000).unwrap_err().errcode, 40014);
    }

    #[test]
    fn classic_token_two_back_stops_at_once() {
        let b = TokenBook::default();
        let t1 = b.issue_classic(&RULES, 1000).unwrap().access_token;
        b.issue_classic(&RULES, 1001).unwrap();
        b.issue_classic(&RULES, 1002).unwrap();
        assert_eq!(b.check(&t1, 1002).unwrap_err().errcode, 40001);
    }

    #[test]
    fn classic_daily_limit_is_45009_and_resets_next_day() {
        let b = TokenBook::default();
        for _ in 0..3 {
            b.issue_classic(&RULES, 1000).unwrap();
        }
        assert_eq!(b.issue_classic(&RULES, 1000).unwrap_err().errcode, 45009);
        assert!(b.issue_classic(&RULES, 1000 + 86_400).is_ok());
    }

    #[test]
    fn stable_normal_mode_reuses_then_renews_in_the_last_window() {
        let b = TokenBook::default();
        let a = b.issue_stable(&RULES, 0, false).unwrap();
        assert_eq!(a.expires_in, 7200);
        let again = b.issue_stable(&RULES, 100, false).unwrap();
        assert_eq!(again.access_token, a.access_token);
        assert_eq!(again.expires_in, 7100);
        let renewed = b.issue_stable(&RULES, 6900, false).unwrap();
        assert_ne!(renewed.access_token, a.access_token);
        assert!(b.check(&a.access_token, 7199).is_ok());
        assert_eq!(b.check(&a.access_token, 7200).unwrap_err().errcode, 42001);
    }

    #[test]
    fn stable_force_refresh_overlaps_is_throttled_and_limited() {
        let b = TokenBook::default();
        let leaked = b.issue_stable(&RULES, 0, false).unwrap().access_token;
        let f1 = b.issue_stable(&RULES, 10, true).unwrap().access_token;
        assert_ne!(leaked, f1);
        assert!(
            b.check(&leaked, 309).is_ok(),
            "one force call keeps the overlap"
        );
        assert_eq!(
            b.issue_stable(&RULES, 20, true).unwrap().access_token,
            f1,
            "within 30 s nothing is refreshed"
        );
        assert_eq!(
            b.issue_stable(&RULES, 40, true).unwrap_err().errcode,
            45009,
            "the limit of 2 counts throttled calls too"
        );
        let b = TokenBook::default();
        let leaked = b.issue_stable(&RULES, 0, false).unwrap().access_token;
        b.issue_stable(&RULES, 10, true).unwrap();
        b.issue_stable(&RULES, 40, true).unwrap();
        assert_eq!(
            b.check(&leaked, 41).unwrap_err().errcode,
            40001,
            "two force calls 30 s apart kill the leaked token"
        );
    }

    #[test]
    fn chains_are_isolated() {
        let b = TokenBook::default();
        let s = b.issue_stable(&RULES, 0, false).unwrap().access_token;
        for _ in 0..3 {
            b.issue_classic(&RULES, 1).unwrap();
        }
        assert!(b.check(&s, 2).is_ok());
    }
}
