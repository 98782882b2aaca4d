//! The library half of the `pgbroker` command: the benchmark kit, shared
//! with the comparison harness `pgbroker-bench`.

pub mod bench;
