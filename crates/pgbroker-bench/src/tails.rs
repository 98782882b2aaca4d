//! `tails`: how stable the end-to-end tail of one scenario is from run to
//! run. The library path (`pgbroker`) runs the pub/sub workload
//! (by default five groups at 5,000 records/s) several times undisturbed,
//! then a few times each with one disturbance in the middle of the
//! measured window: a forced `CHECKPOINT` (every dirty buffer written and
//! synced at once), a `VACUUM (ANALYZE)` of every table of the broker's
//! schema, and a retention pass that drops whole segments. Each run
//! records its p99 and p99.9, the disturbance's own duration, and the
//! checkpoints Postgres made during the run (a timed one can land in any
//! run), so that an outlier can be traced to its cause.
//!
//! The topic has small segments (`--segment-records`), so that every run
//! rolls segments over, as a long-lived topic does, and a retention limit
//! (`--retention-bytes`, 1 MiB per partition: far below one segment)
//! which only the retention pass enforces: it drops every closed segment.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::db;
use crate::summary::{append_jsonl, median, Note};
use crate::systems::{library, library_schema, Endpoints};
use crate::workload::PubsubArgs;

/// The scenario's name in results.
pub const SCENARIO: &str = "tails-5-groups-at-5k";

/// Flags of `tails`.
#[derive(Debug, Clone, clap::Args)]
pub struct TailsArgs {
    /// Undisturbed runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    /// Runs with each disturbance.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub disturbed_runs: u32,
    /// The disturbances, each in runs of its own.
    #[arg(long, value_delimiter = ',', default_value = "checkpoint,vacuum,retention")]
    pub disturbances: Vec<Disturbance>,
    /// Records per segment of the topic.
    #[arg(long, default_value_t = 8_192, value_parser = clap::value_parser!(i64).range(100..=1_048_576))]
    pub segment_records: i64,
    /// The topic's retention by size, bytes per partition: only the
    /// retention pass enforces it.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(i64).range(1..))]
    pub retention_bytes: i64,
    /// Pause between runs, so that one run's aftermath (its schema's drop,
    /// the WAL it left) settles before the next.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub pause: Duration,
    /// Append the results lines to this JSON-lines file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The workload (five groups at 5,000 records/s unless told).
    #[command(flatten)]
    pub workload: PubsubArgs,
}

/// What happens in the middle of a disturbed run's measured window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Disturbance {
    /// Nothing.
    None,
    /// A forced `CHECKPOINT`.
    Checkpoint,
    /// `VACUUM (ANALYZE)` of every table of the broker's schema.
    Vacuum,
    /// A retention pass, which drops the segments beyond the topic's limit.
    Retention,
}

impl Disturbance {
    fn name(self) -> &'static str {
        match self {
            Disturbance::None => "none",
            Disturbance::Checkpoint => "checkpoint",
            Disturbance::Vacuum => "vacuum",
            Disturbance::Retention => "retention",
        }
    }
}

/// One run of the scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TailRun {
    /// [`SCENARIO`].
    pub scenario: String,
    /// The disturbance in its measured window.
    pub disturbance: Disturbance,
    /// The run among those with the same disturbance, counted from 1.
    pub run: u32,
    /// Target write rate, records/s.
    pub target_rate: Option<u64>,
    /// Records per segment of the topic.
    pub segment_records: i64,
    /// Records read per second, all groups together.
    pub read_msgs_per_s: f64,
    /// End-to-end latency percentiles, ms.
    pub e2e_p50_ms: f64,
    /// 99th percentile, ms.
    pub e2e_p99_ms: f64,
    /// 99.9th percentile, ms.
    pub e2e_p999_ms: f64,
    /// Largest, ms.
    pub e2e_max_ms: f64,
    /// How long the disturbance took, ms (0 for none).
    pub disturbance_ms: f64,
    /// What the disturbance did (segments dropped, tables vacuumed).
    pub disturbance_detail: String,
    /// Checkpoints Postgres completed during the run, timed or requested
    /// (a forced one included).
    pub checkpoints: i64,
    /// /proc/loadavg when the run began.
    pub load_average: Option<String>,
}

