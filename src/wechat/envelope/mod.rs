//! WeChat message-push envelopes: the XML/JSON message documents, the encrypted wrapper
//! (`Encrypt`, `MsgSignature`, `TimeStamp`, `Nonce`), and the two directions of a push:
//! opening WeChat's request and sealing our reply ([`open_request`], [`seal_reply`]), plus
//! WeChat's side of the same exchange for the sandbox and tests ([`seal_request`],
//! [`open_reply`]).
//!
//! Pure: no I/O, no clock (callers pass `now`), no logging. The crypto itself lives in
//! [`super::crypto`]; what a document means (e.g. `waybill_notify_query`) is not decided here.
//! The XML reader is deliberately small and strict: one `<xml>` root, at most three levels,
//! no DOCTYPE, no custom entities, so a push can never make us resolve external content.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

mod gateway;
mod sealed;
mod wechat_side;
mod xml_doc;

use xml_doc::{add_field, parse_xml, write_xml_fields};

pub use gateway::{open_request, seal_reply, CallbackQuery, OpenError, OpenedMessage};
pub use sealed::{parse_encrypted_reply, render_encrypted_reply, EncryptedEnvelope};
pub use wechat_side::{open_reply, seal_request};

/// `xml > Path > field`: the deepest shape WeChat's message push uses.
const MAX_XML_DEPTH: usize = 3;

/// The data format configured for the mini program's message push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageFormat {
    /// `application/json` bodies.
    Json,
    /// `<xml>…</xml>` bodies.
    Xml,
}

/// The encryption mode configured for the mini program's message push (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageMode {
    /// 明文: bodies in clear, authenticated only by `signature`.
    Plaintext,
    /// 兼容: clear fields and `Encrypt` side by side; we only trust the ciphertext.
    Compatible,
    /// 安全: ciphertext only.
    Secure,
}

impl MessageFormat {
    /// The name the configuration and WeChat's console use.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageFormat::Json => "json",
            MessageFormat::Xml => "xml",
        }
    }
}

impl MessageMode {
    /// The name the configuration and WeChat's console use.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageMode::Plaintext => "plaintext",
            MessageMode::Compatible => "compatible",
            MessageMode::Secure => "secure",
        }
    }
}

impl fmt::Display for MessageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for MessageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageFormat {
    type Err = EnvelopeError;

    /// `json` or `xml`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [MessageFormat::Json, MessageFormat::Xml]
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| EnvelopeError::Unknown {
                what: "message format",
                value: s.to_owned(),
            })
    }
}

impl FromStr for MessageMode {
    type Err = EnvelopeError;

    /// `plaintext`, `compatible` or `secure`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            MessageMode::Plaintext,
            MessageMode::Compatible,
            MessageMode::Secure,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| EnvelopeError::Unknown {
            what: "message mode",
            value: s.to_owned(),
        })
    }
}

/// A WeChat message document: ordered fields; values are strings, integers, or arrays of flat
/// documents (the reverse-query `Path`).
pub type Document = serde_json::Map<String, Value>;

/// Why a body is not a valid message document or envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not well-formed, not the expected shape, or uses a forbidden XML feature.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// XML nested deeper than `xml > Path > field`.
    #[error("message nested too deeply")]
    TooDeep,
    /// A required field of the encrypted wrapper is absent or of the wrong type.
    #[error("missing or invalid field {0}")]
    MissingField(&'static str),
    /// A format or mode name that is not one of ours.
    #[error("unknown {what}: {value:?}")]
    Unknown {
        /// Which enumeration was being parsed.
        what: &'static str,
        /// The rejected text.
        value: String,
    },
}

fn malformed(reason: impl fmt::Display) -> EnvelopeError {
    EnvelopeError::Malformed(reason.to_string())
}

/// Parses a body in the configured format into a [`Document`]. XML values are always strings.
pub fn parse_document(format: MessageFormat, body: &[u8]) -> Result<Document, EnvelopeError> {
    match format {
        MessageFormat::Json => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let doc =
                serde::Deserializer::deserialize_any(&mut de, TolerantObject).map_err(malformed)?;
            de.end().map_err(malformed)?;
            Ok(doc)
        }
        MessageFormat::Xml => parse_xml(body),
    }
}

/// A JSON message's top-level object, read like the XML one (spec §11.5): a key that repeats
/// becomes an array of its values instead of the last one silently winning.
struct TolerantObject;

impl<'de> serde::de::Visitor<'de> for TolerantObject {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut doc = Document::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            add_field(&mut doc, key, value, false);
        }
        Ok(doc)
    }
}

/// Renders a document: compact JSON, or `<xml>` with CDATA strings and bare numbers.
pub fn render_document(format: MessageFormat, doc: &Document) -> String {
    match format {
        MessageFormat::Json => {
            serde_json::to_string(doc).expect("a map with string keys always serializes")
        }
        MessageFormat::Xml => {
            let mut out = String::from("<xml>");
            write_xml_fields(&mut out, doc);
            out.push_str("</xml>");
            out
        }
    }
}

/// A string field.
pub fn get_str<'a>(doc: &'a Document, key: &str) -> Option<&'a str> {
    doc.get(key)?.as_str()
}

/// An integer field: a JSON number, or a decimal string (XML has no numbers).
pub fn get_i64(doc: &Document, key: &str) -> Option<i64> {
    match doc.get(key)? {
        Value::Number(n) => n.as_i64(),
        // XML text of a number may carry indentation around it.
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
