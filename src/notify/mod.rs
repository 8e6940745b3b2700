//! Shipping notifications to the carrier mini program's users (spec
//! `wechat-notifications.md`), and paid waybills (spec `wechatpay-v2-notify.md`).
//!
//! # Layout
//!
//! - [`rules`]: `[notifications]` checked at start; building a message from a rule, a
//!   waybill and an event.
//! - [`section`]: `[notifications]` as the configuration says it.
//! - [`values`]: the keyword value types and fitting our data into them (pure).
//! - [`ledger`]: what users consented to: subscription reports and legacy form_id/prepay_id
//!   credentials, validated (the HTTP routes and the demo use it).
//! - [`policy`]: what each answer to a send means (pure).
//! - [`worker`]: the notification worker (one send per user at a time, one unit of consent
//!   per send).
//! - [`pay`]: WeChat Pay v2 notifications: safe XML, signatures, the reply (pure).
//!
//! Notifications are rows of the same outbox as path-node pushes (kinds `subscribe` and
//! `template`, recipient = openid), written in the transaction of their event, with the
//! same attempt log, dead state and redrive. This module must not call WeChat outside the
//! worker, nor write SQL (the store does).

pub mod ledger;
pub mod pay;
pub mod policy;
pub mod rules;
pub mod section;
pub mod values;
pub mod worker;

pub use rules::Rules;
pub use worker::{NotifySettings, NotifyStats, NotifyWorker};
