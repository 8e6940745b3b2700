//! The `bindings` table: cached `userquery` answers (is this phone bound to a WeChat user
//! who accepts logistics pushes?), positive and negative alike, shared by every instance.
//! The caller picks the TTL per answer; a stale row is simply overwritten.

use super::{BindingWrite, PushWrites, Store, StoreError};

impl Store {
    /// The cached answer for the phone, `None` if there is none or it expired
    /// (`expires_at <= now`).
    pub async fn get_binding(
        &self,
        phone_hash: &str,
        now: i64,
    ) -> Result<Option<bool>, StoreError> {
        let bound: Option<i64> = sqlx::query_scalar(
            "SELECT bound FROM bindings WHERE phone_hash = $1 AND expires_at > $2",
        )
        .bind(phone_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(bound.map(|b| b != 0))
    }

    /// Caches an answer, checked at `now`, valid for `ttl_ms`; replaces any earlier one.
    pub async fn put_binding(
        &self,
        phone_hash: &str,
        bound: bool,
        now: i64,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let phone_hash = phone_hash.to_owned();
        self.settler
            .settle(PushWrites {
                now,
                binding: Some(BindingWrite {
                    phone_hash,
                    bound,
                    ttl_ms,
                }),
                ..PushWrites::default()
            })
            .await
            .map(|_| ())
    }
}
