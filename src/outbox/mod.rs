//! The durable outbox: what must reach WeChat, retried until it does.

pub mod answer;
pub mod attempt;
pub mod lease;
pub mod policy;
pub mod ratelimit;
pub mod section;
pub mod worker;
