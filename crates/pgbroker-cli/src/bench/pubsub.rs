//! `pgbroker bench pubsub`: a load generator for streams, with the source
//! article's workload as defaults. Producers send batches of fixed-size
//! records at a target rate (or flat out); consumer groups read everything
//! concurrently; end-to-end latency is the consumer's receive time minus the
//! record's producer timestamp, both taken from this process's clock.

use ::pgbroker::Broker;
use anyhow::Result;

use super::workload::RunArgs;
use super::{article, ceiling, streams};

/// Flags of `bench pubsub`.
#[derive(Debug, Clone, clap::Args)]
pub struct PubsubArgs {
    /// The design to drive (set by the command, not a flag of the workload).
    #[arg(skip = System::Pgbroker)]
    pub system: System,
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
    pub rate: Option<u64>,
    /// Timing and output.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Which design a benchmark drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// pgbroker's library: segments, groups, record cache.
    Pgbroker,
    /// The source article's SQL design, with the same client library and
    /// payloads: per-partition tables, a counter row, claim-then-read
    /// consumers, one fixed reader per partition and group.
    Article,
    /// Binary COPY into a bare table: what Postgres takes at most, writes only.
    Ceiling,
}

impl PubsubArgs {
    /// Connections a broker running this workload in process needs: every
    /// producer and consumer at once, 8 to 64.
    pub fn pool_size(&self) -> usize {
        usize::try_from(self.producers + self.groups * self.consumers_per_group)
            .unwrap_or(64)
            .clamp(8, 64)
    }
}

impl System {
    /// The name used in summaries (`system`).
    pub fn name(self) -> &'static str {
        match self {
            System::Pgbroker => "pgbroker",
            System::Article => "article",
            System::Ceiling => "ceiling",
        }
    }
}

/// Flags of `bench pubsub`: the design and the workload.
#[derive(Debug, Clone, clap::Args)]
pub struct PubsubCommand {
    /// The design to drive.
    #[arg(long, value_enum, default_value = "pgbroker")]
    pub system: System,
    /// The workload.
    #[command(flatten)]
    pub workload: PubsubArgs,
}

/// Runs the pub/sub benchmark against `--system`, on fresh tables that
/// are removed afterwards, and prints (and with `--json`, writes) the
/// summary.
pub async fn pubsub(broker: Broker, database_url: &str, command: PubsubCommand) -> Result<()> {
    let args = PubsubArgs {
        system: command.system,
        ..command.workload
    };
    let summary = run_once(&broker, database_url, &args).await?;
    args.run.report(&summary)
}

/// One run of the workload against `args.system`; returns its summary.
pub async fn run_once(broker: &Broker, database_url: &str, args: &PubsubArgs) -> Result<serde_json::Value> {
    match args.system {
        System::Pgbroker => streams::run(broker.clone(), args.clone()).await,
        System::Article => article::run(database_url, args.clone()).await,
        System::Ceiling => ceiling::run(database_url, args.clone()).await,
    }
}
