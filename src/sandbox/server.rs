//! The sandbox's HTTP server: WeChat's API paths and the `/sandbox/` control routes on one
//! listener.

use std::net::TcpListener;

use actix_web::{web, App, HttpServer};

use super::state::Shared;
use super::{access_token_api, control, express, landing, message_api, rid, RunningSandbox};

/// WeChat's paths (contract: "The WeChat sandbox").
pub fn wechat_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/cgi-bin/token", web::get().to(access_token_api::token))
        .route(
            "/cgi-bin/stable_token",
            web::post().to(access_token_api::stable_token),
        )
        .route(
            "/cgi-bin/stable_token",
            web::get().to(access_token_api::stable_token_get),
        )
        .route(
            "/cgi-bin/express/delivery/userquery",
            web::post().to(express::userquery),
        )
        .route(
            "/cgi-bin/express/delivery/pathnotify",
            web::post().to(express::pathnotify),
        )
        .route(
            "/cgi-bin/message/subscribe/send",
            web::post().to(message_api::subscribe_send),
        )
        .route(
            "/cgi-bin/message/wxopen/template/send",
            web::post().to(message_api::template_send),
        )
        .route("/cgi-bin/openapi/rid/get", web::post().to(rid::rid_get));
}

/// Binds the server to `listener` and spawns it on the current tokio runtime. It does not
/// listen for signals: whoever started it stops it through the handle (the gateway after its
/// workers drained the pushes addressed to it; `wxexpress sandbox` on SIGTERM or Ctrl-C).
pub fn start(shared: web::Data<Shared>, listener: TcpListener) -> std::io::Result<RunningSandbox> {
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .wrap(actix_web::middleware::from_fn(rid::record))
            .configure(wechat_routes)
            // Before the `/sandbox` scope, which would otherwise answer 404 for it.
            .configure(landing::routes)
            .configure(control::routes)
    })
    // Short: an in-flight pathnotify waits at most the callback timeout.
    .shutdown_timeout(6)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "sandbox server stopped with an error");
        }
    });
    Ok(RunningSandbox { addr, handle })
}
