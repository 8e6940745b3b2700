//! The `webhook_deliveries` table: the outcome webhook's requests as durable rows.
//!
//! A delivery is cut from the feed (the rows after the webhook's own cursor, below the
//! commit watermark, at most `outcomes.batch_max`) in one transaction that also moves the
//! cursor, so every outcome is in exactly one delivery, and a crash either cut it or did not.
//! A delivery is then tried until a 2xx: at least once, under a lease so two instances never
//! send the same row at once, with the same `webhook_id` and body on every try.

use sqlx::{FromRow, Row};

use super::outcomes::{FeedPosition, OutcomeFilter, OutcomeRecord};
use super::{Backend, Store, StoreError};

/// The meta key of the webhook's feed cursor (`xid:id`).
const CURSOR_KEY: &str = "outcomes.webhook_cursor";
/// The meta key of the endpoint that answered 410 Gone (delivery to it stopped).
const GONE_KEY: &str = "outcomes.webhook_gone";

/// The states of a delivery.
pub const DELIVERY_PENDING: &str = "pending";
pub const DELIVERY_DELIVERED: &str = "delivered";
/// The retry schedule was spent; the feed still holds every item.
pub const DELIVERY_FAILED: &str = "failed";

/// A delivery to send, as claimed.
#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRecord {
    pub id: i64,
    pub webhook_id: String,
    pub body: String,
    pub items: i64,
    pub oldest_item_at: i64,
    pub tries: i64,
    pub created_at: i64,
}

/// A delivery row as stored (tests, the demo).
#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub webhook_id: String,
    pub body: String,
    pub items: i64,
    pub state: String,
    pub tries: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// How a try of a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    /// Any 2xx.
    Delivered { status: i64 },
    /// Tried again at `at` (Unix ms).
    Retry {
        at: i64,
        status: Option<i64>,
        error: String,
    },
    /// The schedule is spent.
    Failed { status: Option<i64>, error: String },
}

/// The body of a new delivery, built from its items by the caller (the store knows no JSON).
pub struct NewDelivery {
    pub webhook_id: String,
    pub body: String,
}

/// Gauges of the webhook for the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookGauges {
    pub pending: i64,
    /// Unix ms of the oldest item not yet delivered, if any.
    pub oldest_undelivered_at: Option<i64>,
}

fn encode_position(p: FeedPosition) -> String {
    format!("{}:{}", p.xid, p.id)
}

fn decode_position(s: &str) -> FeedPosition {
    let (xid, id) = s.split_once(':').unwrap_or(("0", "0"));
    FeedPosition {
        xid: xid.parse().unwrap_or(0),
        id: id.parse().unwrap_or(0),
    }
}

impl Store {
    /// Cuts the next delivery from the feed: up to `batch_max` outcomes after the webhook's
    /// cursor become one delivery row (its body from `build`), and the cursor moves past them,
    /// in one transaction. `Ok(0)`: nothing new. Returns how many items the delivery holds.
    pub async fn cut_webhook_delivery(
        &self,
        batch_max: i64,
        now: i64,
        build: impl FnOnce(&[OutcomeRecord]) -> NewDelivery + Send + 'static,
    ) -> Result<usize, StoreError> {
        // The page is read outside the transaction (on PostgreSQL the watermark must not
        // count this transaction's own xid); the transaction then takes the cursor's row
        // lock and cuts only if the cursor is still where the page began, so two instances
        // never cut the same items.
        let cursor = self.get_meta(CURSOR_KEY).await?;
        let after = cursor.as_deref().map(decode_position).unwrap_or_default();
        let page = self
            .outcomes_page(after, batch_max, &OutcomeFilter::default())
            .await?;
        if page.items.is_empty() {
            return Ok(0);
        }
        let n = page.items.len();
        let oldest = page.items.iter().map(|r| r.decided_at).min().unwrap_or(now);
        let delivery = build(&page.items);
        let (expected, next) = (cursor, encode_position(page.next));
        let backend = self.backend;
        self.write(Box::new(move |mut tx| {
            Box::pin(async move {
                let lock = match backend {
                    Backend::Sqlite => "SELECT value FROM meta WHERE key = $1",
                    Backend::Postgres => "SELECT value FROM meta WHERE key = $1 FOR UPDATE",
                };
                let current: Option<String> = sqlx::query_scalar(lock)
                    .bind(CURSOR_KEY)
                    .fetch_optional(&mut *tx)
                    .await?;
                if current != expected {
                    // Another instance cut these items meanwhile.
                    return Ok(0);
                }
                let moved = match &expected {
                    None => sqlx::query(
                        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    )
                    .bind(CURSOR_KEY)
                    .bind(&next)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                    Some(old) => sqlx::query(
                        "UPDATE meta SET value = $2 WHERE key = $1 AND value = $3",
                    )
                    .bind(CURSOR_KEY)
                    .bind(&next)
                    .bind(old)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                };
                if moved != 1 {
                    return Ok(0);
                }
                insert_delivery(&mut tx, &delivery, n as i64, oldest, now).await?;
                tx.commit().await?;
                Ok(n)
            })
        }))
        .await
    }

    /// Queues deliveries of already-built bodies (a replay), each with its items' count and
    /// oldest `decided_at`, in one transaction.
    pub async fn queue_webhook_deliveries(
        &self,
        deliveries: Vec<(NewDelivery, i64, i64)>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(Box::new(move |mut tx| {
            Box::pin(async move {
                for (d, items, oldest) in &deliveries {
                    insert_delivery(&mut tx, d, *items, *oldest, now).await?;
                }
                tx.commit().await?;
                Ok(())
            })
        }))
        .await
    }

