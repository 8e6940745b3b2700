//! wxexpress: the gateway an express carrier runs between its backoffice and WeChat's
//! phone-number logistics push (手机号物流消息推送).
//!
//! # Layout
//!
//! - [`config`]: settings, layered loading (TOML + `WXEXPRESS_*` env), validation, secrets that never print.
//! - [`domain`]: waybills, tracking events, action types, phones and masking. No I/O.
//! - [`privacy`]: phone numbers at rest (AES-256-GCM + HMAC-SHA256 lookup hash).
//! - [`store`]: the only module with SQL; one `Store` over SQLite and PostgreSQL.
//! - [`wechat`]: message crypto (pure), message envelopes (XML/JSON), the reverse-query reply.
//! - [`http`]: actix routes; input is converted to domain types at the edge.
//! - [`notify`]: shipping notifications (rules, consent ledger, worker) and WeChat Pay v2
//!   payment notifications.
//! - [`sandbox`]: an emulator of WeChat's side, used by `wxexpress sandbox`, the demo and tests.
//! - [`app`]: builds everything and wires it together.
//! - [`bench`]: `wxexpress bench`, the hot paths beside their baselines in one run.
//! - [`fuzz`]: the untrusted-input entry points as fuzzing and the property tests drive them.

pub mod app;
pub mod bench;
pub mod clock;
pub mod codec;
pub mod config;
pub mod demo;
pub mod domain;
pub mod fuzz;
pub mod http;
pub mod notify;
pub mod outbox;
pub mod privacy;
pub mod sandbox;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod wechat;
pub mod xml;
