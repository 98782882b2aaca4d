//! What a run measured, as one typed summary serialised once per run, the
//! other lines of a results file (the machine, soak samples), and the
//! medians and ratios every table shows.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::workload::{RunArgs, Shape};

/// One run: the system, the workload's parameters and the figures, with
/// the scenario and round when a suite, sweep or soak ran it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// The system's name (`pgbroker`, `article`, `nats`, ...).
    pub system: String,
    /// The workload and its parameters.
    #[serde(flatten)]
    pub shape: Shape,
    /// What was measured.
    #[serde(flatten)]
    pub figures: Figures,
    /// The scenario of a suite, `sweep`, `compare` or `soak-...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// The round, counted from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
}

/// Rates, latency percentiles and costs of one run. Rates are messages/s,
/// latencies ms, CPU seconds per million messages written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    /// Measured time, seconds.
    pub duration_s: f64,
    /// Messages written per second.
    pub write_msgs_per_s: f64,
    /// Messages read (or received and acknowledged) per second.
    pub read_msgs_per_s: f64,
    /// MiB written per second.
    pub write_mib_per_s: f64,
    /// MiB read per second.
    pub read_mib_per_s: f64,
    /// Median end-to-end latency (receive time minus send time).
    pub e2e_p50_ms: f64,
    /// 95th percentile of end-to-end latency.
    pub e2e_p95_ms: f64,
    /// 99th percentile of end-to-end latency.
    pub e2e_p99_ms: f64,
    /// 99.9th percentile of end-to-end latency.
    pub e2e_p999_ms: f64,
    /// Largest end-to-end latency.
    pub e2e_max_ms: f64,
    /// Median time of one send call.
    pub produce_p50_ms: f64,
    /// 99th percentile of one send call.
    pub produce_p99_ms: f64,
    /// CPU of the broker process (the harness's own when in process).
    pub broker_cpu_s_per_million: f64,
    /// CPU of the harness's process.
    pub client_cpu_s_per_million: f64,
    /// CPU of all Postgres processes.
    pub postgres_cpu_s_per_million: f64,
    /// Largest resident size of the broker process seen, MiB; none when
    /// the broker runs in the harness's own process.
    pub broker_rss_max_mib: Option<f64>,
    /// WAL written per message in the measured window, bytes; none for
    /// systems that do not keep their messages in Postgres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_bytes_per_msg: Option<f64>,
    /// Growth of the databases' files per message in the measured window,
    /// bytes (tables, indexes, TOAST; less what retention or vacuum gave
    /// back); none for systems that do not keep their messages in Postgres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_bytes_per_msg: Option<f64>,
}

/// One figure of the tables: its name and whether more is better.
pub struct Figure {
    /// The key in results and the row name in tables.
    pub name: &'static str,
    /// Whether a larger value is better.
    pub more_is_better: bool,
    /// Reads it from a run's figures.
    pub of: fn(&Figures) -> Option<f64>,
}

