//! Shipping notifications to the carrier mini program's users (spec `wechat-notifications.md`):
//! `subscribe/send` with one-time grants and the keyword-type limits, and the legacy
//! `wxopen/template/send` with form_id (one message) and prepay_id (three) credentials valid
//! for 7 days. Delivered messages land in the user's inbox, keyed by openid.
//!
//! All state is in sharded maps; consuming a grant or a credential happens under the one map
//! entry it concerns, so concurrent sends can never use one twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::{DashMap, DashSet};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::api::{errcode as ec, ok_body, WxError};
use super::templates::{check_legacy_data, check_subscribe_data};
pub use super::templates::{Template, TemplateKind};

/// A legacy credential stays usable this long after it was issued (spec §1.2).
pub const CREDENTIAL_TTL_SECS: i64 = 7 * 86_400;
/// Messages in one user's inbox kept (oldest dropped first).
const INBOX_LIMIT: usize = 10_000;

/// The two legacy credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    FormId,
    PrepayId,
}

impl CredentialKind {
    /// Messages one credential allows (spec §1.2).
    pub fn uses(self) -> u32 {
        match self {
            CredentialKind::FormId => 1,
            CredentialKind::PrepayId => 3,
        }
    }
}

/// A form_id or prepay_id and how often it was used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub openid: String,
    pub kind: CredentialKind,
    pub value: String,
    pub issued_at: i64,
    #[serde(default)]
    pub used: u32,
}

use super::defaults::{DEFAULT_LEGACY_TEMPLATE, DEFAULT_SUBSCRIBE_TEMPLATE};

#[derive(Default)]
pub struct NotifyState {
    users: DashSet<String>,
    templates: DashMap<String, Template>,
    /// (openid, template_id) -> one-time subscriptions left.
    grants: DashMap<(String, String), u32>,
    /// By value; a value identifies its credential.
    credentials: DashMap<String, Credential>,
    /// Openids with a subscribe send in progress (43108).
    in_flight: Arc<DashSet<String>>,
    inboxes: DashMap<String, Vec<Value>>,
    /// Pages of the mini program; empty means any well-formed page.
    pages: ArcSwap<Vec<String>>,
}

/// Holds an openid's "send in progress" mark; dropping it (even when the request is
/// cancelled) releases the user.
pub struct SendGuard {
    set: Arc<DashSet<String>>,
    openid: String,
}

impl Drop for SendGuard {
    fn drop(&mut self) {
        self.set.remove(&self.openid);
    }
}

impl NotifyState {
    pub fn new() -> NotifyState {
        let s = NotifyState::default();
        s.seed();
        s
    }

    fn seed(&self) {
        let keywords = ["character_string1", "phrase2", "thing3", "time4"]
            .map(String::from)
            .to_vec();
        self.templates.insert(
            DEFAULT_SUBSCRIBE_TEMPLATE.into(),
            Template {
                kind: TemplateKind::Subscribe,
                title: "快递状态通知".into(),
                keywords: Some(keywords),
                enums: BTreeMap::new(),
            },
        );
        self.templates.insert(
            DEFAULT_LEGACY_TEMPLATE.into(),
            Template {
                kind: TemplateKind::Legacy,
                title: "物流状态通知".into(),
                ..Default::default()
            },
        );
    }

    pub fn reset(&self) {
        self.users.clear();
        self.templates.clear();
        self.grants.clear();
        self.credentials.clear();
        self.inboxes.clear();
        self.pages.store(Arc::new(Vec::new()));
        self.seed();
    }

    // ---- control ----

    pub fn add_user(&self, openid: &str) {
        self.users.insert(openid.to_string());
    }

    pub fn put_template(&self, id: &str, t: Template) {
        self.templates.insert(id.to_string(), t);
    }

    pub fn delete_template(&self, id: &str) -> bool {
        self.templates.remove(id).is_some()
    }

