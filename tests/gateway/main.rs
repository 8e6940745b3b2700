//! Integration tests: the real gateway on port 0.

mod backoffice;
mod callback;
mod helpers;
mod jsonp;
mod notifications;
mod openapi;
mod peer;
mod pipeline;
