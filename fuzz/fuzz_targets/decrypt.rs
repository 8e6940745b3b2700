#![no_main]
//! See `wxexpress::fuzz::decrypt`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wxexpress::fuzz::decrypt(data));
