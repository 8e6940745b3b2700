//! Counters per emulated API (calls, answers by errcode) and for reverse queries. Atomics and
//! a sharded map only: counting never serialises requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::api::Api;

/// A snapshot of the counters, as `GET /sandbox/stats` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStats {
    /// Keyed by API name (`token`, `stable_token`, `userquery`, `pathnotify`,
    /// `subscribe_send`, `template_send`).
    pub apis: BTreeMap<String, ApiStats>,
    pub reverse_queries: ReverseQueryStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiStats {
    pub calls: u64,
    /// Answered with errcode 0 (or a token).
    pub ok: u64,
    /// Answered `{errcode != 0}`, by errcode.
    pub errors: BTreeMap<i64, u64>,
    /// Injected HTTP 5xx answers and dropped connections.
    pub http_faults: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseQueryStats {
    pub sent: u64,
    /// Passed every check (verified, decrypted, well-formed, consistent).
    pub ok: u64,
    pub failed: u64,
}

#[derive(Default)]
struct ApiCounters {
    calls: AtomicU64,
    ok: AtomicU64,
    errors: DashMap<i64, AtomicU64>,
    http_faults: AtomicU64,
}

#[derive(Default)]
pub struct Stats {
    apis: [ApiCounters; Api::ALL.len()],
    rq_sent: AtomicU64,
    rq_ok: AtomicU64,
    rq_failed: AtomicU64,
}

impl Stats {
    pub fn call(&self, api: Api) {
        self.apis[api.index()].calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn answered(&self, api: Api, errcode: i64) {
        let c = &self.apis[api.index()];
        if errcode == 0 {
            c.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            c.errors
                .entry(errcode)
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn http_fault(&self, api: Api) {
        self.apis[api.index()]
            .http_faults
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn reverse_query(&self, ok: bool) {
        self.rq_sent.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.rq_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.rq_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> SandboxStats {
        let apis = Api::ALL
            .iter()
            .map(|api| {
                let c = &self.apis[api.index()];
                let errors = c
                    .errors
                    .iter()
                    .map(|e| (*e.key(), e.value().load(Ordering::Relaxed)))
                    .collect();
                let s = ApiStats {
                    calls: c.calls.load(Ordering::Relaxed),
                    ok: c.ok.load(Ordering::Relaxed),
                    errors,
                    http_faults: c.http_faults.load(Ordering::Relaxed),
                };
                (api.name().to_string(), s)
            })
            .collect();
        SandboxStats {
            apis,
            reverse_queries: ReverseQueryStats {
                sent: self.rq_sent.load(Ordering::Relaxed),
                ok: self.rq_ok.load(Ordering::Relaxed),
                failed: self.rq_failed.load(Ordering::Relaxed),
            },
        }
    }

    pub fn reset(&self) {
        for c in &self.apis {
            c.calls.store(0, Ordering::Relaxed);
            c.ok.store(0, Ordering::Relaxed);
            c.errors.clear();
            c.http_faults.store(0, Ordering::Relaxed);
        }
        self.rq_sent.store(0, Ordering::Relaxed);
        self.rq_ok.store(0, Ordering::Relaxed);
        self.rq_failed.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_answers_and_reverse_queries() {
        let s = Stats::default();
        s.call(Api::Userquery);
        s.call(Api::Userquery);
        s.answered(Api::Userquery, 0);
        s.answered(Api::Userquery, 40097);
        s.reverse_query(false);
        let snap = s.snapshot();
        let u = &snap.apis["userquery"];
        assert_eq!((u.calls, u.ok, u.errors[&40097]), (2, 1, 1));
        assert_eq!(
            snap.reverse_queries,
            ReverseQueryStats {
                sent: 1,
                ok: 0,
                failed: 1
            }
        );
        s.reset();
        assert_eq!(s.snapshot().apis["userquery"].calls, 0);
    }
}
