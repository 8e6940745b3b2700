//! The `access_tokens` table: the access token of each appid (sealed by the caller) and the
//! lease that makes exactly one instance its refresher. Never logs a token, its blob or its
//! hash.

use super::{Store, StoreError, TokenRow};

impl Store {
    pub async fn get_token(&self, appid: &str) -> Result<Option<TokenRow>, StoreError> {
        let row = sqlx::query_as::<_, TokenRow>(
            "SELECT appid, token_sealed, token_hash, expires_at, fetched_at, lease_owner, \
                    lease_until \
             FROM access_tokens WHERE appid = $1",
        )
        .bind(appid)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Takes the refresher's lease for `appid` until `now + lease_ms` if it is free, expired
    /// (`lease_until < now`) or already `owner`'s, creating the row if missing. Of several
    /// concurrent callers exactly one gets `true`.
    pub async fn try_token_lease(
        &self,
        appid: &str,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        // One statement: the insert or the conditional update is atomic on both databases
        // (a concurrent caller waits on the row and then re-checks the condition).
        let won: Option<String> = sqlx::query_scalar(
            "INSERT INTO access_tokens (appid, lease_owner, lease_until) VALUES ($1, $2, $3) \
             ON CONFLICT (appid) DO UPDATE SET lease_owner = excluded.lease_owner, \
                 lease_until = excluded.lease_until \
             WHERE access_tokens.lease_owner IS NULL OR access_tokens.lease_until IS NULL \
                OR access_tokens.lease_until < $4 OR access_tokens.lease_owner = $2 \
             RETURNING appid",
        )
        .bind(appid)
        .bind(owner)
        .bind(now.saturating_add(lease_ms))
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        Ok(won.is_some())
    }

    /// Gives up the lease if `owner` holds it.
    pub async fn release_token_lease(&self, appid: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE access_tokens SET lease_owner = NULL, lease_until = NULL \
             WHERE appid = $1 AND lease_owner = $2",
        )
        .bind(appid)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Stores a freshly fetched token (`fetched_at = now`) and clears the lease.
    pub async fn save_token(
        &self,
        appid: &str,
        token_sealed: &[u8],
        token_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO access_tokens (appid, token_sealed, token_hash, expires_at, fetched_at, \
                                        lease_owner, lease_until) \
             VALUES ($1, $2, $3, $4, $5, NULL, NULL) \
             ON CONFLICT (appid) DO UPDATE SET token_sealed = excluded.token_sealed, \
                 token_hash = excluded.token_hash, expires_at = excluded.expires_at, \
                 fetched_at = excluded.fetched_at, lease_owner = NULL, lease_until = NULL",
        )
        .bind(appid)
        .bind(token_sealed)
        .bind(token_hash)
        .bind(expires_at)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Marks the stored token expired, only if it is still the one with `token_hash` (a token
    /// another instance already replaced stays valid); `true` if it was.
    pub async fn invalidate_token(
        &self,
        appid: &str,
        token_hash: &str,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE access_tokens SET expires_at = 0 WHERE appid = $1 AND token_hash = $2",
        )
        .bind(appid)
        .bind(token_hash)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }
}
