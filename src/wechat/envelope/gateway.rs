//! The gateway's side of a push: WeChat's request opened (authenticated, decrypted) and our
//! reply sealed.

use std::fmt;

use super::sealed::{render_encrypted_reply, EncryptedEnvelope};
use super::{
    get_str, parse_document, render_document, Document, EnvelopeError, MessageFormat, MessageMode,
};
use crate::wechat::crypto::{CryptoError, KeySlot, MessageCrypto};

/// The query string of a message-push POST, as WeChat sends it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CallbackQuery {
    /// SHA-1 over sorted (token, timestamp, nonce); the only authentication in plaintext mode.
    pub signature: Option<String>,
    /// Unix seconds, as text; signed, and checked against our clock to limit replays.
    pub timestamp: Option<String>,
    /// Random text; signed, and echoed as the reply's `Nonce`.
    pub nonce: Option<String>,
    /// The sender's openid (secure and compatible modes).
    pub openid: Option<String>,
    /// `aes` when the body carries `Encrypt`.
    pub encrypt_type: Option<String>,
    /// SHA-1 over sorted (token, timestamp, nonce, Encrypt).
    pub msg_signature: Option<String>,
    /// URL verification only (GET).
    pub echostr: Option<String>,
}

/// An authenticated inbound message.
pub struct OpenedMessage {
    /// The (decrypted) message document.
    pub doc: Document,
    /// The message's bytes as they were signed (plaintext mode) or decrypted: what a
    /// byte-identical redelivery repeats.
    pub raw: Vec<u8>,
    /// Which key decrypted it; `None` in plaintext mode. The reply must use the same slot.
    pub key_slot: Option<KeySlot>,
    /// Whether the document came out of `Encrypt`.
    pub was_encrypted: bool,
}

/// Hand-written so decrypted bodies (phones, waybills) never reach a `Debug` output.
impl fmt::Debug for OpenedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedMessage")
            .field("doc", &format_args!("<{} fields redacted>", self.doc.len()))
            .field("key_slot", &self.key_slot)
            .field("was_encrypted", &self.was_encrypted)
            .finish()
    }
}

/// Why an inbound push (or, on WeChat's side, a reply) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// A required query parameter is absent (or `encrypt_type` is not `aes` where required).
    #[error("missing query parameter {0}")]
    MissingParameter(&'static str),
    /// `timestamp` is not an integer or is outside the allowed window.
    #[error("timestamp is stale or invalid")]
    StaleTimestamp,
    /// A signature did not verify (or a reply's `Nonce` is not the one we sent).
    #[error("bad signature")]
    BadSignature,
    /// The body or the decrypted document could not be parsed.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Decryption failed.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
}

impl From<EnvelopeError> for OpenError {
    fn from(e: EnvelopeError) -> Self {
        OpenError::Malformed(e.to_string())
    }
}

/// Authenticate and open an inbound message-push POST. The MODE comes from our configuration,
/// never from the request.
///
/// - plaintext: verify `signature` over (token, timestamp, nonce); the body is the document.
/// - secure: require `encrypt_type=aes` and `msg_signature`; the body must have `Encrypt`;
///   verify `msg_signature` over (token, timestamp, nonce, Encrypt); decrypt; parse the inner
///   document in the same format.
/// - compatible (safe reading): exactly like secure (the ciphertext is required and the
///   plaintext copy of the fields in the body is ignored, since nothing signs it).
///
/// Before anything else, `timestamp` must parse as i64 and `|now - timestamp| <= window_secs`,
/// else [`OpenError::StaleTimestamp`].
pub fn open_request(
    crypto: &MessageCrypto,
    mode: MessageMode,
    format: MessageFormat,
    query: &CallbackQuery,
    body: &[u8],
    now: i64,
    window_secs: i64,
) -> Result<OpenedMessage, OpenError> {
    let timestamp = required(&query.timestamp, "timestamp")?;
    let ts: i64 = timestamp.parse().map_err(|_| OpenError::StaleTimestamp)?;
    // i128 so that extreme values cannot overflow into a "fresh" difference.
    if (i128::from(now) - i128::from(ts)).abs() > i128::from(window_secs) {
        return Err(OpenError::StaleTimestamp);
    }
    let nonce = required(&query.nonce, "nonce")?;

    match mode {
        MessageMode::Plaintext => {
            let signature = required(&query.signature, "signature")?;
            if !crypto.verify_signature(signature, timestamp, nonce) {
                return Err(OpenError::BadSignature);
            }
            Ok(OpenedMessage {
                doc: parse_document(format, body)?,
                raw: body.to_vec(),
                key_slot: None,
                was_encrypted: false,
            })
        }
        MessageMode::Secure | MessageMode::Compatible => {
            // Refusing a missing or different encrypt_type stops a downgrade to plaintext.
            let encrypt_type = required(&query.encrypt_type, "encrypt_type")?;
            if !encrypt_type.eq_ignore_ascii_case("aes") {
                return Err(OpenError::MissingParameter("encrypt_type"));
            }
            let msg_signature = required(&query.msg_signature, "msg_signature")?;
            let outer = parse_document(format, body)?;
            let encrypt = get_str(&outer, "Encrypt")
                .ok_or_else(|| OpenError::Malformed("body has no Encrypt field".to_owned()))?;
            if !crypto.verify_msg_signature(msg_signature, timestamp, nonce, encrypt) {
                return Err(OpenError::BadSignature);
            }
            let (plain, slot) = crypto.decrypt(encrypt)?;
            Ok(OpenedMessage {
                doc: parse_document(format, &plain)?,
                raw: plain,
                key_slot: Some(slot),
                was_encrypted: true,
            })
        }
    }
}

fn required<'a>(value: &'a Option<String>, name: &'static str) -> Result<&'a str, OpenError> {
    value.as_deref().ok_or(OpenError::MissingParameter(name))
}

/// Seal our reply document: plaintext mode -> [`render_document`]; secure and compatible ->
/// encrypt the rendered document with `key_slot` (the slot that decrypted the request), sign
/// with (token, now, nonce, Encrypt), [`render_encrypted_reply`].
pub fn seal_reply(
    crypto: &MessageCrypto,
    mode: MessageMode,
    format: MessageFormat,
    doc: &Document,
    nonce: &str,
    now: i64,
    key_slot: KeySlot,
) -> Result<String, CryptoError> {
    let rendered = render_document(format, doc);
    if mode == MessageMode::Plaintext {
        return Ok(rendered);
    }
    let encrypt = crypto.encrypt(rendered.as_bytes(), key_slot)?;
    let timestamp = now.to_string();
    let msg_signature = crypto.msg_signature(&timestamp, nonce, &encrypt);
    Ok(render_encrypted_reply(
        format,
        &EncryptedEnvelope {
            encrypt,
            msg_signature,
            timestamp: now,
            nonce: nonce.to_owned(),
        },
    ))
}
