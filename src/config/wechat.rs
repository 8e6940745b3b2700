//! `[wechat]` checked: sandbox mode or a real mini program, its credentials, the message
//! format and mode, and where WeChat's API is.

use crate::secret::Secret;
use crate::wechat::crypto::AesKey;
use crate::wechat::envelope::{MessageFormat, MessageMode};
use crate::wechat::section::{RawWechat, WechatSettings};

/// `[wechat]` as checked.
pub(super) struct Wechat {
    /// Sandbox mode: no `[wechat]` setting at all, or `serve --sandbox`.
    pub sandbox: bool,
    /// Complete only when no problem was pushed.
    pub settings: WechatSettings,
}

/// Checks `w`; `listen` is `server.listen` (sandbox mode serves loopback only) and
/// `forced_sandbox` is `serve --sandbox`. Problems go to `p`, start-up notes to `notices`.
pub(super) fn check(
    w: &RawWechat,
    listen: &str,
    forced_sandbox: bool,
    p: &mut Vec<String>,
    notices: &mut Vec<String>,
) -> Wechat {
    // WeChat: the sandbox only with no [wechat] setting at all, or when asked for
    // (`serve --sandbox`); any [wechat] setting ties the gateway to a real mini program, and
    // then a missing or empty secret is an error, never a silent fallback to the emulator.
    let sandbox = forced_sandbox || !w.any_given();
    let no_secret = w.secret.as_ref().is_none_or(|s| s.expose().is_empty());
    if !sandbox && no_secret {
        p.push(
            "wechat.secret: is missing or empty, but [wechat] is configured; set the AppSecret (or run `serve --sandbox` to use the WeChat sandbox)"
                .into(),
        );
    }
    if sandbox {
        let loopback = listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        if !loopback {
            p.push(format!(
                "server.listen: {:?} is not a loopback address; sandbox mode (no WeChat credentials) serves only this machine",
                listen
            ));
        }
    }
    use crate::sandbox::defaults as sd;
    let pick = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
    let pick_secret = |v: &Option<Secret>, d: &str| v.clone().unwrap_or_else(|| Secret::new(d));
    let (appid, original_id, token, aes) = if sandbox {
        notices.push(
            "SANDBOX MODE: no WeChat credentials are used; pushes go to the WeChat sandbox (in-process unless wechat.api_base points at one), never to WeChat"
                .to_string(),
        );
        (
            pick(&w.appid, sd::APPID),
            pick(&w.original_id, sd::ORIGINAL_ID),
            pick_secret(&w.token, sd::TOKEN),
            pick_secret(&w.encoding_aes_key, sd::ENCODING_AES_KEY),
        )
    } else {
        for (k, v) in [
            ("wechat.appid", w.appid.is_none()),
            ("wechat.original_id", w.original_id.is_none()),
            ("wechat.token", w.token.is_none()),
            ("wechat.encoding_aes_key", w.encoding_aes_key.is_none()),
        ] {
            if v {
                p.push(format!("{k}: is required when [wechat] is configured"));
            }
        }
        (
            pick(&w.appid, ""),
            pick(&w.original_id, ""),
            pick_secret(&w.token, ""),
            pick_secret(&w.encoding_aes_key, ""),
        )
    };
    let appid_ok = appid.starts_with("wx")
        && appid.len() <= 32
        && appid.bytes().all(|b| b.is_ascii_alphanumeric());
    if !appid.is_empty() && !appid_ok {
        p.push(
            "wechat.appid: expected the mini program AppID (wx followed by letters and digits)"
                .into(),
        );
    }
    if !token.expose().is_empty() && !(3..=32).contains(&token.expose().len()) {
        p.push("wechat.token: must be 3 to 32 characters, as the WeChat console allows".into());
    }
    if !aes.expose().is_empty() {
        if let Err(e) = AesKey::parse(aes.expose()) {
            p.push(format!(
                "wechat.encoding_aes_key: must be exactly 43 characters of [A-Za-z0-9] ({e})"
            ));
        }
    }
    if let Some(prev) = &w.previous_encoding_aes_key {
        if AesKey::parse(prev.expose()).is_err() {
            p.push(
                "wechat.previous_encoding_aes_key: must be exactly 43 characters of [A-Za-z0-9]"
                    .into(),
            );
        }
    }
    let message_format = w.message_format.parse::<MessageFormat>().map_err(|_| {
        p.push(format!(
            "wechat.message_format: {:?} is not one of json, xml",
            w.message_format
        ));
    });
    let message_mode = w.message_mode.parse::<MessageMode>().map_err(|_| {
        p.push(format!(
            "wechat.message_mode: {:?} is not one of plaintext, compatible, secure",
            w.message_mode
        ));
    });
    if message_mode == Ok(MessageMode::Plaintext) {
        if w.allow_plaintext {
            notices.push(
                "wechat.message_mode is plaintext: WeChat's pushes are authenticated only by sha1(token, timestamp, nonce), the same triple every user sees in a JSONP URL; use secure mode in production"
                    .into(),
            );
        } else {
            p.push(
                "wechat.message_mode: plaintext is refused unless wechat.allow_plaintext = true (its pushes are authenticated only by sha1(token, timestamp, nonce), which every JSONP URL discloses); use secure"
                    .into(),
            );
        }
    }
    let api_base = match &w.api_base {
        Some(b)
            if url::Url::parse(b)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false) =>
        {
            Some(b.trim_end_matches('/').to_string())
        }
        Some(b) => {
            p.push(format!("wechat.api_base: {b:?} is not an http(s) URL"));
            None
        }
        None if sandbox => None,
        None => Some("https://api.weixin.qq.com".to_string()),
    };

    Wechat {
        sandbox,
        settings: WechatSettings {
            appid,
            secret: if no_secret { None } else { w.secret.clone() },
            original_id,
            token,
            encoding_aes_key: aes,
            previous_encoding_aes_key: w.previous_encoding_aes_key.clone(),
            message_format: message_format.unwrap_or(MessageFormat::Json),
            message_mode: message_mode.unwrap_or(MessageMode::Secure),
            api_base,
        },
    }
}
