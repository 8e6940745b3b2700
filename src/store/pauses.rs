//! The `api_pauses` table: WeChat APIs we must not call until a given time (45009, the daily
//! quota), shared by every instance and shown by `/readyz`.

use super::{Store, StoreError};

impl Store {
    /// Pauses `api` until `until` (Unix ms), replacing any earlier pause of it.
    pub async fn pause_api(&self, api: &str, until: i64, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_pauses (api, paused_until, reason) VALUES ($1, $2, $3) \
             ON CONFLICT (api) DO UPDATE SET paused_until = excluded.paused_until, \
                 reason = excluded.reason",
        )
        .bind(api)
        .bind(until)
        .bind(reason)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// When the pause of `api` ends, if it is paused at `now`.
    pub async fn api_paused_until(&self, api: &str, now: i64) -> Result<Option<i64>, StoreError> {
        let until = sqlx::query_scalar(
            "SELECT paused_until FROM api_pauses WHERE api = $1 AND paused_until > $2",
        )
        .bind(api)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(until)
    }

    /// The pauses in force at `now`, as (api, paused_until, reason), by api.
    pub async fn list_pauses(&self, now: i64) -> Result<Vec<(String, i64, String)>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT api, paused_until, reason FROM api_pauses WHERE paused_until > $1 ORDER BY api",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
