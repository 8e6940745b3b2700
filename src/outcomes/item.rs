//! An outcome as the carrier sees it, in the feed and in webhook bodies alike, and the
//! feed's opaque cursor.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{FeedPosition, Outcome, OutcomeKind, OutcomeRecord};

/// The app every outcome belongs to until several mini programs share a gateway.
pub const DEFAULT_APP: &str = "default";

/// One accepted event's (or notification's) final outcome. No phone number, masked or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "out_1042", "kind": "push", "app": "default", "waybill_id": "SF1234567890",
    "action_type": 200001, "action_time": 1_732_403_700, "ref": "scan-88213",
    "outcome": "unbound", "sms_fallback": true,
    "reason": {"code": "unbound", "errcode": null, "errmsg": null, "rid": null},
    "attempts": 0, "decided_at": 1_732_403_701_250_i64
}))]
pub struct OutcomeItem {
    /// stable: the same in the feed, in every webhook body and in a replay
    pub id: String,
    pub kind: OutcomeKind,
    /// the mini program (brand) that pushed it
    pub app: String,
    pub waybill_id: String,
    pub action_type: i64,
    /// Unix s, the event's
    pub action_time: i64,
    /// the event's `ref` as ingested
    #[serde(rename = "ref")]
    #[schema(rename = "ref")]
    pub carrier_ref: Option<String>,
    pub outcome: Outcome,
    /// true exactly for `unbound` and `dead`: send the SMS
    pub sms_fallback: bool,
    pub reason: ReasonView,
    /// tries made (calls to WeChat recorded for the entry)
    pub attempts: i64,
    /// Unix ms
    pub decided_at: i64,
}

/// Why: a one-word code, and WeChat's last answer when there was one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReasonView {
    /// `delivered`, `unbound`, `stale`, `coalesced`, `no_consent`, `deadline`, `refused`,
    /// `template_error`, `retries_spent`, `unreadable`, `unanswered`
    pub code: String,
    pub errcode: Option<i64>,
    /// WeChat's errmsg or the failure, phones masked
    pub errmsg: Option<String>,
    /// WeChat's request id, for its support (`wxexpress wechat rid`)
    pub rid: Option<String>,
}

impl From<&OutcomeRecord> for OutcomeItem {
    fn from(r: &OutcomeRecord) -> OutcomeItem {
        OutcomeItem {
            id: format!("out_{}", r.outbox_id),
            kind: r.kind,
            app: DEFAULT_APP.to_string(),
            waybill_id: r.waybill_id.clone(),
            action_type: r.action_type,
            action_time: r.action_time,
            carrier_ref: r.carrier_ref.clone(),
            outcome: r.outcome,
            sms_fallback: r.outcome.sms_fallback(),
            reason: ReasonView {
                code: r.reason_code.clone(),
                errcode: r.errcode,
                errmsg: r.errmsg.clone(),
                rid: r.rid.clone(),
            },
            attempts: r.attempts,
            decided_at: r.decided_at,
        }
    }
}

const CURSOR_VERSION: &str = "v1";

/// The opaque cursor of a feed position.
pub fn encode_cursor(p: FeedPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}:{}:{}", p.xid, p.id))
}

/// A cursor handed out by [`encode_cursor`]; `None` for anything else.
pub fn decode_cursor(s: &str) -> Option<FeedPosition> {
    if s.len() > 64 {
        return None;
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
    let mut parts = text.split(':');
    if parts.next()? != CURSOR_VERSION {
        return None;
    }
    let xid: i64 = parts.next()?.parse().ok()?;
    let id: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || xid < 0 || id < 0 {
        return None;
    }
    Some(FeedPosition { xid, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_decodes_to_the_position_it_encodes_and_nothing_else_decodes() {
        for p in [
            FeedPosition { xid: 0, id: 0 },
            FeedPosition { xid: 0, id: 42 },
            FeedPosition {
                xid: 9_000_000_000,
                id: i64::MAX,
            },
        ] {
            assert_eq!(decode_cursor(&encode_cursor(p)), Some(p));
        }
        for bad in ["", "42", "djE6MDo", "!!", &"A".repeat(65)] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
        // v1:0:-1 and v2:0:1
        for text in ["v1:0:-1", "v2:0:1", "v1:0:1:2", "v1:x:1"] {
            assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode(text)), None, "{text}");
        }
    }
}
