//! The encrypted wrapper of a message (`Encrypt`, `MsgSignature`, `TimeStamp`, `Nonce`),
//! rendered and read in either format.

use serde_json::Value;

use super::xml_doc::write_xml_field;
use super::{get_i64, get_str, parse_document, Document, EnvelopeError, MessageFormat};

/// The encrypted wrapper of a reply (spec §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedEnvelope {
    /// base64 ciphertext.
    pub encrypt: String,
    /// SHA-1 over sorted (token, TimeStamp, Nonce, Encrypt).
    pub msg_signature: String,
    /// Unix seconds chosen by the replier.
    pub timestamp: i64,
    /// The request's `nonce`, echoed.
    pub nonce: String,
}

/// Renders the wrapper exactly as the spec's examples: JSON keys in the order `Encrypt`,
/// `MsgSignature`, `TimeStamp` (a number), `Nonce` (a string); XML with CDATA strings.
pub fn render_encrypted_reply(format: MessageFormat, env: &EncryptedEnvelope) -> String {
    match format {
        MessageFormat::Json => serde_json::json!({
            "Encrypt": env.encrypt,
            "MsgSignature": env.msg_signature,
            "TimeStamp": env.timestamp,
            "Nonce": env.nonce,
        })
        .to_string(),
        MessageFormat::Xml => {
            let mut out = String::from("<xml>");
            write_xml_field(&mut out, "Encrypt", &Value::from(env.encrypt.as_str()));
            write_xml_field(
                &mut out,
                "MsgSignature",
                &Value::from(env.msg_signature.as_str()),
            );
            write_xml_field(&mut out, "TimeStamp", &Value::from(env.timestamp));
            write_xml_field(&mut out, "Nonce", &Value::from(env.nonce.as_str()));
            out.push_str("</xml>");
            out
        }
    }
}

/// Parses an encrypted reply. `TimeStamp` and `Nonce` may be numbers or strings, because the
/// spec's template and final example disagree.
pub fn parse_encrypted_reply(
    format: MessageFormat,
    body: &[u8],
) -> Result<EncryptedEnvelope, EnvelopeError> {
    envelope_from_document(&parse_document(format, body)?)
}

pub(super) fn envelope_from_document(doc: &Document) -> Result<EncryptedEnvelope, EnvelopeError> {
    let string = |key: &'static str| {
        get_str(doc, key)
            .map(str::to_owned)
            .ok_or(EnvelopeError::MissingField(key))
    };
    let nonce = match doc.get("Nonce") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(EnvelopeError::MissingField("Nonce")),
    };
    Ok(EncryptedEnvelope {
        encrypt: string("Encrypt")?,
        msg_signature: string("MsgSignature")?,
        timestamp: get_i64(doc, "TimeStamp").ok_or(EnvelopeError::MissingField("TimeStamp"))?,
        nonce,
    })
}
