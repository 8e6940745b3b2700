//! `GET /v1/waybills/{waybill_id}`: a waybill read back with its path, its notifications
//! (with every attempt) and WeChat's reverse queries about it. Phone numbers are masked,
//! in the contacts, the couriers' numbers and the step texts alike.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::require_bearer;
use super::path::{waybill_id, WaybillPath};
use super::problem::Problem;
use super::AppState;
use crate::codec;
use crate::domain::{mask_phone_str, mask_phones_in_text, Contact};
use crate::store::{AttemptRecord, EntryKind, EntryState, ExchangeRecord, OutboxEntry, SkipReason};

/// A waybill as stored, phones masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaybillView {
    pub waybill_id: String,
    /// Unix s
    pub create_time: i64,
    pub sender: ContactView,
    pub receiver: ContactView,
    pub openids: OpenidsView,
    pub payment: Option<PaymentView>,
    /// Every recorded step, newest first (by `action_time`), as WeChat shows them.
    pub path: Vec<PathNodeView>,
    /// Every push and notification of the waybill, with its attempts.
    pub notifications: Vec<NotificationView>,
    /// WeChat's reverse queries about the waybill, as answered.
    pub callbacks: Vec<CallbackView>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A contact, its phone masked (`138****8000`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactView {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub province: String,
    pub city: String,
    pub area: String,
    pub street: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenidsView {
    pub sender: Option<String>,
    pub receiver: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub out_trade_no: String,
    /// fen
    pub total_fee: Option<i64>,
}

/// One step of the path, phone numbers masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct PathNodeView {
    pub event_id: i64,
    pub action_type: i64,
    /// Unix s
    pub action_time: i64,
    pub action_msg: String,
    pub pickup_courier_name: Option<String>,
    pub pickup_courier_phone: Option<String>,
    pub delivery_courier_name: Option<String>,
    pub delivery_courier_phone: Option<String>,
    pub received_at_ms: i64,
}

/// One push (`pathnotify`) or shipping notification.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    /// the id `POST /v1/notifications/{id}/retry` takes
    pub id: i64,
    pub kind: EntryKind,
    pub event_id: Option<i64>,
    pub action_time: i64,
    pub state: EntryState,
    pub skip_reason: Option<SkipReason>,
    /// failed tries so far
    pub tries: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub done_at_ms: Option<i64>,
    pub attempts: Vec<AttemptView>,
}

/// One call to WeChat for a notification.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub http_status: Option<i64>,
    pub errcode: Option<i64>,
    /// WeChat's request id, for `wxexpress wechat rid`
    pub rid: Option<String>,
    pub outcome: String,
    pub detail: String,
}

/// One reverse query WeChat made, and how it was answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackView {
    pub received_at_ms: i64,
    pub event: String,
    pub result_code: i64,
    pub summary: String,
    pub duration_us: i64,
}

/// The waybill, its path, its notifications and WeChat's reverse queries.
#[utoipa::path(
    get,
    path = "/v1/waybills/{waybill_id}",
    tag = "waybills",
    params(WaybillPath),
    responses(
        (status = 200, description = "The waybill", body = WaybillView),
        (status = 404, description = "No such waybill"),
        (status = 422, description = "The waybill id is invalid"),
    )
)]
pub(crate) async fn get_waybill(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    require_bearer(&req, &state.settings.api_keys)?;
    let id = waybill_id(&path)?;
    let Some(record) = state.store.get_waybill(id.as_str()).await? else {
        return Err(Problem::not_found(format!("waybill {id} does not exist")));
    };
    let contacts = codec::open_contacts(&state.privacy, &record).map_err(|e| {
        tracing::error!(waybill_id = %id, error = %e, "cannot open stored contacts");
        Problem::internal()
    })?;
    let mut path_view = Vec::new();
    for ev in state.store.list_events(id.as_str()).await? {
        let node = codec::open_node(&state.privacy, &ev).map_err(|_| Problem::internal())?;
        let t = node.text;
        path_view.push(PathNodeView {
            event_id: ev.id,
            action_type: node.action_type,
            action_time: node.action_time,
            action_msg: mask_phones_in_text(&t.action_msg),
            pickup_courier_name: t.pickup_courier_name,
            pickup_courier_phone: t.pickup_courier_phone.as_deref().map(mask_phone_str),
            delivery_courier_name: t.delivery_courier_name,
            delivery_courier_phone: t.delivery_courier_phone.as_deref().map(mask_phone_str),
            received_at_ms: ev.received_at,
        });
    }
    let mut notifications = Vec::new();
    for n in state.store.list_outbox(id.as_str()).await? {
        let attempts = state.store.list_attempts(n.id).await?;
        notifications.push(notification_view(n, attempts));
    }
    let callbacks = state
        .store
        .list_exchanges(id.as_str())
        .await?
        .into_iter()
        .map(callback_view)
        .collect();
    Ok(HttpResponse::Ok().json(WaybillView {
        waybill_id: record.waybill_id,
        create_time: record.create_time,
        sender: contact_view(&contacts.sender),
        receiver: contact_view(&contacts.receiver),
        openids: OpenidsView {
            sender: record.sender_openid,
            receiver: record.receiver_openid,
        },
        payment: record.payment_out_trade_no.map(|out_trade_no| PaymentView {
            out_trade_no,
            total_fee: record.payment_total_fee,
        }),
        path: path_view,
        notifications,
        callbacks,
        created_at_ms: record.created_at,
        updated_at_ms: record.updated_at,
    }))
}

fn notification_view(n: OutboxEntry, attempts: Vec<AttemptRecord>) -> NotificationView {
    NotificationView {
        id: n.id,
        kind: n.kind,
        event_id: n.event_id,
        action_time: n.action_time,
        state: n.state,
        skip_reason: n.skip_reason,
        tries: n.tries,
        next_attempt_at_ms: n.next_attempt_at,
        last_error: n.last_error,
        created_at_ms: n.created_at,
        done_at_ms: n.done_at,
        attempts: attempts
            .into_iter()
            .map(|a| AttemptView {
                started_at_ms: a.started_at,
                duration_ms: a.duration_ms,
                http_status: a.http_status,
                errcode: a.errcode,
                rid: a.rid,
                outcome: a.outcome,
                detail: a.detail,
            })
            .collect(),
    }
}

fn callback_view(x: ExchangeRecord) -> CallbackView {
    CallbackView {
        received_at_ms: x.received_at,
        event: x.event,
        result_code: x.result_code,
        summary: x.summary,
        duration_us: x.duration_us,
    }
}

fn contact_view(c: &Contact) -> ContactView {
    ContactView {
        name: c.name.clone(),
        phone: c.masked_phone(),
        province: c.province.clone(),
        city: c.city.clone(),
        area: c.area.clone(),
        street: c.street.clone(),
        address: c.address.clone(),
    }
}
