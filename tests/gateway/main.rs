//! Integration tests: the real gateway on port 0.

mod backoffice;
mod callback;
mod helpers;
mod notifications;
mod peer;
mod pipeline;
