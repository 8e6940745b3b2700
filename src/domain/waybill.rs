//! Waybills: identity, contacts, notification openids and the freight payment.

use serde::{Deserialize, Serialize};

use super::contact::{Contact, ContactInput};
use super::validation::{text, unix_time, Errors, FieldError};

/// A waybill number: 1..=64 characters of `[A-Za-z0-9_-]`. Carriers' numbers are digits and
/// letters; the limit keeps URLs, keys and log lines bounded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct WaybillId(String);

impl WaybillId {
    pub fn parse(s: &str) -> Result<WaybillId, String> {
        if s.is_empty() {
            return Err("is empty".into());
        }
        if s.len() > 64 {
            return Err("is longer than 64 characters".into());
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("may contain only letters, digits, '-' and '_'".into());
        }
        Ok(WaybillId(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WaybillId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The mini program's users to notify of this waybill (shipping notifications).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenidsInput {
    #[schema(pattern = r"^[A-Za-z0-9_-]{0,64}$")]
    pub sender: Option<String>,
    #[schema(pattern = r"^[A-Za-z0-9_-]{0,64}$")]
    pub receiver: Option<String>,
}

/// The freight, when it is paid through WeChat Pay.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentInput {
    #[schema(
        required = true,
        nullable = false,
        pattern = r"^[A-Za-z0-9_|*-]{1,32}$"
    )]
    pub out_trade_no: Option<String>,
    /// fen
    #[schema(required = true, nullable = false, minimum = 1, maximum = 100_000_000)]
    #[serde(default, deserialize_with = "crate::domain::strict::integer")]
    pub total_fee: Option<i64>,
}

/// Body of `PUT /v1/waybills/{waybill_id}` (and the `waybill` of a batch line).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    title = "PUT /v1/waybills/{waybill_id} body",
    example = json!({
        "create_time": 1_700_000_000,
        "sender": { "name": "张三", "phone": "13800138001", "province": "浙江省", "city": "绍兴市", "area": "柯桥区", "address": "纺都路137号" },
        "receiver": { "name": "李四", "phone": "13800138000", "province": "福建省", "city": "泉州市", "area": "晋江市", "address": "庄宅北区158-6" },
        "openids": { "receiver": "oQ3Zs5d9s0aX6bSgxM6MVS5sPLbM" }
    })
)]
pub struct WaybillInput {
    /// Unix seconds; at most one day ahead
    #[schema(required = true, nullable = false, minimum = 946_684_800)]
    #[serde(default, deserialize_with = "crate::domain::strict::integer")]
    pub create_time: Option<i64>,
    #[schema(required = true, nullable = false)]
    #[serde(default, deserialize_with = "crate::domain::strict::object")]
    pub sender: Option<ContactInput>,
    #[schema(required = true, schema_with = super::contact::receiver_schema)]
    #[serde(default, deserialize_with = "crate::domain::strict::object")]
    pub receiver: Option<ContactInput>,
    #[serde(default, deserialize_with = "crate::domain::strict::object")]
    pub openids: Option<OpenidsInput>,
    #[serde(default, deserialize_with = "crate::domain::strict::object")]
    pub payment: Option<PaymentInput>,
}

/// The contacts of a waybill, stored together as one encrypted blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contacts {
    pub sender: Contact,
    pub receiver: Contact,
}

/// A validated waybill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waybill {
    pub id: WaybillId,
    pub create_time: i64,
    pub contacts: Contacts,
    pub sender_openid: Option<String>,
    pub receiver_openid: Option<String>,
    pub payment_out_trade_no: Option<String>,
    pub payment_total_fee: Option<i64>,
}

impl Waybill {
    /// Convert input at the edge; `prefix` names fields inside a batch line (`waybill.`).
    pub fn parse(
        id: WaybillId,
        input: &WaybillInput,
        now: i64,
        prefix: &str,
    ) -> Result<Waybill, Vec<FieldError>> {
        let mut e = Errors::default();
        let f = |k: &str| format!("{prefix}{k}");
        let create_time = unix_time(&mut e, &f("create_time"), input.create_time, now);
        let sender = Contact::parse(&mut e, &f("sender"), input.sender.as_ref(), false);
        let receiver = Contact::parse(&mut e, &f("receiver"), input.receiver.as_ref(), true);
        let openids = input.openids.clone().unwrap_or_default();
        let sender_openid = openid(&mut e, &f("openids.sender"), openids.sender.as_deref());
        let receiver_openid = openid(&mut e, &f("openids.receiver"), openids.receiver.as_deref());
        let (mut out_trade_no, mut total_fee) = (None, None);
        if let Some(p) = &input.payment {
            out_trade_no = text(
                &mut e,
                &f("payment.out_trade_no"),
                p.out_trade_no.as_deref(),
                32,
                true,
            );
            if out_trade_no.as_deref().is_some_and(|s| {
                !s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
            }) {
                e.add(
                    f("payment.out_trade_no"),
                    "may contain only letters, digits and _-|*",
                );
            }
            match p.total_fee {
                Some(fee) if (1..=100_000_000).contains(&fee) => total_fee = Some(fee),
                Some(_) => e.add(
                    f("payment.total_fee"),
                    "must be between 1 and 100000000 fen",
                ),
                None => e.add(f("payment.total_fee"), "is required (fen)"),
            }
        }
        if !e.is_empty() {
            return Err(e.into_vec());
        }
        Ok(Waybill {
            id,
            create_time: create_time.expect("checked: no errors"),
            contacts: Contacts {
                sender: sender.expect("checked"),
                receiver: receiver.expect("checked"),
            },
            sender_openid,
            receiver_openid,
            payment_out_trade_no: out_trade_no,
            payment_total_fee: total_fee,
        })
    }
}

fn openid(e: &mut Errors, field: &str, v: Option<&str>) -> Option<String> {
    let v = v.filter(|s| !s.is_empty())?;
    if v.len() > 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        e.add(field, "is not an openid (1..=64 of [A-Za-z0-9_-])");
        return None;
    }
    Some(v.to_string())
}
