//! The `callback_exchanges` table: every WeChat callback received and what we answered.
//!
//! A redelivered push (same `dedupe_key`) finds the first exchange and its stored reply, so
//! it can be answered identically.

use sqlx::{AnyConnection, Connection, Row};
use tokio::sync::oneshot;

use super::deliver::{deliver, Deliver};

use super::{
    EventRecord, ExchangeInsert, ExchangeRecord, InFlight, NewExchange, Store, StoreError,
};

const COLUMNS: &str = "id, waybill_id, dedupe_key, event, received_at, result_code, summary, \
                       reply, duration_us";

impl Store {
    /// Inserts the exchange unless one with the same `dedupe_key` exists, in which case that
    /// one comes back. Exchanges without a key are always inserted.
    pub async fn record_exchange(&self, ex: &NewExchange) -> Result<ExchangeInsert, StoreError> {
        self.record_answer(ex, None).await
    }

    pub async fn find_exchange(
        &self,
        dedupe_key: &str,
    ) -> Result<Option<ExchangeRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM callback_exchanges WHERE dedupe_key = $1");
        let row = sqlx::query_as::<_, ExchangeRecord>(&sql)
            .bind(dedupe_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// The waybill's exchanges, oldest first.
    pub async fn list_exchanges(
        &self,
        waybill_id: &str,
    ) -> Result<Vec<ExchangeRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM callback_exchanges WHERE waybill_id = $1 \
             ORDER BY received_at, id"
        );
        let rows = sqlx::query_as::<_, ExchangeRecord>(&sql)
            .bind(waybill_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }
}

/// What answering a reverse query needs, read in one statement (one snapshot): the
/// waybill's owners, the push in flight, and the path as of that push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseQueryView {
    /// Unix s.
    pub create_time: i64,
    pub receiver_phone_hash: String,
    pub sender_phone_hash: Option<String>,
    pub inflight: Option<InFlight>,
    /// Newest first, without the nodes newer than the one in flight (WeChat asks while
    /// that push is on its way: the node being pushed is the newest it may see). Empty when
    /// `answered` is set: a repeated question is answered from its stored reply.
    pub path: Vec<EventRecord>,
    /// The exchange stored under [`answer_key`] of the asked prefix and this push in
    /// flight, if this question was answered before.
    pub answered: Option<StoredAnswer>,
}

/// A reverse query's answer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub result_code: i64,
    /// AEAD blob of the reply document.
    pub reply: Option<Vec<u8>>,
}

/// The dedupe key of a reverse query: the caller's `prefix` (which names the question) and
/// the push in flight, if any. [`Store::reverse_query_view`] builds the same key in SQL.
pub fn answer_key(prefix: &str, inflight: Option<InFlight>) -> String {
    match inflight {
        Some(i) => format!("{prefix}{}:{}", i.outbox_id, i.push_seq),
        None => format!("{prefix}0"),
    }
}

/// The receipt a reverse query's answer stands for: recorded, in the same write as the
/// exchange, when the answer given (fresh, or the stored one of a redelivery) has
/// `result_code == found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerReceipt {
    pub outbox_id: i64,
    pub push_seq: i64,
    /// The result code that means the node was shown (WeChat's receipt).
    pub found: i64,
    /// Unix ms.
    pub at: i64,
}

