//! The `callback_exchanges` table: every WeChat callback received and what we answered.
//!
//! A redelivered push (same `dedupe_key`) finds the first exchange and its stored reply, so
//! it can be answered identically.

use super::{ExchangeInsert, ExchangeRecord, NewExchange, Store, StoreError};

const COLUMNS: &str = "id, waybill_id, dedupe_key, event, received_at, result_code, summary, \
                       reply, duration_us";

impl Store {
    /// Inserts the exchange unless one with the same `dedupe_key` exists, in which case that
    /// one comes back. Exchanges without a key are always inserted.
    pub async fn record_exchange(&self, ex: &NewExchange) -> Result<ExchangeInsert, StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO callback_exchanges (waybill_id, dedupe_key, event, received_at, \
                                             result_code, summary, reply, duration_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (dedupe_key) DO NOTHING \
             RETURNING id",
        )
        .bind(&ex.waybill_id)
        .bind(&ex.dedupe_key)
        .bind(&ex.event)
        .bind(ex.received_at)
        .bind(ex.result_code)
        .bind(&ex.summary)
        .bind(&ex.reply)
        .bind(ex.duration_us)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match inserted {
            Some(id) => ExchangeInsert::Inserted { id },
            // Only a non-null key can conflict, so the row is there.
            None => {
                let sql = format!("SELECT {COLUMNS} FROM callback_exchanges WHERE dedupe_key = $1");
                let existing = sqlx::query_as::<_, ExchangeRecord>(&sql)
                    .bind(&ex.dedupe_key)
                    .fetch_one(&mut *tx)
                    .await?;
                ExchangeInsert::Duplicate(existing)
            }
        };
        tx.commit().await?;
        Ok(outcome)
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
