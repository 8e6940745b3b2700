//! Logging: `tracing` with an env filter (`RUST_LOG`), fields as structured values. Phones,
//! tokens, keys and decrypted bodies are never logged anywhere in the crate.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber once; later calls are ignored (tests call it repeatedly).
pub fn init() {
    init_with("info,sqlx=warn,actix_server=warn");
}

/// Install with this default filter (`RUST_LOG` still wins).
pub fn init_with(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}
