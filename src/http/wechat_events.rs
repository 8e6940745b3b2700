//! `GET /v1/wechat/events?event=NAME&limit=N`: the WeChat events the gateway does not handle,
//! as kept by the callback (bearer key). Each comes back opened, with every phone number in it
//! masked; newest first, at most `limit` (default 100, at most 1,000).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::require_bearer;
use super::problem::Problem;
use super::AppState;
use crate::domain::mask_phones_in_text;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/wechat/events").route(web::get().to(list_events)));
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// only events of this name (`Event` of the message)
    event: Option<String>,
    /// at most this many, newest first
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

/// The kept events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct WechatEventsView {
    pub events: Vec<WechatEventView>,
}

/// One kept WeChat event.
#[derive(Debug, Serialize, ToSchema)]
pub struct WechatEventView {
    pub id: i64,
    pub event: String,
    pub received_at_ms: i64,
    /// the message as received (decrypted), phone numbers masked
    pub body: String,
}

/// WeChat events the gateway keeps but does not handle.
#[utoipa::path(
    get,
    path = "/v1/wechat/events",
    tag = "wechat",
    params(EventsQuery),
    responses(
        (status = 200, description = "The kept events", body = WechatEventsView),
        (status = 400, description = "A query parameter is invalid"),
    )
)]
pub(crate) async fn list_events(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let q = web::Query::<EventsQuery>::from_query(req.query_string())
        .map_err(|e| Problem::bad_request(format!("query: {e}")))?
        .into_inner();
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=1000) => n,
        Some(_) => return Err(Problem::bad_request("limit: must be 1 to 1000")),
    };
    let event = q.event.as_deref().filter(|e| !e.is_empty());
    let mut events = Vec::new();
    for e in state.store.list_wechat_events(event, limit).await? {
        let body = state.privacy.open(&e.body).map_err(|_| {
            tracing::error!(
                id = e.id,
                "a kept WeChat event cannot be opened (data key changed?)"
            );
            Problem::internal()
        })?;
        events.push(WechatEventView {
            id: e.id,
            event: e.event,
            received_at_ms: e.received_at,
            body: mask_phones_in_text(&String::from_utf8_lossy(&body)),
        });
    }
    Ok(HttpResponse::Ok().json(WechatEventsView { events }))
}
