//! `pgbroker bench pubsub`: a load generator for streams, with the source
//! article's workload as defaults. Producers send batches of fixed-size
//! records at a target rate (or flat out); consumer groups read everything
//! concurrently; end-to-end latency is the consumer's receive time minus the
//! record's producer timestamp, both taken from this process's clock.

mod article;
mod ceiling;
mod compare;
mod queue;
mod queue_article;
mod streams;
mod workload;

pub use compare::{compare, CompareArgs};
pub use queue::{queue, QueueArgs};
use workload::{Pace, RunArgs, Workload};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ::pgbroker::Broker;
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde_json::json;

/// Flags of `bench pubsub`.
#[derive(Debug, Clone, clap::Args)]
pub struct PubsubArgs {
    /// The design to drive.
    #[arg(long, value_enum, default_value = "pgbroker")]
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

/// Counters shared by all tasks. Latencies go to per-task histograms,
/// merged at the end, so that recording them costs no lock.
#[derive(Default)]
struct Stats {
    written: AtomicU64,
    read: AtomicU64,
    /// Set once the warm-up is over.
    measuring: AtomicBool,
}

/// Which latency a task measured.
enum Measured {
    EndToEnd(Histogram<u64>),
    Produce(Histogram<u64>),
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram")
}

fn record(stats: &Stats, h: &mut Histogram<u64>, micros: u64) {
    if stats.measuring.load(Ordering::Relaxed) {
        let _ = h.record(micros.clamp(1, 600_000_000));
    }
}

/// CPU seconds used so far by this process and by all `postgres` processes.
fn cpu_seconds() -> (f64, f64) {
    let ticks = 100.0; // USER_HZ on Linux
    let read = |path: &std::path::Path| -> Option<(String, f64)> {
        let s = std::fs::read_to_string(path).ok()?;
        let (head, rest) = s.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_string();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let used = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some((comm, used / ticks))
    };
    let own = read(std::path::Path::new("/proc/self/stat")).map_or(0.0, |x| x.1);
    let mut pg = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some((comm, used)) = read(&e.path().join("stat")) {
                if comm == "postgres" {
                    pg += used;
                }
            }
        }
    }
    (own, pg)
}

/// The record value every producer sends: `size` bytes of a fixed pattern.
fn payload(size: u32) -> Vec<u8> {
    (0..size)
        .map(|i| u8::try_from((i * 31 + 7) % 251).unwrap_or(0))
        .collect()
}

/// Drives one producer: paces its batches for the target rate (spread over
/// the interval by producer number, so a rate means evenly spaced batches
/// rather than bursts), rotates over the partitions, times each send with
/// `send(partition, send_time)` and counts the records.
async fn produce_loop<F, Fut>(
    args: &impl Workload,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    mut send: F,
) -> Result<Measured>
where
    F: FnMut(i32, SystemTime) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut latency = histogram()?;
    let pace = args.pace();
    let batch = u64::from(pace.batch);
    let interval = pace
        .rate
        .map(|r| Duration::from_secs_f64(batch as f64 * f64::from(pace.producers) / r.max(1) as f64));
    let mut next_send = Instant::now() + interval.map_or(Duration::ZERO, |iv| iv * id / pace.producers.max(1));
    let mut k = 0i32;
    while !stop.load(Ordering::Relaxed) {
        if let Some(iv) = interval {
            tokio::time::sleep_until(next_send.into()).await;
            next_send += iv;
        }
        let partition = (i32::try_from(id)? + k) % pace.partitions.max(1);
        k = (k + 1) % pace.partitions.max(1);
        let t0 = Instant::now();
        send(partition, SystemTime::now()).await?;
        record(&stats, &mut latency, u64::try_from(t0.elapsed().as_micros())?);
        stats.written.fetch_add(batch, Ordering::Relaxed);
    }
    Ok(Measured::Produce(latency))
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

impl System {
    pub(crate) fn name(self) -> &'static str {
        match self {
            System::Pgbroker => "pgbroker",
            System::Article => "article",
            System::Ceiling => "ceiling",
        }
    }
}

/// Runs the pub/sub benchmark against `args.system`, on fresh tables that
/// are removed afterwards, and prints (and with `--json`, writes) the
/// summary.
pub async fn pubsub(broker: Broker, database_url: &str, args: PubsubArgs) -> Result<()> {
    let summary = run_once(&broker, database_url, &args).await?;
    args.run.report(&summary)
}

/// One run of the workload against `args.system`; returns its summary.
async fn run_once(broker: &Broker, database_url: &str, args: &PubsubArgs) -> Result<serde_json::Value> {
    match args.system {
        System::Pgbroker => streams::run(broker.clone(), args.clone()).await,
        System::Article => article::run(database_url, args.clone()).await,
        System::Ceiling => ceiling::run(database_url, args.clone()).await,
    }
}

/// Lets the tasks run through the warm-up and the measured time, then stops
/// them and returns the summary.
async fn measure(
    args: &impl Workload,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Result<Measured>>>,
) -> Result<serde_json::Value> {
    tokio::time::sleep(args.run().warmup).await;
    stats.measuring.store(true, Ordering::Relaxed);
    let (w0, r0) = (
        stats.written.load(Ordering::Relaxed),
        stats.read.load(Ordering::Relaxed),
    );
    let (own0, pg0) = cpu_seconds();
    let started = Instant::now();
    while started.elapsed() < args.run().duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let secs = started.elapsed().as_secs_f64();
        eprint!(
            "\r{:>4.0}s  written {:>10.0}/s  read {:>10.0}/s   ",
            secs,
            (stats.written.load(Ordering::Relaxed) - w0) as f64 / secs,
            (stats.read.load(Ordering::Relaxed) - r0) as f64 / secs
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let (own1, pg1) = cpu_seconds();
    let written = stats.written.load(Ordering::Relaxed) - w0;
    let read = stats.read.load(Ordering::Relaxed) - r0;
    stop.store(true, Ordering::Relaxed);
    let (mut e2e, mut prod) = (histogram()?, histogram()?);
    for t in tasks {
        match t.await.context("benchmark task")?? {
            Measured::EndToEnd(h) => e2e.add(h).context("merging histograms")?,
            Measured::Produce(h) => prod.add(h).context("merging histograms")?,
        }
    }
    eprintln!();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mib = f64::from(args.message_size()) / (1024.0 * 1024.0);
    let million = (written.max(1)) as f64 / 1e6;
    let mut summary = args.head();
    let figures = json!({
        "duration_s": secs,
        "write_msgs_per_s": written as f64 / secs,
        "read_msgs_per_s": read as f64 / secs,
        "write_mib_per_s": written as f64 * mib / secs,
        "read_mib_per_s": read as f64 * mib / secs,
        "e2e_p50_ms": ms(&e2e, 0.5),
        "e2e_p95_ms": ms(&e2e, 0.95),
        "e2e_p99_ms": ms(&e2e, 0.99),
        "e2e_p999_ms": ms(&e2e, 0.999),
        "e2e_max_ms": e2e.max() as f64 / 1000.0,
        "produce_p50_ms": ms(&prod, 0.5),
        "produce_p99_ms": ms(&prod, 0.99),
        "broker_cpu_s_per_million": (own1 - own0) / million,
        "postgres_cpu_s_per_million": (pg1 - pg0) / million,
    });
    if let (Some(head), serde_json::Value::Object(figures)) = (summary.as_object_mut(), figures) {
        head.extend(figures);
    }
    Ok(summary)
}
