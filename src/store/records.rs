//! Rows as the store reads and writes them.
//!
//! Personal data arrives here already protected: contacts and event payloads are AEAD blobs
//! and phones are HMAC hex strings, all produced by the caller. The store never looks inside
//! a blob, and the `Debug` output of these records shows a blob's length, never its bytes
//! (and, for a token, not even its hash).

use std::fmt;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::states::{Column, DeadReason, EntryKind, EntryState, SkipReason};

/// A waybill as stored. `PUT /v1/waybills/{id}` replaces every field but `created_at`.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WaybillRecord {
    pub waybill_id: String,
    /// Unix seconds, as sent to WeChat in pathnotify.
    pub create_time: i64,
    /// AEAD blob of the sender and receiver contacts (JSON inside), opaque here.
    pub contacts: Vec<u8>,
    /// HMAC-SHA256 hex of the receiver's phone, for equality checks without decrypting.
    pub receiver_phone_hash: String,
    pub sender_phone_hash: Option<String>,
    pub sender_openid: Option<String>,
    pub receiver_openid: Option<String>,
    pub payment_out_trade_no: Option<String>,
    /// Freight in fen.
    pub payment_total_fee: Option<i64>,
    /// Unix ms; set on creation and kept by later updates.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// A tracking event to record.
#[derive(Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub waybill_id: String,
    pub action_type: i64,
    /// Unix seconds. With `waybill_id` and `action_type`, the event's identity.
    pub action_time: i64,
    /// AEAD blob: `action_msg` and courier fields.
    pub payload: Vec<u8>,
    /// Unix ms.
    pub received_at: i64,
    /// The carrier's own id for the event (at most 64 characters), echoed on its outcome.
    pub carrier_ref: Option<String>,
}

/// A stored tracking event.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRecord {
    pub id: i64,
    pub waybill_id: String,
    pub action_type: i64,
    pub action_time: i64,
    pub payload: Vec<u8>,
    pub received_at: i64,
}

/// What recording an event did. Both variants carry the id of the stored row, so a retried
/// delivery can be answered with the id of the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventInsert {
    Inserted { id: i64 },
    Duplicate { id: i64 },
}

impl EventInsert {
    /// The id of the stored event, new or not.
    pub fn id(&self) -> i64 {
        match *self {
            EventInsert::Inserted { id } | EventInsert::Duplicate { id } => id,
        }
    }
}

/// One WeChat callback exchange (request received, reply sent) to record.
#[derive(Clone, PartialEq, Eq)]
pub struct NewExchange {
    pub waybill_id: Option<String>,
    /// WeChat redelivers a push it believes failed; an exchange with the same key is the same
    /// delivery and gets the same reply. `None`: never deduplicated.
    pub dedupe_key: Option<String>,
    pub event: String,
    /// Unix ms.
    pub received_at: i64,
    pub result_code: i64,
    /// Human-readable, already masked by the caller.
    pub summary: String,
    /// AEAD blob of our reply document, to answer a repeated delivery identically.
    pub reply: Option<Vec<u8>>,
    pub duration_us: i64,
}

/// A stored callback exchange.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExchangeRecord {
    pub id: i64,
    pub waybill_id: Option<String>,
    pub dedupe_key: Option<String>,
    pub event: String,
    pub received_at: i64,
    pub result_code: i64,
    pub summary: String,
    pub reply: Option<Vec<u8>>,
    pub duration_us: i64,
}

/// What recording an exchange did: a repeated `dedupe_key` yields the row stored first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeInsert {
    Inserted { id: i64 },
    Duplicate(ExchangeRecord),
}

/// One notification to send (a row of `outbox`). Written with its event, in the same
/// transaction; moves from `pending` to `delivered`, `skipped` or `dead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub kind: EntryKind,
    pub waybill_id: String,
    pub event_id: Option<i64>,
    /// Unix s, the event's: the order in which a waybill's nodes are pushed.
    pub action_time: i64,
    /// `None`: the waybill's receiver.
    pub recipient: Option<String>,
    pub state: EntryState,
    /// Why an entry was skipped, set by the caller.
    pub skip_reason: Option<SkipReason>,
    /// Failed tries so far; reset to 0 by a redrive.
    pub tries: i64,
    /// Unix ms; a pending entry is not tried before.
    pub next_attempt_at: i64,
    /// Unix ms of the first reverse query WeChat made for this node while it was in flight:
    /// WeChat's receipt, so a crash after it never pushes the node again.
    pub receipt_at: Option<i64>,
    /// Already masked by the caller.
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Unix ms at which the entry left `pending` for good (delivered, skipped or dead).
    pub done_at: Option<i64>,
}

