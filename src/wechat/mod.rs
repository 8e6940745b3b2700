//! Everything that speaks WeChat's protocol.
//!
//! - [`crypto`]: message signatures and AES (pure).
//! - [`envelope`]: message documents (XML/JSON), the sealed wrapper, both sides of a push (pure).
//! - [`reverse_query`], [`push`]: the reverse query's reply and the `pathnotify` body (pure).
//! - [`client`]: the HTTP client, the only code that calls WeChat.
//! - [`errcode`]: what the errcodes and failures every API shares mean.
//! - [`access_token`]: the token manager (one refresher across instances, retry-once).
//! - [`section`]: `[wechat]` of the configuration.

pub mod access_token;
pub mod client;
pub mod crypto;
pub mod envelope;
pub mod errcode;
pub mod push;
pub mod reverse_query;
pub mod section;
