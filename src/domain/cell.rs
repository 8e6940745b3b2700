//! Landing-page cells (spec §8): the buttons (支付运单, 修改地址, 投诉, …) that WeChat's waybill
//! page shows under the track, each with a carrier-defined `key` (at most 20 characters), a
//! display `name` and a `link` with placeholders, and an optional condition on the waybill's
//! state. Pure: parsing, the condition, link rendering. Where the list comes from (the config
//! file or the database) is the caller's business.

use serde::{Deserialize, Serialize};

use super::action::ActionType;
use super::validation::{text, Errors, FieldError};

/// WeChat's limit on a cell's key (spec §8).
pub const KEY_MAX_CHARS: usize = 20;
/// A cell is a short button label; 20 characters is already more than fits on the page.
pub const NAME_MAX_CHARS: usize = 20;
pub const LINK_MAX_CHARS: usize = 1024;
/// The page shows one short row of cells; more than this is a configuration mistake.
pub const MAX_CELLS: usize = 10;
/// The placeholders a link may contain; each is replaced by its URL-encoded value.
pub const PLACEHOLDERS: &[&str] = &["waybill_id", "openid"];

/// A cell as written in the config file (`[[cells]]`) or sent to `PUT /v1/cells`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CellInput {
    /// unique in the list
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, nullable = false, pattern = r"^[A-Za-z0-9_.-]{1,20}$")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, nullable = false, min_length = 1, max_length = 20)]
    pub name: Option<String>,
    /// an absolute http(s) URL with a host; the placeholders `{waybill_id}` and `{openid}`,
    /// allowed only after the host, are replaced by their URL-encoded values
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = true, nullable = false, min_length = 1, max_length = 1024)]
    pub link: Option<String>,
    /// Absent: the cell is always shown.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::domain::strict::object"
    )]
    pub when: Option<CellCondition>,
}

/// When a cell applies. Every condition given must hold; none given means always.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CellCondition {
    /// The newest tracking step is one of these `action_type`s (for example `[90010]`:
    /// awaiting payment). A waybill with no step yet does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_action_in: Option<Vec<i64>>,
    /// `true`: only before delivery, i.e. while no delivery step (300002..=300007) and no
    /// terminal exception (cancelled, returned, refused) has been recorded. `false`: only after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_delivery: Option<bool>,
}

/// A validated cell. Build it with [`parse_cells`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    key: String,
    name: String,
    link: String,
    when: Option<CellCondition>,
}

