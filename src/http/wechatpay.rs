//! `POST /wechatpay/notify`: WeChat Pay v2 payment-result notifications for a waybill's
//! freight (spec `wechatpay-v2-notify.md` §2.6, §3). Not under `/v1`: WeChat Pay calls it,
//! without a bearer key; the signature is the authentication.
//!
//! Checks in order: body size, safe XML, `return_code`, signature (MD5 or HMAC-SHA256 with
//! `wechatpay.api_key`, constant time), appid and mch_id, `result_code`, currency, the
//! waybill found by `out_trade_no` and its freight equal to `total_fee`. Then, once per
//! `transaction_id` however often WeChat repeats it, a 90011 (paid) event is recorded through
//! the normal event path (it flows to pathnotify and the notification rules like any event).
//! Every rejection answers `FAIL`, is logged, and changes nothing; WeChat Pay delivers again.

use actix_web::{web, HttpRequest, HttpResponse};

use super::body::read_limited;
use super::AppState;
use crate::clock::{now_ms, now_secs};
use crate::codec;
use crate::domain::{ActionType, NodeText, TrackingEvent, WaybillId};
use crate::notify::pay::{self, PayError};
use crate::notify::values::format_amount;
use crate::store::{NewPayment, PaymentInsert};

/// Notifications are a few hundred bytes; the spec suggests a 64 KiB cap.
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/wechatpay/notify", web::post().to(notify));
}

fn xml(success: bool, msg: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/xml; charset=utf-8")
        .body(pay::reply(success, msg))
}

/// A rejection: the reply's `return_msg`, and what the log says.
struct Reject {
    msg: &'static str,
    why: String,
}

fn reject(msg: &'static str, why: impl Into<String>) -> Reject {
    Reject {
        msg,
        why: why.into(),
    }
}

async fn notify(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let body = match read_limited(&req, payload, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            tracing::warn!(
                limit = BODY_LIMIT,
                "wechatpay notification refused: body too large or unreadable"
            );
            return xml(false, "参数格式校验错误");
        }
    };
    match handle(&state, &body).await {
        Ok(msg) => xml(true, msg),
        Err(r) => {
            tracing::warn!(reason = %r.why, "wechatpay notification refused");
            xml(false, r.msg)
        }
    }
}

async fn handle(state: &AppState, body: &[u8]) -> Result<&'static str, Reject> {
    let settings = &state.settings;
    let Some(key) = settings.wechatpay.api_key.as_ref() else {
        return Err(reject("未配置", "wechatpay.api_key is not configured"));
    };
    let fields = pay::parse_xml(body).map_err(|e| reject("参数格式校验错误", e.to_string()))?;
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    if field("return_code") != "SUCCESS" {
        return Err(reject(
            "return_code不是SUCCESS",
            "return_code is not SUCCESS (a communication failure message)",
        ));
    }
    let (out_trade_no, transaction_id) = (field("out_trade_no"), field("transaction_id"));
    if let Err(e) = pay::verify(&fields, key.expose()) {
        let why = match e {
            PayError::BadSignature => "bad signature".to_string(),
            other => other.to_string(),
        };
        tracing::warn!(out_trade_no, transaction_id, outcome = %why, "wechatpay signature check failed");
        return Err(reject("签名失败", why));
    }
    if field("appid") != settings.wechat.appid
        || settings
            .wechatpay
            .mch_id
            .as_deref()
            .is_some_and(|m| m != field("mch_id"))
    {
        return Err(reject(
            "appid或mch_id不符",
            format!("appid/mch_id are not ours (out_trade_no {out_trade_no})"),
        ));
    }
    if field("result_code") != "SUCCESS" {
        // A verified report of a failed payment: received and checked, nothing to record.
        tracing::info!(
            out_trade_no,
            transaction_id,
            err_code = field("err_code"),
            "wechatpay reports a failed payment; nothing recorded"
        );
        return Ok("OK");
    }
    if !matches!(field("fee_type"), "" | "CNY") {
        return Err(reject("币种不符", "fee_type is not CNY"));
    }
    if transaction_id.is_empty() || transaction_id.len() > 32 || out_trade_no.is_empty() {
        return Err(reject(
            "参数格式校验错误",
            "transaction_id or out_trade_no missing",
        ));
    }
    let total_fee: i64 = field("total_fee")
        .parse()
        .map_err(|_| reject("参数格式校验错误", "total_fee is not an integer"))?;

    let mut waybills = state
        .store
        .find_waybills_by_out_trade_no(out_trade_no)
        .await
        .map_err(|e| reject("系统繁忙", format!("store: {e}")))?;
    if waybills.len() != 1 {
        return Err(reject(
            "订单不存在",
            format!(
                "out_trade_no {out_trade_no} matches {} waybills",
                waybills.len()
            ),
        ));
    }
    let record = waybills.remove(0);
    if record.payment_total_fee != Some(total_fee) {
        tracing::warn!(
            waybill_id = %record.waybill_id,
            out_trade_no,
            transaction_id,
            total_fee,
            expected = record.payment_total_fee,
            "wechatpay amount does not match the waybill's freight: not marked paid"
        );
        return Err(reject("金额不符", "total_fee differs from the freight"));
    }
    let id = WaybillId::parse(&record.waybill_id)
        .map_err(|e| reject("系统繁忙", format!("stored waybill id: {e}")))?;
    let now = now_secs();
    let action_time = pay::parse_time_end(field("time_end"))
        .filter(|t| (946_684_800..=now + 300).contains(t))
        .unwrap_or(now);
    let event = TrackingEvent {
        action_type: ActionType::PAID,
        action_time,
        text: NodeText {
            action_msg: format!("运费已支付{}", format_amount(total_fee)),
            ..NodeText::default()
        },
        carrier_ref: None,
    };
    let received_at = now_ms();
    let new_event = codec::new_event(&state.privacy, &id, &event, received_at);
    let payment = NewPayment {
        transaction_id: transaction_id.to_string(),
        waybill_id: record.waybill_id.clone(),
        out_trade_no: out_trade_no.to_string(),
        total_fee,
        received_at,
    };
    match state
        .store
        .record_payment(&payment, &new_event, settings.notifications.plan())
        .await
    {
        Ok(PaymentInsert::Recorded { event }) => {
            tracing::info!(waybill_id = %id, transaction_id, event_id = event.id(), "freight paid: 90011 recorded");
        }
        Ok(PaymentInsert::Repeat) => {
            tracing::info!(waybill_id = %id, transaction_id, "repeated wechatpay notification: already recorded");
        }
        Err(e) => return Err(reject("系统繁忙", format!("store: {e}"))),
    }
    Ok("OK")
}
