//! Builds everything and wires it together: the only module that knows all the others.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use tokio::sync::watch;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::notify::{NotifySettings, NotifyStats, NotifyWorker};
use crate::outbox::worker::{PushSettings, PushStats, PushWorker};
use crate::outcomes::{WebhookStats, WebhookWorker};
use crate::privacy::Privacy;
use crate::sandbox::defaults as sandbox_defaults;
use crate::sandbox::{Sandbox, SandboxSettings};
use crate::secret::Secret;
use crate::store::Store;
use crate::wechat::access_token::{TokenManager, TokenSettings};
use crate::wechat::client::WechatClient;
use crate::wechat::crypto::MessageCrypto;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    /// WeChat (or the sandbox) refused or failed a question the CLI asked.
    #[error("{0}")]
    WeChat(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A built gateway: database migrated, listener bound, workers ready, nothing running yet.
pub struct Application {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    store: Store,
    worker: Option<Arc<PushWorker>>,
    /// Shipping notifications (`[notifications]`), beside the push worker.
    notify_worker: Option<Arc<NotifyWorker>>,
    /// The outcome webhook's deliverer and the outcomes' retention (always runs).
    webhook: Arc<WebhookWorker>,
    tokens: Arc<TokenManager>,
    sandbox: Option<Sandbox>,
    /// Where the in-process sandbox listens.
    sandbox_addr: Option<SocketAddr>,
    /// Stops the in-process sandbox's server, once the workers drained.
    sandbox_server: Option<actix_web::dev::ServerHandle>,
    grace: Duration,
    shutdown: (watch::Sender<bool>, watch::Receiver<bool>),
}

impl Application {
    /// Connect and migrate the database, bind `server.listen` (port 0 picks a free port),
    /// and build the HTTP server, the token manager and the outbox worker. With no WeChat
    /// credentials, an in-process sandbox plays WeChat.
    pub async fn build(settings: Settings) -> Result<Application, AppError> {
        let store = connect_store(&settings).await?;
        store.migrate().await?;
        let listener =
            TcpListener::bind(&settings.server.listen).map_err(|source| AppError::Bind {
                addr: settings.server.listen.clone(),
                source,
            })?;
        Application::build_with(settings, store, listener)
    }

    /// Build on an already connected, migrated store and a bound listener.
    pub fn build_with(
        settings: Settings,
        store: Store,
        listener: TcpListener,
    ) -> Result<Application, AppError> {
        let addr = listener.local_addr()?;
        let privacy = Privacy::from_base64(settings.data_key.expose())
            .map_err(|e| AppError::Config(e.to_string()))?;
        let w = &settings.wechat;
        let crypto = MessageCrypto::new(
            w.token.expose(),
            &w.appid,
            w.encoding_aes_key.expose(),
            w.previous_encoding_aes_key.as_ref().map(|k| k.expose()),
        )
        .map_err(|e| AppError::Config(format!("wechat crypto: {e}")))?;

        let WechatSide {
            in_process,
            api_base,
            secret,
        } = wechat_side(&settings, addr)?;
        let sandbox_addr = in_process.as_ref().map(|(_, running)| running.addr);
        let (sandbox, sandbox_server) = match in_process {
            Some((sb, running)) => (Some(sb), Some(running.handle)),
            None => (None, None),
        };
        let o = &settings.outbox;
        let client = WechatClient::new(&api_base, Duration::from_millis(o.call_timeout_ms));
        let owner = instance_id();
        let token_settings = TokenSettings {
            endpoint: settings.token_endpoint,
            ..TokenSettings::default()
        };
        let tokens = TokenManager::new(
            store.clone(),
            client.clone(),
            privacy.clone(),
            &w.appid,
            secret,
            token_settings,
            &owner,
        );
        let worker = o.enabled.then(|| {
            let ws = push_worker_settings(&settings);
            PushWorker::new(
                store.clone(),
                client.clone(),
                tokens.clone(),
                privacy.clone(),
                ws,
                &owner,
            )
        });
        let rules = &settings.notifications;
        let section = &settings.raw.notifications;
        let notify_worker = section.enabled.then(|| {
            NotifyWorker::new(
                store.clone(),
                client.clone(),
                tokens.clone(),
                privacy.clone(),
                Arc::new(rules.clone()),
                NotifySettings::from_section(section, settings.retry_schedule.clone()),
                &owner,
            )
        });

        let webhook = WebhookWorker::new(
            store.clone(),
            settings.outcomes.clone(),
            settings.outcome_schedule.clone(),
            &owner,
        );
        let server_settings = settings.server.clone();
        let grace = Duration::from_secs(o.shutdown_grace_secs);
        let jsonp = http::jsonp::JsonpGuard::new(&settings.jsonp);
        let state = web::Data::new(AppState {
            settings: Arc::new(settings),
            store: store.clone(),
            privacy,
            crypto,
            jsonp,
        });
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(http::configure)
        })
        .disable_signals()
        .shutdown_timeout(server_settings.shutdown_grace_secs)
        .listen(listener)?;
        if server_settings.workers > 0 {
            server = server.workers(server_settings.workers);
        }
        Ok(Application {
            addr,
            server: server.run(),
            store,
            worker,
            notify_worker,
            webhook,
            tokens,
            sandbox,
            sandbox_addr,
            sandbox_server,
            grace,
            shutdown: watch::channel(false),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The in-process sandbox, when there are no WeChat credentials.
    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.sandbox.as_ref()
    }

    /// Where the in-process sandbox listens (another node may push through it).
    pub fn sandbox_addr(&self) -> Option<SocketAddr> {
        self.sandbox_addr
    }

    pub fn worker_stats(&self) -> Option<Arc<PushStats>> {
        self.worker.as_ref().map(|w| w.stats())
    }

    /// Shipping-notification counters of this process (sent, skipped for lack of consent,
    /// failed), when the notification worker runs here.
    pub fn notification_stats(&self) -> Option<Arc<NotifyStats>> {
        self.notify_worker.as_ref().map(|w| w.stats())
    }

    /// The outcome webhook's counters of this process.
    pub fn webhook_stats(&self) -> Arc<WebhookStats> {
        self.webhook.stats()
    }

    /// The outcome webhook's deliverer (tests drive its rounds).
    pub fn webhook(&self) -> Arc<WebhookWorker> {
        self.webhook.clone()
    }

    pub fn tokens(&self) -> Arc<TokenManager> {
        self.tokens.clone()
    }

    /// Send `true` to stop the application as SIGTERM does.
    pub fn shutdown_trigger(&self) -> watch::Sender<bool> {
        self.shutdown.0.clone()
    }

    /// Serve until SIGINT/SIGTERM (or the trigger). Shutdown order matters: first the worker
    /// stops claiming and finishes in-flight pushes (their reverse queries still need the HTTP
    /// server), within `outbox.shutdown_grace_secs`; then the server drains and stops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            server,
            worker,
            notify_worker,
            webhook,
            grace,
            shutdown: (tx, mut rx),
            sandbox_server,
            ..
        } = self;
        let handle = server.handle();
        let mut server_task = tokio::spawn(server);
        let worker_task = worker.map(|w| tokio::spawn(w.run(rx.clone())));
        let notify_task = notify_worker.map(|w| tokio::spawn(w.run(rx.clone())));
        let webhook_task = tokio::spawn(webhook.run(rx.clone()));
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutdown requested: finishing in-flight pushes"),
            _ = rx.wait_for(|stop| *stop) => tracing::info!("shutdown triggered: finishing in-flight pushes"),
            r = &mut server_task => return r.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        }
        let _ = tx.send(true);
        if let Some(task) = worker_task {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight pushes did not finish within the grace period; their leases will lapse and another run will finish them");
            }
        }
        // Notification sends need no callback, but they finish before the process stops too.
        if let Some(task) = notify_task {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!(grace_secs = grace.as_secs(), "in-flight notification sends did not finish within the grace period; their leases will lapse");
            }
        }
        // The webhook stops between requests; an unfinished one is sent again by the next run.
        if tokio::time::timeout(grace, webhook_task).await.is_err() {
            tracing::warn!("the outcome webhook did not stop within the grace period; its leased deliveries are sent again later");
        }
        handle.stop(true).await;
        if let Some(sandbox) = sandbox_server {
            sandbox.stop(true).await;
        }
        server_task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Who plays WeChat for this gateway, and how to reach it.
