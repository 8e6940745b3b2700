//! The access-token manager. One refresher per appid across every gateway instance (a lease
//! row in the database); everyone else reads the stored token. Refreshes ahead of expiry,
//! invalidates only a token that is still the current one, and never refreshes in a loop:
//! a refresh storm would log every other instance out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::client::{ApiError, Call, TokenEndpoint, WechatClient};
use super::errcode::{self, Answer};
use crate::privacy::Privacy;
use crate::store::{Store, TokenRow};

/// A token ready to use. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    /// Keyed hash of the token: how instances agree on "the current token" without
    /// comparing secrets.
    pub hash: String,
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AccessToken(<redacted>, expires_at_ms={})",
            self.expires_at_ms
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token endpoint: {0}")]
    Api(#[from] ApiError),
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("another instance is refreshing the token and no valid token is stored yet")]
    Busy,
}

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub endpoint: TokenEndpoint,
    /// Refresh when less than this remains (WeChat renews stable tokens in their last 5 min).
    pub refresh_margin: Duration,
    /// Never fetch twice within this interval, whatever happens (loop guard).
    pub min_refresh_interval: Duration,
    /// How long the refresher's lease lasts.
    pub lease: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            endpoint: TokenEndpoint::Stable,
            refresh_margin: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(30),
            lease: Duration::from_secs(15),
        }
    }
}

pub struct TokenManager {
    store: Store,
    client: WechatClient,
    privacy: Privacy,
    appid: String,
    secret: crate::secret::Secret,
    settings: TokenSettings,
    /// Identifies this process in the lease row.
    owner: String,
    cache: Mutex<Option<AccessToken>>,
    fetches: AtomicU64,
}

impl TokenManager {
    pub fn new(
        store: Store,
        client: WechatClient,
        privacy: Privacy,
        appid: &str,
        secret: crate::secret::Secret,
        settings: TokenSettings,
        owner: &str,
    ) -> Arc<TokenManager> {
        Arc::new(TokenManager {
            store,
            client,
            privacy,
            appid: appid.to_string(),
            secret,
            settings,
            owner: owner.to_string(),
            cache: Mutex::new(None),
            fetches: AtomicU64::new(0),
        })
    }