/// Runs the scenario and appends its lines to `--out`.
pub async fn command(env: &Endpoints, args: &TailsArgs) -> Result<()> {
    let url = env.database_url.as_str();
    if let Some(path) = &args.out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        append_jsonl(path, &db::environment(url).await?)?;
    }
    let mut plan: Vec<(Disturbance, u32)> = (1..=args.runs).map(|i| (Disturbance::None, i)).collect();
    for d in args.disturbances.iter().filter(|d| **d != Disturbance::None) {
        plan.extend((1..=args.disturbed_runs).map(|i| (*d, i)));
    }
    for (disturbance, i) in plan {
        let run = one(env, args, disturbance, i).await;
        crate::systems::drop_schema(url).await?;
        let run = run?;
        println!(
            "{SCENARIO} {} #{}: p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, {:.0} read/s; {} in {:.0} ms; {} checkpoint(s)",
            disturbance.name(),
            run.run,
            run.e2e_p99_ms,
            run.e2e_p999_ms,
            run.e2e_max_ms,
            run.read_msgs_per_s,
            run.disturbance_detail,
            run.disturbance_ms,
            run.checkpoints
        );
        if let Some(path) = &args.out {
            append_jsonl(path, &Note::TailRun(run))?;
        }
        tokio::time::sleep(args.pause).await;
    }
    Ok(())
}

/// Checkpoints completed so far.
async fn checkpoints(url: &str) -> Result<i64> {
    let client = db::connect(url).await?;
    let row = client
        .query_one(
            "SELECT (checkpoints_timed + checkpoints_req)::int8 FROM pg_stat_bgwriter",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

async fn one(env: &Endpoints, args: &TailsArgs, disturbance: Disturbance, run: u32) -> Result<TailRun> {
    let url = env.database_url.as_str();
    let w = &args.workload;
    let config = pgbroker::TopicConfig {
        partitions: w.partitions,
        segment_records: args.segment_records,
        // Far below one segment by default: only the retention pass
        // enforces it.
        retention_bytes: Some(args.retention_bytes),
        ..pgbroker::TopicConfig::default()
    };
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.trim().to_string());
    let before = checkpoints(url).await?;
    let at = w.run.warmup + w.run.duration / 2;
    let disturb = {
        let env = env.clone();
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            disturb(&env, disturbance).await
        })
    };
    let summary = crate::pgbroker_streams::run_with(env, w, &config).await;
    let (disturbance_ms, disturbance_detail) = disturb.await.context("the disturbance's task")??;
    let summary = summary?;
    let f = &summary.figures;
    Ok(TailRun {
        scenario: SCENARIO.to_string(),
        disturbance,
        run,
        target_rate: w.rate,
        segment_records: args.segment_records,
        read_msgs_per_s: f.read_msgs_per_s,
        e2e_p50_ms: f.e2e_p50_ms,
        e2e_p99_ms: f.e2e_p99_ms,
        e2e_p999_ms: f.e2e_p999_ms,
        e2e_max_ms: f.e2e_max_ms,
        disturbance_ms,
        disturbance_detail,
        checkpoints: checkpoints(url).await? - before,
        load_average,
    })
}

/// Makes `disturbance` happen; returns how long it took, in ms, and what
/// it did.
async fn disturb(env: &Endpoints, disturbance: Disturbance) -> Result<(f64, String)> {
    let url = env.database_url.as_str();
    let started = Instant::now();
    let detail = match disturbance {
        Disturbance::None => return Ok((0.0, "nothing".to_string())),
        Disturbance::Checkpoint => {
            db::connect(url).await?.batch_execute("CHECKPOINT").await?;
            "checkpoint".to_string()
        }
        Disturbance::Vacuum => {
            let client = db::connect(url).await?;
            // Names from the catalogue, quoted by Postgres itself.
            let rows = client
                .query(
                    "SELECT format('VACUUM (ANALYZE) %I.%I', n.nspname, c.relname)
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
                    &[&library_schema()],
                )
                .await?;
            for row in &rows {
                client.batch_execute(row.get::<_, &str>(0)).await?;
            }
            format!("{} tables vacuumed", rows.len())
        }
        Disturbance::Retention => {
            let broker = library(env, 2).await?;
            let dropped = broker.maintenance().enforce_retention().await?;
            format!("{dropped} segments dropped")
        }
    };
    Ok((started.elapsed().as_secs_f64() * 1000.0, detail))
}

