//! Everything the sandbox remembers, shared by its handlers behind one `Arc`. Each part is
//! sharded or lock-free on its own (see the field types); there is no lock around the whole.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::{DashMap, DashSet};

use super::clock::Clock;
use super::exchanges::ExchangeLog;
use super::faults::FaultBox;
use super::messages::NotifyState;
use super::stats::Stats;
use super::token_book::{TokenBook, TokenRules};
use super::wire::InboxNode;
use super::SandboxSettings;
use crate::wechat::crypto::MessageCrypto;

/// Path nodes kept per phone inbox (oldest dropped first), so a long benchmark stays bounded.
pub const PHONE_INBOX_LIMIT: usize = 10_000;

pub struct Shared {
    pub settings: SandboxSettings,
    /// `None` when the configured EncodingAESKey is malformed: reverse queries then fail with
    /// 932001 and say why in the exchange log.
    pub crypto: Option<MessageCrypto>,
    pub rules: TokenRules,
    /// Where reverse queries go; changed at run time by tests and the demo.
    pub callback_url: ArcSwap<String>,
    pub clock: Clock,
    pub tokens: TokenBook,
    /// Phones bound in WeChat's express service.
    pub bindings: DashSet<String>,
    /// Path nodes delivered, per phone, oldest first.
    pub inboxes: DashMap<String, Vec<InboxNode>>,
    pub notify: NotifyState,
    pub exchanges: ExchangeLog,
    /// Calls answered with an error, by rid (`POST /cgi-bin/openapi/rid/get`).
    pub rids: super::rid_log::RidLog,
    pub stats: Stats,
    pub faults: FaultBox,
    /// One client for every reverse query: keeps connections to the callback alive.
    pub http: reqwest::Client,
}

impl Shared {
    pub fn new(settings: SandboxSettings) -> Shared {
        let crypto = match MessageCrypto::new(
            &settings.token,
            &settings.appid,
            &settings.encoding_aes_key,
            None,
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "sandbox: the EncodingAESKey is unusable; every reverse query will fail with 932001");
                None
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.callback_timeout_ms))
            // WeChat posts to the configured URL only; a redirect is a failed push.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "sandbox: HTTP client with timeout could not be built; using defaults");
                reqwest::Client::new()
            });
        let rules = TokenRules {
            ttl_secs: settings.token_ttl_secs,
            overlap_secs: settings.token_overlap_secs,
            token_daily_limit: settings.token_daily_limit,
            force_refresh_daily_limit: settings.force_refresh_daily_limit,
        };
        Shared {
            callback_url: ArcSwap::from_pointee(settings.callback_url.clone()),
            settings,
            crypto,
            rules,
            clock: Clock::default(),
            tokens: TokenBook::default(),
            bindings: DashSet::new(),
            inboxes: DashMap::new(),
            notify: NotifyState::new(),
            exchanges: ExchangeLog::default(),
            rids: super::rid_log::RidLog::default(),
            stats: Stats::default(),
            faults: FaultBox::default(),
            http,
        }
    }

    pub fn callback_url(&self) -> Arc<String> {
        self.callback_url.load_full()
    }

    /// Everything back to a fresh start, except the configuration and the callback URL.
    pub fn reset(&self) {
        self.clock.reset();
        self.tokens.reset();
        self.bindings.clear();
        self.inboxes.clear();
        self.notify.reset();
        self.exchanges.reset();
        self.rids.reset();
        self.stats.reset();
        self.faults.set(Default::default());
    }

    pub fn deliver(&self, phone: &str, node: InboxNode) {
        let mut inbox = self.inboxes.entry(phone.to_string()).or_default();
        if inbox.len() >= PHONE_INBOX_LIMIT {
            inbox.remove(0);
        }
        inbox.push(node);
    }
}
