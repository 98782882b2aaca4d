//! `compaction`: the cleaner on a large compacted topic. On a fresh schema,
//! a topic with `cleanup.policy=compact` is filled to `--target-mb` of
//! values, `--keys` keys written over and over. Then, per round: a
//! producer writes single records at `--rate` for `--phase-secs` with the
//! cleaner idle, then again while one forced cleaner pass runs over the
//! topic. The results line says how long the
//! pass took, what it removed, the schema's table bytes and dead tuples
//! before and after, and the producer's latency in both phases.
//!
//! Later rounds find most of the topic clean: only the first round
//! measures the cleaner on the whole `--target-mb`; the next rounds measure
//! a pass over what the producer added since.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use pgbroker::streams::{Cleanup, CleanupPolicy};
use pgbroker::{Broker, BrokerConfig, Record, TopicConfig, TopicName};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::db;
use crate::measure::histogram;
use crate::summary::{append_jsonl, median, Note};
use crate::systems::Endpoints;

/// The scenario's name in results.
pub const SCENARIO: &str = "compaction";
const TOPIC: &str = "latest";
/// Records per produce call while filling.
const FILL_BATCH: usize = 500;

/// Flags of `compaction`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompactionArgs {
    /// Megabytes of values written before the first pass.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub target_mb: u32,
    /// Distinct keys; each is written about target / (keys * value) times.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub keys: u32,
    /// Bytes of each value.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub value_bytes: u32,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub partitions: i32,
    /// Records per segment (only closed segments are compacted).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(i64).range(100..=1_048_576))]
    pub segment_records: i64,
    /// Records per second of the producer timed in each phase.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// Seconds of the idle phase (the cleaning phase lasts as long as the pass).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub phase_secs: u64,
    /// Rounds: an idle phase and a cleaner pass each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Append the results lines to this JSON-lines file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One round: an idle phase and a cleaner pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompactionRun {
    /// [`SCENARIO`].
    pub scenario: String,
    /// The round, counted from 1.
    pub round: u32,
    /// Megabytes of values written before the first pass.
    pub target_mb: u32,
    /// Distinct keys.
    pub keys: u32,
    /// Records in the topic when the pass began.
    pub records: i64,
    /// The pass's wall time, s.
    pub cleaner_s: f64,
    /// Table bytes before the pass divided by its time, MB/s.
    pub cleaner_mb_per_s: f64,
    /// Records the pass removed.
    pub records_removed: i64,
    /// Segment tables rewritten.
    pub segments_rewritten: usize,
    /// Bytes of the schema's tables (indexes and TOAST included) before the pass.
    pub table_bytes_before: i64,
    /// The same after the pass.
    pub table_bytes_after: i64,
    /// Dead tuples in the segment tables after the pass.
    pub dead_tuples_after: i64,
    /// Producer latency with the cleaner idle: median and p99, ms.
    pub produce_p50_ms_idle: f64,
    /// See `produce_p50_ms_idle`.
    pub produce_p99_ms_idle: f64,
    /// Producer latency while the pass ran: median and p99, ms.
    pub produce_p50_ms_cleaning: f64,
    /// See `produce_p50_ms_cleaning`.
    pub produce_p99_ms_cleaning: f64,
}

/// `pgbroker-bench compaction`.
pub async fn command(env: &Endpoints, args: &CompactionArgs) -> Result<()> {
    if let Some(dir) = args
        .out
        .as_deref()
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let url = env.database_url.as_str();
    if let Some(path) = &args.out {
        append_jsonl(path, &db::environment(url).await?)?;
    }
    // Built from a number only: safe to place in SQL text.
    let schema = format!("bench_compaction_{}", std::process::id());
    let admin = db::connect(url).await?;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    let outcome = rounds(url, &schema, args).await;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    for run in outcome? {
        println!(
            "{SCENARIO} round {}: {} records, pass {:.1} s ({:.1} MB/s), removed {}, tables {} -> {} MB, \
             dead tuples {}, produce p99 {:.1} ms idle / {:.1} ms cleaning",
            run.round,
            run.records,
            run.cleaner_s,
            run.cleaner_mb_per_s,
            run.records_removed,
            run.table_bytes_before >> 20,
            run.table_bytes_after >> 20,
            run.dead_tuples_after,
            run.produce_p99_ms_idle,
            run.produce_p99_ms_cleaning
        );
    }
    Ok(())
}

