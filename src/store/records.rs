//! Rows as the store reads and writes them.
//!
//! Personal data arrives here already protected: contacts and event payloads are AEAD blobs
//! and phones are HMAC hex strings, all produced by the caller. The store never looks inside
//! a blob, and the `Debug` output of these records shows a blob's length, never its bytes.

use std::fmt;

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
        };
        let shown = format!("{event:?}");
        assert!(shown.contains("payload: <3 bytes>"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }
}