/// The columns of an [`OutboxEntry`], in the order its `SELECT`s name them.
pub(super) const OUTBOX_COLUMNS: &str = "id, kind, waybill_id, event_id, action_time, recipient, \
                                         state, skip_reason, tries, next_attempt_at, receipt_at, \
                                         last_error, created_at, updated_at, done_at";

impl<'r> sqlx::FromRow<'r, AnyRow> for OutboxEntry {
    fn from_row(row: &'r AnyRow) -> Result<Self, sqlx::Error> {
        Ok(OutboxEntry {
            id: row.try_get("id")?,
            kind: EntryKind::column(row, "kind")?,
            waybill_id: row.try_get("waybill_id")?,
            event_id: row.try_get("event_id")?,
            action_time: row.try_get("action_time")?,
            recipient: row.try_get("recipient")?,
            state: EntryState::column(row, "state")?,
            skip_reason: SkipReason::optional_column(row, "skip_reason")?,
            tries: row.try_get("tries")?,
            next_attempt_at: row.try_get("next_attempt_at")?,
            receipt_at: row.try_get("receipt_at")?,
            last_error: row.try_get("last_error")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            done_at: row.try_get("done_at")?,
        })
    }
}

/// What a worker holding a waybill's lease needs to decide its next push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushWork {
    pub waybill_id: String,
    /// The newest node WeChat accepted, as (action_time, event_id): a pending entry at or
    /// below it is stale and is not pushed.
    pub last_pushed_action_time: Option<i64>,
    pub last_pushed_event_id: Option<i64>,
    /// Set when a push began and never completed (a crash): its receipt tells whether
    /// WeChat got it.
    pub inflight_outbox_id: Option<i64>,
    /// Pending `pathnotify` entries, by (action_time, event_id) ascending.
    pub pending: Vec<OutboxEntry>,
}

/// The node being pushed for a waybill right now: the reverse query answers as of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct InFlight {
    pub outbox_id: i64,
    pub event_id: i64,
    /// Unix s.
    pub action_time: i64,
    /// Which push of the entry this is: a receipt is recorded only for it.
    pub push_seq: i64,
}

/// One try of an outbox entry, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttempt {
    pub outbox_id: i64,
    /// Unix ms.
    pub started_at: i64,
    pub duration_ms: i64,
    /// `None`: no HTTP answer (network error, timeout).
    pub http_status: Option<i64>,
    /// WeChat's `errcode`, when it answered one.
    pub errcode: Option<i64>,
    /// The classified outcome (`delivered`, `retry`, `dead`, …), set by the caller.
    pub outcome: String,
    /// Human-readable, already masked by the caller.
    pub detail: String,
    /// The request id WeChat's `errmsg` carried (what WeChat's support asks for; spec §11.6).
    pub rid: Option<String>,
}

/// A stored try of an outbox entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptRecord {
    pub id: i64,
    pub outbox_id: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    pub http_status: Option<i64>,
    pub errcode: Option<i64>,
    pub outcome: String,
    pub detail: String,
    pub rid: Option<String>,
}

/// How an outbox entry's try ended (see [`crate::store::Store::complete_entry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// WeChat accepted the node.
    Delivered,
    /// Transient failure: stays pending, tried again at `next_attempt_at` (Unix ms).
    Retry { next_attempt_at: i64, error: String },
    /// Permanent failure, schedule spent or deadline passed: kept for a redrive.
    Dead { error: String, reason: DeadReason },
    /// Not to be sent, and why.
    Skipped { reason: SkipReason },
}

/// The writes that settle one step of a push of one waybill, applied as one command
/// ([`Store::settle_push`](super::Store::settle_push)), in this order: the skips; the
/// binding; then the begin or the completion, only if every skip landed; last the release,
/// whatever happened before it (a release is the step's `finally`).
#[derive(Debug, Clone, Default)]
pub struct PushWrites {
    /// The waybill (begin and release name it; skips and completions find it from the entry).
    pub waybill_id: String,
    /// The claim's token: every write is fenced on it.
    pub owner: String,
    /// Unix ms.
    pub now: i64,
    /// Entries to mark skipped, and why.
    pub skips: Vec<(Vec<i64>, SkipReason)>,
    /// A `userquery` answer to cache.
    pub binding: Option<BindingWrite>,
    pub step: Option<PushStep>,
    /// Give the lease up (and recompute when the waybill is next due).
    pub release: bool,
}

/// A `userquery` answer for the binding cache.
#[derive(Debug, Clone)]
pub struct BindingWrite {
    pub phone_hash: String,
    pub bound: bool,
    pub ttl_ms: i64,
}

