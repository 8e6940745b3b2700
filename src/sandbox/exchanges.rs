//! The exchange log: every reverse query the sandbox sent and what came back, with the
//! verdict. Bounded (the last [`CAPACITY`] entries) and sharded by sequence number, so
//! concurrent pathnotify calls never wait on one lock. Phones are stored masked.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::mask_phones_in_text;

/// Entries kept in total.
pub const CAPACITY: usize = 10_000;
const SHARDS: usize = 16;
const PER_SHARD: usize = CAPACITY / SHARDS;

/// How a reverse query ended, and so what pathnotify answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Verified, decrypted, well-formed and consistent: the node was delivered (932001-3 not).
    Consistent,
    /// Connection refused or failed (932001).
    Unreachable,
    /// No complete reply within the callback timeout (932001).
    Timeout,
    /// The callback answered a non-2xx HTTP status (932001).
    HttpError,
    /// Signature, nonce or envelope fields did not verify (932001).
    BadSignature,
    /// The `Encrypt` text did not decrypt for our key and appid (932001).
    Undecryptable,
    /// The reply was not a reverse-query answer: unparsable, missing or mistyped fields (932003).
    Malformed,
    /// A well-formed answer that disagrees with the push (932002).
    Inconsistent,
}

/// One reverse query and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeLogEntry {
    /// Increases by one per reverse query; entries are listed in this order.
    pub seq: u64,
    /// Wall-clock Unix seconds the query was sent (its `CreateTime`; see `reverse`).
    pub at: i64,
    pub waybill_id: String,
    /// Masked, like `138****8000`.
    pub receiver_phone: String,
    /// Masked; empty when the push had no sender phone.
    pub sender_phone: String,
    pub action_type: i64,
    pub action_time: i64,
    /// The callback URL without the signed query string.
    pub callback_url: String,
    pub message_mode: String,
    pub message_format: String,
    /// Absent when no HTTP answer arrived.
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    pub verdict: Verdict,
    /// What pathnotify answered: 0 or 932001..932003.
    pub errcode: i64,
    /// Why the verdict, in words.
    pub detail: String,
    /// The opened (decrypted) reply document with every phone-like number masked.
    pub reply: Option<Value>,
}

/// Mask every long digit run in every string of a document.
pub fn mask_document(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(mask_phones_in_text(s)),
        Value::Array(a) => Value::Array(a.iter().map(mask_document).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), mask_document(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

pub struct ExchangeLog {
    next: AtomicU64,
    shards: [Mutex<VecDeque<ExchangeLogEntry>>; SHARDS],
}

impl Default for ExchangeLog {
    fn default() -> Self {
        ExchangeLog {
            next: AtomicU64::new(1),
            shards: std::array::from_fn(|_| Mutex::new(VecDeque::with_capacity(16))),
        }
    }
}

impl ExchangeLog {
    /// The sequence number for the next entry.
    pub fn next_seq(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub fn push(&self, entry: ExchangeLogEntry) {
        // Sequence numbers are handed out round-robin, so each shard holds every 16th entry
        // and the union of the shards is the last CAPACITY entries.
        let shard = &self.shards[(entry.seq % SHARDS as u64) as usize];
        let mut q = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.len() >= PER_SHARD {
            q.pop_front();
        }
        q.push_back(entry);
    }

    /// Every kept entry, oldest first.
    pub fn all(&self) -> Vec<ExchangeLogEntry> {
        let mut out: Vec<ExchangeLogEntry> = Vec::new();
        for s in &self.shards {
            out.extend(
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .cloned(),
            );
        }
        out.sort_by_key(|e| e.seq);
        out
    }

    pub fn reset(&self) {
        for s in &self.shards {
            s.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> ExchangeLogEntry {
        ExchangeLogEntry {
            seq,
            at: 0,
            waybill_id: "W".into(),
            receiver_phone: "138****8000".into(),
            sender_phone: String::new(),
            action_type: 100001,
            action_time: 0,
            callback_url: "http://x".into(),
            message_mode: "secure".into(),
            message_format: "json".into(),
            http_status: Some(200),
            latency_ms: 1,
            verdict: Verdict::Consistent,
            errcode: 0,
            detail: String::new(),
            reply: None,
        }
    }

    #[test]
    fn keeps_the_last_entries_in_order() {
        let log = ExchangeLog::default();
        for _ in 0..CAPACITY + 40 {
            let seq = log.next_seq();
            log.push(entry(seq));
        }
        let all = log.all();
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, 41);
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    }

    #[test]
    fn masking_reaches_nested_strings() {
        let v = serde_json::json!({"Path":[{"ActionMsg":"派件员 13800000000"}],"n":1});
        assert_eq!(
            mask_document(&v)["Path"][0]["ActionMsg"],
            "派件员 138****0000"
        );
    }
}