macro_rules! figures {
    ($($(#[$doc:meta])* $name:ident = $field:ident, $more:expr;)*) => {
        $($(#[$doc])* pub const $name: Figure = Figure {
            name: stringify!($field),
            more_is_better: $more,
            of: |f| Some(f.$field),
        };)*
    };
}

figures! {
    /// Messages written per second.
    WRITE_RATE = write_msgs_per_s, true;
    /// Messages read (or received and acknowledged) per second.
    READ_RATE = read_msgs_per_s, true;
    /// Median end-to-end latency.
    E2E_P50 = e2e_p50_ms, false;
    /// 95th percentile of end-to-end latency.
    E2E_P95 = e2e_p95_ms, false;
    /// 99th percentile of end-to-end latency.
    E2E_P99 = e2e_p99_ms, false;
    /// 99.9th percentile of end-to-end latency.
    E2E_P999 = e2e_p999_ms, false;
    /// Largest end-to-end latency.
    E2E_MAX = e2e_max_ms, false;
    /// 99th percentile of one send call.
    PRODUCE_P99 = produce_p99_ms, false;
    /// Postgres CPU per million messages.
    POSTGRES_CPU = postgres_cpu_s_per_million, false;
    /// Broker CPU per million messages.
    BROKER_CPU = broker_cpu_s_per_million, false;
    /// Harness (client) CPU per million messages.
    CLIENT_CPU = client_cpu_s_per_million, false;
}

/// Largest resident memory of the broker process.
pub const BROKER_RSS: Figure = Figure {
    name: "broker_rss_max_mib",
    more_is_better: false,
    of: |f| f.broker_rss_max_mib,
};

/// WAL bytes per message written.
pub const WAL_BYTES: Figure = Figure {
    name: "wal_bytes_per_msg",
    more_is_better: false,
    of: |f| f.wal_bytes_per_msg,
};

/// Growth of the databases' files per message written.
pub const DB_BYTES: Figure = Figure {
    name: "db_bytes_per_msg",
    more_is_better: false,
    of: |f| f.db_bytes_per_msg,
};

/// The figures every comparison table shows, in order.
pub const TABLE: &[Figure] = &[
    WRITE_RATE,
    READ_RATE,
    E2E_P50,
    E2E_P99,
    E2E_P999,
    PRODUCE_P99,
    POSTGRES_CPU,
    BROKER_CPU,
    CLIENT_CPU,
    BROKER_RSS,
    WAL_BYTES,
    DB_BYTES,
];

/// The machine and Postgres a results file was measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    /// CPU model.
    pub cpu: Option<String>,
    /// Cores available to the harness.
    pub cores: usize,
    /// Total memory, as /proc/meminfo says it.
    pub memory: Option<String>,
    /// Kernel release.
    pub kernel: Option<String>,
    /// /proc/loadavg when the run began.
    pub load_average: Option<String>,
    /// Postgres's `version()`.
    pub postgres: String,
    /// The Postgres settings that decide what durable writes cost.
    pub settings: BTreeMap<String, String>,
}

/// One sample of a soak run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakSample {
    /// `soak-pubsub` or `soak-queue`.
    pub scenario: String,
    /// Seconds since measuring began.
    pub t_s: f64,
    /// Messages written per second since the last sample.
    pub write_msgs_per_s: f64,
    /// Messages read per second since the last sample.
    pub read_msgs_per_s: f64,
    /// 99th percentile of end-to-end latency since the last sample.
    pub e2e_p99_ms: f64,
    /// Dead tuples in the broker's tables.
    pub dead_tuples: i64,
    /// Size of the broker's tables with their indexes and TOAST.
    pub table_bytes: i64,
    /// Whether a transaction was held open elsewhere.
    pub holding_transaction: bool,
}

/// A results line other than a run, told apart by `kind`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Note {
    /// The machine and Postgres (first line of a suite's results).
    Environment(Environment),
    /// A soak sample.
    SoakSample(SoakSample),
    /// One console page's load times over a round.
    PageLoad(crate::pages::PageLoad),
    /// One round of the compaction scenario.
    Compaction(crate::compaction::CompactionRun),
    /// One run of the scenario of reads from a standby.
    StandbyRun(crate::standby::StandbyRun),
    /// One run of the scenario of one broker and three.
    BrokersRun(crate::brokers::BrokersRun),
    /// One point of a scale curve.
    ScalePoint(crate::scale::ScalePoint),
    /// One run of the tail-stability scenario.
    TailRun(crate::tails::TailRun),
}

/// One line of a results file.
#[derive(Debug, Clone)]
pub enum Line {
    /// A run.
    Run(Summary),
    /// Anything else.
    Note(Note),
}

/// Every line of the result files (runs have no `kind`).
pub fn load(files: &[PathBuf]) -> Result<Vec<Line>> {
    let mut all = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let parse = || -> serde_json::Result<Line> {
                let value: serde_json::Value = serde_json::from_str(line)?;
                if value.get("kind").is_some() {
                    serde_json::from_value(value).map(Line::Note)
                } else {
                    serde_json::from_value(value).map(Line::Run)
                }
            };
            all.push(parse().with_context(|| format!("{}:{}", f.display(), n + 1))?);
        }
    }
    Ok(all)
}

/// Appends `line` to `path` as one JSON line.
pub fn append_jsonl(path: &Path, line: &impl Serialize) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(line)?)?;
    Ok(())
}