impl Cell {
    pub fn key(&self) -> &str {
        &self.key
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The link template, placeholders unexpanded.
    pub fn link_template(&self) -> &str {
        &self.link
    }
    pub fn condition(&self) -> Option<&CellCondition> {
        self.when.as_ref()
    }

    /// Back to the input shape (for `GET /v1/cells` and the store).
    pub fn to_input(&self) -> CellInput {
        CellInput {
            key: Some(self.key.clone()),
            name: Some(self.name.clone()),
            link: Some(self.link.clone()),
            when: self.when.clone(),
        }
    }

    /// Whether the cell applies to a waybill whose steps are `actions`, newest first.
    pub fn applies(&self, actions: &[ActionType]) -> bool {
        let Some(when) = &self.when else {
            return true;
        };
        if let Some(codes) = &when.latest_action_in {
            match actions.first() {
                Some(latest) if codes.contains(&latest.code()) => {}
                _ => return false,
            }
        }
        if let Some(before) = when.before_delivery {
            if before_delivery(actions) != before {
                return false;
            }
        }
        true
    }

    /// The link with `{waybill_id}` and `{openid}` replaced by their URL-encoded values.
    pub fn link_for(&self, waybill_id: &str, openid: &str) -> String {
        // Encoded values contain no braces, so the second replacement cannot hit the first's.
        self.link
            .replace("{waybill_id}", &url_encode(waybill_id))
            .replace("{openid}", &url_encode(openid))
    }
}

/// No delivery step and no terminal exception yet.
fn before_delivery(actions: &[ActionType]) -> bool {
    !actions
        .iter()
        .any(|a| (300_002..=300_007).contains(&a.code()) || a.is_terminal())
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a value is safe in a
/// path segment, a query value or a fragment alike.
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Validates a whole list: every cell, at most [`MAX_CELLS`], keys unique. Field names are
/// `{prefix}[i].key` and so on, so the config loader and the API name the same field.
pub fn parse_cells(inputs: &[CellInput], prefix: &str) -> Result<Vec<Cell>, Vec<FieldError>> {
    let mut errors = Errors::default();
    if inputs.len() > MAX_CELLS {
        errors.add(prefix, format!("at most {MAX_CELLS} cells are allowed"));
    }
    let mut cells = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let field = format!("{prefix}[{i}]");
        if let Some(cell) = parse_one(input, &field, &mut errors) {
            if cells.iter().any(|c: &Cell| c.key == cell.key) {
                errors.add(
                    format!("{field}.key"),
                    format!("{:?} is used by an earlier cell", cell.key),
                );
            }
            cells.push(cell);
        }
    }
    errors.finish(|| cells)
}

fn parse_one(input: &CellInput, field: &str, all: &mut Errors) -> Option<Cell> {
    let mut errors = Errors::default();
    let key_field = format!("{field}.key");
    let key = text(
        &mut errors,
        &key_field,
        input.key.as_deref(),
        KEY_MAX_CHARS,
        true,
    );
    if key.as_deref().is_some_and(|k| {
        !k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    }) {
        errors.add(
            &key_field,
            "may contain only letters, digits, '_', '-' and '.'",
        );
    }
    let name = text(
        &mut errors,
        &format!("{field}.name"),
        input.name.as_deref(),
        NAME_MAX_CHARS,
        true,
    );
    let link_field = format!("{field}.link");
    let link = text(
        &mut errors,
        &link_field,
        input.link.as_deref(),
        LINK_MAX_CHARS,
        true,
    );
    if let Some(Err(m)) = link.as_deref().map(check_link) {
        errors.add(&link_field, m);
    }
    if let Some(codes) = input
        .when
        .as_ref()
        .and_then(|w| w.latest_action_in.as_ref())
    {
        let codes_field = format!("{field}.when.latest_action_in");
        if codes.is_empty() {
            errors.add(&codes_field, "must list at least one action_type");
        }
        for code in codes.iter().filter(|c| ActionType::parse(**c).is_none()) {
            errors.add(
                &codes_field,
                format!("{code} is not an action_type in WeChat's table"),
            );
        }
    }
    let ok = errors.is_empty();
    for e in errors.into_vec() {
        all.add(e.field, e.message);
    }
    match (ok, key, name, link) {
        (true, Some(key), Some(name), Some(link)) => Some(Cell {
            key,
            name,
            link,
            when: input.when.clone(),
        }),
        _ => None,
    }
}

/// A link is an absolute http(s) URL with a host; placeholders are known ones and appear
/// only after the host (a value must never choose where the user is sent).
fn check_link(link: &str) -> Result<(), String> {
    let mut rest = link;
    let mut first_placeholder = None;
    let mut offset = 0;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err("has a '}' without its '{'".into());
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "has a '{' without its '}'".to_string())?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "has an unknown placeholder {{{name}}}; known: {{waybill_id}}, {{openid}}"
            ));
        }
        first_placeholder.get_or_insert(offset + open);
        offset += open + 1 + close + 1;
        rest = &after[close + 1..];
    }
    let sample = link.replace("{waybill_id}", "x").replace("{openid}", "x");
    let url = url::Url::parse(&sample).map_err(|_| "is not an absolute URL".to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("must be an http(s) URL with a host".into());
    }
    if let Some(at) = first_placeholder {
        let authority_end = link
            .split_once("://")
            .map(|(scheme, rest)| {
                scheme.len() + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len())
            })
            .unwrap_or(0);
        if at < authority_end {
            return Err("may use placeholders only in the path, query or fragment".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(key: &str, link: &str, when: Option<CellCondition>) -> CellInput {
        CellInput {
            key: Some(key.into()),
            name: Some("支付运单".into()),
            link: Some(link.into()),
            when,
        }
    }

    fn actions(codes: &[i64]) -> Vec<ActionType> {
        codes
            .iter()
            .map(|c| ActionType::parse(*c).unwrap())
            .collect()
    }

    #[test]
    fn a_good_list_parses_and_keeps_its_order() {
        let cells = parse_cells(
            &[
                input(
                    "pay",
                    "https://c.example/pay?w={waybill_id}&u={openid}",
                    None,
                ),
                input("complain", "https://c.example/complain/{waybill_id}", None),
            ],
            "cells",
        )
        .unwrap();
        assert_eq!(cells[0].key(), "pay");
        assert_eq!(cells[1].key(), "complain");
    }

    #[test]
    fn every_bad_field_is_named() {
        let errs = parse_cells(
            &[
                input("k".repeat(21).as_str(), "ftp://x/y", None),
                CellInput::default(),
                input(
                    "dup",
                    "https://x/{nope}",
                    Some(CellCondition {
                        latest_action_in: Some(vec![1]),
                        ..Default::default()
                    }),
                ),
                input("dup", "https://x/", None),
                input("dup", "https://x/", None),
            ],
            "cells",
        )
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "cells[0].key",
                "cells[0].link",
                "cells[1].key",
                "cells[1].name",
                "cells[1].link",
                "cells[2].link",
                "cells[2].when.latest_action_in",
                "cells[4].key",
            ],
            "{errs:?}"
        );
        assert!(errs[0].message.contains("20"), "{errs:?}");
    }

    #[test]
    fn placeholders_cannot_choose_the_host() {
        for bad in [
            "https://{waybill_id}.example/",
            "https://example{openid}/x",
            "javascript:alert(1)//{waybill_id}",
            "https://x/{waybill_id",
            "https://x/}",
            "/relative/{waybill_id}",
        ] {
            assert!(check_link(bad).is_err(), "{bad} accepted");
        }
        assert!(check_link("https://x.example/p/{waybill_id}#u={openid}").is_ok());
        assert!(check_link("http://x.example?w={waybill_id}").is_ok());
    }

    #[test]
    fn links_carry_url_encoded_values() {
        let cells = parse_cells(
            &[input(
                "pay",
                "https://x.example/p/{waybill_id}?u={openid}",
                None,
            )],
            "cells",
        )
        .unwrap();
        assert_eq!(
            cells[0].link_for("SF1", "o&x=1 {waybill_id}"),
            "https://x.example/p/SF1?u=o%26x%3D1%20%7Bwaybill_id%7D"
        );
    }

    #[test]
    fn conditions_follow_the_waybill_state() {
        let pay = parse_cells(
            &[input(
                "pay",
                "https://x/",
                Some(CellCondition {
                    latest_action_in: Some(vec![90010]),
                    before_delivery: None,
                }),
            )],
            "c",
        )
        .unwrap()
        .remove(0);
        assert!(pay.applies(&actions(&[90010, 90001])));
        assert!(!pay.applies(&actions(&[90011, 90010])));
        assert!(!pay.applies(&[]));

        let change = parse_cells(
            &[input(
                "addr",
                "https://x/",
                Some(CellCondition {
                    latest_action_in: None,
                    before_delivery: Some(true),
                }),
            )],
            "c",
        )
        .unwrap()
        .remove(0);
        assert!(change.applies(&[]));
        assert!(change.applies(&actions(&[200001, 100001])));
        assert!(!change.applies(&actions(&[300002, 200001])));
        assert!(!change.applies(&actions(&[400001])));
        // Once out for delivery, a later exception does not make it "before delivery" again.
        assert!(!change.applies(&actions(&[400002, 300002])));

        let always = parse_cells(&[input("c", "https://x/", None)], "c")
            .unwrap()
            .remove(0);
        assert!(always.applies(&[]));
        assert!(always.applies(&actions(&[300003])));
    }
}
