//! A per-client rate limit for the JSONP lookup, in memory: a waybill number is a short
//! guessable string and the signature covers only (token, timestamp, nonce), so the rate
//! limit is what stops anyone from walking through waybill numbers with one signed URL.
//!
//! Clients are keyed by IP address (an IPv6 client by its /64: one subscriber usually holds
//! a whole /64), or by any other key ([`LimitKey`]): the JSONP lookup also limits each signed
//! URL and each openid, since WeChat may fetch the JSONP through its own servers and the
//! client IP alone would then throttle WeChat itself.
//!
//! The limit is governor's keyed GCRA (a token bucket of `burst`, refilled at `rate`), on a
//! state store of our own ([`BoundedStore`]) that keeps memory bounded: past [`MAX_TRACKED`]
//! clients, the ones whose state is that of a new client are swept (at most once a second),
//! and while the table is still full every new client shares one overflow state. governor's
//! own DashMap store would grow with every address it is shown. Per process: with several
//! instances behind a load balancer the effective limit is the sum.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::RateLimiter;

use crate::outbox::ratelimit::quota;

/// Clients tracked at once before idle ones are swept.
pub const MAX_TRACKED: usize = 100_000;

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

type Limiter<K, C> = RateLimiter<K, BoundedStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

pub struct ClientLimiter<K: LimitKey = IpAddr, C: Clock = DefaultClock> {
    /// `None`: no limit.
    limiter: Option<Limiter<K, C>>,
    clock: C,
    last_sweep: Mutex<Option<C::Instant>>,
    max_tracked: usize,
}

impl<K: LimitKey> ClientLimiter<K> {
    /// `rate_per_sec` <= 0 disables the limit.
    pub fn new(rate_per_sec: f64, burst: u32) -> ClientLimiter<K> {
        ClientLimiter::with_clock(rate_per_sec, burst, MAX_TRACKED, DefaultClock::default())
    }
}

impl<K: LimitKey, C: Clock + Clone> ClientLimiter<K, C> {
    fn with_clock(rate_per_sec: f64, burst: u32, max_tracked: usize, clock: C) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let limiter = quota(rate_per_sec).map(|q| {
            RateLimiter::new(
                q.allow_burst(burst),
                BoundedStore::new(max_tracked),
                clock.clone(),
            )
        });
        ClientLimiter {
            limiter,
            clock,
            last_sweep: Mutex::new(None),
            max_tracked,
        }
    }

    /// Takes one token for `client`; false when its bucket is empty.
    pub fn allow(&self, client: K) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        let key = client.bucket();
        if limiter.len() >= self.max_tracked {
            self.sweep(limiter);
        }
        limiter.check_key(&key).is_ok()
    }

    /// Forgets clients whose bucket is full again (forgetting them changes nothing), at most
    /// once a second.
    fn sweep(&self, limiter: &Limiter<K, C>) {
        let now = self.clock.now();
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = *last {
                if Duration::from(now.duration_since(at)) < Duration::from_secs(1) {
                    return;
                }
            }
            *last = Some(now);
        }
        limiter.retain_recent();
    }

    /// Clients currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// A keyed state store of at most `max` keys: GCRA states (theoretical arrival times, in
/// nanoseconds from the limiter's start) by key, and one overflow state that every key not
/// in the table shares while the table is full.
pub struct BoundedStore<K: Hash + Eq> {
    states: DashMap<K, AtomicU64>,
    overflow: AtomicU64,
    max: usize,
}

impl<K: Hash + Eq + Clone> BoundedStore<K> {
    fn new(max: usize) -> Self {
        BoundedStore {
            states: DashMap::new(),
            overflow: AtomicU64::new(0),
            max: max.max(1),
        }
    }
}

