//! The consent ledger behind shipping notifications: one-time subscriptions per (openid,
//! template) in `notify_subscriptions` (with `notify_reports` making a replayed report count
//! once), and legacy form_id/prepay_id credentials in `notify_credentials`.
//!
//! Taking consent is atomic on both databases: a grant is taken by a conditional decrement
//! (`remaining > 0`), which PostgreSQL re-checks on the row a concurrent taker committed, and
//! a credential use by a conditional increment (`uses < max_uses`). So two instances racing
//! for the last grant or the last use of a prepay_id get it once.

use super::{Store, StoreError};

/// One template of a subscription report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionGrant {
    pub template_id: String,
    /// Accepted one-time subscriptions to add.
    pub count: i64,
    /// A long-term template: unlimited messages until WeChat says otherwise (43101).
    pub long_term: bool,
}

/// What a user has left for one template.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub openid: String,
    pub template_id: String,
    pub remaining: i64,
    /// 1: long-term, `remaining` is not used.
    pub long_term: i64,
    pub updated_at: i64,
}

/// What recording a subscription report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    Applied,
    /// The idempotency key was seen with the same openid and body: nothing was added.
    Duplicate,
    /// The idempotency key was seen with another openid or body: nothing was added.
    KeyReused,
}

/// The outcome of taking a grant for a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantTake {
    /// One grant was taken for the entry; `remaining` is what is left (long-term: unchanged).
    Taken { remaining: i64 },
    /// The entry already holds a grant from an earlier try.
    AlreadyHeld,
    /// The user has no subscription left for the template: nothing was taken.
    NoGrant,
}

/// A legacy credential to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCredential {
    pub openid: String,
    /// `form_id` or `prepay_id`.
    pub kind: String,
    pub value: String,
    pub max_uses: i64,
    /// Unix s.
    pub issued_at: i64,
    /// Unix s: not offered to WeChat at or after this.
    pub expires_at: i64,
    /// Unix ms.
    pub created_at: i64,
}

/// A stored legacy credential.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CredentialRow {
    pub id: i64,
    pub openid: String,
    pub kind: String,
    pub value: String,
    pub max_uses: i64,
    pub uses: i64,
    pub issued_at: i64,
    pub expires_at: i64,
    /// Why WeChat refused it (it is never offered again).
    pub discarded: Option<String>,
    pub created_at: i64,
}

/// What registering a credential did: a value registered before is kept as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialInsert {
    Inserted(CredentialRow),
    Existing(CredentialRow),
}

const CREDENTIAL_COLUMNS: &str =
    "id, openid, kind, value, max_uses, uses, issued_at, expires_at, discarded, created_at";

impl Store {
    /// Adds `grants` to `openid`'s subscriptions in one transaction. With an idempotency key
    /// (and the report's hash), a key seen before adds nothing.
    pub async fn add_subscriptions(
        &self,
        openid: &str,
        grants: &[SubscriptionGrant],
        idempotency: Option<(&str, &str)>,
        now: i64,
    ) -> Result<ReportOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some((key, body_hash)) = idempotency {
            let fresh: Option<String> = sqlx::query_scalar(
                "INSERT INTO notify_reports (idempotency_key, openid, body_hash, received_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING \
                 RETURNING idempotency_key",
            )
            .bind(key)
            .bind(openid)
            .bind(body_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if fresh.is_none() {
                let (seen_openid, seen_hash): (String, String) = sqlx::query_as(
                    "SELECT openid, body_hash FROM notify_reports WHERE idempotency_key = $1",
                )
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
                return Ok(if seen_openid == openid && seen_hash == body_hash {
                    ReportOutcome::Duplicate
                } else {
                    ReportOutcome::KeyReused
                });
            }
        }
        for g in grants {
            sqlx::query(
                "INSERT INTO notify_subscriptions (openid, template_id, remaining, long_term, \
                                                   updated_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (openid, template_id) DO UPDATE SET \
                     remaining = notify_subscriptions.remaining + excluded.remaining, \
                     long_term = CASE WHEN excluded.long_term = 1 THEN 1 \
                                      ELSE notify_subscriptions.long_term END, \
                     updated_at = excluded.updated_at",
            )
            .bind(openid)
            .bind(&g.template_id)
            .bind(g.count.max(0))
            .bind(i64::from(g.long_term))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ReportOutcome::Applied)
    }

