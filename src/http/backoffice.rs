//! The carrier's backoffice API under `/v1`: waybills, events, NDJSON batches, redrives
//! (the read-back is `waybill_view`).
//! Input becomes domain types at this edge; nothing is stored unless all of it is valid.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::require_bearer;
use super::body::{media_type, parse_json, read_limited};
use super::path::{waybill_id, WaybillPath};
use super::problem::Problem;
use super::AppState;
use crate::clock::{now_ms, now_secs};
use crate::codec;
use crate::domain::{
    mask_phones_in_text, EventInput, FieldError, TrackingEvent, Waybill, WaybillId, WaybillInput,
};
use crate::store::{EntryState, EventInsert, StoreError};

/// One resource per path, so that another method is answered 405 with `Allow`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/waybills/{waybill_id}")
            .route(web::put().to(put_waybill))
            .route(web::get().to(super::waybill_view::get_waybill)),
    )
    .service(
        web::resource("/v1/waybills/{waybill_id}/events")
            .wrap(actix_web::middleware::from_fn(counted))
            .route(web::post().to(post_event)),
    )
    .service(web::resource("/v1/events/batch").route(web::post().to(post_batch)))
    .service(
        web::resource("/v1/notifications/{id}/retry").route(web::post().to(retry_notification)),
    );
}

/// Answer of `PUT /v1/waybills/{waybill_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaybillStored {
    pub waybill_id: String,
    /// `false`: an existing waybill was updated
    pub created: bool,
}

/// Answer of `POST /v1/waybills/{waybill_id}/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventRecorded {
    pub waybill_id: String,
    /// the stored event's id; a duplicate answers the id stored first
    pub event_id: i64,
    pub duplicate: bool,
}

/// Answer of `POST /v1/events/batch`: counts, and each refused line with its errors.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    /// non-blank lines read
    pub lines: usize,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// the refused lines, in line order; the other lines are stored
    pub errors: Vec<LineErrors>,
}

/// A refused batch line.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineErrors {
    /// 1-based, counting blank lines
    pub line: usize,
    pub errors: Vec<FieldError>,
}

/// Answer of `POST /v1/notifications/{id}/retry`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationRetried {
    pub id: i64,
    pub state: EntryState,
}

/// Create a waybill, or update it (its events and notifications are kept).
#[utoipa::path(
    put,
    path = "/v1/waybills/{waybill_id}",
    tag = "waybills",
    params(WaybillPath),
    request_body = WaybillInput,
    responses(
        (status = 201, description = "Created", body = WaybillStored),
        (status = 200, description = "Updated", body = WaybillStored),
        (status = 422, description = "Invalid fields, each named"),
    )
)]
pub(crate) async fn put_waybill(
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
    Ok(HttpResponse::build(status).json(WaybillStored {
        waybill_id: waybill.id.to_string(),
        created,
    }))
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

/// Record one tracking event; a repeated (`action_type`, `action_time`) is a duplicate.
#[utoipa::path(
    post,
    path = "/v1/waybills/{waybill_id}/events",
    tag = "events",
    params(WaybillPath),
    request_body = EventInput,
    responses(
        (status = 202, description = "Stored; it will be pushed", body = EventRecorded),
        (status = 200, description = "Already recorded (`duplicate`: true)", body = EventRecorded),
        (status = 404, description = "No such waybill"),
        (status = 422, description = "Invalid fields, each named"),
    )
)]
pub(crate) async fn post_event(
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
            Ok(HttpResponse::Accepted().json(EventRecorded {
                waybill_id: id.to_string(),
                event_id,
                duplicate: false,
            }))
        }
        Ok(EventInsert::Duplicate { id: event_id }) => Ok(HttpResponse::Ok().json(EventRecorded {
            waybill_id: id.to_string(),
            event_id,
            duplicate: true,
        })),
        Err(StoreError::UnknownWaybill(_)) => Err(Problem::not_found(format!(
            "waybill {id} does not exist; create it with PUT /v1/waybills/{id} first"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// One line of `POST /v1/events/batch` (`application/x-ndjson`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(title = "One line of POST /v1/events/batch (application/x-ndjson)")]
pub struct BatchLine {
    #[schema(required = true, nullable = false, pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pub waybill_id: Option<String>,
    /// the waybill, created or updated before the event is recorded
    #[serde(default, deserialize_with = "crate::domain::strict::object")]
    pub waybill: Option<WaybillInput>,
    #[schema(required = true, nullable = false)]
    #[serde(default, deserialize_with = "crate::domain::strict::object")]
    pub event: Option<EventInput>,
}

/// Record many events: one `BatchLine` per line. Good lines are stored even when others
/// are refused; a line already recorded counts as a duplicate.
#[utoipa::path(
    post,
    path = "/v1/events/batch",
    tag = "events",
    request_body(
        content = Vec<BatchLine>,
        content_type = "application/x-ndjson",
        description = "one `BatchLine` per line (the schema is the list of lines; the body is \
                       each of them as JSON, one per line, not a JSON array)",
    ),
    responses(
        (status = 200, description = "Every line stored or refused", body = BatchResult),
        (status = 503, description = "The database failed part-way: the lines it names were stored, the others were not; sending the batch again is safe"),
    )
)]
pub(crate) async fn post_batch(
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
            Err(StoreError::UnknownWaybill(id)) => errors.push(LineErrors {
                line,
                errors: vec![FieldError {
                    field: "waybill".into(),
                    message: format!(
                        "waybill {id} does not exist; send it in this line's `waybill`"
                    ),
                }],
            }),
            Err(e) => return Err(e.into()),
        }
    }
    errors.sort_by_key(|e| e.line);
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
    Ok(HttpResponse::Ok().json(BatchResult {
        lines,
        accepted,
        duplicates,
        rejected: errors.len(),
        errors,
    }))
}

/// A batch's lines, parsed: the good ones (with their line numbers) and the refused ones.
struct ParsedBatch {
    items: Vec<(Option<crate::store::WaybillRecord>, crate::store::NewEvent)>,
    line_numbers: Vec<usize>,
    errors: Vec<LineErrors>,
    lines: usize,
}

fn parse_batch(state: &AppState, body: &[u8]) -> Result<ParsedBatch, Problem> {
    let limits = &state.settings.server;
    let text =
        std::str::from_utf8(body).map_err(|_| Problem::bad_request("the batch is not UTF-8"))?;
    let (now, now_ms) = (now_secs(), now_ms());

    let mut items = Vec::new();
    let mut line_numbers = Vec::new();
    let mut errors = Vec::new();
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
            Err(errs) => errors.push(LineErrors {
                line: i + 1,
                errors: errs,
            }),
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
    let l = serde_json::from_str::<crate::domain::strict::Strict<BatchLine>>(line)
        .map(|s| s.0)
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

/// Bring one dead notification back: it is retried at once, its attempt history kept.
#[utoipa::path(
    post,
    path = "/v1/notifications/{id}/retry",
    tag = "notifications",
    params(("id" = i64, Path, minimum = 1, description = "a notification's `id`, as `GET /v1/waybills/{waybill_id}` lists it")),
    responses(
        (status = 202, description = "Pending again; tried at once", body = NotificationRetried),
        (status = 404, description = "No such notification"),
        (status = 409, description = "The notification is not dead"),
        (status = 422, description = "The id is not a number"),
    )
)]
pub(crate) async fn retry_notification(
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
    Ok(HttpResponse::Accepted().json(NotificationRetried {
        id,
        state: EntryState::Pending,
    }))
}

impl Problem {
    fn with_detail(mut self, d: String) -> Problem {
        self.detail = d;
        self
    }
}
