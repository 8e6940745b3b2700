//! Outcomes back to the carrier: which receivers WeChat reached, so its SMS goes only to the
//! rest.
//!
//! Every accepted event's entry ends with exactly one outcome row, written by the store in
//! the transaction that settles the entry (`store/outcomes.rs`). This module hands those rows
//! to the carrier in two ways that carry the same items with the same ids:
//!
//! - `item.rs`: the item as the carrier sees it (JSON), and the feed's opaque cursor;
//! - `signature.rs`: Standard Webhooks signatures (`v1,` + base64 HMAC-SHA256);
//! - `webhook.rs`: the deliverer: cuts durable deliveries from the feed, sends them signed,
//!   retries on `outcomes.retry_schedule`, honours `Retry-After`, stops on 410; and deletes
//!   old outcomes and deliveries (`outcomes.retention_days`) in small batches;
//! - `replay.rs`: `wxexpress outcomes replay`;
//! - `receiver.rs`: a verifying receiver (the demo's, the tests');
//! - `section.rs`: `[outcomes]`.
//!
//! It must not decide outcomes (the store does, from the entry's state) nor carry a phone
//! number: items hold none, not even masked.

pub mod item;
pub mod receiver;
pub mod replay;
pub mod section;
pub mod signature;
pub mod webhook;

pub use item::{decode_cursor, encode_cursor, OutcomeItem, ReasonView};
pub use section::OutcomesSettings;
pub use signature::{SignatureError, Signer};
pub use webhook::{WebhookStats, WebhookWorker};
