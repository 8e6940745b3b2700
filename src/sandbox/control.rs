//! The sandbox's own control API under `/sandbox/`: what an operator (or a test, or the demo)
//! sets up on WeChat's side — bindings, users' grants and legacy credentials, templates,
//! pages, faults, the clock — and what it inspects: inboxes, the exchange log, statistics.
//!
//! Ordinary REST: 2xx with JSON, 400/404 with `{"error": "..."}`. These routes are not
//! WeChat's and do not mimic its `errcode` convention.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::express::is_mobile;
use super::faults::Faults;
use super::messages::{Credential, CredentialKind, Template, TemplateKind};
use super::state::Shared;
use super::values::KeywordType;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/sandbox")
            .route("/bindings", web::get().to(list_bindings))
            .route("/bindings/{phone}", web::put().to(bind))
            .route("/bindings/{phone}", web::delete().to(unbind))
            .route("/inbox/openid/{openid}", web::get().to(openid_inbox))
            .route("/inbox/{phone}", web::get().to(phone_inbox))
            .route("/exchanges", web::get().to(exchanges))
            .route("/faults", web::get().to(get_faults))
            .route("/faults", web::put().to(put_faults))
            .route("/clock", web::get().to(clock))
            .route("/clock/advance", web::post().to(advance_clock))
            .route("/reset", web::post().to(reset))
            .route("/stats", web::get().to(stats))
            .route("/callback", web::get().to(get_callback))
            .route("/callback", web::put().to(put_callback))
            .route("/users/{openid}", web::put().to(put_user))
            .route("/users/{openid}", web::get().to(get_user))
            .route("/grants", web::post().to(add_grant))
            .route("/credentials", web::post().to(add_credential))
            .route("/templates", web::get().to(list_templates))
            .route("/templates/{template_id}", web::put().to(put_template))
            .route(
                "/templates/{template_id}",
                web::delete().to(delete_template),
            )
            .route("/pages", web::get().to(get_pages))
            .route("/pages", web::put().to(put_pages)),
    );
}

fn bad_request(msg: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": msg.into() }))
}

async fn list_bindings(s: web::Data<Shared>) -> HttpResponse {
    let mut phones: Vec<String> = s.bindings.iter().map(|p| p.clone()).collect();
    phones.sort();
    HttpResponse::Ok().json(phones)
}

async fn bind(s: web::Data<Shared>, phone: web::Path<String>) -> HttpResponse {
    if !is_mobile(&phone) {
        return bad_request("a binding is an 11-digit mainland mobile number");
    }
    s.bindings.insert(phone.into_inner());
    HttpResponse::NoContent().finish()
}

async fn unbind(s: web::Data<Shared>, phone: web::Path<String>) -> HttpResponse {
    s.bindings.remove(phone.as_str());
    HttpResponse::NoContent().finish()
}

async fn phone_inbox(s: web::Data<Shared>, phone: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().json(
        s.inboxes
            .get(phone.as_str())
            .map(|v| v.clone())
            .unwrap_or_default(),
    )
}

async fn openid_inbox(s: web::Data<Shared>, openid: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().json(s.notify.inbox(&openid))
}

#[derive(Deserialize)]
struct ExchangeFilter {
    waybill_id: Option<String>,
    /// Only the last N entries.
    limit: Option<usize>,
}

async fn exchanges(s: web::Data<Shared>, q: web::Query<ExchangeFilter>) -> HttpResponse {
    let mut all = s.exchanges.all();
    if let Some(w) = &q.waybill_id {
        all.retain(|e| &e.waybill_id == w);
    }
    if let Some(n) = q.limit {
        let skip = all.len().saturating_sub(n);
        all.drain(..skip);
    }
    HttpResponse::Ok().json(all)
}

async fn get_faults(s: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(s.faults.get())
}

async fn put_faults(s: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("faults: {e}")),
    };
    if let Err(e) = faults.validate() {
        return bad_request(e);
    }
    s.faults.set(faults.clone());
    HttpResponse::Ok().json(faults)
}

