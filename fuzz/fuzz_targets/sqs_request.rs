//! Fuzz target: see `pgbroker_sqs::fuzzing::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgbroker_sqs::fuzzing::request(data));
