//! The `payments` table: WeChat Pay notifications acted on, once per `transaction_id`. The
//! first one records its waybill's 90011 (paid) event through the normal event path, in the
//! same transaction; repeats write nothing.

use super::notifications::{enqueue_in, NotificationPlan};
use super::{events, push_queue, EventInsert, NewEvent, Store, StoreError, WaybillRecord};

/// A verified payment to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub transaction_id: String,
    pub waybill_id: String,
    pub out_trade_no: String,
    /// Fen.
    pub total_fee: i64,
    /// Unix ms.
    pub received_at: i64,
}

/// A stored payment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentRecord {
    pub transaction_id: String,
    pub waybill_id: String,
    pub out_trade_no: String,
    pub total_fee: i64,
    pub event_id: Option<i64>,
    pub received_at: i64,
}

/// What recording a payment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentInsert {
    /// First time this transaction: the event was recorded (or was already there).
    Recorded { event: EventInsert },
    /// The transaction was recorded before: nothing was written.
    Repeat,
}

const WAYBILL_COLUMNS: &str = "waybill_id, create_time, contacts, receiver_phone_hash, \
                               sender_phone_hash, sender_openid, receiver_openid, \
                               payment_out_trade_no, payment_total_fee, created_at, updated_at";

impl Store {
    /// Records `payment` and, in the same transaction, `event` (its waybill's 90011) with its
    /// outbox entries and the notifications `plan` asks for, unless `transaction_id` was
    /// recorded before. Concurrent repeats of one transaction record it once.
    pub async fn record_payment(
        &self,
        payment: &NewPayment,
        event: &NewEvent,
        plan: &NotificationPlan,
    ) -> Result<PaymentInsert, StoreError> {
        if payment.waybill_id != event.waybill_id {
            return Err(StoreError::WaybillMismatch {
                waybill: payment.waybill_id.clone(),
                event: event.waybill_id.clone(),
            });
        }
        let mut tx = self.begin_write().await?;
        let fresh: Option<String> = sqlx::query_scalar(
            "INSERT INTO payments (transaction_id, waybill_id, out_trade_no, total_fee, \
                                   received_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (transaction_id) DO NOTHING \
             RETURNING transaction_id",
        )
        .bind(&payment.transaction_id)
        .bind(&payment.waybill_id)
        .bind(&payment.out_trade_no)
        .bind(payment.total_fee)
        .bind(payment.received_at)
        .fetch_optional(&mut *tx)
        .await?;
        if fresh.is_none() {
            return Ok(PaymentInsert::Repeat);
        }
        let outcome = events::record_in(&mut tx, None, event).await?;
        if let EventInsert::Inserted { id } = outcome {
            enqueue_in(&mut tx, id, event, plan.for_action(event.action_type)).await?;
            push_queue::mark_due_in(&mut tx, &event.waybill_id, event.received_at).await?;
        }
        sqlx::query("UPDATE payments SET event_id = $2 WHERE transaction_id = $1")
            .bind(&payment.transaction_id)
            .bind(outcome.id())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(PaymentInsert::Recorded { event: outcome })
    }

    pub async fn get_payment(
        &self,
        transaction_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let row = sqlx::query_as::<_, PaymentRecord>(
            "SELECT transaction_id, waybill_id, out_trade_no, total_fee, event_id, received_at \
             FROM payments WHERE transaction_id = $1",
        )
        .bind(transaction_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// The waybills whose freight payment has this `out_trade_no` (at most two: more than
    /// one is already ambiguous).
    pub async fn find_waybills_by_out_trade_no(
        &self,
        out_trade_no: &str,
    ) -> Result<Vec<WaybillRecord>, StoreError> {
        let sql = format!(
            "SELECT {WAYBILL_COLUMNS} FROM waybills WHERE payment_out_trade_no = $1 \
             ORDER BY waybill_id LIMIT 2"
        );
        let rows = sqlx::query_as::<_, WaybillRecord>(&sql)
            .bind(out_trade_no)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }
}
