//! Converts domain values to sealed store records and back. The only place that knows which
//! fields are sealed with the data key: contacts and node text are, ids, times and action
//! types are not (they are needed for ordering and deduplication).

use crate::domain::{Contacts, NodeText, TrackingEvent, Waybill, WaybillId};
use crate::privacy::{Privacy, PrivacyError};
use crate::store::{EventRecord, NewEvent, WaybillRecord};
use crate::wechat::reverse_query::PathNode;

/// Seal a validated waybill for the store. `now_ms` becomes `created_at`/`updated_at`
/// (the store keeps the original `created_at` on update).
pub fn waybill_record(privacy: &Privacy, w: &Waybill, now_ms: i64) -> WaybillRecord {
    let c = &w.contacts;
    WaybillRecord {
        waybill_id: w.id.as_str().to_string(),
        create_time: w.create_time,
        contacts: privacy.seal_json(c),
        receiver_phone_hash: privacy.phone_hash(c.receiver.phone.as_deref().unwrap_or_default()),
        sender_phone_hash: c.sender.phone.as_deref().map(|p| privacy.phone_hash(p)),
        sender_openid: w.sender_openid.clone(),
        receiver_openid: w.receiver_openid.clone(),
        payment_out_trade_no: w.payment_out_trade_no.clone(),
        payment_total_fee: w.payment_total_fee,
        created_at: now_ms,
        updated_at: now_ms,
    }
}

pub fn open_contacts(privacy: &Privacy, r: &WaybillRecord) -> Result<Contacts, PrivacyError> {
    privacy.open_json(&r.contacts)
}

pub fn new_event(privacy: &Privacy, id: &WaybillId, e: &TrackingEvent, now_ms: i64) -> NewEvent {
    NewEvent {
        waybill_id: id.as_str().to_string(),
        action_type: e.action_type.code(),
        action_time: e.action_time,
        payload: privacy.seal_json(&e.text),
        received_at: now_ms,
        carrier_ref: e.carrier_ref.clone(),
    }
}

pub fn open_node(privacy: &Privacy, r: &EventRecord) -> Result<PathNode, PrivacyError> {
    let text: NodeText = privacy.open_json(&r.payload)?;
    Ok(PathNode {
        action_type: r.action_type,
        action_time: r.action_time,
        text,
    })
}
