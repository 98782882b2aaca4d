//! `pgbroker-bench scale`: scale curves. One knob at a time is swept over
//! `pgbroker serve` (partitions of one topic, topics of four partitions,
//! consumer groups, members of one group, idle client connections), or
//! over pgbroker's work queues in this process (queues of one schema,
//! messages waiting in one queue), or over the data one topic retains
//! (through the library in this process), one
//! short point per value, and each point is appended to the results as a
//! [`ScalePoint`]; `report` draws each curve as a table and log-log plots
//! (see [`mod@section`]).

mod connections;
mod groups;
mod partitions;
mod queues;
mod retained;
mod section;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgbroker::{Broker, BrokerConfig, TopicConfig, TopicName};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::summary::{append_jsonl, median, Note};
use crate::systems::Endpoints;
use crate::workload::{PubsubArgs, RunArgs};

pub use section::section;

/// The curves `scale` can sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Curve {
    /// Partitions of one topic (`scale-partitions`).
    Partitions,
    /// Topics of four partitions each (`scale-topics`).
    Topics,
    /// Consumer groups of one member reading one topic (`scale-groups`).
    Groups,
    /// Members of one consumer group (`scale-members`).
    Members,
    /// Idle client connections beside one producer and one consumer
    /// (`scale-connections`).
    Connections,
    /// Work queues of one schema, measured on one of them (`scale-queues`).
    Queues,
    /// Messages waiting in one work queue (`scale-backlog`).
    Backlog,
    /// Data one topic retains (`scale-retained`).
    Retained,
}

/// Flags of `scale`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// The curves, each swept in turn.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "partitions,topics,groups,members,connections,queues,backlog,retained"
    )]
    pub curves: Vec<Curve>,
    /// Partition counts of the one topic of `partitions`.
    #[arg(long, value_delimiter = ',', default_value = "4,40,400,1000")]
    pub partitions: Vec<i32>,
    /// Topic counts of `topics`.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,2500")]
    pub topics: Vec<u32>,
    /// Group counts of `groups`.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,200")]
    pub groups: Vec<u32>,
    /// Member counts of `members`.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub members: Vec<u32>,
    /// Idle connection counts of `connections`.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,2000")]
    pub connections: Vec<u32>,
    /// Queue counts of `queues` (10000 is the longest point: drop it to save time).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000,10000")]
    pub queues: Vec<u32>,
    /// Messages waiting on the measured queue of each `queues` point.
    #[arg(long, default_value_t = 1000)]
    pub queue_backlog: u64,
    /// Backlogs of the one queue of `backlog` (1000000 is the longest
    /// default point; 10000000 takes minutes to fill and gigabytes of disk).
    #[arg(long, value_delimiter = ',', default_value = "0,1000,100000,1000000")]
    pub depths: Vec<u64>,
    /// MiB of records one topic holds at each point of `retained` (filled
    /// in turn: the largest point writes that much, and as much WAL).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub retained_mib: Vec<u64>,
    /// Records produced before the group curves, read by each point's groups.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: u64,
    /// Target write rate of the end-to-end latency runs, records/s.
    #[arg(long, default_value_t = 1000)]
    pub e2e_rate: u64,
    /// Measured time of each run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Warm-up of each run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Append every point to this JSON-lines file (with an environment line first).
    #[arg(long, default_value = "results/scale.jsonl")]
    pub out: PathBuf,
}

/// One point of a scale curve: the knob's value and what was measured
/// there (metrics not measured are absent).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalePoint {
    /// `scale-partitions`, `scale-groups`, ...
    pub scenario: String,
    /// The knob swept (`partitions`, `groups`, ...).
    pub knob: String,
    /// Its value at this point.
    pub value: u64,
    /// What was measured, by name (see [`mod@section`] for names and units).
    pub metrics: BTreeMap<String, f64>,
    /// /proc/loadavg when the point began.
    pub load_average: Option<String>,
}

