//! Answering WeChat's reverse query (`waybill_notify_query`): the other half of a push.
//!
//! While the worker's `pathnotify` is on its way, WeChat asks the gateway for the waybill's
//! path and shows what it gets. The answer is "the path as of the push in flight" (the
//! node being pushed is the newest), and answering it with `ResultCode` 0 is WeChat's
//! receipt for that push: the worker completes the entry only with it (`worker.rs`).
//!
//! The hot path is one read ([`Store::reverse_query_view`]: waybill, push in flight and
//! path in one statement) and one write ([`Store::record_answer`]: the exchange and the
//! receipt, through the group commit). A redelivery of the same question (WeChat retries
//! after 5 s) is the same dedupe key; its insert finds the first exchange, and the stored
//! reply is given again, so WeChat sees one answer per question.
//!
//! The HTTP layer (`http/callback.rs`) opens the message and seals what this returns.

use std::time::Instant;

use crate::clock::{now_ms, now_secs};
use crate::codec;
use crate::domain::{mask_phones_in_text, Phone};
use crate::privacy::Privacy;
use crate::store::{
    answer_key, AnswerReceipt, ExchangeInsert, NewExchange, ReverseQueryView, Store, StoreError,
};
use crate::wechat::envelope::{get_str, Document};
use crate::wechat::reverse_query::{self, build_reply, result_code, Lookup, Query};

/// What answering needs; borrowed from the application's state.
pub struct Answerer<'a> {
    pub store: &'a Store,
    pub privacy: &'a Privacy,
    /// `wechat.original_id`: the reply's `FromUserName`.
    pub original_id: &'a str,
}

/// Why no answer could be given (logged; WeChat gets a 500 and asks again).
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("a stored node cannot be opened: {0}")]
    Node(#[from] crate::privacy::PrivacyError),
}

