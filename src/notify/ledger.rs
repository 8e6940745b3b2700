//! The consent ledger's edge: what a user accepted in the mini program
//! (`wx.requestSubscribeMessage`) and the legacy form_id/prepay_id credentials, validated and
//! recorded. Used by `POST /v1/subscriptions` and `POST /v1/credentials`, and in-process
//! ([`record_subscriptions`], [`register_credential`]).
//!
//! Consent is only ever taken by the notification worker, one grant or credential use per
//! send, atomically in the store.

use serde::Deserialize;

use crate::domain::FieldError;
use crate::store::{
    CredentialInsert, NewCredential, ReportOutcome, Store, StoreError, SubscriptionGrant,
};

/// A form_id or prepay_id may be used this long after it was issued (spec §1.2).
pub const CREDENTIAL_TTL_SECS: i64 = 7 * 86_400;
/// Most one-time subscriptions of one template in one report.
pub const MAX_COUNT_PER_REPORT: i64 = 100;
/// Most templates in one report.
pub const MAX_TEMPLATES_PER_REPORT: usize = 50;

/// Body of `POST /v1/subscriptions`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "openid": "oQ3Zs5d9s0aX6bSgxM6MVS5sPLbM", "subscriptions": [{ "template_id": "TPL_shipped_0001", "count": 2 }] }))]
pub struct SubscriptionReportInput {
    #[schema(required = true, nullable = false, pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pub openid: Option<String>,
    /// one entry per template, each template once
    #[schema(required = true, nullable = false, min_items = 1, max_items = 50)]
    #[serde(default, deserialize_with = "crate::domain::strict::objects")]
    pub subscriptions: Option<Vec<GrantInput>>,
}

/// What the user accepted for one template.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    #[schema(required = true, nullable = false, pattern = r"^[A-Za-z0-9_-]{1,128}$")]
    pub template_id: Option<String>,
    /// Accepted one-time subscriptions (default 1; 0 records nothing, as for a refusal).
    #[schema(minimum = 0, maximum = 100)]
    #[serde(default, deserialize_with = "crate::domain::strict::integer")]
    pub count: Option<i64>,
    /// A long-term template: unlimited messages.
    pub long_term: Option<bool>,
}

/// A validated subscription report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionReport {
    pub openid: String,
    pub grants: Vec<SubscriptionGrant>,
}

impl SubscriptionReport {
    pub fn parse(input: &SubscriptionReportInput) -> Result<SubscriptionReport, Vec<FieldError>> {
        let mut errors = Vec::new();
        let openid = check_openid(&mut errors, "openid", input.openid.as_deref());
        let mut grants: Vec<SubscriptionGrant> = Vec::new();
        match &input.subscriptions {
            None => errors.push(field("subscriptions", "is required")),
            Some(list) if list.is_empty() => {
                errors.push(field("subscriptions", "lists no template"))
            }
            Some(list) if list.len() > MAX_TEMPLATES_PER_REPORT => errors.push(field(
                "subscriptions",
                format!("lists more than {MAX_TEMPLATES_PER_REPORT} templates"),
            )),
            Some(list) => {
                for (i, g) in list.iter().enumerate() {
                    let at = |k: &str| format!("subscriptions[{i}].{k}");
                    let template_id = check_template_id(
                        &mut errors,
                        &at("template_id"),
                        g.template_id.as_deref(),
                    );
                    let count = g.count.unwrap_or(1);
                    if !(0..=MAX_COUNT_PER_REPORT).contains(&count) {
                        errors.push(field(
                            &at("count"),
                            format!("must be 0..={MAX_COUNT_PER_REPORT}"),
                        ));
                    }
                    if let Some(t) = template_id {
                        if grants.iter().any(|x| x.template_id == t) {
                            errors.push(field(&at("template_id"), "is listed twice"));
                        }
                        grants.push(SubscriptionGrant {
                            template_id: t,
                            count,
                            long_term: g.long_term.unwrap_or(false),
                        });
                    }
                }
            }
        }
        match openid {
            Some(openid) if errors.is_empty() => Ok(SubscriptionReport { openid, grants }),
            _ => Err(errors),
        }
    }
}