/// The one entry a step begins pushing, or completes.
#[derive(Debug, Clone)]
pub enum PushStep {
    Begin {
        outbox_id: i64,
    },
    Complete {
        outbox_id: i64,
        attempt: Option<NewAttempt>,
        completion: Completion,
    },
}

/// The stored access token of one appid and its refresher's lease. `Debug` hides the token
/// blob and its hash.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRow {
    pub appid: String,
    /// AEAD blob of the token, sealed by the caller.
    pub token_sealed: Option<Vec<u8>>,
    /// Keyed hash of the token: lets instances invalidate "the token that failed" only if it
    /// is still the current one, without comparing secrets.
    pub token_hash: Option<String>,
    /// Unix ms; 0 = none or invalidated.
    pub expires_at: i64,
    /// Unix ms of the last fetch; 0 = never.
    pub fetched_at: i64,
    /// The instance refreshing the token right now, until `lease_until` (Unix ms).
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
}

/// Shows a blob's size only: its bytes are ciphertext of personal data.
struct Blob<'a>(&'a [u8]);

impl fmt::Debug for Blob<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl fmt::Debug for WaybillRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaybillRecord")
            .field("waybill_id", &self.waybill_id)
            .field("create_time", &self.create_time)
            .field("contacts", &Blob(&self.contacts))
            .field("receiver_phone_hash", &self.receiver_phone_hash)
            .field("sender_phone_hash", &self.sender_phone_hash)
            .field("sender_openid", &self.sender_openid)
            .field("receiver_openid", &self.receiver_openid)
            .field("payment_out_trade_no", &self.payment_out_trade_no)
            .field("payment_total_fee", &self.payment_total_fee)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

impl fmt::Debug for NewEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewEvent")
            .field("waybill_id", &self.waybill_id)
            .field("action_type", &self.action_type)
            .field("action_time", &self.action_time)
            .field("payload", &Blob(&self.payload))
            .field("received_at", &self.received_at)
            .field("carrier_ref", &self.carrier_ref)
            .finish()
    }
}

impl fmt::Debug for EventRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRecord")
            .field("id", &self.id)
            .field("waybill_id", &self.waybill_id)
            .field("action_type", &self.action_type)
            .field("action_time", &self.action_time)
            .field("payload", &Blob(&self.payload))
            .field("received_at", &self.received_at)
            .finish()
    }
}

impl fmt::Debug for NewExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewExchange")
            .field("waybill_id", &self.waybill_id)
            .field("dedupe_key", &self.dedupe_key)
            .field("event", &self.event)
            .field("received_at", &self.received_at)
            .field("result_code", &self.result_code)
            .field("summary", &self.summary)
            .field("reply", &self.reply.as_deref().map(Blob))
            .field("duration_us", &self.duration_us)
            .finish()
    }
}

impl fmt::Debug for ExchangeRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangeRecord")
            .field("id", &self.id)
            .field("waybill_id", &self.waybill_id)
            .field("dedupe_key", &self.dedupe_key)
            .field("event", &self.event)
            .field("received_at", &self.received_at)
            .field("result_code", &self.result_code)
            .field("summary", &self.summary)
            .field("reply", &self.reply.as_deref().map(Blob))
            .field("duration_us", &self.duration_us)
            .finish()
    }
}

impl fmt::Debug for TokenRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRow")
            .field("appid", &self.appid)
            .field("token_sealed", &self.token_sealed.as_deref().map(Blob))
            .field("token_hash", &self.token_hash.as_ref().map(|_| "<hidden>"))
            .field("expires_at", &self.expires_at)
            .field("fetched_at", &self.fetched_at)
            .field("lease_owner", &self.lease_owner)
            .field("lease_until", &self.lease_until)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_blob_sizes_not_bytes() {
        let event = NewEvent {
            waybill_id: "SF1".into(),
            action_type: 100001,
            action_time: 1,
            payload: vec![0xAB; 3],
            received_at: 2,
            carrier_ref: None,
        };
        let shown = format!("{event:?}");
        assert!(shown.contains("payload: <3 bytes>"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn token_row_debug_output_hides_the_token_and_its_hash() {
        let row = TokenRow {
            appid: "wx123".into(),
            token_sealed: Some(vec![0xCD; 5]),
            token_hash: Some("deadbeefcafe".into()),
            expires_at: 10,
            fetched_at: 5,
            lease_owner: Some("node-a".into()),
            lease_until: Some(20),
        };
        let shown = format!("{row:?}");
        assert!(shown.contains("<5 bytes>"), "{shown}");
        assert!(!shown.contains("205"), "{shown}");
        assert!(!shown.contains("deadbeef"), "{shown}");
        assert!(shown.contains("node-a"), "{shown}");
    }
}
