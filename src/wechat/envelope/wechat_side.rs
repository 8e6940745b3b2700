//! WeChat's side of a push, for the sandbox and the tests: the request sealed exactly as
//! WeChat sends it, and the carrier's reply opened and checked.

use serde_json::Value;

use super::gateway::OpenError;
use super::sealed::envelope_from_document;
use super::{get_str, parse_document, render_document, Document, MessageFormat, MessageMode};
use crate::wechat::crypto::{CryptoError, KeySlot, MessageCrypto};

/// WeChat's side (used by the sandbox and by tests): build the query string (without '?')
/// and body of a message push exactly as WeChat sends it.
///
/// - plaintext: `signature`, `timestamp`, `nonce`; body = doc.
/// - secure: `signature`, `timestamp`, `nonce`, `openid`, `encrypt_type=aes`,
///   `msg_signature`; body = {ToUserName, Encrypt}.
/// - compatible: same query as secure; body = all doc fields plus `Encrypt`.
///
/// `openid` is the doc's `FromUserName` (omitted if the doc has none). Values are
/// URL-encoded. The ciphertext always uses the current key, as WeChat only knows that one.
pub fn seal_request(
    crypto: &MessageCrypto,
    mode: MessageMode,
    format: MessageFormat,
    doc: &Document,
    timestamp: i64,
    nonce: &str,
) -> Result<(String, String), CryptoError> {
    let ts = timestamp.to_string();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("signature", &crypto.signature(&ts, nonce))
        .append_pair("timestamp", &ts)
        .append_pair("nonce", nonce);
    let rendered = render_document(format, doc);
    if mode == MessageMode::Plaintext {
        return Ok((query.finish(), rendered));
    }

    let encrypt = crypto.encrypt(rendered.as_bytes(), KeySlot::Current)?;
    if let Some(openid) = get_str(doc, "FromUserName") {
        query.append_pair("openid", openid);
    }
    query
        .append_pair("encrypt_type", "aes")
        .append_pair("msg_signature", &crypto.msg_signature(&ts, nonce, &encrypt));

    let mut outer = match mode {
        MessageMode::Compatible => doc.clone(),
        _ => {
            let mut outer = Document::new();
            if let Some(to) = doc.get("ToUserName") {
                outer.insert("ToUserName".to_owned(), to.clone());
            }
            outer
        }
    };
    outer.insert("Encrypt".to_owned(), Value::String(encrypt));
    Ok((query.finish(), render_document(format, &outer)))
}

/// WeChat's side: open a reply to a push. secure: parse the encrypted envelope, require
/// `Nonce == expected_nonce` (else [`OpenError::BadSignature`]), verify `MsgSignature`,
/// decrypt, parse. compatible: if the body has `Encrypt` do as secure, else parse plaintext.
/// plaintext: parse.
pub fn open_reply(
    crypto: &MessageCrypto,
    mode: MessageMode,
    format: MessageFormat,
    body: &[u8],
    expected_nonce: &str,
) -> Result<Document, OpenError> {
    let doc = parse_document(format, body)?;
    let encrypted = match mode {
        MessageMode::Plaintext => false,
        MessageMode::Compatible => doc.contains_key("Encrypt"),
        MessageMode::Secure => true,
    };
    if !encrypted {
        return Ok(doc);
    }
    let env = envelope_from_document(&doc)?;
    // The nonce binds the reply to our request; a replayed reply to another push fails here.
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        env.nonce.as_bytes(),
        expected_nonce.as_bytes(),
    )) {
        return Err(OpenError::BadSignature);
    }
    if !crypto.verify_msg_signature(
        &env.msg_signature,
        &env.timestamp.to_string(),
        &env.nonce,
        &env.encrypt,
    ) {
        return Err(OpenError::BadSignature);
    }
    let (plain, _slot) = crypto.decrypt(&env.encrypt)?;
    Ok(parse_document(format, &plain)?)
}