impl Store {
    /// The waybill, its push in flight, its path and the stored answer to this very
    /// question (the exchange under [`answer_key`]`(key_prefix, in flight)`), in one read;
    /// `None` for an unknown waybill.
    pub async fn reverse_query_view(
        &self,
        waybill_id: &str,
        key_prefix: &str,
    ) -> Result<Option<ReverseQueryView>, StoreError> {
        let rows = sqlx::query(
            "SELECT w.create_time, w.receiver_phone_hash, w.sender_phone_hash, \
                    o.id AS inflight_id, o.event_id AS inflight_event_id, \
                    o.action_time AS inflight_action_time, o.push_seq AS inflight_push_seq, \
                    e.id AS event_id, e.action_type, e.action_time, e.payload, e.received_at, \
                    x.id AS answered_id, x.result_code AS answered_code, \
                    x.reply AS answered_reply \
             FROM waybills w \
             LEFT JOIN push_queue q ON q.waybill_id = w.waybill_id \
             LEFT JOIN outbox o ON o.id = q.inflight_outbox_id AND o.event_id IS NOT NULL \
             LEFT JOIN callback_exchanges x ON x.dedupe_key = $2 || \
                 CASE WHEN o.id IS NULL THEN '0' \
                      ELSE CAST(o.id AS TEXT) || ':' || CAST(o.push_seq AS TEXT) END \
             LEFT JOIN events e ON e.waybill_id = w.waybill_id AND x.id IS NULL \
             WHERE w.waybill_id = $1 \
             ORDER BY e.action_time DESC, e.id DESC",
        )
        .bind(waybill_id)
        .bind(key_prefix)
        .fetch_all(&self.pool)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let inflight = match first.try_get::<Option<i64>, _>("inflight_id")? {
            Some(outbox_id) => Some(InFlight {
                outbox_id,
                event_id: first.try_get("inflight_event_id")?,
                action_time: first.try_get("inflight_action_time")?,
                push_seq: first.try_get("inflight_push_seq")?,
            }),
            None => None,
        };
        let cut = inflight.map(|i| (i.action_time, i.event_id));
        let mut path = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(id) = row.try_get::<Option<i64>, _>("event_id")? else {
                continue;
            };
            let action_time: i64 = row.try_get("action_time")?;
            if cut.is_some_and(|c| (action_time, id) > c) {
                continue;
            }
            path.push(EventRecord {
                id,
                waybill_id: waybill_id.to_owned(),
                action_type: row.try_get("action_type")?,
                action_time,
                payload: row.try_get("payload")?,
                received_at: row.try_get("received_at")?,
            });
        }
        let answered = match first.try_get::<Option<i64>, _>("answered_id")? {
            Some(_) => Some(StoredAnswer {
                result_code: first.try_get("answered_code")?,
                reply: first.try_get("answered_reply")?,
            }),
            None => None,
        };
        Ok(Some(ReverseQueryView {
            answered,
            create_time: first.try_get("create_time")?,
            receiver_phone_hash: first.try_get("receiver_phone_hash")?,
            sender_phone_hash: first.try_get("sender_phone_hash")?,
            inflight,
            path,
        }))
    }

    /// Records a reverse query's exchange and, if its answer stands for a receipt, the
    /// receipt, in one write. A redelivery (same `dedupe_key`) stores nothing new and gets
    /// the exchange stored first, whose answer then decides the receipt: WeChat saw that one.
    pub async fn record_answer(
        &self,
        ex: &NewExchange,
        receipt: Option<AnswerReceipt>,
    ) -> Result<ExchangeInsert, StoreError> {
        if let (Some(group), Some(_)) = (&self.group, &ex.dedupe_key) {
            return group.answer(ex.clone(), receipt).await;
        }
        let answer = [(ex.clone(), receipt)];
        self.write(Box::new(move |mut tx| {
            Box::pin(async move {
                let mut outcomes = answers_in(&mut tx, &answer).await?;
                tx.commit().await?;
                outcomes
                    .pop()
                    .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
            })
        }))
        .await
    }
}

