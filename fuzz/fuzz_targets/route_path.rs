#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egregore_relay::fuzzing::route_path(data));
