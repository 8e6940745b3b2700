//! `GET /v1/outcomes?after=CURSOR&limit=N[&outcome=unbound,dead][&kind=push|notification][&app=KEY]`:
//! the outcome feed (bearer key). Items come in feed order, never past the commit
//! watermark, so a cursor never skips an item that commits after it was handed out
//! (`store/outcomes.rs`). The same items, with the same ids, go to the webhook.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::require_bearer;
use super::problem::Problem;
use super::AppState;
use crate::outcomes::item::DEFAULT_APP;
use crate::outcomes::{decode_cursor, encode_cursor, OutcomeItem};
use crate::store::{FeedPosition, Outcome, OutcomeFilter, OutcomeKind};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/outcomes").route(web::get().to(list_outcomes)));
}

/// Items per page unless `limit` says otherwise, and at most.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct OutcomesQuery {
    /// the `next_cursor` of the previous page; absent: from the oldest item kept
    #[param(max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    after: Option<String>,
    /// items per page
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
    /// only these outcomes, comma-separated (`delivered`, `unbound`, `dead`, `coalesced`,
    /// `stale`); `unbound,dead` is what needs an SMS
    #[param(example = "unbound,dead", pattern = "^[a-z]+(,[a-z]+)*$")]
    outcome: Option<String>,
    /// only this kind
    #[param(value_type = Option<OutcomeKind>)]
    kind: Option<String>,
    /// only this mini program
    #[param(min_length = 1, max_length = 32, pattern = "^[a-z][a-z0-9_-]*$")]
    app: Option<String>,
}

/// A page of the feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutcomesPage {
    pub data: Vec<OutcomeItem>,
    /// where the next page starts (pass it as `after`); the same cursor when the page is
    /// empty: come back later
    pub next_cursor: String,
    /// more items are waiting: ask again at once
    pub has_more: bool,
}

/// The outcome feed: every accepted event's final outcome, in the order they committed.
#[utoipa::path(
    get,
    path = "/v1/outcomes",
    tag = "outcomes",
    params(OutcomesQuery),
    responses(
        (status = 200, description = "A page of outcomes", body = OutcomesPage),
        (status = 400, description = "A query parameter is invalid (a cursor not handed out by this feed, an unknown outcome, a limit out of range)"),
    )
)]
pub(crate) async fn list_outcomes(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let q = web::Query::<OutcomesQuery>::from_query(req.query_string())
        .map_err(|e| Problem::bad_request(format!("query: {e}")))?
        .into_inner();
    let limit = match q.limit {
        None => DEFAULT_LIMIT,
        Some(n @ 1..=MAX_LIMIT) => n,
        Some(_) => return Err(Problem::bad_request("limit: must be 1 to 1000")),
    };
    let after = match q.after.as_deref() {
        None => FeedPosition::default(),
        Some(c) => decode_cursor(c).ok_or_else(|| {
            Problem::bad_request("after: is not a cursor this feed handed out (next_cursor)")
        })?,
    };
    let outcomes = match q.outcome.as_deref() {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|o| {
                Outcome::parse(o.trim()).ok_or_else(|| {
                    Problem::bad_request(format!(
                        "outcome: {o:?} is not one of delivered, unbound, dead, coalesced, stale"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(OutcomeKind::parse(k).ok_or_else(|| {
            Problem::bad_request(format!("kind: {k:?} is not one of push, notification"))
        })?),
    };
    let filter = OutcomeFilter { outcomes, kind };
    if let Some(app) = q.app.as_deref() {
        let named = app.len() <= 32
            && app.starts_with(|c: char| c.is_ascii_lowercase())
            && app
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !named {
            return Err(Problem::bad_request(
                "app: is not an app key (a-z, 0-9, _ and -, at most 32, a letter first)",
            ));
        }
    }
    // One mini program per gateway so far: every item is the default app's.
    if q.app.as_deref().is_some_and(|a| a != DEFAULT_APP) {
        return Ok(HttpResponse::Ok().json(OutcomesPage {
            data: Vec::new(),
            next_cursor: encode_cursor(after),
            has_more: false,
        }));
    }
    let page = state.store.outcomes_page(after, limit, &filter).await?;
    Ok(HttpResponse::Ok().json(OutcomesPage {
        data: page.items.iter().map(OutcomeItem::from).collect(),
        next_cursor: encode_cursor(page.next),
        has_more: page.has_more,
    }))
}
