#![no_main]
//! See `wxexpress::fuzz::callback_envelope`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wxexpress::fuzz::callback_envelope(data));