/// Several answers inside the caller's transaction (at most one of them without a dedupe key:
/// such an exchange is always inserted), with
/// what [`Store::record_answer`] would give each, in order: the exchanges in one multi-row
/// insert per 100, a key taken before (or earlier in `answers`) giving back the exchange
/// stored first, then the receipts their answers stand for.
pub(super) async fn answers_in(
    conn: &mut sqlx::AnyConnection,
    answers: &[(NewExchange, Option<AnswerReceipt>)],
) -> Result<Vec<ExchangeInsert>, StoreError> {
    use std::collections::HashMap;
    const ROWS: usize = 100;
    let key = |i: usize| answers[i].0.dedupe_key.as_deref().unwrap_or_default();
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut firsts = Vec::new();
    for i in 0..answers.len() {
        if !first_of.contains_key(key(i)) {
            first_of.insert(key(i), i);
            firsts.push(i);
        }
    }
    let mut inserted: HashMap<usize, i64> = HashMap::new();
    let json_rows = firsts.len() > 1 && conn.backend_name() == "SQLite";
    if json_rows {
        // One statement text however many answers (the rows travel as one JSON parameter,
        // the sealed replies as hex), so SQLite prepares it once per connection.
        let rows: Vec<_> = firsts
            .iter()
            .map(|&i| {
                let ex = &answers[i].0;
                (
                    &ex.waybill_id,
                    &ex.dedupe_key,
                    &ex.event,
                    ex.received_at,
                    ex.result_code,
                    &ex.summary,
                    ex.reply.as_ref().map(hex::encode),
                    ex.duration_us,
                )
            })
            .collect();
        let stored: Vec<(i64, String)> = sqlx::query_as(
            "INSERT INTO callback_exchanges (waybill_id, dedupe_key, event, received_at, \
                                             result_code, summary, reply, duration_us) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
                    value ->> 5, unhex(value ->> 6), value ->> 7 \
             FROM json_each($1) WHERE true \
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, COALESCE(dedupe_key, '')",
        )
        .bind(serde_json::to_string(&rows).expect("rows of numbers and strings serialise"))
        .fetch_all(&mut *conn)
        .await?;
        for (id, k) in stored {
            if let Some(&i) = first_of.get(k.as_str()) {
                inserted.insert(i, id);
            }
        }
    }
    let in_values: &[usize] = if json_rows { &[] } else { &firsts };
    for chunk in in_values.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO callback_exchanges (waybill_id, dedupe_key, event, received_at, \
                                             result_code, summary, reply, duration_us) \
             VALUES {} ON CONFLICT (dedupe_key) DO NOTHING \
             RETURNING id, COALESCE(dedupe_key, '')",
            super::values(chunk.len(), 8)
        );
        let mut q = sqlx::query_as::<_, (i64, String)>(&sql);
        for &i in chunk {
            let ex = &answers[i].0;
            q = q
                .bind(&ex.waybill_id)
                .bind(&ex.dedupe_key)
                .bind(&ex.event)
                .bind(ex.received_at)
                .bind(ex.result_code)
                .bind(&ex.summary)
                .bind(&ex.reply)
                .bind(ex.duration_us);
        }
        for (id, k) in q.fetch_all(&mut *conn).await? {
            if let Some(&i) = first_of.get(k.as_str()) {
                inserted.insert(i, id);
            }
        }
    }
    let taken: Vec<&str> = firsts
        .iter()
        .filter(|i| !inserted.contains_key(i))
        .map(|&i| key(i))
        .collect();
    let mut stored: HashMap<String, ExchangeRecord> = HashMap::new();
    for chunk in taken.chunks(ROWS) {
        let sql = format!(
            "SELECT {COLUMNS} FROM callback_exchanges WHERE dedupe_key IN ({})",
            super::placeholders(1, chunk.len())
        );
        let mut q = sqlx::query_as::<_, ExchangeRecord>(&sql);
        for k in chunk {
            q = q.bind(*k);
        }
        for record in q.fetch_all(&mut *conn).await? {
            if let Some(k) = record.dedupe_key.clone() {
                stored.insert(k, record);
            }
        }
    }
    let mut outcomes = Vec::with_capacity(answers.len());
    let mut receipts = Vec::new();
    for (i, (ex, receipt)) in answers.iter().enumerate() {
        let first = first_of[key(i)];
        let outcome = match (inserted.get(&first), stored.get(key(i))) {
            (Some(&id), _) if first == i => ExchangeInsert::Inserted { id },
            // Asked twice in one group: the second gets the first's answer.
            (Some(&id), _) => {
                let f = &answers[first].0;
                ExchangeInsert::Duplicate(ExchangeRecord {
                    id,
                    waybill_id: f.waybill_id.clone(),
                    dedupe_key: f.dedupe_key.clone(),
                    event: f.event.clone(),
                    received_at: f.received_at,
                    result_code: f.result_code,
                    summary: f.summary.clone(),
                    reply: f.reply.clone(),
                    duration_us: f.duration_us,
                })
            }
            (None, Some(prev)) => ExchangeInsert::Duplicate(prev.clone()),
            // Neither inserted nor found: cannot happen inside the write transaction.
            (None, None) => return Err(StoreError::Database(sqlx::Error::RowNotFound)),
        };
        let answered = match &outcome {
            ExchangeInsert::Inserted { .. } => ex.result_code,
            ExchangeInsert::Duplicate(prev) => prev.result_code,
        };
        if let Some(r) = receipt.filter(|r| r.found == answered) {
            receipts.push((r.outbox_id, r.push_seq, r.at));
        }
        outcomes.push(outcome);
    }
    super::outbox::record_receipts_in(conn, &receipts).await?;
    Ok(outcomes)
}

