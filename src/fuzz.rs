//! The untrusted-input entry points, driven with arbitrary bytes: by the cargo-fuzz targets
//! under `fuzz/` (nightly, coverage-guided) and by a bounded proptest run in `cargo test`
//! (`tests/fuzz_entry_points.rs`, stable), so CI guards what fuzzing found.
//!
//! Each function feeds one entry point the way a request would reach it, and checks what
//! must hold for any input: no panic, and where an input is accepted, the round trip it
//! promises (a sealed reply opens again, a decrypted message re-encrypts to itself, a parsed
//! pay notification renders and parses back to the same fields). A violation panics, which
//! is what a fuzzer reports.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::domain::mask_phones_in_text;
use crate::http::backoffice::parse_batch_line;
use crate::http::jsonp::{check_query, Callback};
use crate::notify::pay;
use crate::wechat::crypto::{sha1_signature, KeySlot, MessageCrypto};
use crate::wechat::envelope::{
    get_i64, get_str, open_reply, open_request, parse_document, seal_reply, CallbackQuery,
    MessageFormat, MessageMode,
};
use crate::wechat::reverse_query::{build_reply, Lookup, Query};

const TOKEN: &str = "AAAAA";
const APPID: &str = "wxba5fad812f8e6fb9";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const ORIGINAL_ID: &str = "gh_97417a04a28d";
const NOW: i64 = 1_764_000_000;
const WINDOW: i64 = 300;

fn crypto() -> MessageCrypto {
    MessageCrypto::new(TOKEN, APPID, AES_KEY, None).expect("a valid test key")
}

/// `POST /wechat/callback`: the first byte picks the mode, the format and whether the rest
/// is the whole body (signature made valid where it can be) or the decrypted message (sealed
/// properly, so decryption succeeds and the document parser and the reply see it).
pub fn callback_envelope(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mode = match selector % 3 {
        0 => MessageMode::Plaintext,
        1 => MessageMode::Compatible,
        _ => MessageMode::Secure,
    };
    let format = if selector & 0x10 == 0 {
        MessageFormat::Json
    } else {
        MessageFormat::Xml
    };
    let as_message = selector & 0x20 != 0;
    let crypto = crypto();
    let (ts, nonce) = (NOW.to_string(), "1320".to_string());
    let mut query = CallbackQuery {
        signature: Some(sha1_signature(&[TOKEN, &ts, &nonce])),
        timestamp: Some(ts.clone()),
        nonce: Some(nonce.clone()),
        openid: None,
        encrypt_type: None,
        msg_signature: None,
        echostr: None,
    };
    let body: Vec<u8> = if mode == MessageMode::Plaintext || !as_message {
        if mode != MessageMode::Plaintext {
            // Sign whatever Encrypt the body carries, so a well-formed one is decrypted.
            let encrypt = parse_document(format, rest)
                .ok()
                .and_then(|d| {
                    d.get("Encrypt")
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_default();
            query.encrypt_type = Some("aes".into());
            query.msg_signature = Some(sha1_signature(&[TOKEN, &ts, &nonce, &encrypt]));
        }
        rest.to_vec()
    } else {
        let encrypt = crypto
            .encrypt_with_prefix(rest, KeySlot::Current, &[7u8; 16])
            .expect("encrypting cannot fail");
        query.encrypt_type = Some("aes".into());
        query.msg_signature = Some(sha1_signature(&[TOKEN, &ts, &nonce, &encrypt]));
        match format {
            MessageFormat::Json => {
                serde_json::json!({ "ToUserName": ORIGINAL_ID, "Encrypt": encrypt })
                    .to_string()
                    .into_bytes()
            }
            MessageFormat::Xml => format!(
                "<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
            )
            .into_bytes(),
        }
    };
    let Ok(opened) = open_request(&crypto, mode, format, &query, &body, NOW, WINDOW) else {
        return;
    };
    // What the callback does next with an accepted message, minus the store.
    let Some(q) = Query::from_document(&opened.doc) else {
        return;
    };
    let _ = mask_phones_in_text(q.receiver_phone.as_deref().unwrap_or_default());
    let reply = build_reply(&q, ORIGINAL_ID, NOW, &Lookup::PhoneMismatch);
    let slot = opened.key_slot.unwrap_or(KeySlot::Current);
    let sealed = seal_reply(&crypto, mode, format, &reply, &nonce, NOW, slot)
        .expect("a reply we built always seals");
    let back = open_reply(&crypto, mode, format, sealed.as_bytes(), &nonce)
        .expect("a reply we sealed always opens");
    // XML carries every value as text: compare as the reader of each field would.
    assert_eq!(get_i64(&back, "ResultCode"), get_i64(&reply, "ResultCode"));
    assert_eq!(get_str(&back, "ToUserName"), get_str(&reply, "ToUserName"));
}

/// `Encrypt` decryption: the bytes as the base64 text WeChat would send, and as raw text.
pub fn decrypt(data: &[u8]) {
    let crypto = crypto();
    for text in [
        STANDARD.encode(data),
        String::from_utf8_lossy(data).into_owned(),
    ] {
        if let Ok((plain, slot)) = crypto.decrypt(&text) {
            let again = crypto
                .encrypt(&plain, slot)
                .expect("what decrypted re-encrypts");
            let (round, _) = crypto.decrypt(&again).expect("what we encrypted decrypts");
            assert_eq!(round, plain);
        }
    }
}

/// One line of `POST /v1/events/batch`. A refused line's messages must not quote a phone.
pub fn ndjson_line(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match parse_batch_line(line, NOW) {
        Ok((id, _, event)) => {
            assert!(!id.as_str().is_empty());
            assert!(!event.text.action_msg.trim().is_empty());
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused line names a problem");
            for e in errors {
                assert_eq!(
                    mask_phones_in_text(&e.message),
                    e.message,
                    "an error message quotes a phone"
                );
            }
        }
    }
}

/// `GET /wechat/waybill`: the raw query string, and the bytes as `orderid`, `openid` and
/// `callback` of a correctly signed URL (so the checks after the signature are reached).
pub fn jsonp_query(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let _ = check_query(&raw, TOKEN, NOW, WINDOW);
    let mut parts = raw.splitn(3, '\n');
    let (orderid, openid, callback) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if let Some(cb) = Callback::parse(callback) {
        assert!(cb
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.'));
    }
    let ts = NOW.to_string();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("orderid", orderid)
        .append_pair("openid", openid)
        .append_pair("timestamp", &ts)
        .append_pair("nonce", "42")
        .append_pair("signature", &sha1_signature(&[TOKEN, &ts, "42"]))
        .append_pair("callback", callback)
        .finish();
    if let Ok(c) = check_query(&query, TOKEN, NOW, WINDOW) {
        assert_eq!(c.orderid, orderid.trim_start_matches('='));
        assert_eq!(c.openid, openid);
    }
}

/// `POST /wechatpay/notify`: parse, verify, and the render/parse round trip.
pub fn pay_xml(data: &[u8]) {
    let Ok(fields) = pay::parse_xml(data) else {
        return;
    };
    let _ = pay::verify(&fields, "192006250b4c09247ec02edce69f6a2d");
    if let Some(t) = fields.get("time_end") {
        let _ = pay::parse_time_end(t);
    }
    let again =
        pay::parse_xml(pay::to_xml(&fields).as_bytes()).expect("rendered fields parse again");
    assert_eq!(again, fields);
}
