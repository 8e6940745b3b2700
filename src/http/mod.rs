//! actix routes: the backoffice API, the WeChat callback, health. Input is converted to
//! domain types at this edge; handlers never call WeChat (outbound calls happen in workers).

pub mod auth;
pub mod backoffice;
pub mod body;
pub mod callback;
pub mod cells;
pub mod client_limit;
pub mod health;
pub mod jsonp;
pub mod notifications;
pub mod openapi;
pub mod outcomes;
pub mod path;
pub mod problem;
pub mod section;
pub mod signed_urls;
pub mod waybill_view;
pub mod wechat_events;
pub mod wechatpay;

use std::sync::Arc;

use actix_web::web;

use crate::config::Settings;
use crate::privacy::Privacy;
use crate::store::Store;
use crate::wechat::crypto::MessageCrypto;

/// Shared by every handler.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub privacy: Privacy,
    pub crypto: MessageCrypto,
    /// The JSONP lookup's rate limits and signed-URL bindings.
    pub jsonp: jsonp::JsonpGuard,
}

/// All gateway routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(health::routes)
        .configure(backoffice::routes)
        .configure(callback::routes)
        .configure(jsonp::routes)
        .configure(cells::routes)
        .configure(notifications::routes)
        .configure(wechatpay::routes)
        .configure(wechat_events::routes)
        .configure(outcomes::routes)
        .configure(openapi::routes);
}
