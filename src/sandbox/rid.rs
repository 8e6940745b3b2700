//! WeChat's request log by `rid` (spec §11.6): every answer of a `/cgi-bin/` path whose
//! `errmsg` carries a `rid` is kept with its request, and `POST /cgi-bin/openapi/rid/get`
//! returns it — for 7 days of sandbox time, to the same appid only — with WeChat's errors
//! 76001 (not found or expired), 76002 (bad rid) and 76003 (another account's call).
//!
//! Recorded by a middleware around the whole server (one place for every API), bounded to the
//! newest [`super::rid_log::MAX_ENTRIES`]. The logged URL never holds the access_token, nor the body a secret.

use actix_web::body::{to_bytes, BoxBody, MessageBody as _};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::api::errcode as ec;
use super::api::WxError;
use super::gate::{check_token, json, json_object, query_param};
use super::rid_log::{Entry, KEPT_SECS};
use super::state::Shared;

/// The middleware: for `/cgi-bin/` paths, keep the request body, and log the answer when its
/// `errmsg` carries a rid. A streamed answer (a dropped connection) passes untouched.
pub async fn record(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !req.path().starts_with("/cgi-bin/") {
        return next.call(req).await;
    }
    let Some(shared) = req.app_data::<web::Data<Shared>>().cloned() else {
        return next.call(req).await;
    };
    let started = std::time::Instant::now();
    let mut req = req;
    let body = req.extract::<web::Bytes>().await.unwrap_or_default();
    req.set_payload(actix_web::dev::Payload::from(body.clone()));
    // Taken now: actix needs the request to itself once the handler runs.
    let (request_url, appid, client_ip) = {
        let r = req.request();
        (
            logged_url(r),
            appid_of(&shared, r, &body),
            r.peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
        )
    };
    let res = next.call(req).await?;
    if !matches!(
        res.response().body().size(),
        actix_web::body::BodySize::Sized(_)
    ) {
        return Ok(res);
    }
    let (res_req, res) = res.into_parts();
    let (head, res_body) = res.into_parts();
    let bytes = to_bytes(res_body).await.unwrap_or_default();
    if let Some(rid) = rid_of(&bytes) {
        shared.rids.push(Entry {
            rid,
            appid,
            invoke_time: shared.clock.now(),
            cost_in_ms: started.elapsed().as_millis() as i64,
            request_url,
            request_body: String::from_utf8_lossy(&redacted_body(&body)).into_owned(),
            response_body: String::from_utf8_lossy(&bytes).into_owned(),
            client_ip,
        });
    }
    Ok(ServiceResponse::new(
        res_req,
        head.set_body(bytes).map_into_boxed_body(),
    ))
}

/// The rid of an answer: WeChat's answers append `rid: …` to a non-zero `errmsg`.
fn rid_of(body: &[u8]) -> Option<String> {
    // Most answers are successes: look before parsing.
    if !body.windows(5).any(|w| w == b"rid: ") {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let errmsg = v.get("errmsg")?.as_str()?;
    let rest = &errmsg[errmsg.rfind("rid: ")? + 5..];
    let rid: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!rid.is_empty()).then_some(rid)
}

/// Whose call it was: the appid a token call names, or ours when the access_token is valid.
fn appid_of(shared: &Shared, req: &HttpRequest, body: &[u8]) -> Option<String> {
    if let Some(a) = query_param(req, "appid") {
        return Some(a);
    }
    if let Some(a) = json_object(body).and_then(|o| o.get("appid")?.as_str().map(str::to_string)) {
        return Some(a);
    }
    check_token(shared, req)
        .ok()
        .map(|()| shared.settings.appid.clone())
}

/// Path and query with the access_token and any secret left out.
fn logged_url(req: &HttpRequest) -> String {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| {
            let v = if matches!(k.as_ref(), "access_token" | "secret") {
                "<redacted>".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    if query.is_empty() {
        req.path().to_string()
    } else {
        format!("{}?{query}", req.path())
    }
}

/// A JSON body with its `secret` left out; anything else as it came.
fn redacted_body(body: &[u8]) -> Vec<u8> {
    match json_object(body) {
        Some(mut o) if o.contains_key("secret") => {
            o.insert("secret".into(), Value::from("<redacted>"));
            Value::Object(o).to_string().into_bytes()
        }
        _ => body.to_vec(),
    }
}

/// `POST /cgi-bin/openapi/rid/get?access_token=…` with `{"rid": "…"}`.
pub async fn rid_get(
    shared: web::Data<Shared>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let result = check_token(&shared, &req).and_then(|()| {
        let rid = json_object(&body)
            .and_then(|o| o.get("rid")?.as_str().map(str::to_string))
            .filter(|r| {
                !r.is_empty()
                    && r.len() <= 128
                    && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            .ok_or_else(|| WxError::new(ec::RID_INVALID))?;
        let entry = shared
            .rids
            .find(&rid)
            .filter(|e| shared.clock.now() - e.invoke_time <= KEPT_SECS)
            .ok_or_else(|| WxError::new(ec::RID_NOT_FOUND))?;
        if entry.appid.as_deref() != Some(shared.settings.appid.as_str()) {
            return Err(WxError::new(ec::RID_NO_PERMISSION));
        }
        let mut m = Map::new();
        m.insert("errcode".into(), Value::from(0));
        m.insert("errmsg".into(), Value::from("ok"));
        m.insert(
            "request".into(),
            json!({
                "invoke_time": entry.invoke_time,
                "cost_in_ms": entry.cost_in_ms,
                "request_url": entry.request_url,
                "request_body": entry.request_body,
                "response_body": entry.response_body,
                "client_ip": entry.client_ip,
            }),
        );
        Ok(Value::Object(m))
    });
    match result {
        Ok(v) => json(&v),
        Err(e) => json(&e.body()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rid_is_read_from_the_errmsg_only() {
        assert_eq!(
            rid_of(br#"{"errcode":40097,"errmsg":"invalid args rid: 0a1b2c3d-4e5f6071"}"#),
            Some("0a1b2c3d-4e5f6071".into())
        );
        assert_eq!(rid_of(br#"{"errcode":0,"errmsg":"ok"}"#), None);
        assert_eq!(rid_of(b"not json"), None);
    }

    #[test]
    fn secrets_never_reach_the_log() {
        let b = redacted_body(br#"{"appid":"wx1","secret":"s3cr3t"}"#);
        assert!(!String::from_utf8(b).unwrap().contains("s3cr3t"));
    }
}
