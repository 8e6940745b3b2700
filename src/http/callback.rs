//! `GET`/`POST /wechat/callback`: WeChat's URL verification and message push.
//!
//! The mode (plaintext/compatible/secure) and format (JSON/XML) come from configuration,
//! never from the request. Every POST is authenticated and its timestamp checked before
//! anything else. This module only opens and seals: `waybill_notify_query` is answered by
//! `outbox::answer` (from the store only; a repeated delivery gets the same answer with no
//! second side effect).

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};

use super::body::read_limited;
use super::AppState;
use crate::clock;
use crate::clock::{now_ms, now_secs};
use crate::outbox::answer::Answerer;
use crate::wechat::crypto::{verify_sha1_signature, CryptoError, KeySlot};
use crate::wechat::envelope::{
    self, get_str, CallbackQuery, Document, MessageFormat, MessageMode, OpenError, OpenedMessage,
};
use crate::wechat::reverse_query;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/wechat/callback")
            .wrap(actix_web::middleware::from_fn(measured))
            .route(web::get().to(verify_url))
            .route(web::post().to(message)),
    );
}

/// Records how long the callback took to answer WeChat and with which status.
async fn measured(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let resp = next.call(req).await?;
    metrics::histogram!(crate::series::CALLBACK_DURATION).record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::series::CALLBACK_RESULTS, "status" => resp.status().as_str().to_string())
        .increment(1);
    Ok(resp)
}

/// URL verification: echo `echostr` when the signature over (token, timestamp, nonce) holds.
async fn verify_url(state: web::Data<AppState>, query: web::Query<CallbackQuery>) -> HttpResponse {
    let (Some(sig), Some(ts), Some(nonce), Some(echostr)) = (
        &query.signature,
        &query.timestamp,
        &query.nonce,
        &query.echostr,
    ) else {
        return HttpResponse::BadRequest().finish();
    };
    if !fresh(ts, state.settings.server.callback_window_secs) {
        tracing::warn!("callback URL verification with a stale timestamp");
        return HttpResponse::Unauthorized().finish();
    }
    if !verify_sha1_signature(sig, &[state.crypto.token(), ts, nonce]) {
        tracing::warn!("callback URL verification with a bad signature");
        return HttpResponse::Unauthorized().finish();
    }
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(echostr.clone())
}

fn fresh(ts: &str, window: i64) -> bool {
    ts.parse::<i64>()
        .map(|t| clock::within_window(now_secs(), t, window))
        .unwrap_or(false)
}

async fn message(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
    payload: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    let body = match read_limited(&req, payload, state.settings.server.body_limit_bytes).await {
        Ok(b) => b,
        Err(p) => {
            return HttpResponse::build(
                actix_web::http::StatusCode::from_u16(p.status).unwrap_or_default(),
            )
            .finish()
        }
    };
    let w = &state.settings.wechat;
    let (mode, format) = (w.message_mode, w.message_format);
    let opened = match envelope::open_request(
        &state.crypto,
        mode,
        format,
        &query,
        &body,
        now_secs(),
        state.settings.server.callback_window_secs,
    ) {
        Ok(o) => o,
        Err(e) => return reject(e),
    };
    // Addressed to our mini program: in secure mode the decrypted appid already says so; in
    // plaintext mode this is the only link to the account besides the signature.
    match get_str(&opened.doc, "ToUserName") {
        Some(to) if to == w.original_id => {}
        None if mode != MessageMode::Plaintext => {}
        _ => {
            tracing::warn!(
                status = 403,
                reason = "ToUserName is not wechat.original_id",
                "callback rejected"
            );
            return HttpResponse::Forbidden().finish();
        }
    }
    let event = get_str(&opened.doc, "Event")
        .unwrap_or_default()
        .to_string();
    if !event.eq_ignore_ascii_case(reverse_query::EVENT) {
        return keep_unhandled(&state, &opened, &event).await;
    }
    let nonce = query.nonce.clone().unwrap_or_default();
    let key_slot = opened.key_slot.unwrap_or(KeySlot::Current);
    let answerer = Answerer {
        store: &state.store,
        privacy: &state.privacy,
        original_id: &w.original_id,
    };
    match answerer.answer(&opened.raw, &opened.doc, started).await {
        Ok(reply) => seal(&state, format, &reply, &nonce, key_slot),
        Err(e) => {
            tracing::error!(error = %e, "a reverse query could not be answered; WeChat will ask again");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// An event we do not handle (push mode's, while unpublished; spec §11.9) is answered
/// `success` as WeChat expects, and kept sealed first, so that nothing WeChat sent is lost
/// while its meaning is unknown. If it cannot be kept, WeChat gets a 500 and sends it again.
async fn keep_unhandled(state: &AppState, opened: &OpenedMessage, event: &str) -> HttpResponse {
    let name = if event.is_empty() {
        get_str(&opened.doc, "MsgType").unwrap_or_default()
    } else {
        event
    };
    let kept = crate::store::NewWechatEvent {
        event: name.chars().take(64).collect(),
        dedupe_key: state.privacy.keyed_hash_bytes(&opened.raw),
        received_at: now_ms(),
        body: state.privacy.seal(&opened.raw),
    };
    match state.store.record_wechat_event(&kept).await {
        Ok(first) => {
            tracing::info!(event = %kept.event, first, "callback event not handled: kept sealed, answered success");
            HttpResponse::Ok()
                .content_type("text/plain; charset=utf-8")
                .body("success")
        }
        Err(e) => {
            tracing::error!(error = %e, event = %kept.event, "an unhandled event could not be kept; WeChat will send it again");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// Map an open failure to WeChat's view: bad signature or stale timestamp -> 401, wrong appid
/// -> 403, anything unreadable -> 400. The body stays empty; the reason goes to the log.
fn reject(e: OpenError) -> HttpResponse {
    let (status, reason) = match &e {
        OpenError::BadSignature => (401, "bad signature"),
        OpenError::StaleTimestamp => (401, "timestamp outside the window"),
        OpenError::MissingParameter(_) => (400, "missing parameter"),
        OpenError::Crypto(CryptoError::ValidateAppid) => (403, "appid mismatch"),
        OpenError::Crypto(_) => (400, "undecryptable"),
        _ => (400, "malformed"),
    };
    tracing::warn!(status, reason, error = %e, "callback rejected");
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default()).finish()
}

fn seal(
    state: &AppState,
    format: MessageFormat,
    doc: &Document,
    nonce: &str,
    slot: KeySlot,
) -> HttpResponse {
    let w = &state.settings.wechat;
    match envelope::seal_reply(
        &state.crypto,
        w.message_mode,
        format,
        doc,
        nonce,
        now_secs(),
        slot,
    ) {
        Ok(body) => {
            let ct = match format {
                MessageFormat::Json => "application/json; charset=utf-8",
                MessageFormat::Xml => "text/xml; charset=utf-8",
            };
            HttpResponse::Ok().content_type(ct).body(body)
        }
        Err(e) => {
            tracing::error!(error = %e, "sealing the reply failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}
