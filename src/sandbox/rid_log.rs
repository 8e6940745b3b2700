//! The rid log itself ([`super::rid`] records into it and answers from it): the newest
//! calls, bounded, kept by the sandbox's shared state.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Entries kept at most (the oldest go first).
pub const MAX_ENTRIES: usize = 10_000;
/// How long WeChat keeps a rid answerable.
pub const KEPT_SECS: i64 = 7 * 86_400;

/// One logged call.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) rid: String,
    /// The account the call was made for (`None`: no valid token and no appid named).
    pub(super) appid: Option<String>,
    /// Sandbox clock, Unix s.
    pub(super) invoke_time: i64,
    pub(super) cost_in_ms: i64,
    pub(super) request_url: String,
    pub(super) request_body: String,
    pub(super) response_body: String,
    pub(super) client_ip: String,
}

#[derive(Default)]
pub struct RidLog {
    entries: Mutex<VecDeque<Entry>>,
}

impl RidLog {
    pub(super) fn push(&self, e: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.pop_front();
        }
        entries.push_back(e);
    }

    pub(super) fn find(&self, rid: &str) -> Option<Entry> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().rev().find(|e| e.rid == rid).cloned()
    }

    pub fn reset(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