struct WechatSide {
    /// The in-process sandbox and its running server, when it plays WeChat.
    in_process: Option<(Sandbox, crate::sandbox::RunningSandbox)>,
    api_base: String,
    secret: Secret,
}

/// No credentials and no api_base: play WeChat in-process, its callback this gateway at
/// `addr`. No credentials but an api_base: a sandbox running elsewhere (`wxexpress
/// sandbox`), with its default secret. Else WeChat itself.
fn wechat_side(settings: &Settings, addr: SocketAddr) -> Result<WechatSide, AppError> {
    let w = &settings.wechat;
    if settings.sandbox_mode() && w.api_base.is_none() {
        let callback = settings
            .sandbox
            .callback_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}/wechat/callback"));
        let sb = Sandbox::new(sandbox_settings(
            settings,
            &callback,
            &format!("http://{addr}/wechat/waybill"),
        ));
        let running = sb.start(TcpListener::bind("127.0.0.1:0")?)?;
        tracing::warn!(sandbox = %running.addr, "in-process WeChat sandbox started: pushes go to the emulator, not to WeChat");
        // The secret the sandbox was given (`serve --sandbox` keeps a configured one).
        let secret = Secret::new(sb.settings().secret.clone());
        let base = format!("http://{}", running.addr);
        Ok(WechatSide {
            in_process: Some((sb, running)),
            api_base: base,
            secret,
        })
    } else {
        let base = w
            .api_base
            .clone()
            .ok_or_else(|| AppError::Config("wechat.api_base is not set".into()))?;
        let secret = w
            .secret
            .clone()
            .unwrap_or_else(|| Secret::new(sandbox_defaults::SECRET));
        if settings.sandbox_mode() {
            tracing::warn!(api_base = %base, "no WeChat credentials: talking to the sandbox at wechat.api_base");
        }
        Ok(WechatSide {
            in_process: None,
            api_base: base,
            secret,
        })
    }
}

