//! `GET /cgi-bin/token` and `POST /cgi-bin/stable_token` (spec `wechat-access-token.md` §1,
//! §2): credential checks in WeChat's order, then [`super::token_book::TokenBook`].

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::api::{errcode as ec, Api, WxError};
use super::gate::{answer, fault, json_object, query_param};
use super::state::Shared;
use super::token_book::Issued;

const GRANT_TYPE: &str = "client_credential";

pub async fn token(shared: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let api = Api::Token;
    shared.stats.call(api);
    if let Some(r) = fault(&shared, api).await {
        return r;
    }
    let result = check_credentials(
        &shared,
        query_param(&req, "grant_type").as_deref(),
        query_param(&req, "appid").as_deref(),
        query_param(&req, "secret").as_deref(),
    )
    .and_then(|()| {
        shared
            .tokens
            .issue_classic(&shared.rules, shared.clock.now())
    })
    .map(token_body);
    answer(&shared, api, result)
}

pub async fn stable_token(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let api = Api::StableToken;
    shared.stats.call(api);
    if let Some(r) = fault(&shared, api).await {
        return r;
    }
    answer(&shared, api, stable(&shared, &body).map(token_body))
}

/// `GET /cgi-bin/stable_token`: the endpoint is POST only.
pub async fn stable_token_get(shared: web::Data<Shared>) -> HttpResponse {
    shared.stats.call(Api::StableToken);
    answer(
        &shared,
        Api::StableToken,
        Err(WxError::new(ec::REQUIRE_POST)),
    )
}

fn stable(shared: &Shared, body: &[u8]) -> Result<Issued, WxError> {
    // A body that is not a JSON object (e.g. form-encoded) reads as "appid missing" (spec §2).
    let doc = json_object(body)
        .ok_or_else(|| WxError::with(ec::APPID_MISSING, "the body must be JSON"))?;
    let field = |k: &str| -> Result<Option<&str>, WxError> {
        match doc.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(WxError::with(
                ec::INVALID_ARGS,
                format!("{k} must be a string"),
            )),
        }
    };
    check_credentials(
        shared,
        field("grant_type")?,
        field("appid")?,
        field("secret")?,
    )?;
    let force = match doc.get("force_refresh") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(WxError::with(
                ec::INVALID_ARGS,
                "force_refresh must be a boolean",
            ))
        }
    };
    shared
        .tokens
        .issue_stable(&shared.rules, shared.clock.now(), force)
}

/// 40002 grant_type, 41002/41004 missing, 40013 appid, 40125 secret — in that order.
fn check_credentials(
    shared: &Shared,
    grant_type: Option<&str>,
    appid: Option<&str>,
    secret: Option<&str>,
) -> Result<(), WxError> {
    if grant_type != Some(GRANT_TYPE) {
        return Err(WxError::new(ec::INVALID_GRANT_TYPE));
    }
    let appid = appid
        .filter(|s| !s.is_empty())
        .ok_or_else(|| WxError::new(ec::APPID_MISSING))?;
    let secret = secret
        .filter(|s| !s.is_empty())
        .ok_or_else(|| WxError::new(ec::APPSECRET_MISSING))?;
    if appid != shared.settings.appid {
        return Err(WxError::new(ec::INVALID_APPID));
    }
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        secret.as_bytes(),
        shared.settings.secret.as_bytes(),
    )) {
        return Err(WxError::new(ec::INVALID_APPSECRET));
    }
    Ok(())
}

fn token_body(i: Issued) -> Value {
    json!({ "access_token": i.access_token, "expires_in": i.expires_in })
}
