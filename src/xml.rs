//! The one hardened XML reader, for the two XML dialects WeChat speaks to us: message pushes
//! (`wechat::envelope`) and WeChat Pay notifications (`notify::pay`). Both are
//! `<xml><Name>value</Name>…</xml>`, a few levels deep, with values as text or CDATA.
//!
//! Safe by refusal: a DOCTYPE (so no external or custom entity can ever be declared, let
//! alone resolved), a processing instruction, an XML declaration anywhere but first, content
//! after the root, mixed text and elements, and more levels than the caller allows. Only
//! XML's five predefined entities and character references are decoded. Pure: no I/O.

use quick_xml::events::Event;
use quick_xml::Reader;

/// A parsed element: text, or child elements in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Leaf(String),
    Branch(Children),
}

/// Elements in document order, by name.
pub type Children = Vec<(String, Node)>;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// More levels than the caller allows.
    TooDeep,
    Malformed(String),
}

/// Whether an element may carry attributes (neither dialect uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attributes {
    /// Read past them.
    Ignore,
    /// Refuse the document.
    Refuse,
}

fn malformed(reason: impl std::fmt::Display) -> XmlError {
    XmlError::Malformed(reason.to_string())
}

enum Piece {
    Text(String),
    CData(String),
}

/// An element being read.
struct Frame {
    name: String,
    pieces: Vec<Piece>,
    children: Children,
}

fn is_xml_whitespace(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

impl Frame {
    fn finish(self) -> Result<(String, Node), XmlError> {
        let has_cdata = self.pieces.iter().any(|p| matches!(p, Piece::CData(_)));
        if !self.children.is_empty() {
            // Only indentation may sit between child elements: mixed content has no
            // meaning in either dialect.
            let mixed = self.pieces.iter().any(|p| match p {
                Piece::CData(_) => true,
                Piece::Text(t) => !is_xml_whitespace(t),
            });
            if mixed {
                return Err(malformed(format!(
                    "<{}> mixes text and elements",
                    self.name
                )));
            }
            return Ok((self.name, Node::Branch(self.children)));
        }
        let mut value = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::CData(c) => value.push_str(c),
                // Whitespace-only text next to CDATA is indentation; without CDATA the text
                // is the value itself and kept as sent.
                Piece::Text(t) if has_cdata && is_xml_whitespace(t) => {}
                Piece::Text(t) => value.push_str(t),
            }
        }
        Ok((self.name, Node::Leaf(value)))
    }
}