async fn clock(s: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "now": s.clock.now(), "offset_secs": s.clock.offset() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    secs: i64,
}

async fn advance_clock(s: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let a: Advance = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return bad_request(format!("expected {{\"secs\": N}}: {e}")),
    };
    let offset = s.clock.advance(a.secs);
    HttpResponse::Ok().json(json!({ "now": s.clock.now(), "offset_secs": offset }))
}

async fn reset(s: web::Data<Shared>) -> HttpResponse {
    s.reset();
    HttpResponse::NoContent().finish()
}

async fn stats(s: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(s.stats.snapshot())
}

async fn get_callback(s: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "url": s.callback_url().as_str() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackUrl {
    url: String,
}

async fn put_callback(s: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let c: CallbackUrl = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return bad_request(format!("expected {{\"url\": \"http://…\"}}: {e}")),
    };
    match url::Url::parse(&c.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            s.callback_url.store(std::sync::Arc::new(c.url.clone()));
            HttpResponse::Ok().json(json!({ "url": c.url }))
        }
        _ => bad_request("url must be an http(s) URL"),
    }
}

async fn put_user(s: web::Data<Shared>, openid: web::Path<String>) -> HttpResponse {
    s.notify.add_user(&openid);
    HttpResponse::NoContent().finish()
}

async fn get_user(s: web::Data<Shared>, openid: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "openid": openid.as_str(),
        "grants": s.notify.grants_of(&openid),
        "credentials": s.notify.credentials_of(&openid),
        "inbox": s.notify.inbox(&openid).len(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantInput {
    openid: String,
    template_id: String,
    /// Accepted one-time subscriptions; default 1.
    count: Option<u32>,
}

async fn add_grant(s: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let g: GrantInput = match serde_json::from_slice(&body) {
        Ok(g) => g,
        Err(e) => return bad_request(format!("grant: {e}")),
    };
    if g.openid.is_empty() {
        return bad_request("openid is required");
    }
    match s
        .notify
        .add_grant(&g.openid, &g.template_id, g.count.unwrap_or(1))
    {
        Ok(left) => HttpResponse::Ok()
            .json(json!({ "openid": g.openid, "template_id": g.template_id, "remaining": left })),
        Err(e) => bad_request(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialInput {
    openid: String,
    kind: CredentialKind,
    value: String,
    /// Unix seconds; default: the sandbox clock's now.
    issued_at: Option<i64>,
}

async fn add_credential(s: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let c: CredentialInput = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return bad_request(format!("credential: {e}")),
    };
    if c.openid.is_empty() || c.value.is_empty() {
        return bad_request("openid and value are required");
    }
    let cred = Credential {
        openid: c.openid,
        kind: c.kind,
        value: c.value,
        issued_at: c.issued_at.unwrap_or_else(|| s.clock.now()),
        used: 0,
    };
    s.notify.add_credential(cred.clone());
    HttpResponse::Ok().json(cred)
}

async fn list_templates(s: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(s.notify.templates())
}

async fn put_template(
    s: web::Data<Shared>,
    id: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let t: Template = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => return bad_request(format!("template: {e}")),
    };
    if t.kind == TemplateKind::Subscribe {
        if let Some(bad) = t
            .keywords
            .iter()
            .flatten()
            .find(|k| KeywordType::of_key(k).is_none())
        {
            return bad_request(format!(
                "keyword {bad:?} is not <type><n> with a subscribe-message type"
            ));
        }
    }
    s.notify.put_template(&id, t.clone());
    HttpResponse::Ok().json(t)
}

async fn delete_template(s: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    if s.notify.delete_template(&id) {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::NotFound().json(json!({ "error": "no such template" }))
    }
}

async fn get_pages(s: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(s.notify.pages())
}

async fn put_pages(s: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<Vec<String>>(&body) {
        Ok(pages) => {
            s.notify.set_pages(pages.clone());
            HttpResponse::Ok().json(pages)
        }
        Err(e) => bad_request(format!("expected a JSON array of page paths: {e}")),
    }
}
