//! Integration tests: the real gateway on port 0.

mod backoffice;
mod callback;
mod helpers;
mod jsonp;
mod notifications;
mod openapi;
mod outcomes;
mod peer;
mod pipeline;
