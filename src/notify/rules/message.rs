//! What a message is built from (a waybill, its event, the rule's recipient), the built
//! message, and the `{status}` phrases.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::template::Field;
use crate::domain::{ActionType, Contacts, NodeText};
use crate::notify::values;

/// What a message is built from.
pub struct MessageContext<'a> {
    pub waybill_id: &'a str,
    pub action_type: ActionType,
    /// Unix s.
    pub action_time: i64,
    /// Unix s.
    pub create_time: i64,
    pub text: &'a NodeText,
    pub contacts: Option<&'a Contacts>,
    /// Fen.
    pub total_fee: Option<i64>,
    pub out_trade_no: Option<&'a str>,
}

impl MessageContext<'_> {
    pub(super) fn value(&self, f: Field, phrases: &BTreeMap<i64, String>) -> String {
        let t = self.text;
        match f {
            Field::WaybillId => self.waybill_id.to_string(),
            Field::ActionType => self.action_type.code().to_string(),
            Field::Status => status_phrase(self.action_type, phrases),
            Field::Stage => self.action_type.stage().to_string(),
            Field::ActionMsg => t.action_msg.clone(),
            Field::ActionTime => values::format_time(self.action_time),
            Field::ActionDate => values::format_date(self.action_time),
            Field::CreateTime => values::format_time(self.create_time),
            Field::Courier => t
                .delivery_courier_name
                .clone()
                .or_else(|| t.pickup_courier_name.clone())
                .unwrap_or_default(),
            Field::CourierPhone => t
                .delivery_courier_phone
                .clone()
                .or_else(|| t.pickup_courier_phone.clone())
                .unwrap_or_default(),
            Field::SenderCity => self
                .contacts
                .map(|c| c.sender.city.clone())
                .unwrap_or_default(),
            Field::ReceiverCity => self
                .contacts
                .map(|c| c.receiver.city.clone())
                .unwrap_or_default(),
            Field::Freight => self
                .total_fee
                .map(values::format_amount)
                .unwrap_or_default(),
            Field::OutTradeNo => self.out_trade_no.unwrap_or_default().to_string(),
        }
    }
}

/// A built message, ready to be addressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub data: Map<String, Value>,
    pub page: Option<String>,
}

/// The built-in `{status}` phrases: at most 5 Chinese characters each (a `phrase`).
pub fn default_status_phrase(action_type: ActionType) -> &'static str {
    match action_type.code() {
        90001 => "已接单",
        90002 | 90003 => "待揽件",
        90010 => "待支付",
        90011 => "已支付",
        100001 => "已揽件",
        100002 => "揽件失败",
        200001 => "运输中",
        300002 => "派送中",
        300003 => "已签收",
        300004 => "签收失败",
        300005 => "待取件",
        300006 => "重新派送",
        300007 => "已代签收",
        400001 => "已取消",
        400002 => "滞留中",
        400003 => "已退回",
        400004 => "已拒收",
        400005 => "问题件",
        _ => "状态更新",
    }
}

pub(super) fn status_phrase(action_type: ActionType, phrases: &BTreeMap<i64, String>) -> String {
    phrases
        .get(&action_type.code())
        .cloned()
        .unwrap_or_else(|| default_status_phrase(action_type).to_string())
}