impl Answerer<'_> {
    /// The reply document to a `waybill_notify_query` whose decrypted message is `raw`
    /// (read as `doc`). `started`: when the request arrived (kept with the exchange).
    pub async fn answer(
        &self,
        raw: &[u8],
        doc: &Document,
        started: Instant,
    ) -> Result<Document, AnswerError> {
        let Some(query) = Query::from_document(doc) else {
            tracing::warn!("waybill_notify_query without WaybillId");
            return Ok(build_reply(
                &empty_query(doc),
                self.original_id,
                now_secs(),
                &Lookup::BadRequest,
            ));
        };
        let prefix = self.key_prefix(raw);
        let mut view = self
            .store
            .reverse_query_view(&query.waybill_id, &prefix)
            .await?;
        let inflight = view.as_ref().and_then(|v| v.inflight);
        let receipt = inflight.map(|i| AnswerReceipt {
            outbox_id: i.outbox_id,
            push_seq: i.push_seq,
            found: result_code::OK,
            at: now_ms(),
        });
        if let Some(prev) = view.as_ref().and_then(|v| v.answered.as_ref()) {
            if let Some(reply) = self.replayed(prev.reply.as_deref()) {
                // The stored answer stands for the receipt too: the first delivery may have
                // died before its receipt was written.
                if let Some(r) = receipt.filter(|r| r.found == prev.result_code) {
                    self.store
                        .record_receipt(r.outbox_id, r.push_seq, r.at)
                        .await?;
                }
                tracing::debug!(waybill_id = %query.waybill_id, "repeated reverse query answered with the stored reply");
                return Ok(reply);
            }
        }
        if let Some(v) = view.as_mut().filter(|v| v.answered.is_some()) {
            // Asked before, but the stored reply cannot be opened (the data key changed?):
            // answer anew. The view leaves the path out when an answer is stored.
            tracing::warn!(waybill_id = %query.waybill_id, "the stored reply of a repeated reverse query cannot be opened; answering anew");
            let cut = v.inflight.map(|i| (i.action_time, i.event_id));
            v.path = self.store.list_events(&query.waybill_id).await?;
            v.path
                .retain(|e| cut.is_none_or(|c| (e.action_time, e.id) <= c));
        }
        let lookup = self.lookup(&query, view)?;
        let reply = build_reply(&query, self.original_id, now_secs(), &lookup);
        let result_code = reply
            .get("ResultCode")
            .and_then(|v| v.as_i64())
            .unwrap_or(-1);
        let exchange = NewExchange {
            waybill_id: Some(query.waybill_id.clone()),
            dedupe_key: Some(answer_key(&prefix, inflight)),
            event: reverse_query::EVENT.into(),
            received_at: now_ms(),
            result_code,
            summary: summary(&query, result_code, &reply),
            reply: Some(self.privacy.seal_json(&reply)),
            duration_us: started.elapsed().as_micros() as i64,
        };
        // Answering for the node in flight with ResultCode 0 is WeChat's receipt that the
        // push reached it; it is written with the exchange, last, just before the reply
        // leaves, so the gap in which a crash would lose the node (WeChat never got the
        // reply, the gateway trusts the receipt) holds no other write.
        match self.store.record_answer(&exchange, receipt).await? {
            ExchangeInsert::Inserted { .. } => {
                tracing::debug!(waybill_id = %query.waybill_id, result_code, "reverse query answered");
                Ok(reply)
            }
            // A redelivery, or a concurrent retry that was stored first: answer exactly as
            // that one was answered.
            ExchangeInsert::Duplicate(prev) => {
                tracing::debug!(waybill_id = %query.waybill_id, "repeated reverse query answered with the stored reply");
                Ok(self.replayed(prev.reply.as_deref()).unwrap_or(reply))
            }
        }
    }

    /// The first part of a reverse query's dedupe key ([`answer_key`] adds the push in
    /// flight). A replay answers only the very same question: WeChat's retry repeats the
    /// message byte for byte (a keyed hash of all of it, never the message itself, which
    /// holds phone numbers), and only for the same push in flight (a query for the next
    /// push of the same waybill in the same second repeats the message too).
    fn key_prefix(&self, raw: &[u8]) -> String {
        format!("wnq:{}:", self.privacy.keyed_hash_bytes(raw))
    }

    fn replayed(&self, sealed: Option<&[u8]>) -> Option<Document> {
        let mut doc: Document = self.privacy.open_json(sealed?).ok()?;
        doc.insert("CreateTime".into(), serde_json::json!(now_secs()));
        Some(doc)
    }

    /// Unknown waybill, or a phone that does not own it, gets no data (spec §4.3).
    fn lookup(&self, q: &Query, view: Option<ReverseQueryView>) -> Result<Lookup, AnswerError> {
        let Some(view) = view else {
            return Ok(Lookup::UnknownWaybill);
        };
        let hash = |p: &str| {
            Phone::parse(p)
                .ok()
                .map(|p| self.privacy.phone_hash(p.as_str()))
        };
        let receiver_ok = q
            .receiver_phone
            .as_deref()
            .and_then(hash)
            .is_some_and(|h| ct_eq(&h, &view.receiver_phone_hash));
        let sender_ok = match q.sender_phone.as_deref() {
            None => true,
            Some(p) => match (hash(p), &view.sender_phone_hash) {
                (Some(h), Some(stored)) => ct_eq(&h, stored),
                _ => false,
            },
        };
        if !(receiver_ok && sender_ok) {
            tracing::warn!(waybill_id = %q.waybill_id, "reverse query phone does not match the waybill");
            return Ok(Lookup::PhoneMismatch);
        }
        let path = view
            .path
            .iter()
            .map(|ev| codec::open_node(self.privacy, ev))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Lookup::Found {
            create_time: view.create_time,
            path,
        })
    }
}

/// The exchange's one-line summary, phones masked.
fn summary(query: &Query, result_code: i64, reply: &Document) -> String {
    let masked = |p: Option<&str>| p.map(mask_phones_in_text).unwrap_or_default();
    format!(
        "waybill_notify_query receiver={} sender={} result={} nodes={}",
        masked(query.receiver_phone.as_deref()),
        masked(query.sender_phone.as_deref()),
        result_code,
        reply
            .get("Path")
            .and_then(|p| p.as_array())
            .map_or(0, Vec::len),
    )
}

fn empty_query(doc: &Document) -> Query {
    Query {
        to_user_name: String::new(),
        from_user_name: get_str(doc, "FromUserName").unwrap_or_default().to_string(),
        create_time: 0,
        waybill_id: String::new(),
        sender_phone: None,
        receiver_phone: None,
    }
}

fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