/// Body of `POST /v1/credentials`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "openid": "oQ3Zs5d9s0aX6bSgxM6MVS5sPLbM", "kind": "prepay_id", "value": "wx201410272009395522657a690389285100", "issued_at": 1_700_000_000 }))]
pub struct CredentialInput {
    #[schema(required = true, nullable = false, pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pub openid: Option<String>,
    #[schema(required = true, schema_with = credential_kind_schema)]
    pub kind: Option<String>,
    /// the form_id or prepay_id itself
    #[schema(required = true, nullable = false, pattern = r"^[A-Za-z0-9_-]{1,128}$")]
    pub value: Option<String>,
    /// Unix seconds; not ahead by more than 5 minutes, and not expired (7 days)
    #[schema(required = true, nullable = false, minimum = 946_684_800)]
    #[serde(default, deserialize_with = "crate::domain::strict::integer")]
    pub issued_at: Option<i64>,
}

/// `form_id` or `prepay_id`, from [`CredentialKind`] itself.
pub fn credential_kind_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(
            [CredentialKind::FormId, CredentialKind::PrepayId].map(CredentialKind::as_str),
        ))
        .description(Some("form_id: one message; prepay_id: three"))
        .build()
}

/// The two legacy credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// From a `<form report-submit>` submit: one message.
    FormId,
    /// From a payment: three messages.
    PrepayId,
}

impl CredentialKind {
    pub fn parse(s: &str) -> Option<CredentialKind> {
        match s {
            "form_id" => Some(CredentialKind::FormId),
            "prepay_id" => Some(CredentialKind::PrepayId),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::FormId => "form_id",
            CredentialKind::PrepayId => "prepay_id",
        }
    }

    /// Messages one credential allows (spec §1.2).
    pub fn uses(self) -> i64 {
        match self {
            CredentialKind::FormId => 1,
            CredentialKind::PrepayId => 3,
        }
    }
}

/// A validated legacy credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub openid: String,
    pub kind: CredentialKind,
    pub value: String,
    /// Unix s.
    pub issued_at: i64,
}

impl Credential {
    /// Refuses a credential issued in the future (beyond 5 minutes of clock skew) or already
    /// expired at `now` (Unix s): it could never be used.
    pub fn parse(input: &CredentialInput, now: i64) -> Result<Credential, Vec<FieldError>> {
        let mut errors = Vec::new();
        let openid = check_openid(&mut errors, "openid", input.openid.as_deref());
        let kind = match input.kind.as_deref() {
            None | Some("") => {
                errors.push(field("kind", "is required (form_id or prepay_id)"));
                None
            }
            Some(k) => {
                let kind = CredentialKind::parse(k);
                if kind.is_none() {
                    errors.push(field("kind", "must be form_id or prepay_id"));
                }
                kind
            }
        };
        let value = match input.value.as_deref() {
            None | Some("") => {
                errors.push(field("value", "is required"));
                None
            }
            Some(v) if v.len() > 128 || !v.bytes().all(id_byte) => {
                errors.push(field(
                    "value",
                    "is not a form_id/prepay_id (1..=128 of [A-Za-z0-9_-])",
                ));
                None
            }
            Some(v) => Some(v.to_string()),
        };
        let issued_at = match input.issued_at {
            None => {
                errors.push(field("issued_at", "is required (Unix seconds)"));
                None
            }
            Some(t) if t < 946_684_800 => {
                errors.push(field(
                    "issued_at",
                    "is before 2000-01-01; expected Unix seconds",
                ));
                None
            }
            Some(t) if t > now + 300 => {
                errors.push(field("issued_at", "is in the future"));
                None
            }
            Some(t) if now >= t + CREDENTIAL_TTL_SECS => {
                errors.push(field(
                    "issued_at",
                    "is 7 days ago or more: the credential has expired",
                ));
                None
            }
            Some(t) => Some(t),
        };
        match (openid, kind, value, issued_at) {
            (Some(openid), Some(kind), Some(value), Some(issued_at)) if errors.is_empty() => {
                Ok(Credential {
                    openid,
                    kind,
                    value,
                    issued_at,
                })
            }
            _ => Err(errors),
        }
    }

