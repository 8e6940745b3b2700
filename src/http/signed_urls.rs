//! Signed JSONP URLs and the waybill each was first used for.
//!
//! WeChat signs a lookup URL over (token, timestamp, nonce) only: the `orderid` is not
//! covered, so without more, one URL seen by a user would look up any waybill for the whole
//! timestamp window. Here a URL (its signature, which stands for the triple) is bound to the
//! first `orderid` it was used with until its timestamp leaves the window: a reload works, any
//! other waybill needs a new URL, which only WeChat can sign.
//!
//! In memory, per process (like the rate limits): behind a load balancer with N instances a
//! URL can reach at most N waybills. Bounded: when [`MAX_URLS`] are tracked, expired ones are
//! swept; if the table is still full, new URLs are refused (fail closed) until some expire.

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Signed URLs tracked at once.
pub const MAX_URLS: usize = 200_000;

/// What binding a URL to an `orderid` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// First use, or the same waybill again.
    Allowed,
    /// The URL was used for another waybill.
    OtherWaybill,
    /// Too many URLs in the window; refused until some expire.
    Full,
}

pub struct SignedUrls {
    /// signature (lowercase hex) -> (orderid, Unix s after which the URL is stale anyway).
    urls: DashMap<String, (String, i64)>,
    max: usize,
}

impl Default for SignedUrls {
    fn default() -> Self {
        SignedUrls::with_capacity(MAX_URLS)
    }
}

impl SignedUrls {
    fn with_capacity(max: usize) -> SignedUrls {
        SignedUrls {
            urls: DashMap::new(),
            max,
        }
    }

    /// Binds the URL with this (already verified) signature, lowercased (`key`), to
    /// `orderid` until `expires_at` (Unix s), unless it is bound to another waybill.
    pub fn bind(&self, key: &str, orderid: &str, expires_at: i64, now: i64) -> Binding {
        if let Some(mut e) = self.urls.get_mut(key) {
            if e.1 >= now {
                return if e.0 == orderid {
                    Binding::Allowed
                } else {
                    Binding::OtherWaybill
                };
            }
            // Stale and somehow used again (the caller checks the window first): rebind.
            *e = (orderid.to_string(), expires_at);
            return Binding::Allowed;
        }
        if self.urls.len() >= self.max {
            self.urls.retain(|_, (_, until)| *until >= now);
            if self.urls.len() >= self.max {
                return Binding::Full;
            }
        }
        match self.urls.entry(key.to_string()) {
            // A concurrent first use of the same URL won: its waybill counts.
            Entry::Occupied(e) if e.get().0 != orderid => Binding::OtherWaybill,
            Entry::Occupied(_) => Binding::Allowed,
            Entry::Vacant(v) => {
                v.insert((orderid.to_string(), expires_at));
                Binding::Allowed
            }
        }
    }

    /// URLs currently tracked (tests, metrics).
    pub fn tracked(&self) -> usize {
        self.urls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_serves_its_first_waybill_only_until_it_expires() {
        let s = SignedUrls::default();
        assert_eq!(s.bind("abc", "SF1", 100, 10), Binding::Allowed);
        assert_eq!(s.bind("abc", "SF1", 100, 11), Binding::Allowed, "a reload");
        assert_eq!(s.bind("abc", "SF2", 100, 12), Binding::OtherWaybill);
        assert_eq!(s.bind("def", "SF2", 100, 12), Binding::Allowed, "a new URL");
        assert_eq!(s.bind("abc", "SF2", 200, 101), Binding::Allowed, "expired");
    }

    #[test]
    fn memory_is_bounded_and_a_full_table_fails_closed() {
        let s = SignedUrls::with_capacity(2);
        assert_eq!(s.bind("a", "SF1", 100, 0), Binding::Allowed);
        assert_eq!(s.bind("b", "SF1", 50, 0), Binding::Allowed);
        assert_eq!(s.bind("c", "SF1", 100, 10), Binding::Full);
        assert_eq!(
            s.bind("a", "SF1", 100, 10),
            Binding::Allowed,
            "known URLs still work"
        );
        // b expires: its slot is swept for a new URL.
        assert_eq!(s.bind("c", "SF1", 100, 60), Binding::Allowed);
        assert_eq!(s.tracked(), 2);
    }
}
