//! Tracking events: one step of a waybill's path (the `PathNode` of `pathnotify`).

use serde::{Deserialize, Serialize};

use super::action::ActionType;
use super::phone::Phone;
use super::validation::{text, unix_time, Errors, FieldError};

// Every field is optional to serde so that one answer can name every missing field; the
// schema (utoipa) says what `TrackingEvent::parse` requires.
/// Body of `POST /v1/waybills/{waybill_id}/events` (and the `event` of a batch line).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    title = "POST /v1/waybills/{waybill_id}/events body",
    example = json!({ "action_type": 300002, "action_time": 1_700_003_600, "action_msg": "快件正在派送中，派件员：王五 13900000000", "delivery_courier_name": "王五", "delivery_courier_phone": "13900000000" })
)]
pub struct EventInput {
    #[schema(required = true, nullable = false, schema_with = super::action::action_type_schema)]
    #[serde(default, deserialize_with = "crate::domain::strict::integer")]
    pub action_type: Option<i64>,
    /// Unix seconds; at most one day ahead
    #[schema(required = true, nullable = false, minimum = 946_684_800)]
    #[serde(default, deserialize_with = "crate::domain::strict::integer")]
    pub action_time: Option<i64>,
    #[schema(required = true, nullable = false, min_length = 1, max_length = 256)]
    pub action_msg: Option<String>,
    #[schema(max_length = 32)]
    pub pickup_courier_name: Option<String>,
    /// a phone number, or an outlet's service number (5 to 20 digits and dashes)
    #[schema(max_length = 32)]
    pub pickup_courier_phone: Option<String>,
    #[schema(max_length = 32)]
    pub delivery_courier_name: Option<String>,
    /// a phone number, or an outlet's service number (5 to 20 digits and dashes)
    #[schema(max_length = 32)]
    pub delivery_courier_phone: Option<String>,
    /// the carrier's own id for the event (an SMS job, a scan id), kept and echoed on the
    /// event's outcome
    #[serde(rename = "ref")]
    #[schema(rename = "ref", max_length = 64)]
    pub carrier_ref: Option<String>,
}

/// The text part of a node: what is sent to WeChat byte for byte and stored encrypted
/// (courier phones are personal data, and `action_msg` often contains them).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeText {
    pub action_msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_courier_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_courier_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_courier_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_courier_phone: Option<String>,
}

impl std::fmt::Debug for NodeText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeText")
            .field("action_msg_chars", &self.action_msg.chars().count())
            .finish_non_exhaustive()
    }
}

/// A validated tracking event (one path node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingEvent {
    pub action_type: ActionType,
    pub action_time: i64,
    pub text: NodeText,
    /// The carrier's `ref` (not sent to WeChat, not sealed: it names the carrier's own job).
    pub carrier_ref: Option<String>,
}

/// A `ref` is at most this long.
pub const REF_MAX_CHARS: usize = 64;

/// `action_msg` is shown on WeChat's track page; 256 characters is far above any real scan text.
pub const ACTION_MSG_MAX_CHARS: usize = 256;

impl TrackingEvent {
    pub fn parse(
        input: &EventInput,
        now: i64,
        prefix: &str,
    ) -> Result<TrackingEvent, Vec<FieldError>> {
        let mut e = Errors::default();
        let f = |k: &str| format!("{prefix}{k}");
        let action_type = match input.action_type {
            None => {
                e.add(f("action_type"), "is required");
                None
            }
            Some(code) => {
                let t = ActionType::from_input(code);
                if t.is_none() {
                    e.add(
                        f("action_type"),
                        format!("{code} is not in WeChat's action_type table"),
                    );
                }
                t
            }
        };
        let action_time = unix_time(&mut e, &f("action_time"), input.action_time, now);
        let action_msg = text(
            &mut e,
            &f("action_msg"),
            input.action_msg.as_deref(),
            ACTION_MSG_MAX_CHARS,
            true,
        );
        let pickup_courier_name = text(
            &mut e,
            &f("pickup_courier_name"),
            input.pickup_courier_name.as_deref(),
            32,
            false,
        );
        let pickup_courier_phone = courier_phone(
            &mut e,
            &f("pickup_courier_phone"),
            input.pickup_courier_phone.as_deref(),
        );
        let delivery_courier_name = text(
            &mut e,
            &f("delivery_courier_name"),
            input.delivery_courier_name.as_deref(),
            32,
            false,
        );
        let delivery_courier_phone = courier_phone(
            &mut e,
            &f("delivery_courier_phone"),
            input.delivery_courier_phone.as_deref(),
        );
        let carrier_ref = text(
            &mut e,
            &f("ref"),
            input.carrier_ref.as_deref(),
            REF_MAX_CHARS,
            false,
        );
        if !e.is_empty() {
            return Err(e.into_vec());
        }
        Ok(TrackingEvent {
            carrier_ref,
            action_type: action_type.expect("checked"),
            action_time: action_time.expect("checked"),
            text: NodeText {
                action_msg: action_msg.expect("checked"),
                pickup_courier_name,
                pickup_courier_phone,
                delivery_courier_name,
                delivery_courier_phone,
            },
        })
    }
}

/// Courier phones: validated like any phone, but also short service numbers (e.g. `95338`,
/// `400-111-1111`) that outlets print, so only digits and dashes, 5..=20 characters.
fn courier_phone(e: &mut Errors, field: &str, v: Option<&str>) -> Option<String> {
    let v = v.filter(|s| !s.is_empty())?;
    if let Ok(p) = Phone::parse(v) {
        return Some(p.as_str().to_string());
    }
    let ok = (5..=20).contains(&v.len())
        && v.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        && v.as_bytes()[0].is_ascii_digit();
    if ok {
        Some(v.to_string())
    } else {
        e.add(field, "is not a phone number");
        None
    }
}
