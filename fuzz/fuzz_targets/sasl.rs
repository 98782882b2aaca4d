//! Fuzz target: see `pgbroker_kafka::fuzzing::sasl`.
#![no_main]

#[global_allocator]
static ALLOC: pgbroker_kafka::GuardedAlloc = pgbroker_kafka::GuardedAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| pgbroker_kafka::fuzzing::sasl(data));