/// The push worker's settings from `[outbox]` and the parsed retry schedule.
fn push_worker_settings(settings: &Settings) -> PushSettings {
    let o = &settings.outbox;
    PushSettings {
        concurrency: o.concurrency,
        batch_size: o.batch_size,
        poll_interval: Duration::from_millis(o.poll_interval_ms),
        lease: Duration::from_secs(o.lease_secs as u64),
        schedule: settings.retry_schedule.clone(),
        coalesce: o.coalesce,
        binding_ttl_bound: Duration::from_secs(o.binding_ttl_bound_secs as u64),
        binding_ttl_unbound: Duration::from_secs(o.binding_ttl_unbound_secs as u64),
        pathnotify_rate: o.pathnotify_rate,
        userquery_rate: o.userquery_rate,
        deadline: (o.deadline_secs > 0).then(|| Duration::from_secs(o.deadline_secs)),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Identifies this process in leases: host, pid and a random suffix.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The sandbox plays the mini program described in `[wechat]`.
pub fn sandbox_settings(
    settings: &Settings,
    callback_url: &str,
    jsonp_url: &str,
) -> SandboxSettings {
    let w = &settings.wechat;
    SandboxSettings {
        appid: w.appid.clone(),
        secret: w
            .secret
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_else(|| sandbox_defaults::SECRET.to_string()),
        original_id: w.original_id.clone(),
        token: w.token.expose().to_string(),
        encoding_aes_key: w.encoding_aes_key.expose().to_string(),
        message_format: w.message_format,
        message_mode: w.message_mode,
        callback_url: callback_url.to_string(),
        jsonp_url: settings
            .sandbox
            .jsonp_url
            .clone()
            .unwrap_or_else(|| jsonp_url.to_string()),
        jsonp_token: Some(settings.jsonp_token.expose().to_string()),
        waybill_pattern: settings.jsonp.waybill_pattern.clone(),
        ..SandboxSettings::default()
    }
}

/// Connect as `[database]` says (pool size, SQLite's `synchronous`).
pub async fn connect_store(settings: &Settings) -> Result<Store, AppError> {
    Ok(Store::open(&settings.database).await?)
}

/// `wxexpress serve`: log where we listen and what is (not) configured, then serve.
pub async fn serve(settings: Settings) -> Result<(), AppError> {
    for notice in &settings.notices {
        tracing::warn!("{notice}");
    }
    tracing::info!(
        database = %crate::config::redact_url(&settings.database.url),
        message_mode = %settings.wechat.message_mode,
        message_format = %settings.wechat.message_format,
        "starting wxexpress"
    );
    let metrics_listen = settings.server.metrics_listen.clone();
    if !metrics_listen.is_empty() {
        // Before anything is counted: what is recorded earlier goes nowhere.
        crate::prometheus::handle();
    }
    let app = Application::build(settings).await?;
    tracing::info!(address = %app.addr(), "listening: backoffice API under /v1, WeChat callback at /wechat/callback");
    let metrics = serve_metrics(&app, &metrics_listen)?;
    app.run_until_stopped().await?;
    if let Some(metrics) = metrics {
        metrics.stop(true).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `GET /metrics` of `app` on `listen` (`""`: none). Call [`crate::prometheus::handle`]
/// before the app is built, or what it counts first goes nowhere.
pub fn serve_metrics(
    app: &Application,
    listen: &str,
) -> Result<Option<actix_web::dev::ServerHandle>, AppError> {
    if listen.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(listen).map_err(|source| AppError::Bind {
        addr: listen.to_string(),
        source,
    })?;
    let sources = crate::prometheus::Sources {
        store: app.store().clone(),
        pushes: app.worker_stats(),
        notifications: app.notification_stats(),
        webhook: Some(app.webhook_stats()),
    };
    Ok(Some(crate::prometheus::spawn(listener, sources)?))
}

/// `wxexpress sandbox`: WeChat's side, emulated, on its own.
///
/// Binds loopback addresses only unless `allow_remote`: its control routes bind phones, read
/// inboxes, sign JSONP URLs with the configured token and redirect callbacks, for anyone who
/// can reach them.
pub async fn run_sandbox(
    settings: &Settings,
    listen: Option<&str>,
    allow_remote: bool,
) -> Result<(), AppError> {
    let listen = listen.unwrap_or(&settings.sandbox.listen);
    let addr: SocketAddr = listen.parse().map_err(|_| {
        AppError::Config(format!(
            "--listen: {listen:?} is not an address like 127.0.0.1:9090"
        ))
    })?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(AppError::Config(format!(
            "sandbox.listen: {listen} is not a loopback address; the sandbox's control routes would answer anyone (pass --allow-remote to mean it)"
        )));
    }
    let gateway = &settings.server.listen;
    let callback = settings
        .sandbox
        .callback_url
        .clone()
        .unwrap_or_else(|| format!("http://{gateway}/wechat/callback"));
    let sb = Sandbox::try_new(sandbox_settings(
        settings,
        &callback,
        &format!("http://{gateway}/wechat/waybill"),
    ))
    .map_err(|e| AppError::Config(e.to_string()))?;
    let listener = TcpListener::bind(listen).map_err(|source| AppError::Bind {
        addr: listen.to_string(),
        source,
    })?;
    let running = sb.start(listener)?;
    tracing::info!(address = %running.addr, appid = %settings.wechat.appid, callback_url = %callback, "WeChat sandbox listening");
    shutdown_signal().await;
    running.handle.stop(true).await;
    Ok(())
}

/// `wxexpress wechat rid RID`: asks WeChat (or the sandbox at `wechat.api_base`) what it
/// logged for the failed call with that rid, and renders it as lines for a person.
pub async fn wechat_rid(settings: &Settings, rid: &str) -> Result<String, AppError> {
    use crate::wechat::client::{ApiError, TokenEndpoint};
    let w = &settings.wechat;
    let base = w.api_base.clone().ok_or_else(|| {
        AppError::Config(
            "sandbox mode without wechat.api_base: there is no WeChat to ask (point wechat.api_base at a running `wxexpress sandbox`)"
                .into(),
        )
    })?;
    let secret = w
        .secret
        .clone()
        .unwrap_or_else(|| Secret::new(sandbox_defaults::SECRET));
    let client = WechatClient::new(
        &base,
        Duration::from_millis(settings.outbox.call_timeout_ms),
    );
    // The stable token: asking for it does not invalidate the one the gateways use.
    let token = client
        .fetch_token(TokenEndpoint::Stable, &w.appid, secret.expose(), false)
        .await
        .result
        .map_err(|e| AppError::WeChat(format!("getting an access token failed: {e}")))?;
    let answer = client.rid_get(&token.access_token, rid).await.result;
    match answer {
        Ok(a) => {
            let r = a.request;
            let at = chrono::DateTime::from_timestamp(r.invoke_time, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| r.invoke_time.to_string());
            Ok(format!(
                "rid            {rid}\ninvoke_time    {at}\ncost_in_ms     {}\nrequest_url    {}\nrequest_body   {}\nresponse_body  {}\nclient_ip      {}\n",
                r.cost_in_ms,
                r.request_url,
                crate::domain::mask_phones_in_text(&r.request_body),
                crate::domain::mask_phones_in_text(&r.response_body),
                r.client_ip
            ))
        }
        Err(ApiError::WeChat { errcode, errmsg }) => Err(AppError::WeChat(format!(
            "{}: errcode {errcode} ({errmsg})",
            rid_error_meaning(errcode)
        ))),
        Err(e) => Err(AppError::WeChat(format!("asking WeChat failed: {e}"))),
    }
}

/// `wxexpress outcomes replay` (see [`crate::outcomes::replay::run`]).
pub async fn outcomes_replay(
    settings: &Settings,
    args: crate::outcomes::replay::ReplayArgs<'_>,
) -> Result<(), AppError> {
    let store = connect_store(settings).await?;
    store.migrate().await?;
    let schedule = settings.outcome_schedule.clone();
    let summary =
        crate::outcomes::replay::run(store, &settings.outcomes, schedule, &instance_id(), args)
            .await
            .map_err(AppError::Config)?;
    println!("{summary}");
    Ok(())
}

/// One line per error of `rid/get` (spec §11.6).
pub fn rid_error_meaning(errcode: i64) -> &'static str {
    match errcode {
        76001 => "WeChat has no such rid: it is wrong, or older than 7 days",
        76002 => "that is not a rid (copy it from the attempt's `rid`, e.g. 6583e1f7-...)",
        76003 => "the rid belongs to another account's call: ask with that account's AppID",
        _ => "WeChat refused the question",
    }
}
