//! A message document as XML: rendered with CDATA strings and bare numbers, `Path` as a
//! repeated element; read through the hardened reader of [`crate::xml`] and shaped into a
//! [`Document`] as tolerantly as WeChat's real pushes need.

use serde_json::Value;

use super::{Document, EnvelopeError, MAX_XML_DEPTH};
use crate::xml::{self, push_cdata, Children, Node};

pub(super) fn write_xml_fields(out: &mut String, fields: &Document) {
    for (key, value) in fields {
        write_xml_field(out, key, value);
    }
}

/// Field names are ours (trusted); values are escaped by CDATA. Arrays repeat the element, the
/// way WeChat encodes `Path`.
pub(super) fn write_xml_field(out: &mut String, key: &str, value: &Value) {
    if let Value::Array(items) = value {
        for item in items {
            write_xml_field(out, key, item);
        }
        return;
    }
    out.push('<');
    out.push_str(key);
    out.push('>');
    match value {
        Value::String(s) => push_cdata(out, s),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Object(fields) => write_xml_fields(out, fields),
        Value::Null | Value::Array(_) => {}
    }
    out.push_str("</");
    out.push_str(key);
    out.push('>');
}

pub(super) fn parse_xml(body: &[u8]) -> Result<Document, EnvelopeError> {
    let children =
        xml::read(body, MAX_XML_DEPTH, xml::Attributes::Ignore).map_err(|e| match e {
            xml::XmlError::TooDeep => EnvelopeError::TooDeep,
            xml::XmlError::Malformed(reason) => EnvelopeError::Malformed(reason),
        })?;
    xml_document(children)
}

/// Turns `<xml>`'s children into fields: leaves become strings, elements with children become
/// objects collected into an array under their name (so one `<Path>` is an array of one).
/// Tolerant as WeChat's real pushes need (spec §11.5): any order, unknown names, and a name
/// that repeats is read as an array of its values, never refused.
fn xml_document(children: Children) -> Result<Document, EnvelopeError> {
    let mut doc = Document::new();
    for (name, node) in children {
        match node {
            Node::Leaf(text) => add_field(&mut doc, name, Value::String(text), false),
            Node::Branch(fields) => {
                add_field(&mut doc, name, Value::Object(flat_object(fields)?), true)
            }
        }
    }
    Ok(doc)
}

fn flat_object(fields: Children) -> Result<Document, EnvelopeError> {
    let mut object = Document::new();
    for (name, node) in fields {
        let Node::Leaf(text) = node else {
            // The depth limit already stops this; kept so the invariant is local.
            return Err(EnvelopeError::TooDeep);
        };
        add_field(&mut object, name, Value::String(text), false);
    }
    Ok(object)
}

/// Adds a field; a second value under the same name makes (or extends) an array. `listed`
/// values (elements with children) are an array from the first one on.
pub(super) fn add_field(doc: &mut Document, name: String, value: Value, listed: bool) {
    match doc.get_mut(&name) {
        None if listed => {
            doc.insert(name, Value::Array(vec![value]));
        }
        None => {
            doc.insert(name, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(first) => {
            let first = first.take();
            doc.insert(name, Value::Array(vec![first, value]));
        }
    }
}