    pub fn templates(&self) -> BTreeMap<String, Template> {
        self.templates
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// Records `count` accepted one-time subscriptions; returns how many are now left.
    pub fn add_grant(&self, openid: &str, template_id: &str, count: u32) -> Result<u32, String> {
        match self.templates.get(template_id).map(|t| t.kind) {
            Some(TemplateKind::Subscribe) => {}
            _ => {
                return Err(format!(
                    "template_id {template_id:?} is not a subscribe template of the sandbox"
                ))
            }
        }
        self.add_user(openid);
        let mut left = self
            .grants
            .entry((openid.to_string(), template_id.to_string()))
            .or_insert(0);
        *left = left.saturating_add(count);
        Ok(*left)
    }

    /// One-time subscriptions left per template for `openid`.
    pub fn grants_of(&self, openid: &str) -> BTreeMap<String, u32> {
        self.grants
            .iter()
            .filter(|e| e.key().0 == openid)
            .map(|e| (e.key().1.clone(), *e.value()))
            .collect()
    }

    /// Registers a credential (again: resets its uses).
    pub fn add_credential(&self, c: Credential) {
        self.add_user(&c.openid);
        self.credentials.insert(c.value.clone(), c);
    }

    pub fn credentials_of(&self, openid: &str) -> Vec<Credential> {
        let mut v: Vec<Credential> = self
            .credentials
            .iter()
            .filter(|e| e.openid == openid)
            .map(|e| e.value().clone())
            .collect();
        v.sort_by(|a, b| (a.issued_at, &a.value).cmp(&(b.issued_at, &b.value)));
        v
    }

    pub fn set_pages(&self, pages: Vec<String>) {
        self.pages.store(Arc::new(pages));
    }

    pub fn pages(&self) -> Vec<String> {
        self.pages.load().as_ref().clone()
    }

    pub fn inbox(&self, openid: &str) -> Vec<Value> {
        self.inboxes
            .get(openid)
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Marks a send to `openid` in progress; `None` if one already is (43108).
    pub fn begin_send(&self, openid: &str) -> Option<SendGuard> {
        self.in_flight
            .insert(openid.to_string())
            .then(|| SendGuard {
                set: Arc::clone(&self.in_flight),
                openid: openid.to_string(),
            })
    }

    // ---- the two send APIs ----

    /// `subscribe/send` (spec §2.2-2.5): 40003, 40037, 47003, then 43101; delivers.
    pub fn subscribe_send(&self, body: &Map<String, Value>, now: i64) -> Result<Value, WxError> {
        let touser = self.known_user(body)?;
        let (template_id, template) = self.template(body, TemplateKind::Subscribe)?;
        let data = match body.get("data") {
            Some(Value::Object(d)) => d,
            Some(_) => {
                return Err(WxError::with(
                    ec::ARGUMENT_INVALID,
                    "data must be an object",
                ))
            }
            None => return Err(WxError::with(ec::ARGUMENT_INVALID, "data is required")),
        };
        check_subscribe_data(&template, data)?;
        let page = optional_str(body, "page", ec::ARGUMENT_INVALID)?;
        let state = one_of(body, "miniprogram_state", &["developer", "trial", "formal"])?;
        let lang = one_of(body, "lang", &["zh_CN", "en_US", "zh_HK", "zh_TW"])?;
        {
            let key = (touser.to_string(), template_id.to_string());
            let mut left = self.grants.get_mut(&key).ok_or_else(|| {
                WxError::with(
                    ec::NOT_SUBSCRIBED,
                    "no one-time subscription for this template",
                )
            })?;
            if *left == 0 {
                return Err(WxError::with(
                    ec::NOT_SUBSCRIBED,
                    "the one-time subscriptions are used up",
                ));
            }
            *left -= 1;
        }
        self.deliver(
            touser,
            json!({
                "kind": "subscribe",
                "template_id": template_id,
                "page": page,
                "data": data,
                "miniprogram_state": state.unwrap_or("formal"),
                "lang": lang.unwrap_or("zh_CN"),
                "delivered_at": now,
            }),
        );
        Ok(ok_body([]))
    }

    /// `wxopen/template/send` (spec §1): 40003, 40037, 41030, 47003, then 41028/41029; delivers.
    pub fn template_send(&self, body: &Map<String, Value>, now: i64) -> Result<Value, WxError> {
        let touser = self.known_user(body)?;
        let (template_id, template) = self.template(body, TemplateKind::Legacy)?;
        let page = optional_str(body, "page", ec::INVALID_PAGE)?;
        if let Some(p) = page {
            self.check_page(p)?;
        }
        let data = match body.get("data") {
            None | Some(Value::Null) => None,
            Some(Value::Object(d)) => Some(d),
            Some(_) => {
                return Err(WxError::with(
                    ec::ARGUMENT_INVALID,
                    "data must be an object",
                ))
            }
        };
        if let Some(d) = data {
            check_legacy_data(&template, d)?;
        }
        let emphasis = optional_str(body, "emphasis_keyword", ec::ARGUMENT_INVALID)?;
        let form_id = match body.get("form_id") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            _ => return Err(WxError::with(ec::INVALID_FORM_ID, "form_id is required")),
        };
        let kind = {
            let mut c = self
                .credentials
                .get_mut(form_id)
                .ok_or_else(|| WxError::with(ec::INVALID_FORM_ID, "unknown form_id"))?;
            if c.openid != touser {
                return Err(WxError::with(
                    ec::INVALID_FORM_ID,
                    "form_id belongs to another user",
                ));
            }
            if now >= c.issued_at + CREDENTIAL_TTL_SECS {
                return Err(WxError::with(
                    ec::INVALID_FORM_ID,
                    "form_id is older than 7 days",
                ));
            }
            if c.used >= c.kind.uses() {
                return Err(WxError::new(ec::FORM_ID_USED));
            }
            c.used += 1;
            c.kind
        };
        self.deliver(
            touser,
            json!({
                "kind": "template",
                "template_id": template_id,
                "page": page,
                "data": data,
                "emphasis_keyword": emphasis,
                "credential": kind,
                "delivered_at": now,
            }),
        );
        Ok(ok_body([]))
    }

    fn known_user<'b>(&self, body: &'b Map<String, Value>) -> Result<&'b str, WxError> {
        match body.get("touser") {
            Some(Value::String(u)) if self.users.contains(u) => Ok(u),
            Some(Value::String(_)) => Err(WxError::with(
                ec::INVALID_OPENID,
                "touser is not a user of this mini program",
            )),
            _ => Err(WxError::with(ec::INVALID_OPENID, "touser is required")),
        }
    }

    fn template<'b>(
        &self,
        body: &'b Map<String, Value>,
        kind: TemplateKind,
    ) -> Result<(&'b str, Template), WxError> {
        let Some(Value::String(id)) = body.get("template_id") else {
            return Err(WxError::with(
                ec::INVALID_TEMPLATE_ID,
                "template_id is required",
            ));
        };
        match self.templates.get(id.as_str()) {
            Some(t) if t.kind == kind => Ok((id, t.clone())),
            _ => Err(WxError::new(ec::INVALID_TEMPLATE_ID)),
        }
    }

    fn check_page(&self, page: &str) -> Result<(), WxError> {
        let path = page.split_once('?').map_or(page, |(p, _)| p);
        let well_formed = !path.is_empty()
            && !path.starts_with('/')
            && !path.contains("//")
            && !path.split('/').any(|seg| seg == ".." || seg == ".")
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'));
        let pages = self.pages.load();
        if !well_formed || (!pages.is_empty() && !pages.iter().any(|p| p == path)) {
            return Err(WxError::with(
                ec::INVALID_PAGE,
                "page is not a page of this mini program",
            ));
        }
        Ok(())
    }

    fn deliver(&self, openid: &str, message: Value) {
        let mut inbox = self.inboxes.entry(openid.to_string()).or_default();
        if inbox.len() >= INBOX_LIMIT {
            inbox.remove(0);
        }
        inbox.push(message);
    }
}

