//! Integration tests: the real gateway on port 0.

mod backoffice;
mod callback;
mod helpers;
mod peer;
mod pipeline;
