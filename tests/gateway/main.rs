//! Integration tests: the real gateway on port 0.

mod backoffice;
mod callback;
mod helpers;
mod jsonp;
mod notifications;
mod peer;
mod pipeline;