async fn rounds(url: &str, schema: &str, args: &CompactionArgs) -> Result<Vec<CompactionRun>> {
    let broker = Broker::connect(BrokerConfig {
        database_url: url.to_string(),
        schema: schema.to_string(),
        pool_size: 8,
        ..BrokerConfig::default()
    })
    .await?;
    let topic = TopicName::new(TOPIC)?;
    let config = TopicConfig {
        partitions: args.partitions,
        segment_records: args.segment_records,
        cleanup: Cleanup {
            policy: CleanupPolicy::Compact,
            ..Cleanup::default()
        },
        ..TopicConfig::default()
    };
    broker.topics().create(&topic, &config).await?;
    fill(&broker, &topic, args).await?;
    let admin = db::connect(url).await?;
    let mut out = Vec::new();
    for round in 1..=args.rounds {
        let idle = timed_producer(&broker, &topic, args, async {
            tokio::time::sleep(Duration::from_secs(args.phase_secs)).await;
            Ok(())
        })
        .await?;
        let (before, _) = storage(&admin, schema).await?;
        let records = record_count(&admin, schema).await?;
        let started = Instant::now();
        let mut pass = None;
        let cleaning = timed_producer(&broker, &topic, args, async {
            let report = broker.maintenance().compact(true).await?;
            pass = Some((report, started.elapsed()));
            Ok(())
        })
        .await?;
        let (report, took) = pass.context("the cleaner pass did not run")?;
        let cleaner_s = took.as_secs_f64();
        let (after, dead) = storage(&admin, schema).await?;
        let run = CompactionRun {
            scenario: SCENARIO.into(),
            round,
            target_mb: args.target_mb,
            keys: args.keys,
            records,
            cleaner_s,
            cleaner_mb_per_s: before as f64 / f64::from(1 << 20) / cleaner_s.max(1e-9),
            records_removed: report.records_removed,
            segments_rewritten: report.segments_rewritten,
            table_bytes_before: before,
            table_bytes_after: after,
            dead_tuples_after: dead,
            produce_p50_ms_idle: ms(&idle, 0.5),
            produce_p99_ms_idle: ms(&idle, 0.99),
            produce_p50_ms_cleaning: ms(&cleaning, 0.5),
            produce_p99_ms_cleaning: ms(&cleaning, 0.99),
        };
        if let Some(path) = &args.out {
            append_jsonl(path, &Note::Compaction(run.clone()))?;
        }
        out.push(run);
    }
    Ok(out)
}