    /// How many times this process fetched a token from WeChat.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn fresh(&self, t: &AccessToken, now_ms: i64) -> bool {
        t.expires_at_ms - now_ms > self.settings.refresh_margin.as_millis() as i64
    }

    /// A valid token: from memory, else from the database, else fetched by whoever holds
    /// the lease (this instance if it can take it).
    pub async fn get(&self) -> Result<AccessToken, TokenError> {
        let now = crate::clock::now_ms();
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref().filter(|t| self.fresh(t, now)) {
            return Ok(t.clone());
        }
        let stored = self.load().await?;
        if let Some((t, _)) = stored.as_ref().filter(|(t, _)| self.fresh(t, now)) {
            *cache = Some(t.clone());
            return Ok(t.clone());
        }
        // Loop guard: a token fetched moments ago is used even inside the margin.
        if let Some((t, row)) = stored.as_ref() {
            if now - row.fetched_at < self.settings.min_refresh_interval.as_millis() as i64
                && t.expires_at_ms > now
            {
                *cache = Some(t.clone());
                return Ok(t.clone());
            }
        }
        let t = self.refresh_or_wait(stored.map(|(t, _)| t), now).await?;
        *cache = Some(t.clone());
        Ok(t)
    }

    async fn load(&self) -> Result<Option<(AccessToken, TokenRow)>, TokenError> {
        let Some(row) = self.store.get_token(&self.appid).await? else {
            return Ok(None);
        };
        let Some(sealed) = row.token_sealed.as_deref() else {
            return Ok(None);
        };
        let Ok(token) = self.privacy.open(sealed) else {
            tracing::warn!(appid = %self.appid, "stored access token cannot be opened (data key changed?); fetching a new one");
            return Ok(None);
        };
        let token = String::from_utf8_lossy(&token).into_owned();
        Ok(Some((
            AccessToken {
                token,
                hash: row.token_hash.clone().unwrap_or_default(),
                expires_at_ms: row.expires_at,
            },
            row,
        )))
    }

    async fn refresh_or_wait(
        &self,
        stale: Option<AccessToken>,
        now: i64,
    ) -> Result<AccessToken, TokenError> {
        let lease_ms = self.settings.lease.as_millis() as i64;
        if self
            .store
            .try_token_lease(&self.appid, &self.owner, now, lease_ms)
            .await?
        {
            // Another instance may have stored a token between our read and taking the lease
            // (its save released the lease): use that one instead of fetching again.
            if let Some((t, _)) = self.load().await? {
                if self.fresh(&t, crate::clock::now_ms())
                    && stale.as_ref().is_none_or(|s| s.hash != t.hash)
                {
                    self.store
                        .release_token_lease(&self.appid, &self.owner)
                        .await?;
                    return Ok(t);
                }
            }
            let result = self.fetch().await;
            if result.is_err() {
                self.store
                    .release_token_lease(&self.appid, &self.owner)
                    .await?;
            }
            return result;
        }
        // Someone else refreshes: wait for their token, using the old one meanwhile if valid.
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some((t, _)) = self.load().await? {
                if stale.as_ref().is_none_or(|s| s.hash != t.hash)
                    && t.expires_at_ms > crate::clock::now_ms()
                {
                    return Ok(t);
                }
            }
        }
        match stale {
            Some(t) if t.expires_at_ms > crate::clock::now_ms() => Ok(t),
            _ => Err(TokenError::Busy),
        }
    }

    async fn fetch(&self) -> Result<AccessToken, TokenError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let call = self
            .client
            .fetch_token(
                self.settings.endpoint,
                &self.appid,
                self.secret.expose(),
                false,
            )
            .await;
        let answer = call.result.map_err(|e| {
            tracing::warn!(appid = %self.appid, error = %e, "access token fetch failed");
            e
        })?;
        let now = crate::clock::now_ms();
        let t = AccessToken {
            hash: self.privacy.keyed_hash(&answer.access_token),
            expires_at_ms: now + answer.expires_in.max(0) * 1000,
            token: answer.access_token,
        };
        self.store
            .save_token(
                &self.appid,
                &self.privacy.seal(t.token.as_bytes()),
                &t.hash,
                t.expires_at_ms,
                now,
            )
            .await?;
        tracing::info!(appid = %self.appid, expires_in = answer.expires_in, "access token refreshed");
        metrics::counter!(crate::series::TOKEN_REFRESHES).increment(1);
        Ok(t)
    }

    /// An API said `failed` is invalid (40001/40014/42001): forget it everywhere, but only if
    /// it is still the current token (another instance may already have replaced it).
    pub async fn invalidate(&self, failed: &AccessToken) -> Result<(), TokenError> {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| c.hash == failed.hash) {
            *cache = None;
        }
        let changed = self
            .store
            .invalidate_token(&self.appid, &failed.hash)
            .await?;
        tracing::info!(appid = %self.appid, invalidated = changed, "access token reported invalid");
        Ok(())
    }

    /// Calls `call` with the current token; when WeChat answers that the token is bad
    /// (40001/40014/42001), [`invalidate`](Self::invalidate)s it, gets a fresh one and calls
    /// exactly once more. Returns the last call and whether there was a second.
    pub async fn call_with_refresh<T, F, Fut>(&self, call: F) -> (Result<Call<T>, TokenError>, bool)
    where
        F: Fn(AccessToken) -> Fut,
        Fut: std::future::Future<Output = Call<T>>,
    {
        let token = match self.get().await {
            Ok(t) => t,
            Err(e) => return (Err(e), false),
        };
        let first = call(token.clone()).await;
        if errcode::answer(&first.result) != Answer::TokenInvalid {
            return (Ok(first), false);
        }
        if let Err(e) = self.invalidate(&token).await {
            return (Err(e), false);
        }
        match self.get().await {
            Ok(fresh) => (Ok(call(fresh).await), true),
            Err(e) => (Err(e), true),
        }
    }
}
