//! `GET /sandbox/landing/{waybill_id}`: WeChat's waybill page, emulated. The page belongs to
//! WeChat: only WeChat knows the message-push Token that signs the carrier's JSONP URL, so
//! the sandbox signs it here (wall clock, fresh nonce) and the page loads it with a
//! `<script>` tag from the sandbox's origin to the gateway's, exactly as WeChat's front end
//! does, then renders the traces and cells with `textContent` only.
//!
//! The URL is signed with the official account's token (`jsonp_token`, spec §11.1), and a
//! number the carrier's `waybill_pattern` does not match is never looked up (spec §11.2): the
//! page says so without loading anything.
//!
//! Query: `openid` (the viewing user, default [`DEFAULT_OPENID`]) and `callback` (default
//! `WxOrderCb`, the documented name; any other value is passed on unchecked so the
//! gateway's own checks can be seen at work, as the browser test does with hostile names).
//!
//! It must not: put a request value into the page other than through the escaped JSON
//! configuration block.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::state::Shared;
use crate::domain::action::ACTION_TYPES;
use crate::wechat::crypto::sha1_signature;

/// The page, with `{{CONFIG}}` where the configuration JSON goes.
const TEMPLATE: &str = include_str!("landing.html");
/// The documented JSONP callback name (spec §7.1).
pub const DEFAULT_CALLBACK: &str = "WxOrderCb";
/// The viewer when the URL names none.
pub const DEFAULT_OPENID: &str = "o_sandbox_viewer_0000000000";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sandbox/landing/{waybill_id}", web::get().to(landing));
}

#[derive(Debug, Deserialize)]
struct LandingQuery {
    openid: Option<String>,
    callback: Option<String>,
}

async fn landing(
    s: web::Data<Shared>,
    path: web::Path<String>,
    query: web::Query<LandingQuery>,
) -> HttpResponse {
    let waybill_id = path.into_inner();
    let openid = query.openid.as_deref().unwrap_or(DEFAULT_OPENID);
    let callback = query.callback.as_deref().unwrap_or(DEFAULT_CALLBACK);
    // Wall clock, not the sandbox clock: the gateway checks the timestamp against its own
    // clock, and time travel in the sandbox must not make the page fail.
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let nonce = rand::random::<u32>().to_string();
    // WeChat fetches the carrier's JSONP only for a number the carrier's pattern matches.
    let ours = s.settings.waybill_pattern.as_deref().is_none_or(|p| {
        crate::config::compile_waybill_pattern(p).is_ok_and(|re| re.is_match(&waybill_id))
    });
    let token = s.settings.jsonp_token.as_ref().unwrap_or(&s.settings.token);
    let src = match signed_url(
        &s.settings.jsonp_url,
        token,
        &waybill_id,
        openid,
        callback,
        &timestamp,
        &nonce,
    ) {
        Ok(u) => u,
        Err(e) => {
            return HttpResponse::InternalServerError()
                .json(json!({ "error": format!("sandbox jsonp_url is not a URL: {e}") }))
        }
    };
    let stages: serde_json::Map<String, serde_json::Value> = ACTION_TYPES
        .iter()
        .map(|(code, stage, _)| {
            let short = stage.rsplit('-').next().unwrap_or(stage);
            (code.to_string(), json!(short))
        })
        .collect();
    let config = json!({
        "waybill_id": waybill_id,
        "callback": callback,
        "jsonp_src": if ours { Some(src) } else { None },
        "stages": stages,
    });
    let html = TEMPLATE.replace("{{CONFIG}}", &script_safe_json(&config));
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Cache-Control", "no-store"))
        .body(html)
}

/// The JSONP URL as WeChat's front end requests it (spec §7.1): `signature` is SHA-1 over
/// the sorted (token, timestamp, nonce).
pub fn signed_url(
    base: &str,
    token: &str,
    orderid: &str,
    openid: &str,
    callback: &str,
    timestamp: &str,
    nonce: &str,
) -> Result<String, url::ParseError> {
    let mut url = url::Url::parse(base)?;
    url.query_pairs_mut()
        .append_pair("orderid", orderid)
        .append_pair("openid", openid)
        .append_pair("signature", &sha1_signature(&[token, timestamp, nonce]))
        .append_pair("timestamp", timestamp)
        .append_pair("nonce", nonce)
        .append_pair("callback", callback);
    Ok(url.into())
}

/// JSON that cannot end the `<script>` block it sits in.
fn script_safe_json(value: &serde_json::Value) -> String {
    serde_json::to_string(value)
        .expect("a serde_json::Value always serialises")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_signed_like_the_gateways_verification_expects() {
        let u = signed_url(
            "http://gw.example/wechat/waybill",
            "AAAAA",
            "SF1",
            "o1",
            "WxOrderCb",
            "1409659813",
            "1372623149",
        )
        .unwrap();
        assert!(u.starts_with("http://gw.example/wechat/waybill?orderid=SF1&openid=o1&"));
        assert!(u.contains(&format!(
            "signature={}",
            sha1_signature(&["AAAAA", "1409659813", "1372623149"])
        )));
        assert!(u.ends_with("&callback=WxOrderCb"));
    }

    #[test]
    fn a_hostile_value_cannot_close_the_configuration_block() {
        let s = script_safe_json(&json!({ "callback": "</script><script>alert(1)</script>" }));
        assert!(!s.contains('<') && !s.contains('>'), "{s}");
        assert!(TEMPLATE.contains("{{CONFIG}}"));
    }
}
