//! The `outbox_attempts` table: one row per try of an outbox entry (time, duration, HTTP
//! status, errcode, outcome, WeChat's rid). Written only by [`Store::complete_entry`], with the outcome it
//! records.

use sqlx::AnyConnection;

use super::{AttemptRecord, NewAttempt, Store, StoreError};

impl Store {
    /// The entry's tries, oldest first.
    pub async fn list_attempts(&self, outbox_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = sqlx::query_as::<_, AttemptRecord>(
            "SELECT id, outbox_id, started_at, duration_ms, http_status, errcode, outcome, \
                    detail, rid \
             FROM outbox_attempts WHERE outbox_id = $1 ORDER BY id",
        )
        .bind(outbox_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    pub async fn count_attempts(&self) -> Result<i64, StoreError> {
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM outbox_attempts")
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }
}

/// Records one try inside the caller's transaction.
pub(super) async fn insert_in(
    conn: &mut AnyConnection,
    attempt: &NewAttempt,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox_attempts (outbox_id, started_at, duration_ms, http_status, errcode, \
                                      outcome, detail, rid) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(attempt.outbox_id)
    .bind(attempt.started_at)
    .bind(attempt.duration_ms)
    .bind(attempt.http_status)
    .bind(attempt.errcode)
    .bind(&attempt.outcome)
    .bind(&attempt.detail)
    .bind(&attempt.rid)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
