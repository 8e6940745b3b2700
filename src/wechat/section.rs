//! `[wechat]`: the mini program the gateway acts for, as the configuration says it
//! ([`RawWechat`]) and as `crate::config` checked it ([`WechatSettings`]).

use serde::{Deserialize, Serialize};

use super::envelope::{MessageFormat, MessageMode};
use crate::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWechat {
    pub appid: Option<String>,
    pub secret: Option<Secret>,
    pub original_id: Option<String>,
    pub token: Option<Secret>,
    pub encoding_aes_key: Option<Secret>,
    pub previous_encoding_aes_key: Option<Secret>,
    pub message_format: String,
    pub message_mode: String,
    /// Plaintext mode authenticates a push only by sha1(token, timestamp, nonce), a triple
    /// every WeChat user sees in a JSONP URL: refused unless this is set.
    pub allow_plaintext: bool,
    pub api_base: Option<String>,
}

impl RawWechat {
    /// Whether any `[wechat]` setting was given (file or environment): then the gateway is
    /// tied to a real mini program and never falls back to the sandbox.
    pub fn any_given(&self) -> bool {
        let d = RawWechat::default();
        self.appid.is_some()
            || self.secret.is_some()
            || self.original_id.is_some()
            || self.token.is_some()
            || self.encoding_aes_key.is_some()
            || self.previous_encoding_aes_key.is_some()
            || self.api_base.is_some()
            || self.allow_plaintext
            || self.message_format != d.message_format
            || self.message_mode != d.message_mode
    }
}

impl Default for RawWechat {
    fn default() -> Self {
        RawWechat {
            appid: None,
            secret: None,
            original_id: None,
            token: None,
            encoding_aes_key: None,
            previous_encoding_aes_key: None,
            message_format: "json".into(),
            message_mode: "secure".into(),
            allow_plaintext: false,
            api_base: None,
        }
    }
}

/// The WeChat mini program the gateway acts for, validated.
#[derive(Debug, Clone)]
pub struct WechatSettings {
    pub appid: String,
    /// `None`: no real credentials; the gateway talks to an in-process sandbox.
    pub secret: Option<Secret>,
    pub original_id: String,
    pub token: Secret,
    pub encoding_aes_key: Secret,
    pub previous_encoding_aes_key: Option<Secret>,
    pub message_format: MessageFormat,
    pub message_mode: MessageMode,
    /// `None` in sandbox mode until the in-process sandbox is bound.
    pub api_base: Option<String>,
}