impl RunArgs {
    /// Prints the summary and, with `--json`, writes it to the file.
    pub fn report(&self, summary: &Summary) -> Result<()> {
        println!("{}", serde_json::to_string_pretty(summary)?);
        if let Some(path) = &self.json {
            std::fs::write(path, serde_json::to_vec_pretty(summary)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// The median of `v` (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of `figure` over the runs of `system` among `runs`.
pub fn median_of<'a>(runs: impl IntoIterator<Item = &'a Summary>, system: &str, figure: &Figure) -> f64 {
    median(
        runs.into_iter()
            .filter(|r| r.system == system)
            .filter_map(|r| (figure.of)(&r.figures))
            .collect(),
    )
}

/// Medians of [`TABLE`] per system over `runs`, in the order of `systems`.
pub fn medians(runs: &[&Summary], systems: &[String]) -> Vec<Vec<f64>> {
    systems
        .iter()
        .map(|s| TABLE.iter().map(|f| median_of(runs.iter().copied(), s, f)).collect())
        .collect()
}

/// Names in order of first appearance.
pub fn ordered<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.iter().any(|o| o == i) {
            out.push(i.to_string());
        }
    }
    out
}

/// Prints medians per system and ratios against the first system.
pub fn print_table(runs: &[Summary], rounds: u32) {
    let runs: Vec<&Summary> = runs.iter().collect();
    let systems = ordered(runs.iter().map(|r| r.system.as_str()));
    let medians = medians(&runs, &systems);
    println!(
        "median of {rounds} rounds; ratio = system / {}",
        systems.first().map_or("-", String::as_str)
    );
    print!("{:<28}", "figure");
    for s in &systems {
        print!("{s:>14}{:>9}", "ratio");
    }
    println!();
    for (i, figure) in TABLE.iter().enumerate() {
        print!("{:<28}", figure.name);
        let base = medians.first().map_or(f64::NAN, |m| m[i]);
        for values in &medians {
            print!("{:>14.1}{:>9.2}", values[i], values[i] / base);
        }
        println!();
    }
}

/// A queue run of `scenario` with the given read and write rate and
/// latencies, for tests of what reads results.
#[cfg(test)]
pub fn test_run(scenario: &str, system: &str, round: u32, rate: f64, p99: f64) -> Summary {
    let duration = std::time::Duration::from_secs(20);
    let args = crate::suite::queue_args("", duration, std::time::Duration::from_secs(5)).expect("flags");
    Summary {
        system: system.into(),
        shape: Shape::Queue(args),
        figures: Figures {
            duration_s: 20.0,
            write_msgs_per_s: rate,
            read_msgs_per_s: rate,
            write_mib_per_s: 0.0,
            read_mib_per_s: 0.0,
            e2e_p50_ms: p99 / 2.0,
            e2e_p95_ms: p99,
            e2e_p99_ms: p99,
            e2e_p999_ms: p99,
            e2e_max_ms: p99,
            produce_p50_ms: 1.0,
            produce_p99_ms: 2.0,
            broker_cpu_s_per_million: 1.0,
            client_cpu_s_per_million: 1.0,
            postgres_cpu_s_per_million: 1.0,
            broker_rss_max_mib: None,
            wal_bytes_per_msg: None,
            db_bytes_per_msg: None,
        },
        scenario: Some(scenario.into()),
        round: Some(round),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of the committed results loads as a typed line and is
    /// written back with the same keys and values.
    #[test]
    fn committed_results_round_trip() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("results directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no results in {}", dir.display());
        let typed = load(&files).expect("every line loads");
        let raw: Vec<serde_json::Value> = files
            .iter()
            .flat_map(|f| {
                let text = std::fs::read_to_string(f).expect("read");
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| serde_json::from_str(l).expect("JSON"))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(typed.len(), raw.len());
        for (line, original) in typed.iter().zip(&raw) {
            let again = match line {
                Line::Run(r) => serde_json::to_value(r),
                Line::Note(n) => serde_json::to_value(n),
            }
            .expect("serialise");
            assert_eq!(&again, original);
        }
    }

    #[test]
    fn a_line_of_another_kind_is_refused() {
        let dir = std::env::temp_dir().join(format!("pgbroker-bench-kind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("odd.jsonl");
        std::fs::write(&file, "{\"kind\":\"unknown\"}\n").expect("write");
        let err = load(&[file]).expect_err("an unknown kind");
        assert!(format!("{err:#}").contains("odd.jsonl:1"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