/// governor's `InMemoryState::measure_and_replace_one`: `f` decides from the previous state
/// (`None`: a new client), and the new state is swapped in unless another thread changed it
/// meanwhile, in which case `f` decides again.
fn measure_and_replace<T, E>(
    state: &AtomicU64,
    f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Result<T, E> {
    let read = |v: u64| (v != 0).then(|| Nanos::from(v));
    let mut prev = state.load(Ordering::Acquire);
    let mut decision = f(read(prev));
    while let Ok((result, new)) = decision {
        match state.compare_exchange_weak(prev, new.into(), Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return Ok(result),
            Err(now) => prev = now,
        }
        decision = f(read(prev));
    }
    decision.map(|(result, _)| result)
}

impl<K: Hash + Eq + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.states.get(key) {
            return measure_and_replace(&state, f);
        }
        if self.states.len() >= self.max {
            return measure_and_replace(&self.overflow, f);
        }
        let state = self.states.entry(key.clone()).or_default();
        measure_and_replace(&state, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for BoundedStore<K> {
    /// Drops the states no newer than `drop_below`: a client whose bucket is full again.
    fn retain_recent(&self, drop_below: Nanos) {
        let below: u64 = drop_below.into();
        self.states
            .retain(|_, state| state.load(Ordering::Relaxed) > below);
    }

    fn shrink_to_fit(&self) {
        self.states.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.states.len()
    }

    fn is_empty(&self) -> bool {
        self.states.is_empty()
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
    use governor::clock::FakeRelativeClock;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter<K: LimitKey>(
        rate: f64,
        burst: u32,
        max: usize,
    ) -> (ClientLimiter<K, FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            ClientLimiter::with_clock(rate, burst, max, clock.clone()),
            clock,
        )
    }

    #[test]
    fn a_client_gets_its_burst_then_the_rate() {
        let (l, clock) = limiter(10.0, 3, MAX_TRACKED);
        let a = ip("10.0.0.1");
        assert!((0..3).all(|_| l.allow(a)));
        assert!(!l.allow(a), "burst used up");
        assert!(l.allow(ip("10.0.0.2")), "another client has its own bucket");
        clock.advance(Duration::from_millis(50));
        assert!(!l.allow(a));
        clock.advance(Duration::from_millis(50));
        assert!(l.allow(a), "refilled one token");
        assert!(!l.allow(a));
        clock.advance(Duration::from_secs(60));
        assert!((0..3).all(|_| l.allow(a)), "refills to the burst only");
        assert!(!l.allow(a));
    }

    #[test]
    fn an_ipv6_subscriber_is_one_client_per_64() {
        let (l, _) = limiter(1.0, 1, MAX_TRACKED);
        assert!(l.allow(ip("2001:db8:1:2::1")));
        assert!(!l.allow(ip("2001:db8:1:2:ffff::9")));
        assert!(l.allow(ip("2001:db8:1:3::1")));
        assert!(l.allow(ip("::ffff:192.0.2.1")));
        assert!(
            !l.allow(ip("192.0.2.1")),
            "a mapped address is the IPv4 client"
        );
    }

    #[test]
    fn zero_rate_means_no_limit() {
        let l: ClientLimiter = ClientLimiter::new(0.0, 0);
        assert!((0..1000).all(|_| l.allow(ip("10.0.0.1"))));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn string_keys_have_a_bucket_each() {
        let (l, _) = limiter::<String>(1.0, 1, MAX_TRACKED);
        assert!(l.allow("oA".to_string()));
        assert!(!l.allow("oA".to_string()));
        assert!(l.allow("oB".to_string()));
    }

    #[test]
    fn memory_is_bounded_and_idle_clients_are_forgotten() {
        let (l, clock) = limiter(10.0, 2, 4);
        clock.advance(Duration::from_secs(2));
        for i in 0..4 {
            assert!(l.allow(ip(&format!("10.0.0.{i}"))));
        }
        // Full, nobody idle: new clients share the overflow bucket (burst 2).
        assert!(l.allow(ip("10.0.1.1")));
        assert!(l.allow(ip("10.0.1.2")));
        assert!(!l.allow(ip("10.0.1.3")));
        assert_eq!(l.tracked(), 4);
        // A known client keeps its own bucket meanwhile.
        assert!(l.allow(ip("10.0.0.1")));
        // A second later every bucket has refilled: the sweep frees the table.
        clock.advance(Duration::from_secs(1));
        assert!(l.allow(ip("10.0.1.3")));
        assert_eq!(l.tracked(), 1);
    }
}
