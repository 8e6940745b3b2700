//! Everything that speaks WeChat's protocol: message crypto (pure), envelopes, replies.

pub mod access_token;
pub mod client;
pub mod crypto;
pub mod envelope;
pub mod errcode;
pub mod push;
pub mod reverse_query;
pub mod section;
