//! `POST /cgi-bin/message/subscribe/send` and `POST /cgi-bin/message/wxopen/template/send`:
//! the HTTP side of [`super::messages`].

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::api::{errcode as ec, Api, WxError};
use super::gate::{answer, check_token, fault, json_object};
use super::state::Shared;

pub async fn subscribe_send(
    shared: web::Data<Shared>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let api = Api::SubscribeSend;
    shared.stats.call(api);
    let doc = json_object(&body);
    // The user is held for the whole request, injected latency included, so a second send to
    // the same openid meanwhile is "concurrent" (43108).
    let _busy = match doc
        .as_ref()
        .and_then(|d| d.get("touser"))
        .and_then(Value::as_str)
    {
        Some(openid) => match shared.notify.begin_send(openid) {
            Some(guard) => Some(guard),
            None => return answer(&shared, api, Err(WxError::new(ec::CONCURRENT_SEND))),
        },
        None => None,
    };
    if let Some(r) = fault(&shared, api).await {
        return r;
    }
    let result = check_token(&shared, &req).and_then(|()| {
        let doc = doc
            .as_ref()
            .ok_or_else(|| WxError::with(ec::ARGUMENT_INVALID, "the body must be a JSON object"))?;
        shared.notify.subscribe_send(doc, shared.clock.now())
    });
    answer(&shared, api, result)
}

pub async fn template_send(
    shared: web::Data<Shared>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let api = Api::TemplateSend;
    shared.stats.call(api);
    if let Some(r) = fault(&shared, api).await {
        return r;
    }
    let result = check_token(&shared, &req).and_then(|()| {
        let doc = json_object(&body)
            .ok_or_else(|| WxError::with(ec::ARGUMENT_INVALID, "the body must be a JSON object"))?;
        shared.notify.template_send(&doc, shared.clock.now())
    });
    answer(&shared, api, result)
}
