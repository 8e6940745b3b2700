//! Liveness and readiness.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the database answers, every migration is applied and (SQLite) the writer
/// runs. Not ready answers 503 with a stable reason code in `database`: `not_migrated`,
/// `writer_stopped`, `database_unreachable`, `database_timeout`, `database_error`.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    // Whether pushes go to WeChat or to the emulator: an operator must never have to guess.
    let sandbox = state.settings.sandbox_mode();
    match state.store.check_ready().await {
        Ok(()) => {
            // A paused API (45009: WeChat's daily quota is spent) does not stop the node from
            // accepting events, but operators must see it.
            let paused: Vec<_> = state
                .store
                .list_pauses(crate::clock::now_ms())
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(api, until, reason)| json!({ "api": api, "paused_until_ms": until, "reason": reason }))
                .collect();
            HttpResponse::Ok()
                .json(json!({ "status": "ready", "database": "ok", "sandbox": sandbox, "paused_apis": paused }))
        }
        Err(e) => {
            // A stable code for the probe; the detail (sqlx's text) for the log only.
            let reason = e.reason_code();
            tracing::warn!(reason, error = %e, "not ready");
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "not ready", "database": reason, "sandbox": sandbox }))
        }
    }
}
