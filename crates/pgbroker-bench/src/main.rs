//! `pgbroker-bench`: pgbroker's benchmarks. It runs a pub/sub and a
//! work-queue workload against pgbroker, its Kafka front end (through
//! librdkafka), its SQS-compatible API and its SQL functions, the source
//! article's SQL design, Postgres's ceiling, and
//! the peers a user would otherwise pick (RabbitMQ, NATS JetStream, Redis
//! Streams, pgmq), writes every run as a JSON line, and turns the results
//! into BENCHMARKS.md with plots. It is a binary of its own so that
//! `pgbroker` links none of the peers' clients.

mod article;
mod article_queue;
mod brokers;
mod ceiling;
mod compaction;
mod compare;
mod console;
mod db;
mod diff;
mod kafka;
mod kafka_txn;
mod measure;
mod nats;
mod pages;
mod pgbroker_queue;
mod pgbroker_sql;
mod pgbroker_streams;
mod pgmq;
mod pgpair;
mod plots;
mod procfs;
mod rabbitmq;
mod redis_streams;
mod report;
mod scale;
mod soak;
mod sqs;
mod sqs_http;
mod standby;
mod suite;
mod summary;
mod sweep;
mod systems;
mod tails;
mod tansu;
mod targets;
mod window;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use systems::{Endpoints, PubsubSystem, QueueSystem};
use workload::{PubsubArgs, QueueArgs};

/// Compare pgbroker with its alternatives on this machine.
#[derive(Debug, Parser)]
#[command(name = "pgbroker-bench", version, about)]
struct Cli {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One pub/sub run against one system.
    Pubsub {
        /// The system.
        #[arg(long, value_enum, default_value = "pgbroker")]
        system: PubsubSystem,
        #[command(flatten)]
        workload: PubsubArgs,
    },
    /// One queue run against one system.
    Queue {
        /// The system.
        #[arg(long, value_enum, default_value = "pgbroker")]
        system: QueueSystem,
        #[command(flatten)]
        workload: QueueArgs,
    },
    /// One pub/sub workload against several systems in turn, with medians and ratios.
    Compare(compare::CompareArgs),
    /// Every scenario, systems in turn, rounds; appends JSON lines.
    Suite(suite::SuiteArgs),
    /// Latency against offered rate.
    Sweep(sweep::SweepArgs),
    /// A long run sampled over time, optionally with a transaction held open.
    Soak(soak::SoakArgs),
    /// The console's page loads on a topic and a group of many partitions.
    Pages(pages::PagesCommand),
    /// The cleaner on a large compacted topic, and produce latency while it runs.
    Compaction(compaction::CompactionArgs),
    /// Scale curves: one knob swept at a time (partitions, topics, groups,
    /// members, connections); appends JSON lines.
    Scale(scale::ScaleArgs),
    /// The spread of one scenario's tail over many runs, undisturbed and
    /// with a checkpoint, a vacuum or a retention pass in the middle.
    Tails(tails::TailsArgs),
    /// BENCHMARKS.md and plots from JSON-lines results.
    Report(report::ReportArgs),
    /// Two results files, before and after a change: the figures that
    /// moved beyond noise; fails if any got worse.
    Diff(diff::DiffArgs),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = &cli.endpoints;
    db::set_probe_url(&env.database_url);
    match cli.command {
        Command::Pubsub { system, workload } => {
            let summary = system.run(env, &workload).await;
            systems::drop_schema(&env.database_url).await?;
            workload.run.report(&summary?)
        }
        Command::Queue { system, workload } => {
            let summary = system.run(env, &workload).await;
            systems::drop_schema(&env.database_url).await?;
            workload.run.report(&summary?)
        }
        Command::Compare(args) => compare::compare(env, args).await,
        Command::Suite(args) => suite::suite(env, &args).await,
        Command::Sweep(args) => sweep::sweep(env, &args).await,
        Command::Soak(args) => soak::soak(env, &args).await,
        Command::Pages(args) => pages::command(env, &args).await,
        Command::Compaction(args) => compaction::command(env, &args).await,
        Command::Scale(args) => scale::scale(env, &args).await,
        Command::Tails(args) => tails::command(env, &args).await,
        Command::Report(args) => report::report(&args),
        Command::Diff(args) => diff::diff(&args),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
