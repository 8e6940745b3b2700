//! The carrier's backoffice API under `/v1`: waybills, events, NDJSON batches, read-back.
//! Input becomes domain types at this edge; nothing is stored unless all of it is valid.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::require_bearer;
use super::body::{media_type, parse_json, read_limited};
use super::problem::Problem;
use super::AppState;
use crate::clock::{now_ms, now_secs};
use crate::codec;
use crate::domain::{
    mask_phone_str, mask_phones_in_text, Contact, EventInput, FieldError, TrackingEvent, Waybill,
    WaybillId, WaybillInput,
};
use crate::store::{EntryState, EventInsert, StoreError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/waybills/{waybill_id}", web::put().to(put_waybill))
        .route("/v1/waybills/{waybill_id}", web::get().to(get_waybill))
        .service(
            web::resource("/v1/waybills/{waybill_id}/events")
                .wrap(actix_web::middleware::from_fn(counted))
                .route(web::post().to(post_event)),
        )
        .route("/v1/events/batch", web::post().to(post_batch))
        .route(
            "/v1/notifications/{id}/retry",
            web::post().to(retry_notification),
        );
}

fn waybill_id(raw: &str) -> Result<WaybillId, Problem> {
    WaybillId::parse(raw).map_err(|m| {
        Problem::validation(vec![FieldError {
            field: "waybill_id".into(),
            message: m,
        }])
    })
}

async fn put_waybill(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let id = waybill_id(&path)?;
    let body = read_limited(&req, payload, state.settings.server.body_limit_bytes).await?;
    let input: WaybillInput = parse_json(&req, &body)?;
    let waybill = Waybill::parse(id, &input, now_secs(), "").map_err(Problem::validation)?;
    let created = state
        .store
        .upsert_waybill(&codec::waybill_record(&state.privacy, &waybill, now_ms()))
        .await?;
    tracing::debug!(waybill_id = %waybill.id, created, "waybill stored");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(json!({ "waybill_id": waybill.id, "created": created })))
}

/// Counts each single event by its outcome (`stored`, `duplicate`, `rejected`, `failed`),
/// read from the status the handler answered with.
async fn counted(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let resp = next.call(req).await?;
    let status = resp.status();
    let outcome = match status.as_u16() {
        202 => "stored",
        200 => "duplicate",
        s if s < 500 => "rejected",
        _ => "failed",
    };
    metrics::counter!(crate::series::EVENTS_INGESTED, "outcome" => outcome).increment(1);
    Ok(resp)
}

