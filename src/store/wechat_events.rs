//! The `wechat_events` table: WeChat events the gateway does not handle, kept sealed as
//! received so that they can be processed once WeChat states their meaning (spec §11.9).
//! A redelivery (same `dedupe_key`) is kept once; rows older than [`RETENTION_MS`] go when a
//! new one comes.

use super::{Store, StoreError};

/// How long an unhandled event is kept.
pub const RETENTION_MS: i64 = 30 * 86_400 * 1000;

/// An event to keep.
#[derive(Clone)]
pub struct NewWechatEvent {
    pub event: String,
    /// Keyed hash of the whole message: WeChat's redelivery has the same one.
    pub dedupe_key: String,
    /// Unix ms.
    pub received_at: i64,
    /// AEAD blob of the decrypted message.
    pub body: Vec<u8>,
}

/// A kept event; `body` still sealed.
#[derive(Clone, sqlx::FromRow)]
pub struct WechatEventRecord {
    pub id: i64,
    pub event: String,
    pub received_at: i64,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for WechatEventRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatEventRecord")
            .field("id", &self.id)
            .field("event", &self.event)
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Keeps the event unless the same message was kept before (`false` then), and forgets
    /// events older than the retention, in one transaction.
    pub async fn record_wechat_event(&self, e: &NewWechatEvent) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO wechat_events (event, dedupe_key, received_at, body) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&e.event)
        .bind(&e.dedupe_key)
        .bind(e.received_at)
        .bind(&e.body)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM wechat_events WHERE received_at < $1")
            .bind(e.received_at.saturating_sub(RETENTION_MS))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Kept events, newest first, of one `event` name or of all; at most `limit`.
    pub async fn list_wechat_events(
        &self,
        event: Option<&str>,
        limit: i64,
    ) -> Result<Vec<WechatEventRecord>, StoreError> {
        let rows = match event {
            Some(name) => {
                sqlx::query_as::<_, WechatEventRecord>(
                    "SELECT id, event, received_at, body FROM wechat_events \
                     WHERE event = $1 ORDER BY received_at DESC, id DESC LIMIT $2",
                )
                .bind(name)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as::<_, WechatEventRecord>(
                    "SELECT id, event, received_at, body FROM wechat_events \
                     ORDER BY received_at DESC, id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows)
    }
}