// ---- the group writer's batch of answers ----

pub(super) type AnswerWork = (
    NewExchange,
    Option<AnswerReceipt>,
    oneshot::Sender<Result<ExchangeInsert, StoreError>>,
);

/// The group's reverse-query answers, together in one savepoint; if that fails and the
/// transaction is still open, each alone, so one that fails fails only itself.
pub(super) async fn record_answers(
    conn: &mut AnyConnection,
    work: Vec<AnswerWork>,
    out: &mut Vec<Deliver>,
) {
    let (mut answers, mut replies) = (Vec::new(), Vec::new());
    for (exchange, receipt, reply) in work {
        answers.push((exchange, receipt));
        replies.push(reply);
    }
    match answers_attempt(conn, &answers).await {
        Ok(Ok(outcomes)) => {
            for (outcome, reply) in outcomes.into_iter().zip(replies) {
                out.push(deliver(Ok(outcome), reply));
            }
        }
        Ok(Err(e)) => {
            // The transaction is still open: each answer alone, so one that fails fails
            // only itself.
            tracing::warn!(error = %e, answers = answers.len(), "a group's answers failed together; storing them one by one");
            for (answer, reply) in answers.iter().zip(replies) {
                let outcome = match answers_attempt(conn, std::slice::from_ref(answer)).await {
                    Ok(Ok(mut one)) => Ok(one.remove(0)),
                    Ok(Err(e)) | Err(e) => Err(e),
                };
                out.push(deliver(outcome, reply));
            }
        }
        Err(e) => {
            let e = e.to_string();
            for reply in replies {
                out.push(deliver(Err(StoreError::GroupCommit(e.clone())), reply));
            }
        }
    }
}

/// `answers` in a savepoint: `Ok(Ok)` stored; `Ok(Err)` refused and rolled back, the
/// transaction still open; `Err` the transaction is gone.
async fn answers_attempt(
    conn: &mut AnyConnection,
    answers: &[(NewExchange, Option<AnswerReceipt>)],
) -> Result<Result<Vec<ExchangeInsert>, StoreError>, StoreError> {
    let mut savepoint = Connection::begin(&mut *conn).await?;
    match answers_in(&mut savepoint, answers).await {
        Ok(outcomes) => {
            savepoint.commit().await?;
            Ok(Ok(outcomes))
        }
        Err(e) => {
            // Fails if SQLite ended the whole transaction: then nothing more runs in it.
            savepoint.rollback().await?;
            Ok(Err(e))
        }
    }
}