impl ScalePoint {
    /// A point of `scenario` at `knob` = `value` with nothing measured yet.
    pub fn new(scenario: &str, knob: &str, value: u64) -> ScalePoint {
        ScalePoint {
            scenario: scenario.into(),
            knob: knob.into(),
            value,
            metrics: BTreeMap::new(),
            load_average: load_average(),
        }
    }

    /// Records `metric` when it is a finite number.
    pub fn set(&mut self, metric: &str, v: f64) {
        if v.is_finite() {
            self.metrics.insert(metric.into(), v);
        }
    }
}

/// Where a curve hands each point as it is measured.
pub type Emit<'a> = dyn FnMut(ScalePoint) -> Result<()> + 'a;

/// /proc/loadavg now.
pub fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Runs the curves, appending every point to `args.out`.
pub async fn scale(env: &Endpoints, args: &ScaleArgs) -> Result<()> {
    append_jsonl(&args.out, &crate::db::environment(&env.database_url).await?)?;
    let mut points = Vec::new();
    for curve in &args.curves {
        let mut emit = |p: ScalePoint| -> Result<()> {
            eprintln!("{} {}={}: {:?}", p.scenario, p.knob, p.value, p.metrics);
            append_jsonl(&args.out, &Note::ScalePoint(p.clone()))?;
            points.push(p);
            Ok(())
        };
        match curve {
            Curve::Partitions => partitions::partitions(env, args, &mut emit).await?,
            Curve::Topics => partitions::topics(env, args, &mut emit).await?,
            Curve::Groups => groups::groups(env, args, &mut emit).await?,
            Curve::Members => groups::members(env, args, &mut emit).await?,
            Curve::Connections => connections::connections(env, args, &mut emit).await?,
            Curve::Queues => queues::queues(env, args, &mut emit).await?,
            Curve::Backlog => queues::backlog(env, args, &mut emit).await?,
            Curve::Retained => retained::retained(env, args, &mut emit).await?,
        }
    }
    let mut md = String::new();
    section::tables(&mut md, &points.iter().collect::<Vec<_>>());
    println!("\n{md}");
    Ok(())
}

/// A fresh schema for one point, named from this process's id and `tag`
/// (both plain words: safe to place in SQL text).
pub fn schema_name(tag: &str) -> String {
    format!("bench_scale_{tag}_{}", std::process::id())
}

/// Drops `schema` (a name made by [`schema_name`]): its segment tables a
/// few hundred per transaction first, since dropping thousands of tables
/// at once needs more locks than Postgres's shared lock table holds
/// (`max_locks_per_transaction` × connections).
pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    let admin = crate::db::connect(url).await?;
    loop {
        let row = admin
            .query_one(
                "SELECT 'DROP TABLE ' || string_agg(format('%I.%I', $1::text, relname), ', ') FROM \
                 (SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relispartition LIMIT 200) s",
                &[&schema],
            )
            .await?;
        let Some(statement) = row.get::<_, Option<String>>(0) else {
            break;
        };
        admin.batch_execute(&statement).await?;
    }
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    Ok(())
}

/// Makes `schema` afresh with the topics `(name, partitions)`.
pub async fn populate(url: &str, schema: &str, topics: &[(String, i32)]) -> Result<()> {
    drop_schema(url, schema).await?;
    let broker = Broker::connect(BrokerConfig {
        database_url: url.to_string(),
        schema: schema.to_string(),
        pool_size: 4,
        ..BrokerConfig::default()
    })
    .await?;
    for (name, partitions) in topics {
        let config = TopicConfig {
            partitions: *partitions,
            ..TopicConfig::default()
        };
        broker
            .topics()
            .create(&TopicName::new(name)?, &config)
            .await
            .with_context(|| format!("creating topic {name}"))?;
    }
    Ok(())
}

