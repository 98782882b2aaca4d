//! `pgbroker-bench soak`: one long run of pgbroker, sampled every interval
//! for throughput, end-to-end p99, dead tuples and table sizes, optionally
//! with a transaction held open elsewhere for part of the run (the case in
//! which vacuum cannot clean up). Samples go to the results as
//! `"kind": "soak-sample"` lines; the whole run's summary follows them.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::measure::Stats;
use crate::suite::{pubsub_args, queue_args};
use crate::summary::{append_jsonl, Note, SoakSample};
use crate::systems::{library_schema, Endpoints, PubsubSystem, QueueSystem};
use anyhow::Result;

/// Which workload soaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SoakWorkload {
    /// pgbroker's streams, the article's pub/sub shape.
    Pubsub,
    /// pgbroker's work queues, batches of 10.
    Queue,
}

/// Flags of `soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// The workload.
    #[arg(long, value_enum, default_value = "queue")]
    pub workload: SoakWorkload,
    /// Length of the run.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Target rate, messages/s.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Time between samples.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub sample_every: Duration,
    /// Open a REPEATABLE READ transaction elsewhere at this time into the run...
    #[arg(long, value_parser = humantime::parse_duration)]
    pub hold_transaction_at: Option<Duration>,
    /// ...and keep it open this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub hold_transaction_for: Duration,
    /// Append samples and the summary to this JSON-lines file.
    #[arg(long, default_value = "results/soak.jsonl")]
    pub out: PathBuf,
}

/// Runs the soak.
pub async fn soak(env: &Endpoints, args: &SoakArgs) -> Result<()> {
    let warmup = Duration::from_secs(5);
    let run = async {
        match args.workload {
            SoakWorkload::Pubsub => {
                let w = pubsub_args(&format!("--rate {}", args.rate), args.duration, warmup)?;
                PubsubSystem::Pgbroker.run(env, &w).await
            }
            SoakWorkload::Queue => {
                let flags = format!("--rate {} --send-batch 10 --receive-batch 10", args.rate);
                let w = queue_args(&flags, args.duration, warmup)?;
                QueueSystem::Pgbroker.run(env, &w).await
            }
        }
    };
    let (summary, sampled) = tokio::join!(run, sample(env, args, warmup));
    let mut summary = summary?;
    sampled?;
    summary.scenario = Some(format!("soak-{:?}", args.workload).to_lowercase());
    append_jsonl(&args.out, &summary)?;
    crate::systems::drop_schema(&env.database_url).await
}

async fn sample(env: &Endpoints, args: &SoakArgs, warmup: Duration) -> Result<()> {
    let scenario = format!("soak-{:?}", args.workload).to_lowercase();
    let db = crate::db::connect(&env.database_url).await?;
    let holder = crate::db::connect(&env.database_url).await?;
    tokio::time::sleep(warmup).await;
    let Some(stats) = Stats::current() else { return Ok(()) };
    stats.take_window();
    stats.windowed.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let (mut w0, mut r0, mut t0) = (
        stats.written.load(Ordering::Relaxed),
        stats.read.load(Ordering::Relaxed),
        0.0,
    );
    let mut holding = false;
    while started.elapsed() + args.sample_every / 2 < args.duration {
        tokio::time::sleep(args.sample_every).await;
        let t = started.elapsed().as_secs_f64();
        if let Some(at) = args.hold_transaction_at {
            let want = started.elapsed() >= at && started.elapsed() < at + args.hold_transaction_for;
            if want && !holding {
                holder
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current()")
                    .await?;
            } else if !want && holding {
                holder.batch_execute("COMMIT").await?;
            }
            holding = want;
        }
        let (w, r) = (
            stats.written.load(Ordering::Relaxed),
            stats.read.load(Ordering::Relaxed),
        );
        let p99 = stats
            .take_window()
            .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0);
        let row = db
            .query_one(
                "SELECT COALESCE(sum(n_dead_tup), 0)::bigint, COALESCE(sum(pg_total_relation_size(relid)), 0)::bigint
                 FROM pg_stat_user_tables WHERE schemaname = $1",
                &[&library_schema()],
            )
            .await?;
        let line = Note::SoakSample(SoakSample {
            scenario: scenario.clone(),
            t_s: t,
            write_msgs_per_s: (w - w0) as f64 / (t - t0),
            read_msgs_per_s: (r - r0) as f64 / (t - t0),
            e2e_p99_ms: p99,
            dead_tuples: row.get(0),
            table_bytes: row.get(1),
            holding_transaction: holding,
        });
        append_jsonl(&args.out, &line)?;
        (w0, r0, t0) = (w, r, t);
    }
    if holding {
        holder.batch_execute("COMMIT").await?;
    }
    Ok(())
}
