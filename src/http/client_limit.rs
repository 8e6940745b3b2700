//! A per-client token bucket for the JSONP lookup, in memory: a waybill number is a short
//! guessable string and the signature covers only (token, timestamp, nonce), so the rate
//! limit is what stops anyone from walking through waybill numbers with one signed URL.
//!
//! Clients are keyed by IP address (an IPv6 client by its /64: one subscriber usually holds
//! a whole /64), or by any other key ([`LimitKey`]): the JSONP lookup also limits each signed
//! URL and each openid, since WeChat may fetch the JSONP through its own servers and the
//! client IP alone would then throttle WeChat itself. Memory is bounded: idle buckets (full again) are swept at most once a
//! second when the table grows past [`MAX_TRACKED`], and while it is still full every new
//! client shares one overflow bucket. Per process: with several instances behind a load
//! balancer the effective limit is the sum.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Clients tracked at once before idle ones are swept.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What a bucket is kept for: the key maps to the bucket it shares (an IPv6 address to its
/// /64; anything else to itself).
pub trait LimitKey: Eq + Hash + Clone {
    fn bucket(self) -> Self;
}

impl LimitKey for IpAddr {
    fn bucket(self) -> IpAddr {
        bucket_key(self)
    }
}

/// A key that is a string (an openid), kept as given.
impl LimitKey for String {
    fn bucket(self) -> String {
        self
    }
}

pub struct ClientLimiter<K: LimitKey = IpAddr> {
    /// Tokens per second; `None`: no limit.
    rate: Option<f64>,
    burst: f64,
    buckets: DashMap<K, Bucket>,
    overflow: Mutex<Bucket>,
    last_sweep: Mutex<Instant>,
    max_tracked: usize,
}

impl<K: LimitKey> ClientLimiter<K> {
    /// `rate_per_sec` <= 0 disables the limit.
    pub fn new(rate_per_sec: f64, burst: u32) -> ClientLimiter<K> {
        ClientLimiter::with_capacity(rate_per_sec, burst, MAX_TRACKED)
    }

    fn with_capacity(rate_per_sec: f64, burst: u32, max_tracked: usize) -> ClientLimiter<K> {
        let now = Instant::now();
        let burst = f64::from(burst.max(1));
        ClientLimiter {
            rate: (rate_per_sec > 0.0).then_some(rate_per_sec),
            burst,
            buckets: DashMap::new(),
            overflow: Mutex::new(Bucket {
                tokens: burst,
                at: now,
            }),
            last_sweep: Mutex::new(now),
            max_tracked,
        }
    }

    /// Takes one token for `client` at `now`; false when its bucket is empty.
    pub fn allow(&self, client: K, now: Instant) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        let key = client.bucket();
        if let Some(mut b) = self.buckets.get_mut(&key) {
            return take(&mut b, rate, self.burst, now);
        }
        if self.buckets.len() >= self.max_tracked {
            self.sweep(rate, now);
            if self.buckets.len() >= self.max_tracked {
                let mut b = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
                return take(&mut b, rate, self.burst, now);
            }
        }
        let mut b = self.buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        take(&mut b, rate, self.burst, now)
    }

    /// Drops buckets that have refilled completely: forgetting them changes nothing.
    fn sweep(&self, rate: f64, now: Instant) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if now.saturating_duration_since(*last) < Duration::from_secs(1) {
                return;
            }
            *last = now;
        }
        let refill = Duration::from_secs_f64(self.burst / rate);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.at) < refill);
    }

    /// Clients currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

fn take(b: &mut Bucket, rate: f64, burst: f64, now: Instant) -> bool {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    b.tokens = (b.tokens + elapsed * rate).min(burst);
    b.at = b.at.max(now);
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

/// IPv4 as is (also when mapped into IPv6); IPv6 by its /64.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_burst_then_the_rate() {
        let l: ClientLimiter = ClientLimiter::new(10.0, 3);
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        assert!((0..3).all(|_| l.allow(a, t0)));
        assert!(!l.allow(a, t0), "burst used up");
        assert!(
            l.allow(ip("10.0.0.2"), t0),
            "another client has its own bucket"
        );
        assert!(!l.allow(a, t0 + Duration::from_millis(50)));
        assert!(
            l.allow(a, t0 + Duration::from_millis(100)),
            "refilled one token"
        );
        assert!(!l.allow(a, t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert!(
            (0..3).all(|_| l.allow(a, later)),
            "refills to the burst only"
        );
        assert!(!l.allow(a, later));
    }

    #[test]
    fn an_ipv6_subscriber_is_one_client_per_64() {
        let l: ClientLimiter = ClientLimiter::new(1.0, 1);
        let t0 = Instant::now();
        assert!(l.allow(ip("2001:db8:1:2::1"), t0));
        assert!(!l.allow(ip("2001:db8:1:2:ffff::9"), t0));
        assert!(l.allow(ip("2001:db8:1:3::1"), t0));
        assert!(l.allow(ip("::ffff:192.0.2.1"), t0));
        assert!(
            !l.allow(ip("192.0.2.1"), t0),
            "a mapped address is the IPv4 client"
        );
    }

    #[test]
    fn zero_rate_means_no_limit() {
        let l: ClientLimiter = ClientLimiter::new(0.0, 0);
        let t0 = Instant::now();
        assert!((0..1000).all(|_| l.allow(ip("10.0.0.1"), t0)));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn string_keys_have_a_bucket_each() {
        let l: ClientLimiter<String> = ClientLimiter::new(1.0, 1);
        let t0 = Instant::now();
        assert!(l.allow("oA".to_string(), t0));
        assert!(!l.allow("oA".to_string(), t0));
        assert!(l.allow("oB".to_string(), t0));
    }

    #[test]
    fn memory_is_bounded_and_idle_clients_are_forgotten() {
        let l: ClientLimiter = ClientLimiter::with_capacity(10.0, 2, 4);
        let t0 = Instant::now() + Duration::from_secs(2);
        for i in 0..4 {
            assert!(l.allow(ip(&format!("10.0.0.{i}")), t0));
        }
        // Full, nobody idle: new clients share the overflow bucket (burst 2).
        assert!(l.allow(ip("10.0.1.1"), t0));
        assert!(l.allow(ip("10.0.1.2"), t0));
        assert!(!l.allow(ip("10.0.1.3"), t0));
        assert_eq!(l.tracked(), 4);
        // A second later every bucket has refilled: the sweep frees the table.
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.allow(ip("10.0.1.3"), t1));
        assert_eq!(l.tracked(), 1);
    }
}