/// Writes `--target-mb` of values, key `i % keys` for the i-th record.
async fn fill(broker: &Broker, topic: &TopicName, args: &CompactionArgs) -> Result<()> {
    let total = u64::from(args.target_mb) * (1 << 20) / u64::from(args.value_bytes);
    let value = vec![b'v'; usize::try_from(args.value_bytes)?];
    let batches = total.div_ceil(FILL_BATCH as u64);
    eprintln!("{SCENARIO}: writing {total} records of {} keys", args.keys);
    let started = Instant::now();
    stream::iter(0..batches)
        .map(|b| {
            let value = &value;
            async move {
                let first = b * FILL_BATCH as u64;
                let records: Vec<Record> = (first..(first + FILL_BATCH as u64).min(total))
                    .map(|i| Record::keyed(format!("key-{}", i % u64::from(args.keys)), value.clone()))
                    .collect();
                broker.streams().produce(topic, None, &records).await.map(drop)
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<()>>()
        .await?;
    eprintln!("{SCENARIO}: written in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Produces one record at a time at `--rate` until `phase` ends; returns
/// the latency of each produce, µs.
async fn timed_producer(
    broker: &Broker,
    topic: &TopicName,
    args: &CompactionArgs,
    phase: impl std::future::Future<Output = Result<()>>,
) -> Result<Histogram<u64>> {
    let stop = Arc::new(AtomicBool::new(false));
    let value = vec![b'p'; usize::try_from(args.value_bytes)?];
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let producer = async {
        let mut h = histogram()?;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let key = format!("key-{}", rand::thread_rng().gen_range(0..args.keys));
            let sent = Instant::now();
            broker
                .streams()
                .produce(topic, None, &[Record::keyed(key, value.clone())])
                .await?;
            h.saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        anyhow::Ok(h)
    };
    let phase = async {
        let r = phase.await;
        stop.store(true, Ordering::Relaxed);
        r
    };
    let (h, ()) = tokio::try_join!(producer, phase)?;
    Ok(h)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// The schema's table bytes (indexes and TOAST included), and the dead
/// tuples of its segment tables (the partitions of `records`) as the
/// statistics collector last heard of them.
async fn storage(client: &tokio_postgres::Client, schema: &str) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8,
                    coalesce(sum(pg_stat_get_dead_tuples(c.oid)) FILTER (WHERE i.inhrelid IS NOT NULL), 0)::int8
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
             WHERE n.nspname = $1 AND c.relkind = 'r'",
            &[&schema],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

async fn record_count(client: &tokio_postgres::Client, schema: &str) -> Result<i64> {
    // The schema name is made of a number (see `command`).
    let row = client
        .query_one(&format!("SELECT count(*) FROM {schema}.records"), &[])
        .await?;
    Ok(row.get(0))
}

/// The report's section: the median of the rounds' figures.
pub fn section(md: &mut String, runs: &[&CompactionRun]) {
    use std::fmt::Write as _;
    let Some(first) = runs.iter().find(|r| r.round == 1) else {
        return;
    };
    let med = |f: fn(&CompactionRun) -> f64| median(runs.iter().map(|r| f(r)).collect());
    md.push_str(
        "## Compaction\n\n\
        `pgbroker-bench compaction`: a compacted topic filled with values written over and over for a few \
        keys, then one forced cleaner pass while a producer writes single records at a fixed rate; the same \
        producer with the cleaner idle for comparison. Table bytes are the schema's, indexes and TOAST \
        included; dead tuples are the segment tables', as Postgres's statistics last heard of them. The first round's pass cleans the whole topic; later rounds (medians \
        in the second table) clean what the producer added since.\n\n\
        | MB written | keys | records | pass s | MB/s | removed | tables before MB | after MB | dead tuples after | produce p99 idle ms | p99 while cleaning ms |\n\
        |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let _ = writeln!(
        md,
        "| {} | {} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {:.2} | {:.2} |",
        first.target_mb,
        first.keys,
        first.records,
        first.cleaner_s,
        first.cleaner_mb_per_s,
        first.records_removed,
        first.table_bytes_before >> 20,
        first.table_bytes_after >> 20,
        first.dead_tuples_after,
        first.produce_p99_ms_idle,
        first.produce_p99_ms_cleaning
    );
    let later: Vec<&CompactionRun> = runs.iter().copied().filter(|r| r.round > 1).collect();
    if !later.is_empty() {
        let med_later = |f: fn(&CompactionRun) -> f64| median(later.iter().map(|r| f(r)).collect());
        let _ = writeln!(
            md,
            "\nLater rounds ({}): pass {:.2} s, produce p99 {:.2} ms idle and {:.2} ms while cleaning.",
            later.len(),
            med_later(|r| r.cleaner_s),
            med_later(|r| r.produce_p99_ms_idle),
            med_later(|r| r.produce_p99_ms_cleaning)
        );
    }
    let _ = writeln!(
        md,
        "\nAll rounds: produce p50 {:.2} ms idle and {:.2} ms while cleaning.\n",
        med(|r| r.produce_p50_ms_idle),
        med(|r| r.produce_p50_ms_cleaning)
    );
}