    /// The user's subscriptions, by template id.
    pub async fn subscriptions_of(&self, openid: &str) -> Result<Vec<SubscriptionRow>, StoreError> {
        let rows = sqlx::query_as::<_, SubscriptionRow>(
            "SELECT openid, template_id, remaining, long_term, updated_at \
             FROM notify_subscriptions WHERE openid = $1 ORDER BY template_id",
        )
        .bind(openid)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Takes one of `openid`'s subscriptions of `template_id` for notification `outbox_id`,
    /// atomically: at most one grant per entry (a retry reuses it), and never more grants
    /// than the user accepted, however many instances race for them.
    pub async fn take_grant(
        &self,
        outbox_id: i64,
        openid: &str,
        template_id: &str,
        now: i64,
    ) -> Result<GrantTake, StoreError> {
        let mut tx = self.begin_write().await?;
        // The entry's row first (lock order: entry, then subscription).
        let marked = sqlx::query(
            "UPDATE notify_entries SET consent_held = 1 \
             WHERE outbox_id = $1 AND consent_held = 0",
        )
        .bind(outbox_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if marked == 0 {
            let held: Option<i64> =
                sqlx::query_scalar("SELECT consent_held FROM notify_entries WHERE outbox_id = $1")
                    .bind(outbox_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            return match held {
                Some(_) => Ok(GrantTake::AlreadyHeld),
                None => Err(StoreError::UnknownOutboxEntry(outbox_id)),
            };
        }
        let remaining: Option<i64> = sqlx::query_scalar(
            "UPDATE notify_subscriptions SET \
                 remaining = CASE WHEN long_term = 1 THEN remaining ELSE remaining - 1 END, \
                 updated_at = $3 \
             WHERE openid = $1 AND template_id = $2 AND (long_term = 1 OR remaining > 0) \
             RETURNING remaining",
        )
        .bind(openid)
        .bind(template_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        match remaining {
            // Dropping the transaction rolls the entry's mark back.
            None => Ok(GrantTake::NoGrant),
            Some(remaining) => {
                tx.commit().await?;
                Ok(GrantTake::Taken { remaining })
            }
        }
    }

    /// Sets the user's subscriptions of the template to none (WeChat answered 43101).
    pub async fn revoke_subscriptions(
        &self,
        openid: &str,
        template_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notify_subscriptions SET remaining = 0, long_term = 0, updated_at = $3 \
             WHERE openid = $1 AND template_id = $2",
        )
        .bind(openid)
        .bind(template_id)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Registers a credential; a value registered before is returned unchanged (its uses are
    /// never reset by a replay).
    pub async fn add_credential(&self, c: &NewCredential) -> Result<CredentialInsert, StoreError> {
        let sql = format!(
            "INSERT INTO notify_credentials (openid, kind, value, max_uses, uses, issued_at, \
                                             expires_at, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5, $6, $7) \
             ON CONFLICT (value) DO NOTHING RETURNING {CREDENTIAL_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query_as::<_, CredentialRow>(&sql)
            .bind(&c.openid)
            .bind(&c.kind)
            .bind(&c.value)
            .bind(c.max_uses)
            .bind(c.issued_at)
            .bind(c.expires_at)
            .bind(c.created_at)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match inserted {
            Some(row) => CredentialInsert::Inserted(row),
            None => {
                let sql =
                    format!("SELECT {CREDENTIAL_COLUMNS} FROM notify_credentials WHERE value = $1");
                let row = sqlx::query_as::<_, CredentialRow>(&sql)
                    .bind(&c.value)
                    .fetch_one(&mut *tx)
                    .await?;
                CredentialInsert::Existing(row)
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// The user's credentials, soonest-expiring first.
    pub async fn credentials_of(&self, openid: &str) -> Result<Vec<CredentialRow>, StoreError> {
        let sql = format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM notify_credentials WHERE openid = $1 \
             ORDER BY expires_at, id"
        );
        let rows = sqlx::query_as::<_, CredentialRow>(&sql)
            .bind(openid)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Takes one use of `openid`'s credential that expires soonest among those still valid
    /// at `now + margin` (Unix s), not used up and not discarded, for notification
    /// `outbox_id`; `None` when there is none. The returned row counts this use.
    pub async fn take_credential(
        &self,
        outbox_id: i64,
        openid: &str,
        now: i64,
        margin: i64,
    ) -> Result<Option<CredentialRow>, StoreError> {
        let pick = "SELECT id FROM notify_credentials \
                    WHERE openid = $1 AND uses < max_uses AND discarded IS NULL \
                      AND expires_at > $2 \
                    ORDER BY expires_at, id LIMIT 1";
        let take = format!(
            "UPDATE notify_credentials SET uses = uses + 1 \
             WHERE id = $1 AND uses < max_uses AND discarded IS NULL \
             RETURNING {CREDENTIAL_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        // A concurrent taker may use up the picked credential between the two statements
        // (PostgreSQL): pick again. Each round, one credential is used up or taken.
        for _ in 0..8 {
            let picked: Option<i64> = sqlx::query_scalar(pick)
                .bind(openid)
                .bind(now.saturating_add(margin))
                .fetch_optional(&mut *tx)
                .await?;
            let Some(id) = picked else {
                return Ok(None);
            };
            let taken = sqlx::query_as::<_, CredentialRow>(&take)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = taken {
                sqlx::query("UPDATE notify_entries SET credential_id = $2 WHERE outbox_id = $1")
                    .bind(outbox_id)
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(Some(row));
            }
        }
        Ok(None)
    }

    /// Never offers the credential again (WeChat refused it: 41028, 41029).
    pub async fn discard_credential(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notify_credentials SET discarded = COALESCE(discarded, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(reason)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}