async fn post_event(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let id = waybill_id(&path)?;
    let body = read_limited(&req, payload, state.settings.server.body_limit_bytes).await?;
    let input: EventInput = parse_json(&req, &body)?;
    let event = TrackingEvent::parse(&input, now_secs(), "").map_err(Problem::validation)?;
    let record = codec::new_event(&state.privacy, &id, &event, now_ms());
    let plan = state.settings.notifications.plan();
    match state.store.record_event(None, &record, plan).await {
        Ok(EventInsert::Inserted { id: event_id }) => {
            tracing::debug!(waybill_id = %id, action_type = event.action_type.code(), event_id, "event accepted");
            Ok(HttpResponse::Accepted()
                .json(json!({ "waybill_id": id, "event_id": event_id, "duplicate": false })))
        }
        Ok(EventInsert::Duplicate { id: event_id }) => Ok(HttpResponse::Ok()
            .json(json!({ "waybill_id": id, "event_id": event_id, "duplicate": true }))),
        Err(StoreError::UnknownWaybill(_)) => Err(Problem::not_found(format!(
            "waybill {id} does not exist; create it with PUT /v1/waybills/{id} first"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// One NDJSON line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLine {
    waybill_id: Option<String>,
    waybill: Option<WaybillInput>,
    event: Option<EventInput>,
}

async fn post_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let mt = media_type(&req);
    if mt != "application/x-ndjson" && mt != "application/ndjson" {
        return Err(Problem::unsupported_media("application/x-ndjson"));
    }
    let limits = &state.settings.server;
    let body = read_limited(&req, payload, limits.batch_limit_bytes).await?;
    // Parsing and sealing 10,000 lines is CPU work of many milliseconds: done off the HTTP
    // worker, whose other connections (WeChat's reverse queries among them) would wait.
    let parsing = state.clone();
    let parsed = web::block(move || parse_batch(&parsing, &body))
        .await
        .map_err(|_| Problem::internal())?;
    let ParsedBatch {
        items,
        line_numbers,
        mut errors,
        lines,
    } = parsed?;
    if lines == 0 {
        return Err(Problem::bad_request("the batch is empty"));
    }
    let outcomes = if items.is_empty() {
        Vec::new()
    } else {
        match state
            .store
            .record_events_batch(&items, state.settings.notifications.plan())
            .await
        {
            Ok(outcomes) => outcomes,
            // A large batch is stored in several transactions; one failed after others
            // committed. Say exactly which lines are stored: sending the batch again is safe.
            Err(StoreError::BatchInterrupted { stored, error }) => {
                tracing::error!(error = %error, stored, lines, "a batch stopped part-way");
                let last = line_numbers[..stored].last().copied().unwrap_or(0);
                return Err(Problem::new(
                    actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                    "batch-interrupted",
                    "Batch stored in part",
                    format!(
                        "the database failed while storing this batch: lines 1 to {last} were \
                         stored, the lines after it were not; send the batch again (stored \
                         lines come back as duplicates)"
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let (mut accepted, mut duplicates) = (0, 0);
    for (outcome, line) in outcomes.into_iter().zip(line_numbers) {
        match outcome {
            Ok(EventInsert::Inserted { .. }) => accepted += 1,
            Ok(EventInsert::Duplicate { .. }) => duplicates += 1,
            Err(StoreError::UnknownWaybill(id)) => errors.push(json!({ "line": line, "errors": [FieldError { field: "waybill".into(), message: format!("waybill {id} does not exist; send it in this line's `waybill`") }] })),
            Err(e) => return Err(e.into()),
        }
    }
    errors.sort_by_key(|e| e["line"].as_u64());
    for (outcome, n) in [
        ("stored", accepted),
        ("duplicate", duplicates),
        ("rejected", errors.len()),
    ] {
        metrics::counter!(crate::series::EVENTS_INGESTED, "outcome" => outcome).increment(n as u64);
    }
    tracing::info!(
        lines,
        accepted,
        duplicates,
        rejected = errors.len(),
        "batch stored"
    );
    Ok(HttpResponse::Ok().json(json!({ "lines": lines, "accepted": accepted, "duplicates": duplicates, "rejected": errors.len(), "errors": errors })))
}

/// A batch's lines, parsed: the good ones (with their line numbers) and the refused ones.
struct ParsedBatch {
    items: Vec<(Option<crate::store::WaybillRecord>, crate::store::NewEvent)>,
    line_numbers: Vec<usize>,
    errors: Vec<serde_json::Value>,
    lines: usize,
}

fn parse_batch(state: &AppState, body: &[u8]) -> Result<ParsedBatch, Problem> {
    let limits = &state.settings.server;
    let text =
        std::str::from_utf8(body).map_err(|_| Problem::bad_request("the batch is not UTF-8"))?;
    let (now, now_ms) = (now_secs(), now_ms());

    let mut items = Vec::new();
    let mut line_numbers = Vec::new();
    let mut errors: Vec<serde_json::Value> = Vec::new();
    let mut lines = 0usize;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        if lines > limits.batch_max_lines {
            return Err(
                Problem::too_large(limits.batch_limit_bytes).with_detail(format!(
                    "a batch holds at most {} lines",
                    limits.batch_max_lines
                )),
            );
        }
        match parse_line(state, line, now, now_ms) {
            Ok(item) => {
                items.push(item);
                line_numbers.push(i + 1);
            }
            Err(errs) => errors.push(json!({ "line": i + 1, "errors": errs })),
        }
    }
    Ok(ParsedBatch {
        items,
        line_numbers,
        errors,
        lines,
    })
}

fn parse_line(
    state: &AppState,
    line: &str,
    now: i64,
    now_ms: i64,
) -> Result<(Option<crate::store::WaybillRecord>, crate::store::NewEvent), Vec<FieldError>> {
    let (id, waybill, event) = parse_batch_line(line, now)?;
    Ok((
        waybill.map(|w| codec::waybill_record(&state.privacy, &w, now_ms)),
        codec::new_event(&state.privacy, &id, &event, now_ms),
    ))
}

/// One NDJSON line of `POST /v1/events/batch`, converted to domain values at the edge (no
/// I/O): its waybill id, the waybill if the line carries one, and the event. Every bad field
/// is named; phone numbers in the messages (a parser quoting the input) are masked, as in
/// every problem detail.
pub fn parse_batch_line(
    line: &str,
    now: i64,
) -> Result<(WaybillId, Option<Waybill>, TrackingEvent), Vec<FieldError>> {
    parse_line_fields(line, now).map_err(|mut errors| {
        for e in &mut errors {
            e.message = mask_phones_in_text(&e.message);
        }
        errors
    })
}

fn parse_line_fields(
    line: &str,
    now: i64,
) -> Result<(WaybillId, Option<Waybill>, TrackingEvent), Vec<FieldError>> {
    let fe = |field: &str, message: String| {
        vec![FieldError {
            field: field.into(),
            message,
        }]
    };
    let l: BatchLine = serde_json::from_str(line)
        .map_err(|e| fe("", format!("not a JSON object of this endpoint: {e}")))?;
    let id = WaybillId::parse(l.waybill_id.as_deref().unwrap_or_default())
        .map_err(|m| fe("waybill_id", m))?;
    let mut errs = Vec::new();
    let waybill = match &l.waybill {
        Some(w) => Waybill::parse(id.clone(), w, now, "waybill.")
            .map_err(|e| errs.extend(e))
            .ok(),
        None => None,
    };
    let event = match &l.event {
        Some(e) => TrackingEvent::parse(e, now, "event.")
            .map_err(|e| errs.extend(e))
            .ok(),
        None => {
            errs.push(FieldError {
                field: "event".into(),
                message: "is required".into(),
            });
            None
        }
    };
    match (event, errs.is_empty()) {
        (Some(event), true) => Ok((id, waybill, event)),
        _ => Err(errs),
    }
}

async fn get_waybill(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let id = waybill_id(&path)?;
    let Some(record) = state.store.get_waybill(id.as_str()).await? else {
        return Err(Problem::not_found(format!("waybill {id} does not exist")));
    };
    let contacts = codec::open_contacts(&state.privacy, &record).map_err(|e| {
        tracing::error!(waybill_id = %id, error = %e, "cannot open stored contacts");
        Problem::internal()
    })?;
    let mut path_view = Vec::new();
    for ev in state.store.list_events(id.as_str()).await? {
        let node = codec::open_node(&state.privacy, &ev).map_err(|_| Problem::internal())?;
        let t = &node.text;
        path_view.push(json!({
            "event_id": ev.id,
            "action_type": node.action_type,
            "action_time": node.action_time,
            "action_msg": mask_phones_in_text(&t.action_msg),
            "pickup_courier_name": t.pickup_courier_name,
            "pickup_courier_phone": t.pickup_courier_phone.as_deref().map(mask_phone_str),
            "delivery_courier_name": t.delivery_courier_name,
            "delivery_courier_phone": t.delivery_courier_phone.as_deref().map(mask_phone_str),
            "received_at_ms": ev.received_at,
        }));
    }
    let mut notifications = Vec::new();
    for n in state.store.list_outbox(id.as_str()).await? {
        let attempts: Vec<_> = state
            .store
            .list_attempts(n.id)
            .await?
            .into_iter()
            .map(|a| json!({ "started_at_ms": a.started_at, "duration_ms": a.duration_ms, "http_status": a.http_status, "errcode": a.errcode, "rid": a.rid, "outcome": a.outcome, "detail": a.detail }))
            .collect();
        notifications.push(json!({
            "id": n.id, "kind": n.kind, "event_id": n.event_id, "action_time": n.action_time, "state": n.state,
            "skip_reason": n.skip_reason, "tries": n.tries, "next_attempt_at_ms": n.next_attempt_at, "last_error": n.last_error,
            "created_at_ms": n.created_at, "done_at_ms": n.done_at, "attempts": attempts,
        }));
    }
    let callbacks: Vec<_> = state
        .store
        .list_exchanges(id.as_str())
        .await?
        .into_iter()
        .map(|x| json!({ "received_at_ms": x.received_at, "event": x.event, "result_code": x.result_code, "summary": x.summary, "duration_us": x.duration_us }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "waybill_id": record.waybill_id,
        "create_time": record.create_time,
        "sender": contact_view(&contacts.sender),
        "receiver": contact_view(&contacts.receiver),
        "openids": { "sender": record.sender_openid, "receiver": record.receiver_openid },
        "payment": record.payment_out_trade_no.as_ref().map(|n| json!({ "out_trade_no": n, "total_fee": record.payment_total_fee })),
        "path": path_view,
        "notifications": notifications,
        "callbacks": callbacks,
        "created_at_ms": record.created_at,
        "updated_at_ms": record.updated_at,
    })))
}

/// Bring one dead notification back: it is retried at once, its attempt history kept.
async fn retry_notification(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let id: i64 = path.parse().map_err(|_| {
        Problem::validation(vec![FieldError {
            field: "id".into(),
            message: "is not a notification id".into(),
        }])
    })?;
    let Some(entry) = state.store.get_outbox(id).await? else {
        return Err(Problem::not_found(format!(
            "notification {id} does not exist"
        )));
    };
    if !state.store.retry_entry(id, now_ms()).await? {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not-dead",
            "Not dead",
            format!(
                "notification {id} is {}; only dead notifications can be retried",
                entry.state
            ),
        ));
    }
    tracing::info!(outbox_id = id, waybill_id = %entry.waybill_id, "dead notification redriven");
    Ok(HttpResponse::Accepted().json(json!({ "id": id, "state": EntryState::Pending })))
}

fn contact_view(c: &Contact) -> serde_json::Value {
    json!({
        "name": c.name, "phone": c.masked_phone(), "province": c.province, "city": c.city,
        "area": c.area, "street": c.street, "address": c.address,
    })
}

impl Problem {
    fn with_detail(mut self, d: String) -> Problem {
        self.detail = d;
        self
    }
}