/// The pub/sub workload of a point: `producers`, one group of
/// `consumers`, 256-byte records, at `rate` or flat out.
pub fn workload(args: &ScaleArgs, partitions: i32, producers: u32, consumers: u32, rate: Option<u64>) -> PubsubArgs {
    PubsubArgs {
        message_size: 256,
        partitions,
        producers,
        groups: 1,
        consumers_per_group: consumers,
        write_batch: 100,
        read_batch: 200,
        rate,
        backlog: 0,
        kafka_producer_clients: Some(producers),
        run: RunArgs {
            duration: args.duration,
            warmup: args.warmup,
            json: None,
        },
    }
}

/// A librdkafka client for Metadata requests.
pub fn metadata_client(bootstrap: &str) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating a metadata client")
}

/// Median time in ms of `n` Metadata requests for all topics (`None`) or
/// one, after one unmeasured request.
pub async fn metadata_ms(bootstrap: &str, topic: Option<&str>, n: usize) -> Result<f64> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.map(str::to_string));
    tokio::task::spawn_blocking(move || -> Result<f64> {
        let client = metadata_client(&bootstrap)?;
        let timeout = Duration::from_secs(60);
        client.fetch_metadata(topic.as_deref(), timeout)?;
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            client.fetch_metadata(topic.as_deref(), timeout)?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(times))
    })
    .await?
}

/// Waits (at most `limit`) until Metadata for `topic` through `bootstrap`
/// answers.
pub async fn wait_for_metadata(bootstrap: &str, topic: &str, limit: Duration) -> Result<()> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let client = metadata_client(&bootstrap)?;
        let started = Instant::now();
        loop {
            match client.fetch_metadata(Some(&topic), Duration::from_secs(5)) {
                Ok(m)
                    if m.topics()
                        .iter()
                        .any(|t| t.error().is_none() && !t.partitions().is_empty()) =>
                {
                    return Ok(())
                }
                _ if started.elapsed() > limit => anyhow::bail!("no Metadata for {topic} within {limit:?}"),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })
    .await?
}

/// Rows of `pg_class` in `schema` and the bytes of its relations (tables
/// with their indexes and TOAST), sized a few hundred per statement: each
/// size takes a lock until its transaction ends (see [`drop_schema`]).
pub async fn catalogue(url: &str, schema: &str) -> Result<(f64, f64)> {
    let client = crate::db::connect(url).await?;
    let rows = client
        .query(
            "SELECT c.oid::bigint, c.relkind IN ('r', 'm') FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
            &[&schema],
        )
        .await?;
    let tables: Vec<i64> = rows.iter().filter(|r| r.get::<_, bool>(1)).map(|r| r.get(0)).collect();
    let mut bytes = 0i64;
    for chunk in tables.chunks(200) {
        let row = client
            .query_one(
                "SELECT COALESCE(sum(pg_total_relation_size(o::oid)), 0)::bigint FROM unnest($1::bigint[]) o",
                &[&chunk],
            )
            .await?;
        bytes += row.get::<_, i64>(0);
    }
    Ok((rows.len() as f64, bytes as f64))
}

/// CPU seconds per second (cores busy) from a summary's CPU seconds per
/// million records written.
pub fn cores(s_per_million: f64, write_per_s: f64) -> f64 {
    s_per_million * write_per_s / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_keeps_only_finite_metrics_and_is_a_note_of_its_kind() {
        let mut p = ScalePoint::new("scale-groups", "groups", 10);
        p.set("rebalance_ms", 120.0);
        p.set("read_per_s", f64::NAN);
        assert_eq!(p.metrics.len(), 1);
        let v = serde_json::to_value(Note::ScalePoint(p)).expect("JSON");
        assert_eq!(v["kind"], "scale-point");
        assert_eq!(v["value"], 10);
        assert_eq!(v["metrics"]["rebalance_ms"], 120.0);
    }

    #[test]
    fn cores_are_cpu_seconds_per_second() {
        assert!((cores(20.0, 50_000.0) - 1.0).abs() < 1e-9);
    }
}
