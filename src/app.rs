//! Builds everything and wires it together: the only module that knows all the others.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::privacy::Privacy;
use crate::store::Store;
use crate::wechat::crypto::MessageCrypto;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("binding {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A built gateway: database migrated, listener bound, server not yet awaited.
pub struct Application {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    store: Store,
}

impl Application {
    /// Connect and migrate the database, bind `server.listen` (port 0 picks a free port),
    /// and build the HTTP server.
    pub async fn build(settings: Settings) -> Result<Application, AppError> {
        let store = connect_store(&settings).await?;
        store.migrate().await?;
        let listener = TcpListener::bind(&settings.server.listen).map_err(|source| AppError::Bind { addr: settings.server.listen.clone(), source })?;
        Application::build_with(settings, store, listener)
    }

    /// Build on an already connected, migrated store and a bound listener.
    pub fn build_with(settings: Settings, store: Store, listener: TcpListener) -> Result<Application, AppError> {
        let addr = listener.local_addr()?;
        let privacy = Privacy::from_base64(settings.data_key.expose()).map_err(|e| AppError::Config(e.to_string()))?;
        let w = &settings.wechat;
        let crypto = MessageCrypto::new(
            w.token.expose(),
            &w.appid,
            w.encoding_aes_key.expose(),
            w.previous_encoding_aes_key.as_ref().map(|k| k.expose()),
        )
        .map_err(|e| AppError::Config(format!("wechat crypto: {e}")))?;
        let server_settings = settings.server.clone();
        let state = web::Data::new(AppState { settings: Arc::new(settings), store: store.clone(), privacy, crypto });
        let mut server = HttpServer::new(move || App::new().app_data(state.clone()).configure(http::configure))
            .shutdown_timeout(server_settings.shutdown_grace_secs)
            .listen(listener)?;
        if server_settings.workers > 0 {
            server = server.workers(server_settings.workers);
        }
        Ok(Application { addr, server: server.run(), store })
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

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serve until SIGINT/SIGTERM (actix handles both and drains in-flight requests).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Connect with the configured pool size (0 = the store's default for the backend).
pub async fn connect_store(settings: &Settings) -> Result<Store, AppError> {
    let url = &settings.database.url;
    Ok(match settings.database.max_connections {
        0 => Store::connect(url).await?,
        n => Store::connect_with(url, n).await?,
    })
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
    let app = Application::build(settings).await?;
    tracing::info!(address = %app.addr(), "listening: backoffice API under /v1, WeChat callback at /wechat/callback");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

/// `wxexpress sandbox`: WeChat's side, emulated, on its own.
pub async fn run_sandbox(_settings: &Settings, _listen: Option<&str>) -> Result<(), AppError> {
    Err(AppError::Config("the sandbox is not wired yet".into()))
}
