//! The backoffice API described: the OpenAPI 3.1 document served at `GET /openapi.json`,
//! generated from the handlers' annotations and the request and response types themselves
//! (utoipa), and the JSON Schemas of `schemas/`, generated from the same types.
//!
//! Responses every route shares are added here once ([`Shared`]): 401 (every route takes
//! the bearer key), 500, and for routes with a body 400, 413 and 415; and every error status
//! a handler names is given its body here, `application/problem+json`.

use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use serde_json::{Map, Value};
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::backoffice::{self, BatchLine};
use super::problem::Problem;
use super::{cells, notifications, outcomes, waybill_view, wechat_events};

/// The name of the bearer-key security scheme.
const BEARER: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wxexpress backoffice API",
        description = "The carrier's side of the gateway: waybills and tracking events in, \
                       their pushes and notifications out. Every route takes a key of \
                       `[backoffice] api_keys` as `Authorization: Bearer <key>`; every error \
                       is `application/problem+json` (RFC 9457)."
    ),
    paths(
        backoffice::put_waybill,
        waybill_view::get_waybill,
        backoffice::post_event,
        backoffice::post_batch,
        backoffice::retry_notification,
        cells::get_cells,
        cells::put_cells,
        cells::delete_cells,
        notifications::post_subscriptions,
        notifications::post_credential,
        wechat_events::list_events,
        outcomes::list_outcomes,
    ),
    components(schemas(BatchLine, Problem)),
    modifiers(&Shared),
    security(("api_key" = [])),
    tags(
        (name = "waybills", description = "Waybills and their read-back"),
        (name = "events", description = "Tracking events, one at a time or in NDJSON batches"),
        (name = "notifications", description = "Shipping notifications: consent, credentials, redrives"),
        (name = "cells", description = "The landing page's cells"),
        (name = "wechat", description = "WeChat events the gateway keeps but does not handle"),
        (name = "outcomes", description = "Every accepted event's final outcome: which receivers WeChat reached, so the SMS goes only to the rest"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer scheme and the responses every route shares.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("a key of `[backoffice] api_keys`"))
                        .build(),
                ),
            );
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_shared_responses(op);
                add_links(op);
            }
        }
    }
}

/// Where an answer leads: `(from operation, its statuses, link, to operation, parameter,
/// runtime expression)`. Clients (and schemathesis's stateful phase) follow them.
const LINKS: &[Link] = &[
    (
        "put_waybill",
        &["200", "201"],
        "GetWaybill",
        "get_waybill",
        "waybill_id",
        "$response.body#/waybill_id",
    ),
    (
        "put_waybill",
        &["200", "201"],
        "PostEvent",
        "post_event",
        "waybill_id",
        "$response.body#/waybill_id",
    ),
    (
        "post_event",
        &["200", "202"],
        "GetWaybill",
        "get_waybill",
        "waybill_id",
        "$response.body#/waybill_id",
    ),
    (
        "get_waybill",
        &["200"],
        "RetryNotification",
        "retry_notification",
        "id",
        "$response.body#/notifications/0/id",
    ),
];

type Link = (
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

fn add_links(op: &mut Operation) {
    for (from, statuses, name, to, param, expression) in LINKS {
        if op.operation_id.as_deref() != Some(*from) {
            continue;
        }
        for status in *statuses {
            if let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) {
                response.links.insert(
                    name.to_string(),
                    RefOr::T(
                        LinkBuilder::new()
                            .operation_id(*to)
                            .parameter(*param, *expression)
                            .build(),
                    ),
                );
            }
        }
    }
}

fn add_shared_responses(op: &mut Operation) {
    let mut shared = vec![
        ("401", unauthorized()),
        (
            "500",
            problem("The request could not be completed; nothing was stored"),
        ),
    ];
    if op.request_body.is_some() {
        shared.extend([
            (
                "400",
                problem("The body is not what this route reads (malformed JSON, a wrong type)"),
            ),
            (
                "413",
                problem("The body is larger than `server.body_limit_bytes` (batches: `server.batch_limit_bytes` and `server.batch_max_lines`)"),
            ),
            ("415", problem("The Content-Type is not the one this route reads")),
        ]);
    }
    for (status, response) in shared {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert(RefOr::T(response));
    }
    // Every error is a problem: the handlers' annotations name the status and what it means.
    for (status, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(response) = response {
            let error = status.parse::<u16>().is_ok_and(|s| s >= 400);
            if error && response.content.is_empty() {
                response
                    .content
                    .insert("application/problem+json".into(), problem_content());
            }
        }
    }
}

