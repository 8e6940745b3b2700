//! Landing-page cells in force, and the backoffice routes that list and replace them without
//! a restart: `GET`, `PUT` and `DELETE /v1/cells` (bearer key).
//!
//! The list in force is the one stored by the last `PUT` (even an empty one); until a `PUT`,
//! or after a `DELETE`, it is `[[cells]]` of the configuration. Both are validated by the
//! same [`parse_cells`]. The database is read on every lookup, so every instance serves the
//! new list as soon as it is stored.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::require_bearer;
use super::body::{media_type, read_limited};
use super::problem::Problem;
use super::AppState;
use crate::clock::now_ms;
use crate::domain::cell::parse_cells;
use crate::domain::strict::Strict;
use crate::domain::{Cell, CellCondition, CellInput};
use crate::store::{CellRecord, StoreError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/cells")
            .route(web::get().to(get_cells))
            .route(web::put().to(put_cells))
            .route(web::delete().to(delete_cells)),
    );
}

/// Body of `PUT /v1/cells`: the whole new list, in display order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "cells": [{ "key": "pay", "name": "支付运单", "link": "https://carrier.example/pay/{waybill_id}", "when": { "latest_action_in": [90010] } }] }))]
pub struct CellsBody {
    #[schema(max_items = 10)]
    #[serde(deserialize_with = "crate::domain::strict::list")]
    pub cells: Vec<CellInput>,
}

/// The cells in force and where they come from.
#[derive(Debug, Serialize, ToSchema)]
pub struct CellsView {
    pub source: CellsSource,
    /// when the stored list was set (Unix ms); `null` for the configuration's
    pub updated_at_ms: Option<i64>,
    pub cells: Vec<CellInput>,
}

/// `database`: the list of the last `PUT`; `config`: `[[cells]]` of the configuration.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CellsSource {
    Database,
    Config,
}

/// The cells in force: the stored list if one was set, else the configuration's.
pub async fn cells_in_force(state: &AppState) -> Result<Vec<Cell>, StoreError> {
    Ok(match state.store.get_cells().await? {
        Some(set) => from_records(&set.cells),
        None => state.settings.cells.clone(),
    })
}

/// The landing-page cells in force.
#[utoipa::path(get, path = "/v1/cells", tag = "cells",
    responses((status = 200, description = "The cells in force", body = CellsView)))]
pub(crate) async fn get_cells(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    view(&state).await
}

/// Replace the whole list (an empty list shows no cells); every instance serves it at once.
#[utoipa::path(put, path = "/v1/cells", tag = "cells", request_body = CellsBody,
    responses(
        (status = 200, description = "The new list, in force", body = CellsView),
        (status = 422, description = "Invalid cells, each field named"),
    ))]
pub(crate) async fn put_cells(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let body = read_limited(&req, payload, state.settings.server.body_limit_bytes).await?;
    let mt = media_type(&req);
    if mt != "application/json" && !mt.ends_with("+json") {
        return Err(Problem::unsupported_media("application/json"));
    }
    let input = serde_json::from_slice::<Strict<CellsBody>>(&body)
        .map(|s| s.0)
        .map_err(|e| {
            Problem::bad_request(format!(
                "the body is not a JSON object {{\"cells\": [...]}}: {e}"
            ))
        })?;
    let cells = parse_cells(&input.cells, "cells").map_err(Problem::validation)?;
    state
        .store
        .replace_cells(&to_records(&cells), now_ms())
        .await?;
    tracing::info!(cells = cells.len(), "landing-page cells replaced");
    view(&state).await
}

/// Forget the stored list: the configuration's `[[cells]]` apply again.
#[utoipa::path(delete, path = "/v1/cells", tag = "cells",
    responses((status = 200, description = "The configuration's cells, in force", body = CellsView)))]
pub(crate) async fn delete_cells(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let cleared = state.store.clear_cells().await?;
    tracing::info!(
        cleared,
        "stored landing-page cells cleared; the configuration's apply"
    );
    view(&state).await
}

async fn view(state: &AppState) -> Result<HttpResponse, Problem> {
    let stored = state.store.get_cells().await?;
    let (source, updated_at, cells) = match stored {
        Some(set) => (
            CellsSource::Database,
            Some(set.updated_at),
            from_records(&set.cells),
        ),
        None => (CellsSource::Config, None, state.settings.cells.clone()),
    };
    Ok(HttpResponse::Ok().json(CellsView {
        source,
        updated_at_ms: updated_at,
        cells: cells.iter().map(Cell::to_input).collect(),
    }))
}

fn to_records(cells: &[Cell]) -> Vec<CellRecord> {
    cells
        .iter()
        .map(|c| CellRecord {
            cell_key: c.key().to_string(),
            name: c.name().to_string(),
            link: c.link_template().to_string(),
            condition_json: c.condition().map(|w| {
                serde_json::to_string(w).expect("a condition is plain data and always serialises")
            }),
        })
        .collect()
}

/// Stored rows were validated when written; one that no longer validates (rules tightened
/// since) is left out and logged rather than failing every lookup.
fn from_records(records: &[CellRecord]) -> Vec<Cell> {
    let mut cells = Vec::with_capacity(records.len());
    for r in records {
        let when = match r
            .condition_json
            .as_deref()
            .map(serde_json::from_str::<CellCondition>)
        {
            None => None,
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                tracing::error!(cell_key = %r.cell_key, error = %e, "stored cell condition unreadable; cell left out");
                continue;
            }
        };
        let input = CellInput {
            key: Some(r.cell_key.clone()),
            name: Some(r.name.clone()),
            link: Some(r.link.clone()),
            when,
        };
        match parse_cells(std::slice::from_ref(&input), "cells") {
            Ok(mut c) => cells.append(&mut c),
            Err(errs) => {
                tracing::error!(cell_key = %r.cell_key, problems = errs.len(), "stored cell no longer valid; cell left out")
            }
        }
    }
    cells
}
