//! wxexpress: the gateway an express carrier runs between its backoffice and WeChat's
//! phone-number logistics push (手机号物流消息推送).
//!
//! # Layout
//!
//! - [`config`]: loading (TOML + `WXEXPRESS_*` env), validation per section; each section's
//!   type lives in the module it configures.
//! - [`clock`], [`secret`], [`xml`]: the wall clock, secrets that never print, the one hardened
//!   XML reader.
//! - [`domain`]: waybills, tracking events, action types, phones and masking. No I/O.
//! - [`privacy`]: phone numbers at rest (AES-256-GCM + HMAC-SHA256 lookup hash).
//! - [`codec`]: domain values to sealed store records and back.
//! - [`store`]: the only module with SQL; one `Store` over SQLite and PostgreSQL.
//! - [`wechat`]: message crypto (pure), envelopes (XML/JSON), the reverse-query reply and push
//!   bodies, the HTTP client, WeChat's shared errcodes, the access-token manager.
//! - [`outbox`]: the push lane: claims, the worker, retry policy, the reverse query's answer.
//! - [`notify`]: shipping notifications (rules, consent ledger, worker) and WeChat Pay v2
//!   payment notifications.
//! - [`outcomes`]: outcomes back to the carrier: the item, the feed's cursor, the signed
//!   webhook (Standard Webhooks), replays, retention.
//! - [`http`]: actix routes; input is converted to domain types at the edge.
//! - [`sandbox`]: an emulator of WeChat's side, used by `wxexpress sandbox`, the demo and tests.
//! - [`app`]: builds everything and wires it together.
//! - [`telemetry`]: logging setup; [`prometheus`]: metrics on `server.metrics_listen`, by
//!   the names in [`series`].
//! - [`demo`]: `wxexpress demo`, a synthetic day through the whole pipeline.
//! - [`bench`]: `wxexpress bench`, the hot paths beside their baselines in one run.
//! - [`fuzz`]: the untrusted-input entry points as fuzzing and the property tests drive them.
//!
//! `docs/ARCHITECTURE.md` draws the module map and the event's path.

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
pub mod outcomes;
pub mod privacy;
pub mod prometheus;
pub mod sandbox;
pub mod secret;
pub mod series;
pub mod store;
pub mod telemetry;
pub mod wechat;
pub mod xml;
