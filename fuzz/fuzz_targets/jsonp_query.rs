#![no_main]
//! See `wxexpress::fuzz::jsonp_query`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wxexpress::fuzz::jsonp_query(data));
