//! HTTP plumbing shared by the emulated WeChat APIs: the JSON answer (always HTTP 200, like
//! WeChat), statistics, injected faults, and the `access_token` check.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};

use super::api::{errcode, Api, WxError};
use super::faults::FaultAction;
use super::state::Shared;

/// WeChat's own content type for API answers.
const WECHAT_JSON: &str = "application/json; encoding=utf-8";

pub fn json(v: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(WECHAT_JSON)
        .body(v.to_string())
}

/// Counts the answer and renders it.
pub fn answer(shared: &Shared, api: Api, result: Result<Value, WxError>) -> HttpResponse {
    match result {
        Ok(v) => {
            shared.stats.answered(api, 0);
            json(&v)
        }
        Err(e) => {
            shared.stats.answered(api, e.errcode);
            json(&e.body())
        }
    }
}

/// Applies the injected latency, then the injected failure if one fires.
pub async fn fault(shared: &Shared, api: Api) -> Option<HttpResponse> {
    let d = shared.faults.decide(api);
    if !d.latency.is_zero() {
        tokio::time::sleep(d.latency).await;
    }
    fault_response(shared, api, d.action?)
}

/// The failure set to fire after `pathnotify`'s reverse query was answered, if it fires.
pub fn fault_after_reverse_query(shared: &Shared, api: Api) -> Option<HttpResponse> {
    let action = shared.faults.decide_after_reverse_query(api)?;
    fault_response(shared, api, action)
}

fn fault_response(shared: &Shared, api: Api, action: FaultAction) -> Option<HttpResponse> {
    match action {
        FaultAction::Errcode(code) => Some(answer(
            shared,
            api,
            Err(WxError::with(code, "injected fault")),
        )),
        FaultAction::HttpStatus(s) => {
            shared.stats.http_fault(api);
            Some(
                HttpResponse::build(StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY))
                    .finish(),
            )
        }
        FaultAction::Drop => {
            shared.stats.http_fault(api);
            Some(dropped())
        }
    }
}

/// A response whose body fails before its first byte: actix aborts the connection, so the
/// client sees the connection close without a complete answer.
fn dropped() -> HttpResponse {
    let stream = futures_util::stream::once(async {
        Err::<web::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "sandbox fault: connection dropped",
        ))
    });
    HttpResponse::Ok()
        .content_type(WECHAT_JSON)
        .streaming(stream)
}

/// A query parameter, URL-decoded.
pub fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `access_token` of a business API call: missing -> 41001, else [`super::token_book::TokenBook::check`].
pub fn check_token(shared: &Shared, req: &HttpRequest) -> Result<(), WxError> {
    match query_param(req, "access_token") {
        Some(t) if !t.is_empty() => shared.tokens.check(&t, shared.clock.now()),
        _ => Err(WxError::new(errcode::ACCESS_TOKEN_MISSING)),
    }
}

/// The body as a JSON object, or `None`.
pub fn json_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}
