//! Load generators that measure throughput and latency: `pgbroker bench
//! pubsub`, `queue` and `compare`, and the kit they share (workload flags,
//! paced producers, HDR histograms, the JSON summary), public so that the
//! comparison harness (`pgbroker-bench`) drives peer systems the same way.

mod article;
mod ceiling;
pub mod compare;
pub mod measure;
pub mod procfs;
pub mod pubsub;
pub mod queue;
mod queue_article;
mod streams;
pub mod workload;

pub use compare::{compare, CompareArgs};
pub use measure::{histogram, measure, measure_peer, measure_with, payload, produce_loop, record, Measured, Stats};
pub use procfs::BrokerProcess;
pub use pubsub::{pubsub, run_once, PubsubArgs, PubsubCommand, System};
pub use queue::{latency_micros, queue, run_queue_once, stamped, QueueArgs, QueueCommand, QueueSystem};
pub use workload::{Pace, Relabel, RunArgs, Workload};