/// The section of BENCHMARKS.md: per segment size and disturbance, the
/// spread of p99 and p99.9 over the runs.
pub fn section(md: &mut String, runs: &[&TailRun]) {
    if runs.is_empty() {
        return;
    }
    md.push_str(
        "## Tail stability\n\n\
        `pgbroker-bench tails`: the library path on five groups at 5,000 records/s, run after run on one \
        machine, undisturbed and then with one disturbance in the middle of each measured window: a forced \
        `CHECKPOINT`, a `VACUUM (ANALYZE)` of every table of the broker's schema, and a retention pass that \
        drops whole segments (the topic has a retention by size, `--retention-bytes`, 1 MiB per partition \
        unless told, which only that pass enforces: it drops every closed segment). With small segments every run rolls segments over; with \
        segments of 1,048,576 records (the default) none does. Latencies in ms, min / median / max over the \
        runs.\n\n\
        | segment records | disturbance | runs | p99 min | p99 median | p99 max | p99.9 min | p99.9 median | p99.9 max | max median | disturbance ms | what it did |\n\
        |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let mut sizes: Vec<i64> = runs.iter().map(|r| r.segment_records).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let kinds = [
        Disturbance::None,
        Disturbance::Checkpoint,
        Disturbance::Vacuum,
        Disturbance::Retention,
    ];
    for size in &sizes {
        for d in kinds {
            let mine: Vec<&TailRun> = runs
                .iter()
                .copied()
                .filter(|r| r.disturbance == d && r.segment_records == *size)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let spread = |f: fn(&TailRun) -> f64| {
                let v: Vec<f64> = mine.iter().map(|r| f(r)).collect();
                let (lo, hi) = v
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
                (lo, median(v), hi)
            };
            let (p99_lo, p99_med, p99_hi) = spread(|r| r.e2e_p99_ms);
            let (p999_lo, p999_med, p999_hi) = spread(|r| r.e2e_p999_ms);
            let (_, max_med, _) = spread(|r| r.e2e_max_ms);
            let (_, took, _) = spread(|r| r.disturbance_ms);
            let what = mine.last().map_or("", |r| r.disturbance_detail.as_str());
            let _ = writeln!(
                md,
                "| {size} | {} | {} | {p99_lo:.2} | {p99_med:.2} | {p99_hi:.2} | {p999_lo:.2} | {p999_med:.2} | {p999_hi:.2} | {max_med:.2} | {took:.0} | {what} |",
                d.name(),
                mine.len()
            );
        }
    }
    md.push('\n');
    for size in &sizes {
        let list: Vec<String> = runs
            .iter()
            .filter(|r| r.disturbance == Disturbance::None && r.segment_records == *size)
            .map(|r| format!("{:.1}", r.e2e_p99_ms))
            .collect();
        if !list.is_empty() {
            let _ = writeln!(
                md,
                "p99 of each undisturbed run with segments of {size} records, in order: {}.\n",
                list.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: Disturbance, p99: f64) -> TailRun {
        sized(d, p99, 8192)
    }

    fn sized(d: Disturbance, p99: f64, segment_records: i64) -> TailRun {
        TailRun {
            scenario: SCENARIO.into(),
            disturbance: d,
            run: 1,
            target_rate: Some(5000),
            segment_records,
            read_msgs_per_s: 25_000.0,
            e2e_p50_ms: 2.0,
            e2e_p99_ms: p99,
            e2e_p999_ms: p99 * 2.0,
            e2e_max_ms: p99 * 3.0,
            disturbance_ms: 10.0,
            disturbance_detail: "checkpoint".into(),
            checkpoints: 1,
            load_average: None,
        }
    }

    #[test]
    fn section_gives_each_segment_size_and_disturbance_its_spread() {
        let runs = [
            run(Disturbance::None, 5.0),
            run(Disturbance::None, 7.0),
            run(Disturbance::None, 6.0),
            run(Disturbance::Checkpoint, 40.0),
            sized(Disturbance::None, 4.0, 1 << 20),
        ];
        let refs: Vec<&TailRun> = runs.iter().collect();
        let mut md = String::new();
        section(&mut md, &refs);
        assert!(
            md.contains("| 8192 | none | 3 | 5.00 | 6.00 | 7.00 | 10.00 | 12.00 | 14.00 | 18.00 | 10 | checkpoint |"),
            "{md}"
        );
        assert!(md.contains("| 8192 | checkpoint | 1 | 40.00 | 40.00 | 40.00 |"), "{md}");
        assert!(md.contains("| 1048576 | none | 1 | 4.00 | 4.00 | 4.00 |"), "{md}");
        assert!(!md.contains("| vacuum |"), "{md}");
        assert!(
            md.contains("segments of 8192 records, in order: 5.0, 7.0, 6.0."),
            "{md}"
        );
        assert!(md.contains("segments of 1048576 records, in order: 4.0."), "{md}");
    }

    #[test]
    fn a_run_survives_the_results_file() {
        let line = serde_json::to_string(&Note::TailRun(run(Disturbance::Retention, 9.0))).expect("JSON");
        assert!(line.contains("\"kind\":\"tail-run\""), "{line}");
        let back: Note = serde_json::from_str(&line).expect("a note");
        let Note::TailRun(back) = back else {
            panic!("not a tail run: {line}")
        };
        assert_eq!(back.disturbance, Disturbance::Retention);
        assert_eq!(back.e2e_p99_ms, 9.0);
    }
}
