//! Everything that speaks WeChat's protocol: message crypto (pure), envelopes, replies.

pub mod crypto;
pub mod envelope;
pub mod reverse_query;
pub mod client;
