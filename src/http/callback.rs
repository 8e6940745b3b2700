//! `GET`/`POST /wechat/callback`: WeChat's URL verification and message push.
//!
//! The mode (plaintext/compatible/secure) and format (JSON/XML) come from configuration,
//! never from the request. Every POST is authenticated and its timestamp checked before
//! anything else. `waybill_notify_query` is answered from the store only; a repeated delivery
//! (WeChat retries after 5 s) is recognised by its dedupe key and gets the same answer with
//! no second side effect.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};

use super::body::read_limited;
use super::AppState;
use crate::codec::{self, now_ms, now_secs};
use crate::domain::{mask_phones_in_text, Phone};
use crate::store::{ExchangeInsert, NewExchange};
use crate::wechat::crypto::{verify_sha1_signature, CryptoError, KeySlot};
use crate::wechat::envelope::{
    self, get_str, CallbackQuery, Document, MessageFormat, MessageMode, OpenError, OpenedMessage,
};
use crate::wechat::reverse_query::{self, build_reply, Lookup, Query};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/wechat/callback", web::get().to(verify_url))
        .route("/wechat/callback", web::post().to(message));
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
        .map(|t| codec::within_window(now_secs(), t, window))
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
    match answer_query(&state, &opened, started).await {
        Ok(reply) => seal(&state, format, &reply, &nonce, key_slot),
        Err(()) => HttpResponse::InternalServerError().finish(),
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

/// Answer a `waybill_notify_query`, or replay the stored answer of an earlier delivery.
async fn answer_query(
    state: &AppState,
    opened: &OpenedMessage,
    started: Instant,
) -> Result<Document, ()> {
    let doc = &opened.doc;
    let Some(query) = Query::from_document(doc) else {
        tracing::warn!("waybill_notify_query without WaybillId");
        return Ok(build_reply(
            &empty_query(doc),
            &state.settings.wechat.original_id,
            now_secs(),
            &Lookup::BadRequest,
        ));
    };
    let store_err = |e: crate::store::StoreError| tracing::error!(error = %e, "store error while answering a reverse query");
    // A replay answers only the very same question: WeChat's retry repeats the message
    // byte for byte (the keyed hash of all of it, phones included), and only for the same
    // push in flight (a query for the next push of the same waybill in the same second
    // repeats the message too).
    let inflight = state
        .store
        .inflight(&query.waybill_id)
        .await
        .map_err(store_err)?;
    let key = replay_key(state, &opened.raw, inflight);
    let replay = match state.store.find_exchange(&key).await.map_err(store_err)? {
        Some(prev) => replayed(state, prev.reply.as_deref()),
        None => None,
    };
    let reply = match replay {
        Some(reply) => {
            tracing::info!(waybill_id = %query.waybill_id, "repeated reverse query answered with the stored reply");
            reply
        }
        None => fresh_answer(state, &query, inflight, key, started).await?,
    };
    // Answering for the node in flight with ResultCode 0 is WeChat's receipt that the push
    // reached it — also when the answer is a replay (the first try may have died before its
    // receipt was written). It is recorded last, just before the reply leaves, so the gap in
    // which a crash would lose the node (WeChat never got the reply, the gateway trusts the
    // receipt) holds no other write.
    let ok =
        reply.get("ResultCode").and_then(|v| v.as_i64()) == Some(reverse_query::result_code::OK);
    if let (true, Some(i)) = (ok, inflight) {
        state
            .store
            .record_receipt(i.outbox_id, i.push_seq, now_ms())
            .await
            .map_err(store_err)?;
    }
    Ok(reply)
}

/// The dedupe key of a reverse query: a keyed hash of the whole message as received (never
/// the message itself: it holds phone numbers), and the push in flight, if any.
fn replay_key(state: &AppState, raw: &[u8], inflight: Option<crate::store::InFlight>) -> String {
    let digest = state.privacy.keyed_hash_bytes(raw);
    match inflight {
        Some(i) => format!("wnq:{digest}:{}:{}", i.outbox_id, i.push_seq),
        None => format!("wnq:{digest}:0"),
    }
}

/// Build, log and return a new answer; a concurrent retry that logged first wins.
async fn fresh_answer(
    state: &AppState,
    query: &Query,
    inflight: Option<crate::store::InFlight>,
    key: String,
    started: Instant,
) -> Result<Document, ()> {
    let store_err = |e: crate::store::StoreError| tracing::error!(error = %e, "store error while answering a reverse query");
    let lookup = lookup(state, query, inflight).await?;
    let reply = build_reply(
        query,
        &state.settings.wechat.original_id,
        now_secs(),
        &lookup,
    );
    let result_code = reply
        .get("ResultCode")
        .and_then(|v| v.as_i64())
        .unwrap_or(-1);
    let summary = format!(
        "waybill_notify_query receiver={} sender={} result={} nodes={}",
        query
            .receiver_phone
            .as_deref()
            .map(mask_phones_in_text)
            .unwrap_or_default(),
        query
            .sender_phone
            .as_deref()
            .map(mask_phones_in_text)
            .unwrap_or_default(),
        result_code,
        reply
            .get("Path")
            .and_then(|p| p.as_array())
            .map_or(0, Vec::len),
    );
    let exchange = NewExchange {
        waybill_id: Some(query.waybill_id.clone()),
        dedupe_key: Some(key),
        event: reverse_query::EVENT.into(),
        received_at: now_ms(),
        result_code,
        summary,
        reply: Some(state.privacy.seal_json(&reply)),
        duration_us: started.elapsed().as_micros() as i64,
    };
    match state
        .store
        .record_exchange(&exchange)
        .await
        .map_err(store_err)?
    {
        ExchangeInsert::Inserted { .. } => {
            tracing::info!(waybill_id = %query.waybill_id, result_code, "reverse query answered");
            Ok(reply)
        }
        // A concurrent retry of the same delivery won the insert: answer exactly as it did.
        ExchangeInsert::Duplicate(prev) => {
            Ok(replayed(state, prev.reply.as_deref()).unwrap_or(reply))
        }
    }
}

fn replayed(state: &AppState, sealed: Option<&[u8]>) -> Option<Document> {
    let mut doc: Document = state.privacy.open_json(sealed?).ok()?;
    doc.insert("CreateTime".into(), serde_json::json!(now_secs()));
    Some(doc)
}

fn empty_query(doc: &Document) -> Query {
    Query {
        to_user_name: String::new(),
        from_user_name: get_str(doc, "FromUserName").unwrap_or_default().to_string(),
        create_time: 0,
        waybill_id: String::new(),
        sender_phone: None,
        receiver_phone: None,
    }
}

/// Unknown waybill, or a phone that does not own it, gets no data (spec §4.3).
async fn lookup(
    state: &AppState,
    q: &Query,
    inflight: Option<crate::store::InFlight>,
) -> Result<Lookup, ()> {
    let err = |e: crate::store::StoreError| tracing::error!(error = %e, "store error while answering a reverse query");
    let Some(w) = state.store.get_waybill(&q.waybill_id).await.map_err(err)? else {
        return Ok(Lookup::UnknownWaybill);
    };
    let hash = |p: &str| {
        Phone::parse(p)
            .ok()
            .map(|p| state.privacy.phone_hash(p.as_str()))
    };
    let receiver_ok = q
        .receiver_phone
        .as_deref()
        .and_then(hash)
        .is_some_and(|h| ct_eq(&h, &w.receiver_phone_hash));
    let sender_ok = match q.sender_phone.as_deref() {
        None => true,
        Some(p) => match (hash(p), &w.sender_phone_hash) {
            (Some(h), Some(stored)) => ct_eq(&h, stored),
            _ => false,
        },
    };
    if !(receiver_ok && sender_ok) {
        tracing::warn!(waybill_id = %q.waybill_id, "reverse query phone does not match the waybill");
        return Ok(Lookup::PhoneMismatch);
    }
    // While a push is in flight, answer as of that push: the node being pushed is the newest
    // in the path. Answering for it is WeChat's receipt that the push reached it.
    let cut = inflight.map(|i| (i.action_time, i.event_id));
    let mut path = Vec::new();
    for ev in state.store.list_events(&q.waybill_id).await.map_err(err)? {
        if cut.is_some_and(|c| (ev.action_time, ev.id) > c) {
            continue;
        }
        path.push(
            codec::open_node(&state.privacy, &ev)
                .map_err(|e| tracing::error!(error = %e, "cannot open a stored node"))?,
        );
    }
    Ok(Lookup::Found {
        create_time: w.create_time,
        path,
    })
}

fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
