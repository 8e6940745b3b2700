#![no_main]
//! See `wxexpress::fuzz::pay_xml`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wxexpress::fuzz::pay_xml(data));
