//! The WeChat sandbox: WeChat's side of express push and notifications, emulated with
//! WeChat's own rules and error codes, so carriers can develop before WeChat approves them
//! and our tests and demo exercise the real protocol. A product feature (`wxexpress
//! sandbox`), not a test helper. Every rule and its source in the spec: `docs/SANDBOX.md`.
//!
//! # Layout
//!
//! - [`api`]: WeChat error codes, the `{errcode, errmsg}` shape, the API names.
//! - [`token_book`] / `access_token_api`: access_token issuing and checking (`/cgi-bin/token`,
//!   `/cgi-bin/stable_token`).
//! - [`express`]: `userquery` and `pathnotify` (validation, bindings, inboxes).
//! - [`reverse`], [`verdict`]: the `waybill_notify_query` reverse query, and the verdict on
//!   its reply.
//! - [`messages`] / `message_api`, [`templates`], [`values`]: subscribe and legacy template
//!   messages.
//! - [`control`]: the `/sandbox/` control routes.
//! - [`landing`]: WeChat's waybill page, emulated: a signed JSONP `<script>` to the gateway.
//! - [`faults`], [`clock`], [`stats`], [`exchanges`]: fault injection, time travel,
//!   counters, the exchange log.
//! - [`wire`]: the wire types every other file reads (path nodes, the validated push, inbox
//!   nodes, the reverse query's event names).
//! - [`defaults`]: what a sandbox and a gateway without credentials agree on.
//! - [`section`]: `[sandbox]` of the configuration.
//! - `state`, `gate`, `server`, `rid` / `rid_log`: shared state, HTTP plumbing, the server,
//!   WeChat's request log by rid.
//!
//! It must not: hold a lock across an `.await` (pathnotify awaits the carrier's callback),
//! take a lock around all state on the hot path, or log a phone, token or key.

mod access_token_api;
pub mod api;
pub mod clock;
pub mod control;
pub mod defaults;
pub mod exchanges;
pub mod express;
pub mod faults;
mod gate;
pub mod landing;
mod message_api;
pub mod messages;
pub mod reverse;
mod rid;
mod rid_log;
pub mod section;
mod server;
mod state;
pub mod stats;
pub mod templates;
pub mod token_book;
pub mod values;
pub mod verdict;
pub mod wire;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::web;

pub use exchanges::{ExchangeLogEntry, Verdict};
pub use faults::{ApiFault, CallbackFault, Faults};
pub use messages::{Credential, CredentialKind, Template, TemplateKind};
pub use stats::SandboxStats;
pub use wire::InboxNode;

use crate::wechat::crypto::{AesKey, CryptoError};
use crate::wechat::envelope::{MessageFormat, MessageMode};
use state::Shared;

/// The emulated mini program and WeChat's limits.
#[derive(Clone)]
pub struct SandboxSettings {
    /// AppID of the emulated mini program (`/cgi-bin/token` checks it; ends every plaintext frame).
    pub appid: String,
    /// AppSecret (`/cgi-bin/token` checks it).
    pub secret: String,
    /// The mini program's UserName (`gh_…`): `ToUserName` of reverse queries.
    pub original_id: String,
    /// Message-push Token: signs reverse queries and must sign replies.
    pub token: String,
    /// 43-character EncodingAESKey that seals reverse queries and must seal replies.
    pub encoding_aes_key: String,
    pub message_format: MessageFormat,
    pub message_mode: MessageMode,
    /// Where reverse queries go (the carrier's message-push URL).
    pub callback_url: String,
    /// The carrier's JSONP waybill lookup, as told to WeChat (used by the landing page).
    pub jsonp_url: String,
    /// The token of the carrier's official account, which signs JSONP URLs (spec §11.1);
    /// `None`: [`SandboxSettings::token`].
    pub jsonp_token: Option<String>,
    /// The waybill-number pattern the carrier gave WeChat at onboarding (spec §11.2): the
    /// landing page loads the JSONP only for a number it matches, as WeChat does.
    pub waybill_pattern: Option<String>,
    /// Lifetime of a new access_token.
    pub token_ttl_secs: i64,
    /// How long a superseded token keeps working (WeChat: 5 minutes).
    pub token_overlap_secs: i64,
    /// `/cgi-bin/token` calls per day.
    pub token_daily_limit: u32,
    /// `stable_token` calls with `force_refresh: true` per day.
    pub force_refresh_daily_limit: u32,
    /// WeChat waits this long for the reverse-query reply.
    pub callback_timeout_ms: u64,
}

/// Secrets stay out of `Debug`.
impl std::fmt::Debug for SandboxSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxSettings")
            .field("appid", &self.appid)
            .field("original_id", &self.original_id)
            .field("message_format", &self.message_format)
            .field("message_mode", &self.message_mode)
            .field("callback_url", &self.callback_url)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("token_overlap_secs", &self.token_overlap_secs)
            .field("token_daily_limit", &self.token_daily_limit)
            .field("force_refresh_daily_limit", &self.force_refresh_daily_limit)
            .field("callback_timeout_ms", &self.callback_timeout_ms)
            .finish_non_exhaustive()
    }
}

