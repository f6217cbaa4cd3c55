#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portok_fuzz::checks::names(data));