    /// Unix s at which it stops being usable.
    pub fn expires_at(&self) -> i64 {
        self.issued_at + CREDENTIAL_TTL_SECS
    }

    fn to_store(&self, now_ms: i64) -> NewCredential {
        NewCredential {
            openid: self.openid.clone(),
            kind: self.kind.as_str().to_string(),
            value: self.value.clone(),
            max_uses: self.kind.uses(),
            issued_at: self.issued_at,
            expires_at: self.expires_at(),
            created_at: now_ms,
        }
    }
}

/// Adds what a user accepted. `idempotency`: the report's key and a hash of its content; a
/// key seen before adds nothing.
pub async fn record_subscriptions(
    store: &Store,
    report: &SubscriptionReport,
    idempotency: Option<(&str, &str)>,
    now_ms: i64,
) -> Result<ReportOutcome, StoreError> {
    store
        .add_subscriptions(&report.openid, &report.grants, idempotency, now_ms)
        .await
}

/// Registers a legacy credential; registering a value again changes nothing.
pub async fn register_credential(
    store: &Store,
    credential: &Credential,
    now_ms: i64,
) -> Result<CredentialInsert, StoreError> {
    store.add_credential(&credential.to_store(now_ms)).await
}

fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn field(name: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: name.to_string(),
        message: message.into(),
    }
}

/// An openid: 1..=64 of `[A-Za-z0-9_-]` (WeChat's are 28).
pub fn check_openid(errors: &mut Vec<FieldError>, name: &str, v: Option<&str>) -> Option<String> {
    match v {
        None | Some("") => {
            errors.push(field(name, "is required"));
            None
        }
        Some(v) if v.len() > 64 || !v.bytes().all(id_byte) => {
            errors.push(field(name, "is not an openid (1..=64 of [A-Za-z0-9_-])"));
            None
        }
        Some(v) => Some(v.to_string()),
    }
}

fn check_template_id(errors: &mut Vec<FieldError>, name: &str, v: Option<&str>) -> Option<String> {
    match v {
        None | Some("") => {
            errors.push(field(name, "is required"));
            None
        }
        Some(v) if v.len() > 128 || !v.bytes().all(id_byte) => {
            errors.push(field(
                name,
                "is not a template id (1..=128 of [A-Za-z0-9_-])",
            ));
            None
        }
        Some(v) => Some(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_validated_field_by_field() {
        let input: SubscriptionReportInput = serde_json::from_str(
            r#"{"openid":"o 1","subscriptions":[{"template_id":"T1","count":101},{"template_id":"T1"}]}"#,
        )
        .unwrap();
        let e = SubscriptionReport::parse(&input).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "openid",
                "subscriptions[0].count",
                "subscriptions[1].template_id"
            ]
        );
        let ok: SubscriptionReportInput = serde_json::from_str(
            r#"{"openid":"o1","subscriptions":[{"template_id":"T1"},{"template_id":"T2","long_term":true}]}"#,
        )
        .unwrap();
        let r = SubscriptionReport::parse(&ok).unwrap();
        assert_eq!(r.grants[0].count, 1);
        assert!(r.grants[1].long_term);
    }

    #[test]
    fn credentials_expire_seven_days_after_issue_and_allow_one_or_three_uses() {
        let now = 1_700_000_000;
        let input = |kind: &str, issued_at: i64| CredentialInput {
            openid: Some("o1".into()),
            kind: Some(kind.into()),
            value: Some("wx2017033010242291fcfe0db70013231072".into()),
            issued_at: Some(issued_at),
        };
        let c = Credential::parse(&input("prepay_id", now - 10), now).unwrap();
        assert_eq!(c.kind.uses(), 3);
        assert_eq!(c.expires_at(), now - 10 + 7 * 86_400);
        assert_eq!(
            Credential::parse(&input("form_id", now), now)
                .unwrap()
                .kind
                .uses(),
            1
        );
        let e = Credential::parse(&input("form_id", now - 7 * 86_400), now).unwrap_err();
        assert_eq!(e[0].field, "issued_at");
        assert!(Credential::parse(&input("form_id", now + 3_600), now).is_err());
        assert!(Credential::parse(&input("coupon", now), now).is_err());
    }
}