fn problem_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            "Problem",
        ))))
        .build()
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", problem_content())
        .build()
}

fn unauthorized() -> Response {
    ResponseBuilder::new()
        .description("No valid `Authorization: Bearer <key>`")
        .header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String),
                )
                .description(Some("`Bearer`"))
                .build(),
        )
        .content("application/problem+json", problem_content())
        .build()
}

/// The document, as served.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
        camel_case_links(&mut doc);
        serde_json::to_string_pretty(&doc).expect("the document serialises")
    })
}

/// utoipa 5 writes a Link's `operationId` as `operation_id`, which OpenAPI readers ignore
/// (schemathesis refuses the link); renamed here, in every response's links.
fn camel_case_links(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op["responses"].as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links").and_then(Value::as_object_mut))
        .flat_map(|links| links.values_mut())
        .filter_map(Value::as_object_mut);
    for link in links {
        if let Some(id) = link.remove("operation_id") {
            link.insert("operationId".into(), id);
        }
        if let Some(r) = link.remove("operation_ref") {
            link.insert("operationRef".into(), r);
        }
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(serve));
}

async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// Where the JSON Schemas of `schemas/` are published.
const SCHEMA_BASE: &str = "https://wxexpress.dev/schemas/";

/// The files of `schemas/` (name without `.schema.json`, JSON Schema 2020-12) and the
/// component each is generated from. A component that has a file of its own is referenced
/// by that file; any other is copied into `$defs`.
const SCHEMA_FILES: &[(&str, &str)] = &[
    ("waybill", "WaybillInput"),
    ("event", "EventInput"),
    ("batch-line", "BatchLine"),
    ("problem", "Problem"),
];

/// Every file of `schemas/`, generated: `(file name, document)`.
pub fn json_schemas() -> Vec<(String, Value)> {
    let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    let components = doc["components"]["schemas"]
        .as_object()
        .expect("the document has schemas")
        .clone();
    SCHEMA_FILES
        .iter()
        .map(|(file, component)| {
            let mut defs = Map::new();
            let mut root = components[*component].clone();
            rewrite_refs(&mut root, &components, &mut defs);
            let mut out = Map::new();
            out.insert(
                "$schema".into(),
                "https://json-schema.org/draft/2020-12/schema".into(),
            );
            out.insert(
                "$id".into(),
                format!("{SCHEMA_BASE}{file}.schema.json").into(),
            );
            if let Value::Object(fields) = root {
                out.extend(fields);
            }
            if !defs.is_empty() {
                out.insert("$defs".into(), Value::Object(defs));
            }
            (format!("{file}.schema.json"), Value::Object(out))
        })
        .collect()
}

/// Points `#/components/schemas/X` at X's own file, or at `#/$defs/X` (copied there).
fn rewrite_refs(v: &mut Value, components: &Map<String, Value>, defs: &mut Map<String, Value>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    let name = name.to_string();
                    *r = match SCHEMA_FILES.iter().find(|(_, c)| *c == name) {
                        Some((file, _)) => format!("{file}.schema.json"),
                        None => {
                            if !defs.contains_key(&name) {
                                defs.insert(name.clone(), Value::Null);
                                let mut def = components[&name].clone();
                                rewrite_refs(&mut def, components, defs);
                                defs.insert(name.clone(), def);
                            }
                            format!("#/$defs/{name}")
                        }
                    };
                }
            }
            for child in o.values_mut() {
                rewrite_refs(child, components, defs);
            }
        }
        Value::Array(a) => {
            for child in a {
                rewrite_refs(child, components, defs);
            }
        }
        _ => {}
    }
}
