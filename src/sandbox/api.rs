//! What every emulated WeChat API has in common: the error codes, the `{errcode, errmsg}`
//! reply shape (always HTTP 200, as WeChat answers), and the `Api` names used by statistics
//! and fault injection.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// WeChat error codes the sandbox answers with, by name. The numbers are WeChat's (see the
/// spec file named on each).
pub mod errcode {
    /// Busy (every API).
    pub const SYSTEM_BUSY: i64 = -1;
    pub const OK: i64 = 0;
    /// Token superseded past its overlap (or AppSecret wrong on `/cgi-bin/token`).
    pub const INVALID_CREDENTIAL: i64 = 40001;
    pub const INVALID_GRANT_TYPE: i64 = 40002;
    pub const INVALID_OPENID: i64 = 40003;
    pub const INVALID_APPID: i64 = 40013;
    /// A token the sandbox never issued.
    pub const INVALID_ACCESS_TOKEN: i64 = 40014;
    pub const INVALID_TEMPLATE_ID: i64 = 40037;
    /// userquery / pathnotify: invalid parameter.
    pub const INVALID_ARGS: i64 = 40097;
    pub const INVALID_APPSECRET: i64 = 40125;
    pub const ACCESS_TOKEN_MISSING: i64 = 41001;
    pub const APPID_MISSING: i64 = 41002;
    pub const APPSECRET_MISSING: i64 = 41004;
    pub const INVALID_FORM_ID: i64 = 41028;
    pub const FORM_ID_USED: i64 = 41029;
    pub const INVALID_PAGE: i64 = 41030;
    pub const ACCESS_TOKEN_EXPIRED: i64 = 42001;
    pub const REQUIRE_POST: i64 = 43002;
    pub const NOT_SUBSCRIBED: i64 = 43101;
    pub const CONCURRENT_SEND: i64 = 43108;
    pub const DAILY_QUOTA: i64 = 45009;
    pub const MINUTE_QUOTA: i64 = 45011;
    /// subscribe/send: a `data` value breaks its keyword type's rule.
    pub const ARGUMENT_INVALID: i64 = 47003;
    pub const REVERSE_QUERY_SYSTEM: i64 = 932001;
    pub const REVERSE_QUERY_LOGIC: i64 = 932002;
    pub const REVERSE_QUERY_DATA: i64 = 932003;
    /// `rid/get`: no such rid, or older than 7 days.
    pub const RID_NOT_FOUND: i64 = 76001;
    /// `rid/get`: not a rid.
    pub const RID_INVALID: i64 = 76002;
    /// `rid/get`: the call was another account's.
    pub const RID_NO_PERMISSION: i64 = 76003;

    /// WeChat's usual `errmsg` for a code.
    pub fn message(code: i64) -> &'static str {
        match code {
            SYSTEM_BUSY => "system error",
            OK => "ok",
            INVALID_CREDENTIAL => "invalid credential, access_token is invalid or not latest",
            INVALID_GRANT_TYPE => "invalid grant_type",
            INVALID_OPENID => "invalid openid",
            INVALID_APPID => "invalid appid",
            INVALID_ACCESS_TOKEN => "invalid access_token",
            INVALID_TEMPLATE_ID => "invalid template_id",
            INVALID_ARGS => "invalid args",
            INVALID_APPSECRET => "invalid appsecret",
            ACCESS_TOKEN_MISSING => "access_token missing",
            APPID_MISSING => "appid missing",
            APPSECRET_MISSING => "appsecret missing",
            INVALID_FORM_ID => "invalid form id",
            FORM_ID_USED => "form id used count reach limit",
            INVALID_PAGE => "invalid page",
            ACCESS_TOKEN_EXPIRED => "access_token expired",
            REQUIRE_POST => "require POST method",
            NOT_SUBSCRIBED => "user refuse to accept the msg",
            CONCURRENT_SEND => "concurrent send to the same user",
            DAILY_QUOTA => "reach max api daily quota limit",
            MINUTE_QUOTA => "api minute-quota reach limit  mustslower  retry next minute",
            ARGUMENT_INVALID => "argument invalid!",
            REVERSE_QUERY_SYSTEM => "reverse query waybill system error",
            REVERSE_QUERY_LOGIC => "reverse query waybill logic error",
            REVERSE_QUERY_DATA => "reverse query waybill data abnormal",
            RID_NOT_FOUND => "rid not found",
            RID_INVALID => "rid is invalid",
            RID_NO_PERMISSION => "cgi no permission",
            _ => "error",
        }
    }
}

/// The emulated WeChat APIs, for statistics and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `GET /cgi-bin/token`
    Token,
    /// `POST /cgi-bin/stable_token`
    StableToken,
    /// `POST /cgi-bin/express/delivery/userquery`
    Userquery,
    /// `POST /cgi-bin/express/delivery/pathnotify`
    Pathnotify,
    /// `POST /cgi-bin/message/subscribe/send`
    SubscribeSend,
    /// `POST /cgi-bin/message/wxopen/template/send`
    TemplateSend,
}

impl Api {
    pub const ALL: [Api; 6] = [
        Api::Token,
        Api::StableToken,
        Api::Userquery,
        Api::Pathnotify,
        Api::SubscribeSend,
        Api::TemplateSend,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Api::Token => "token",
            Api::StableToken => "stable_token",
            Api::Userquery => "userquery",
            Api::Pathnotify => "pathnotify",
            Api::SubscribeSend => "subscribe_send",
            Api::TemplateSend => "template_send",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A WeChat API error: `errcode` and a detail appended to WeChat's usual `errmsg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WxError {
    pub errcode: i64,
    pub detail: Option<String>,
}

impl WxError {
    pub fn new(errcode: i64) -> WxError {
        WxError {
            errcode,
            detail: None,
        }
    }

    pub fn with(errcode: i64, detail: impl Into<String>) -> WxError {
        WxError {
            errcode,
            detail: Some(detail.into()),
        }
    }

    pub fn errmsg(&self) -> String {
        let base = errcode::message(self.errcode);
        let rid = rid();
        match &self.detail {
            Some(d) => format!("{base}: {d} rid: {rid}"),
            None => format!("{base} rid: {rid}"),
        }
    }

    /// `{"errcode": N, "errmsg": "..."}`
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert("errcode".into(), Value::from(self.errcode));
        m.insert("errmsg".into(), Value::from(self.errmsg()));
        Value::Object(m)
    }
}

/// WeChat appends a request id to every error message; carriers quote it to WeChat support.
fn rid() -> String {
    let n: u64 = rand::random();
    format!("{:08x}-{:08x}", (n >> 32) as u32, n as u32)
}

/// `{"errcode": 0, "errmsg": "ok", ..extra}` in that order.
pub fn ok_body(extra: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    let mut m = Map::new();
    m.insert("errcode".into(), Value::from(0));
    m.insert("errmsg".into(), Value::from("ok"));
    for (k, v) in extra {
        m.insert(k.into(), v);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_carries_code_and_wechat_message() {
        let b = WxError::with(errcode::INVALID_ARGS, "phone is required").body();
        assert_eq!(b["errcode"], 40097);
        assert!(b["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("invalid args: phone is required rid: "));
    }

    #[test]
    fn api_indexes_follow_all() {
        for (i, a) in Api::ALL.iter().enumerate() {
            assert_eq!(a.index(), i);
        }
    }
}
