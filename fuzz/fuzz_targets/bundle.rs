#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sigmirror::fuzzing::bundle(data));