fn optional_str<'b>(
    body: &'b Map<String, Value>,
    key: &str,
    code: i64,
) -> Result<Option<&'b str>, WxError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(WxError::with(code, format!("{key} must be a string"))),
    }
}

fn one_of<'b>(
    body: &'b Map<String, Value>,
    key: &str,
    allowed: &[&str],
) -> Result<Option<&'b str>, WxError> {
    match optional_str(body, key, ec::ARGUMENT_INVALID)? {
        Some(v) if !allowed.contains(&v) => Err(WxError::with(
            ec::ARGUMENT_INVALID,
            format!("{key} must be one of {}", allowed.join(", ")),
        )),
        v => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn shipping_data() -> Value {
        json!({"character_string1":{"value":"SF1001"},"phrase2":{"value":"运输中"},"thing3":{"value":"到达深圳"},"time4":{"value":"2024-10-31 21:16"}})
    }

    #[test]
    fn each_grant_allows_one_subscribe_message() {
        let s = NotifyState::new();
        s.add_grant("o1", DEFAULT_SUBSCRIBE_TEMPLATE, 1).unwrap();
        let b = body(
            json!({"touser":"o1","template_id":DEFAULT_SUBSCRIBE_TEMPLATE,"data":shipping_data()}),
        );
        assert!(s.subscribe_send(&b, 0).is_ok());
        assert_eq!(s.subscribe_send(&b, 0).unwrap_err().errcode, 43101);
        assert_eq!(s.inbox("o1").len(), 1);
    }

    #[test]
    fn a_missing_template_keyword_is_47003() {
        let s = NotifyState::new();
        s.add_grant("o1", DEFAULT_SUBSCRIBE_TEMPLATE, 1).unwrap();
        let b = body(
            json!({"touser":"o1","template_id":DEFAULT_SUBSCRIBE_TEMPLATE,"data":{"phrase2":{"value":"运输中"}}}),
        );
        assert_eq!(s.subscribe_send(&b, 0).unwrap_err().errcode, 47003);
        assert_eq!(
            s.grants_of("o1")[DEFAULT_SUBSCRIBE_TEMPLATE],
            1,
            "a refused send keeps the grant"
        );
    }

    #[test]
    fn a_prepay_id_allows_three_messages_for_seven_days() {
        let s = NotifyState::new();
        s.add_credential(Credential {
            openid: "o1".into(),
            kind: CredentialKind::PrepayId,
            value: "wx1".into(),
            issued_at: 0,
            used: 0,
        });
        let b = body(json!({"touser":"o1","template_id":DEFAULT_LEGACY_TEMPLATE,"form_id":"wx1"}));
        for _ in 0..3 {
            s.template_send(&b, 10).unwrap();
        }
        assert_eq!(s.template_send(&b, 10).unwrap_err().errcode, 41029);
        s.add_credential(Credential {
            openid: "o1".into(),
            kind: CredentialKind::PrepayId,
            value: "wx1".into(),
            issued_at: 0,
            used: 0,
        });
        assert_eq!(
            s.template_send(&b, CREDENTIAL_TTL_SECS)
                .unwrap_err()
                .errcode,
            41028
        );
    }

    #[test]
    fn pages_must_be_well_formed_and_listed_when_a_list_is_set() {
        let s = NotifyState::new();
        assert!(s.check_page("pages/index/index?no=1").is_ok());
        assert_eq!(s.check_page("/pages/index").unwrap_err().errcode, 41030);
        assert_eq!(
            s.check_page("https://example.com").unwrap_err().errcode,
            41030
        );
        s.set_pages(vec!["pages/waybill/detail".into()]);
        assert!(s.check_page("pages/waybill/detail?id=1").is_ok());
        assert_eq!(
            s.check_page("pages/index/index").unwrap_err().errcode,
            41030
        );
    }

    #[test]
    fn a_second_send_to_a_busy_user_is_refused_until_the_first_ends() {
        let s = NotifyState::new();
        let g = s.begin_send("o1").unwrap();
        assert!(s.begin_send("o1").is_none());
        assert!(s.begin_send("o2").is_some());
        drop(g);
        assert!(s.begin_send("o1").is_some());
    }
}
