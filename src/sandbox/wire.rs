//! The sandbox's wire types: a path node as `pathnotify` carries it, the validated push the
//! reverse query asks about, a node in a user's inbox, and the fixed names of the reverse
//! query's event. Every other file of the sandbox reads these; this one reads none of them.

use serde::{Deserialize, Serialize};

use crate::domain::{mask_phone_str, mask_phones_in_text};

/// `FromUserName` of every reverse query: the fixed openid of the WeChat team (spec §4.1,
/// from the official example).
pub const WECHAT_TEAM_OPENID: &str = "oHt_80DRclK4qjKfdYnPg6RxxsNI";
pub const EVENT: &str = "waybill_notify_query";

/// One path node as `pathnotify` sends it and the reverse-query reply must echo it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathNode {
    pub action_type: i64,
    pub action_time: i64,
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

impl std::fmt::Debug for PathNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathNode")
            .field("action_type", &self.action_type)
            .field("action_time", &self.action_time)
            .field("action_msg", &mask_phones_in_text(&self.action_msg))
            .finish_non_exhaustive()
    }
}

/// A node delivered to a bound user: what `GET /sandbox/inbox/{phone}` lists, oldest first.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxNode {
    pub waybill_id: String,
    pub action_type: i64,
    pub action_time: i64,
    pub action_msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_courier_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_courier_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_courier_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_courier_phone: Option<String>,
    /// The waybill's `create_time` from the push.
    pub create_time: i64,
    /// Sandbox time of delivery.
    pub delivered_at: i64,
}

impl std::fmt::Debug for InboxNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxNode")
            .field("waybill_id", &self.waybill_id)
            .field("action_type", &self.action_type)
            .field("action_time", &self.action_time)
            .field("action_msg", &mask_phones_in_text(&self.action_msg))
            .finish_non_exhaustive()
    }
}

/// A validated `pathnotify` body: what the reverse query asks about and must confirm.
#[derive(Clone)]
pub struct PathNotify {
    pub waybill_id: String,
    pub create_time: i64,
    pub sender_phone: Option<String>,
    pub receiver_phone: String,
    pub node: PathNode,
}

impl std::fmt::Debug for PathNotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathNotify")
            .field("waybill_id", &self.waybill_id)
            .field("receiver_phone", &mask_phone_str(&self.receiver_phone))
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl PathNotify {
    pub fn inbox_node(&self, delivered_at: i64) -> InboxNode {
        let n = self.node.clone();
        InboxNode {
            waybill_id: self.waybill_id.clone(),
            action_type: n.action_type,
            action_time: n.action_time,
            action_msg: n.action_msg,
            pickup_courier_name: n.pickup_courier_name,
            pickup_courier_phone: n.pickup_courier_phone,
            delivery_courier_name: n.delivery_courier_name,
            delivery_courier_phone: n.delivery_courier_phone,
            create_time: self.create_time,
            delivered_at,
        }
    }
}
