//! The consent ledger's routes under `/v1`: `POST /v1/subscriptions` (what a user accepted in
//! `wx.requestSubscribeMessage`, reported by the carrier mini program's backend) and
//! `POST /v1/credentials` (a legacy form_id or prepay_id). Bearer auth, JSON in,
//! problem+json errors; nothing is stored unless all of the input is valid, and a replay
//! changes nothing (an `Idempotency-Key` for reports, the credential's value for credentials).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::auth::require_bearer;
use super::body::{parse_json, read_limited};
use super::problem::Problem;
use super::AppState;
use crate::clock::{now_ms, now_secs};
use crate::domain::FieldError;
use crate::notify::ledger::{
    self, Credential, CredentialInput, CredentialKind, SubscriptionReport, SubscriptionReportInput,
    CREDENTIAL_TTL_SECS,
};
use crate::store::{CredentialInsert, CredentialRow, ReportOutcome};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/subscriptions").route(web::post().to(post_subscriptions)))
        .service(web::resource("/v1/credentials").route(web::post().to(post_credential)));
}

/// The optional `Idempotency-Key` header: 1..=128 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, Problem> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if (1..=128).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(Problem::validation(vec![FieldError {
            field: "Idempotency-Key".into(),
            message: "must be 1..=128 visible ASCII characters".into(),
        }])),
    }
}

/// What `POST /v1/subscriptions` answers: the user's subscriptions after the report.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionsView {
    pub openid: String,
    /// the same report was recorded before (same `Idempotency-Key` and body): nothing added
    pub duplicate: bool,
    pub subscriptions: Vec<SubscriptionView>,
}

/// One template the user subscribed to.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub template_id: String,
    /// one-time messages left
    pub remaining: i64,
    /// unlimited messages (`remaining` does not apply)
    pub long_term: bool,
}

/// A registered legacy credential.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialView {
    pub id: i64,
    pub openid: String,
    #[schema(schema_with = crate::notify::ledger::credential_kind_schema)]
    pub kind: String,
    /// Unix s
    pub issued_at: i64,
    /// Unix s
    pub expires_at: i64,
    pub uses_left: i64,
    /// why WeChat refused it, if it did (it is never offered again)
    pub discarded: Option<String>,
    /// the value was registered before, with the same openid, kind and issue time
    pub duplicate: bool,
}

/// Report what a user accepted in `wx.requestSubscribeMessage`. With an `Idempotency-Key`,
/// a repeated report adds nothing.
#[utoipa::path(
    post,
    path = "/v1/subscriptions",
    tag = "notifications",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters; a report sent again with the same key and body adds nothing")),
    request_body = SubscriptionReportInput,
    responses(
        (status = 200, description = "Recorded (or recorded before)", body = SubscriptionsView),
        (status = 422, description = "Invalid fields, or the key was used for another report"),
    )
)]
pub(crate) async fn post_subscriptions(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let key = idempotency_key(&req)?;
    let body = read_limited(&req, payload, state.settings.server.body_limit_bytes).await?;
    let input: SubscriptionReportInput = parse_json(&req, &body)?;
    let report = SubscriptionReport::parse(&input).map_err(Problem::validation)?;
    let hash = hex::encode(Sha256::digest(&body));
    let outcome = ledger::record_subscriptions(
        &state.store,
        &report,
        key.as_deref().map(|k| (k, hash.as_str())),
        now_ms(),
    )
    .await?;
    if outcome == ReportOutcome::KeyReused {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was used for a different report; nothing was recorded",
        ));
    }
    let duplicate = outcome == ReportOutcome::Duplicate;
    tracing::info!(
        templates = report.grants.len(),
        duplicate,
        "subscription report recorded"
    );
    let subscriptions: Vec<_> = state
        .store
        .subscriptions_of(&report.openid)
        .await?
        .into_iter()
        .map(|s| SubscriptionView {
            template_id: s.template_id,
            remaining: s.remaining,
            long_term: s.long_term == 1,
        })
        .collect();
    Ok(HttpResponse::Ok().json(SubscriptionsView {
        openid: report.openid,
        duplicate,
        subscriptions,
    }))
}

/// Register a legacy form_id or prepay_id for an openid.
#[utoipa::path(
    post,
    path = "/v1/credentials",
    tag = "notifications",
    request_body = CredentialInput,
    responses(
        (status = 201, description = "Registered", body = CredentialView),
        (status = 200, description = "Registered before, the same (`duplicate`: true)", body = CredentialView),
        (status = 409, description = "The value is registered with another openid, kind or issue time"),
        (status = 422, description = "Invalid fields, each named"),
    )
)]
pub(crate) async fn post_credential(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let body = read_limited(&req, payload, state.settings.server.body_limit_bytes).await?;
    let input: CredentialInput = parse_json(&req, &body)?;
    let credential = Credential::parse(&input, now_secs()).map_err(Problem::validation)?;
    match ledger::register_credential(&state.store, &credential, now_ms()).await? {
        CredentialInsert::Inserted(row) => {
            tracing::info!(
                credential_id = row.id,
                kind = %row.kind,
                "legacy credential registered"
            );
            Ok(HttpResponse::Created().json(credential_view(&row, false)))
        }
        CredentialInsert::Existing(row)
            if row.openid == credential.openid
                && CredentialKind::parse(&row.kind) == Some(credential.kind)
                && row.issued_at == credential.issued_at =>
        {
            Ok(HttpResponse::Ok().json(credential_view(&row, true)))
        }
        CredentialInsert::Existing(_) => Err(Problem::new(
            StatusCode::CONFLICT,
            "credential-exists",
            "Credential exists",
            "this value is already registered with another openid, kind or issue time; nothing was changed",
        )),
    }
}

fn credential_view(row: &CredentialRow, duplicate: bool) -> CredentialView {
    CredentialView {
        id: row.id,
        openid: row.openid.clone(),
        kind: row.kind.clone(),
        issued_at: row.issued_at,
        expires_at: row.issued_at + CREDENTIAL_TTL_SECS,
        uses_left: (row.max_uses - row.uses).max(0),
        discarded: row.discarded.clone(),
        duplicate,
    }
}