/// The emulated app is the one a gateway without configuration uses
/// ([`defaults`]), so the two agree out of the box.
impl Default for SandboxSettings {
    fn default() -> Self {
        use defaults as sd;
        SandboxSettings {
            appid: sd::APPID.into(),
            secret: sd::SECRET.into(),
            original_id: sd::ORIGINAL_ID.into(),
            token: sd::TOKEN.into(),
            encoding_aes_key: sd::ENCODING_AES_KEY.into(),
            message_format: MessageFormat::Json,
            message_mode: MessageMode::Secure,
            callback_url: "http://127.0.0.1:8080/wechat/callback".into(),
            jsonp_url: "http://127.0.0.1:8080/wechat/waybill".into(),
            jsonp_token: None,
            waybill_pattern: None,
            token_ttl_secs: 7200,
            token_overlap_secs: 300,
            token_daily_limit: 2000,
            force_refresh_daily_limit: 20,
            callback_timeout_ms: 5000,
        }
    }
}

impl SandboxSettings {
    /// Checks what would otherwise only fail at the first reverse query.
    pub fn validate(&self) -> Result<(), SandboxError> {
        AesKey::parse(&self.encoding_aes_key).map_err(SandboxError::EncodingAesKey)?;
        match url::Url::parse(&self.callback_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return Err(SandboxError::CallbackUrl),
        }
        if self.token_ttl_secs <= 0 || self.token_overlap_secs < 0 || self.callback_timeout_ms == 0
        {
            return Err(SandboxError::Limits);
        }
        if let Some(p) = &self.waybill_pattern {
            crate::config::compile_waybill_pattern(p).map_err(SandboxError::WaybillPattern)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox encoding_aes_key: {0}")]
    EncodingAesKey(CryptoError),
    #[error("sandbox callback_url must be an http(s) URL")]
    CallbackUrl,
    #[error("sandbox limits: token_ttl_secs and callback_timeout_ms must be positive, token_overlap_secs not negative")]
    Limits,
    #[error("sandbox waybill_pattern: {0}")]
    WaybillPattern(String),
}

/// A running emulator. Cheap to clone; every clone is the same sandbox.
#[derive(Clone)]
pub struct Sandbox {
    shared: web::Data<Shared>,
}

/// A sandbox server bound to its listener.
pub struct RunningSandbox {
    pub addr: SocketAddr,
    pub handle: actix_web::dev::ServerHandle,
}

impl Sandbox {
    /// Never fails: a malformed EncodingAESKey is logged and makes every reverse query fail
    /// with 932001. Use [`Sandbox::try_new`] to refuse it up front.
    pub fn new(settings: SandboxSettings) -> Sandbox {
        Sandbox {
            shared: web::Data::from(Arc::new(Shared::new(settings))),
        }
    }

    /// [`SandboxSettings::validate`], then [`Sandbox::new`].
    pub fn try_new(settings: SandboxSettings) -> Result<Sandbox, SandboxError> {
        settings.validate()?;
        Ok(Sandbox::new(settings))
    }

    /// Serve WeChat's API paths and the `/sandbox/` control routes on this listener. Returns
    /// once bound; the server runs on the current tokio runtime.
    pub fn start(&self, listener: TcpListener) -> std::io::Result<RunningSandbox> {
        server::start(self.shared.clone(), listener)
    }

    pub fn settings(&self) -> &SandboxSettings {
        &self.shared.settings
    }

    /// Change where reverse queries go.
    pub fn set_callback_url(&self, url: &str) {
        self.shared.callback_url.store(Arc::new(url.to_string()));
    }

    /// Path nodes delivered to the user bound to `phone`, oldest first.
    pub fn inbox_for_phone(&self, phone: &str) -> Vec<InboxNode> {
        self.shared
            .inboxes
            .get(phone)
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Subscribe and template messages delivered to `openid`, oldest first.
    pub fn inbox_for_openid(&self, openid: &str) -> Vec<serde_json::Value> {
        self.shared.notify.inbox(openid)
    }

    /// The last reverse queries (at most [`exchanges::CAPACITY`]), oldest first.
    pub fn exchanges(&self) -> Vec<ExchangeLogEntry> {
        self.shared.exchanges.all()
    }

    pub fn bind_phone(&self, phone: &str) {
        self.shared.bindings.insert(phone.to_string());
    }

    pub fn unbind_phone(&self, phone: &str) {
        self.shared.bindings.remove(phone);
    }

    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.set(faults);
    }

    /// Moves the sandbox clock (tokens, quotas, credentials) by `secs`.
    pub fn advance_clock(&self, secs: i64) {
        self.shared.clock.advance(secs);
    }

    /// Unix seconds on the sandbox clock.
    pub fn now(&self) -> i64 {
        self.shared.clock.now()
    }

    /// Forget everything (tokens, bindings, inboxes, grants, credentials, templates back to
    /// the defaults, faults, clock, counters, exchange log); keeps settings and callback URL.
    pub fn reset(&self) {
        self.shared.reset();
    }

    pub fn stats(&self) -> SandboxStats {
        self.shared.stats.snapshot()
    }

    /// Registers `openid` as a user of the mini program (subscribe/template send need one).
    pub fn add_user(&self, openid: &str) {
        self.shared.notify.add_user(openid);
    }

    /// Records `count` accepted one-time subscriptions of a subscribe template.
    pub fn grant_subscriptions(
        &self,
        openid: &str,
        template_id: &str,
        count: u32,
    ) -> Result<u32, String> {
        self.shared.notify.add_grant(openid, template_id, count)
    }

    /// Registers a legacy form_id/prepay_id for `openid`.
    pub fn add_credential(&self, openid: &str, kind: CredentialKind, value: &str, issued_at: i64) {
        self.shared.notify.add_credential(Credential {
            openid: openid.into(),
            kind,
            value: value.into(),
            issued_at,
            used: 0,
        });
    }

    /// Adds or replaces a template.
    pub fn put_template(&self, template_id: &str, template: Template) {
        self.shared.notify.put_template(template_id, template);
    }
}