/// Reads `<xml>…</xml>` and returns its children. `max_depth` counts `<xml>` itself: 2 allows
/// `<xml><a>text</a></xml>`, 3 one level more.
pub fn read(body: &[u8], max_depth: usize, attributes: Attributes) -> Result<Children, XmlError> {
    let mut reader = Reader::from_reader(body);
    let config = reader.config_mut();
    config.expand_empty_elements = true;
    config.check_end_names = true;
    config.trim_text_start = false;
    config.trim_text_end = false;

    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Children> = None;
    let mut seen_anything = false;
    loop {
        let event = reader.read_event().map_err(malformed)?;
        let first = !seen_anything;
        seen_anything = true;
        match event {
            // External and custom entities are only declared in a DTD: refusing it outright
            // makes the reader XXE-safe regardless of what it would do with one.
            Event::DocType(_) => return Err(malformed("DOCTYPE is not allowed")),
            Event::PI(_) => return Err(malformed("processing instructions are not allowed")),
            Event::Decl(_) if first => {}
            Event::Decl(_) => return Err(malformed("misplaced XML declaration")),
            Event::Comment(_) => {}
            Event::Start(start) => {
                if attributes == Attributes::Refuse && start.attributes().next().is_some() {
                    return Err(malformed("attributes are not part of the protocol"));
                }
                open_element(&mut stack, &root, start.name().as_ref(), max_depth)?;
            }
            Event::Empty(_) => unreachable!("expand_empty_elements is on"),
            Event::End(_) => close_element(&mut stack, &mut root)?,
            Event::Text(text) => {
                // Only the five predefined entities and character references resolve;
                // anything else is an error from quick-xml.
                let text = text.unescape().map_err(malformed)?;
                match stack.last_mut() {
                    Some(frame) => frame.pieces.push(Piece::Text(text.into_owned())),
                    None if is_xml_whitespace(&text) => {}
                    None => return Err(malformed("text outside the <xml> element")),
                }
            }
            Event::CData(cdata) => {
                let text = cdata.decode().map_err(malformed)?.into_owned();
                stack
                    .last_mut()
                    .ok_or_else(|| malformed("CDATA outside the <xml> element"))?
                    .pieces
                    .push(Piece::CData(text));
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed("unexpected end of document"));
    }
    root.ok_or_else(|| malformed("no <xml> element"))
}

fn open_element(
    stack: &mut Vec<Frame>,
    root: &Option<Children>,
    raw_name: &[u8],
    max_depth: usize,
) -> Result<(), XmlError> {
    if root.is_some() {
        return Err(malformed("content after the <xml> element"));
    }
    let name = std::str::from_utf8(raw_name).map_err(malformed)?.to_owned();
    if stack.is_empty() && name != "xml" {
        return Err(malformed("root element must be <xml>"));
    }
    if stack.len() >= max_depth {
        return Err(XmlError::TooDeep);
    }
    stack.push(Frame {
        name,
        pieces: Vec::new(),
        children: Vec::new(),
    });
    Ok(())
}

fn close_element(stack: &mut Vec<Frame>, root: &mut Option<Children>) -> Result<(), XmlError> {
    let frame = stack.pop().ok_or_else(|| malformed("unbalanced end tag"))?;
    let (name, node) = frame.finish()?;
    match stack.last_mut() {
        Some(parent) => parent.children.push((name, node)),
        None => {
            *root = Some(match node {
                Node::Branch(children) => children,
                Node::Leaf(text) if is_xml_whitespace(&text) => Vec::new(),
                Node::Leaf(_) => return Err(malformed("text directly inside <xml>")),
            })
        }
    }
    Ok(())
}

/// Appends `value` as a CDATA section. A `]]>` inside the value would end the section
/// early, so it is split across two sections: `]]` ends the first and `>` starts the second.
pub fn push_cdata(out: &mut String, value: &str) {
    out.push_str("<![CDATA[");
    out.push_str(&value.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(name: &str, v: &str) -> (String, Node) {
        (name.into(), Node::Leaf(v.into()))
    }

    #[test]
    fn reads_text_and_cdata_values_and_nested_elements_within_the_depth() {
        let doc = b"<?xml version=\"1.0\"?>\n<xml>\n  <a><![CDATA[x]]></a>\n  <b>1 &amp; 2</b>\n  <P><c> </c></P>\n</xml>";
        let children = read(doc, 3, Attributes::Refuse).unwrap();
        assert_eq!(
            children,
            vec![
                leaf("a", "x"),
                leaf("b", "1 & 2"),
                ("P".into(), Node::Branch(vec![leaf("c", " ")])),
            ]
        );
        assert_eq!(read(doc, 2, Attributes::Refuse), Err(XmlError::TooDeep));
    }

    #[test]
    fn refuses_what_could_smuggle_content() {
        for (doc, attributes) in [
            (
                &b"<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><a>&e;</a></xml>"[..],
                Attributes::Ignore,
            ),
            (b"<xml><a>&e;</a></xml>", Attributes::Ignore),
            (b"<?pi x?><xml/>", Attributes::Ignore),
            (b"<xml><?xml version=\"1.0\"?></xml>", Attributes::Ignore),
            (b"<root/>", Attributes::Ignore),
            (b"<xml></xml><xml></xml>", Attributes::Ignore),
            (b"<xml>text<a>1</a></xml>", Attributes::Ignore),
            (b"<xml><a>1</a>", Attributes::Ignore),
            (b"<xml><a k=\"v\">1</a></xml>", Attributes::Refuse),
            (b"", Attributes::Ignore),
        ] {
            assert!(
                matches!(read(doc, 3, attributes), Err(XmlError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        assert!(read(b"<xml><a k=\"v\">1</a></xml>", 3, Attributes::Ignore).is_ok());
    }

    #[test]
    fn cdata_is_split_where_it_would_end_early() {
        let mut out = String::new();
        push_cdata(&mut out, "a]]>b");
        let doc = format!("<xml><v>{out}</v></xml>");
        assert_eq!(
            read(doc.as_bytes(), 2, Attributes::Refuse).unwrap(),
            vec![leaf("v", "a]]>b")]
        );
    }
}
