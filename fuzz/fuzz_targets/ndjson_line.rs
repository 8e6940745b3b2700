#![no_main]
//! See `wxexpress::fuzz::ndjson_line`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wxexpress::fuzz::ndjson_line(data));