    /// Whether any pending delivery is due at `now` and not leased: one index probe, so an
    /// idle deliverer polls with a read instead of a write.
    pub async fn webhook_due(&self, now: i64) -> Result<bool, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM webhook_deliveries WHERE state = $1 AND next_attempt_at <= $2 \
               AND (lease_until IS NULL OR lease_until < $2) LIMIT 1",
        )
        .bind(DELIVERY_PENDING)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(due.is_some())
    }

    /// Leases up to `limit` due pending deliveries to `owner` until `lease_until`.
    pub async fn claim_webhook_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let skip_locked = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $2 \
             WHERE id IN (SELECT id FROM webhook_deliveries \
                          WHERE state = $3 AND next_attempt_at <= $4 \
                            AND (lease_until IS NULL OR lease_until < $4) \
                          ORDER BY next_attempt_at, id LIMIT $5{skip_locked}) \
             RETURNING id, webhook_id, body, items, oldest_item_at, tries, created_at"
        );
        let (owner, state) = (owner.to_owned(), DELIVERY_PENDING);
        self.write(Box::new(move |mut tx| {
            Box::pin(async move {
                let mut rows: Vec<DeliveryRecord> = sqlx::query_as(&sql)
                    .bind(&owner)
                    .bind(lease_until)
                    .bind(state)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows.sort_by_key(|r| r.id);
                Ok(rows)
            })
        }))
        .await
    }

    /// Records how a try of delivery `id` ended; `false` (nothing written) if `owner` no
    /// longer holds its lease or it is no longer pending.
    pub async fn finish_webhook_delivery(
        &self,
        id: i64,
        owner: &str,
        result: DeliveryResult,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (state, next, status, error, done) = match &result {
            DeliveryResult::Delivered { status } => {
                (DELIVERY_DELIVERED, None, Some(*status), None, Some(now))
            }
            DeliveryResult::Retry { at, status, error } => (
                DELIVERY_PENDING,
                Some(*at),
                *status,
                Some(error.clone()),
                None,
            ),
            DeliveryResult::Failed { status, error } => (
                DELIVERY_FAILED,
                None,
                *status,
                Some(error.clone()),
                Some(now),
            ),
        };
        let owner = owner.to_owned();
        self.write_one(Box::new(move |conn| {
            Box::pin(async move {
                let done_rows = sqlx::query(
                    "UPDATE webhook_deliveries SET state = $3, tries = tries + 1, \
                            next_attempt_at = COALESCE($4, next_attempt_at), \
                            last_status = $5, last_error = $6, done_at = $7, updated_at = $8, \
                            lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND lease_owner = $2 AND state = $9",
                )
                .bind(id)
                .bind(&owner)
                .bind(state)
                .bind(next)
                .bind(status)
                .bind(error)
                .bind(done)
                .bind(now)
                .bind(DELIVERY_PENDING)
                .execute(&mut *conn)
                .await?;
                Ok(done_rows.rows_affected() == 1)
            })
        }))
        .await
    }

    /// Hands back the lease of a delivery not tried (the endpoint is gone, or shutdown).
    pub async fn release_webhook_delivery(&self, id: i64, owner: &str) -> Result<(), StoreError> {
        let owner = owner.to_owned();
        self.write_one(Box::new(move |conn| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE webhook_deliveries SET lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND lease_owner = $2",
                )
                .bind(id)
                .bind(&owner)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Every delivery, oldest first (tests and the demo's check).
    pub async fn list_webhook_deliveries(&self) -> Result<Vec<DeliveryRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, webhook_id, body, items, state, tries, next_attempt_at, last_status, \
                    last_error FROM webhook_deliveries ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Pending deliveries and the oldest item they hold.
    pub async fn webhook_gauges(&self) -> Result<WebhookGauges, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(oldest_item_at) AS oldest FROM webhook_deliveries \
             WHERE state = $1",
        )
        .bind(DELIVERY_PENDING)
        .fetch_one(&self.pool)
        .await?;
        Ok(WebhookGauges {
            pending: row.try_get("n")?,
            oldest_undelivered_at: row.try_get("oldest")?,
        })
    }

    /// The endpoint that answered 410 Gone, if delivery to it is stopped.
    pub async fn webhook_gone(&self) -> Result<Option<String>, StoreError> {
        self.get_meta(GONE_KEY).await
    }

    /// Stops delivery to `url` (it answered 410 Gone); `None` clears the stop.
    pub async fn set_webhook_gone(&self, url: Option<&str>) -> Result<(), StoreError> {
        match url {
            Some(u) => self.set_meta(GONE_KEY, u).await,
            None => {
                sqlx::query("DELETE FROM meta WHERE key = $1")
                    .bind(GONE_KEY)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }
        }
    }

    /// Deletes up to `batch` deliveries finished before `before` (Unix ms).
    pub async fn delete_webhook_deliveries_before(
        &self,
        before: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        self.delete_oldest("webhook_deliveries", "done_at", before, batch)
            .await
    }
}

async fn insert_delivery(
    conn: &mut sqlx::AnyConnection,
    d: &NewDelivery,
    items: i64,
    oldest: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (webhook_id, body, items, oldest_item_at, state, tries, \
                                         next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, $6, $6)",
    )
    .bind(&d.webhook_id)
    .bind(&d.body)
    .bind(items)
    .bind(oldest)
    .bind(DELIVERY_PENDING)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
