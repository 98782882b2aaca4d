//! The two workloads and their flags: pub/sub (producers and consumer
//! groups on one topic, the source article's shape by default) and work
//! queues (producers and workers on one queue). The flags are also the
//! workload's part of every summary.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Flags every run has: how long it runs and where its summary goes.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Measured time.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Time before measuring starts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Write the summary as JSON to this file too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            duration: Duration::from_secs(30),
            warmup: Duration::from_secs(5),
            json: None,
        }
    }
}

/// The pub/sub workload.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct PubsubArgs {
    /// Record size in bytes.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub message_size: u32,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub partitions: i32,
    /// Concurrent producers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub producers: u32,
    /// Consumer groups, each reading everything.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub groups: u32,
    /// Consumers in each group.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub consumers_per_group: u32,
    /// Records per produce call.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub write_batch: u32,
    /// Most records per partition per fetch.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub read_batch: u32,
    /// Target write rate in records/s; flat out when not given.
    #[arg(long)]
    #[serde(rename = "target_rate")]
    pub rate: Option<u64>,
    /// Records produced, spread over the partitions, before the consumers
    /// start (not measured): the consumers then drain a backlog, so their
    /// read rate is not bounded by the producers'. The Kafka-protocol
    /// systems only.
    #[arg(long, default_value_t = 0)]
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backlog: u64,
    /// librdkafka producer instances the producers of the Kafka-protocol
    /// systems share, each taking producers in turn. One, as Kafka's
    /// documentation advises for a process (a producer is thread-safe and
    /// batches across its callers); the number of producers gives each its
    /// own. Results recorded before this setting existed have none: one
    /// instance per producer.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=1000))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_producer_clients: Option<u32>,
    /// Timing and output.
    #[command(flatten)]
    #[serde(skip)]
    pub run: RunArgs,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The work-queue workload. Each message carries its send time in its
/// first 8 bytes (see [`crate::measure::stamped`]).
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct QueueArgs {
    /// Message size in bytes (at least 8: the send time is carried in it).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(8..=1_048_576))]
    pub message_size: u32,
    /// Concurrent producers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub producers: u32,
    /// Concurrent workers.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub workers: u32,
    /// Messages per send call.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub send_batch: u32,
    /// Most messages per receive (and per acknowledgement).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub receive_batch: u32,
    /// Target send rate in messages/s, all producers together; flat out
    /// when not given.
    #[arg(long)]
    #[serde(rename = "target_rate")]
    pub rate: Option<u64>,
    /// Seconds each receive waits for a message on an empty queue (long
    /// polling); when not given, each system's short default (pgbroker's
    /// library 100 ms, the SQS API 1 s, the SQL functions none: workers
    /// nap 0.1 to 2 ms like pgmq's and the article's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=20))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_poll_s: Option<u32>,
    /// Timing and output.
    #[command(flatten)]
    #[serde(skip)]
    pub run: RunArgs,
}

/// A workload's parameters as a summary records them, under `workload`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "workload", rename_all = "lowercase")]
pub enum Shape {
    /// The pub/sub workload.
    Pubsub(PubsubArgs),
    /// The work-queue workload.
    Queue(QueueArgs),
}

impl Shape {
    /// The target rate, if the run had one.
    pub fn target_rate(&self) -> Option<u64> {
        match self {
            Shape::Pubsub(a) => a.rate,
            Shape::Queue(a) => a.rate,
        }
    }

    /// Consumer groups reading everything (1 for a queue).
    pub fn readers_of_each_message(&self) -> u32 {
        match self {
            Shape::Pubsub(a) => a.groups.max(1),
            Shape::Queue(_) => 1,
        }
    }
}

/// How producers pace their sends.
pub struct Pace {
    /// Messages per send call.
    pub batch: u32,
    /// Concurrent producers.
    pub producers: u32,
    /// Target total messages/s; flat out when `None`.
    pub rate: Option<u64>,
    /// Partitions to rotate over (1 when there are none).
    pub partitions: i32,
}

/// What the shared machinery (`measure`, `produce_loop`) needs to know of
/// a workload.
pub trait Workload {
    /// Timing and output flags.
    fn run(&self) -> &RunArgs;
    /// Message size in bytes.
    fn message_size(&self) -> u32;
    /// How producers pace their sends.
    fn pace(&self) -> Pace;
    /// The parameters, for the summary.
    fn shape(&self) -> Shape;
    /// Connections a broker running the workload in process needs: every
    /// producer and consumer at once, 8 to 64.
    fn pool_size(&self) -> usize;
}

fn pool(clients: u32) -> usize {
    usize::try_from(clients).unwrap_or(64).clamp(8, 64)
}

impl Workload for PubsubArgs {
    fn run(&self) -> &RunArgs {
        &self.run
    }
    fn message_size(&self) -> u32 {
        self.message_size
    }
    fn pace(&self) -> Pace {
        Pace {
            batch: self.write_batch,
            producers: self.producers,
            rate: self.rate,
            partitions: self.partitions,
        }
    }
    fn shape(&self) -> Shape {
        Shape::Pubsub(self.clone())
    }
    fn pool_size(&self) -> usize {
        pool(self.producers + self.groups * self.consumers_per_group)
    }
}

impl Workload for QueueArgs {
    fn run(&self) -> &RunArgs {
        &self.run
    }
    fn message_size(&self) -> u32 {
        self.message_size
    }
    fn pace(&self) -> Pace {
        Pace {
            batch: self.send_batch,
            producers: self.producers,
            rate: self.rate,
            partitions: 1,
        }
    }
    fn shape(&self) -> Shape {
        Shape::Queue(self.clone())
    }
    fn pool_size(&self) -> usize {
        pool(self.producers + self.workers)
    }
}
