//! `kafka-5-groups-standby`: five consumer groups read everything through
//! `pgbroker serve`, on a primary of the harness's own (see
//! [`crate::pgpair`]) without and then with `--replica-url` of its
//! streaming standby, at each write rate of a sweep. The standby streams
//! in both systems, so both pay for replication and differ only in who
//! serves the reads.
//!
//! Each run says how fast each group read, how far it was behind at the
//! end, the CPU of the primary's processes, of the standby's and of the
//! broker per million records read (all groups' reads together), and
//! which server served the fetches that read Postgres (pgbroker's
//! `pgbroker_fetch_reads_total`). The groups keep up with the write rate
//! measured (see [`keeps_up`]) when every group reads at least 98 % of
//! what is written and none ends the window more than one second of
//! writes behind; the highest write rate kept up with is the highest
//! measured rate of a run where they did.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use pgbroker::{Broker, BrokerConfig, TopicConfig, TopicName};
use serde::{Deserialize, Serialize};

use crate::kafka::{drive_probed, Server, Target, Variant};
use crate::pgpair::Pair;
use crate::summary::{append_jsonl, median, ordered, Note, Summary};
use crate::systems::Endpoints;
use crate::window::{Probe, Window};
use crate::workload::PubsubArgs;

/// The scenario's name in results.
pub const SCENARIO: &str = "kafka-5-groups-standby";
/// Reads served by the primary alone.
pub const PRIMARY_ONLY: &str = "primary-only";
/// Reads served by the standby where it has replayed them.
pub const WITH_STANDBY: &str = "with-standby";

/// The scenario's flags: the pub/sub workload and the rates swept.
#[derive(Debug, Clone, Parser)]
pub struct StandbyArgs {
    /// Target write rates, records/s, each run in turn.
    #[arg(long, value_delimiter = ',', required = true)]
    pub rates: Vec<u64>,
    /// `pgbroker serve --cache-bytes-per-partition` (0: every read goes
    /// to Postgres); serve's default when not given.
    #[arg(long)]
    pub cache_bytes_per_partition: Option<usize>,
    /// The workload (its `--rate` is set by the sweep).
    #[command(flatten)]
    pub workload: PubsubArgs,
}

/// One run: one system at one rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandbyRun {
    /// [`SCENARIO`], or a variant of it.
    pub scenario: String,
    /// The round, counted from 1.
    pub round: u32,
    /// [`PRIMARY_ONLY`] or [`WITH_STANDBY`].
    pub system: String,
    /// The brokers' record cache per partition, bytes, when not serve's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_bytes_per_partition: Option<usize>,
    /// Consumer groups, each reading everything.
    pub groups: u32,
    /// Consumers per group.
    pub consumers_per_group: u32,
    /// Producers.
    pub producers: u32,
    /// Records produced before the run, which every group reads from the
    /// beginning (catching up) while the producers go on.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backlog: u64,
    /// Target write rate, records/s.
    pub target_rate: u64,
    /// Measured time, s.
    pub duration_s: f64,
    /// Records written per second.
    pub write_msgs_per_s: f64,
    /// Records read per second, all groups together.
    pub read_msgs_per_s: f64,
    /// Records each group read per second.
    pub group_read_msgs_per_s: Vec<f64>,
    /// Records each group was behind at the end of the window.
    pub group_behind_at_end: Vec<i64>,
    /// Whether the groups kept up with the writes (see [`keeps_up`]).
    pub keeps_up: bool,
    /// 99th percentile of end-to-end latency, ms.
    pub e2e_p99_ms: f64,
    /// CPU seconds of the primary's processes per million records read.
    pub primary_cpu_s_per_million_read: f64,
    /// CPU seconds of the standby's processes per million records read.
    pub standby_cpu_s_per_million_read: f64,
    /// CPU seconds of `pgbroker serve` per million records read.
    pub broker_cpu_s_per_million_read: f64,
    /// Fetches that read records on the primary in the window.
    pub fetch_reads_primary: f64,
    /// Fetches that read records on the standby in the window.
    pub fetch_reads_standby: f64,
    /// /proc/loadavg when the run began.
    pub load_average: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Whether the groups kept up with the writes: every group read at least
/// 98 % of what was written per second, and none ended the window more
/// than one second of writes behind. Whether the producers reached their
/// target does not matter: the write rate measured is the one kept up with.
pub fn keeps_up(written_per_s: f64, groups_read_per_s: &[f64], behind_at_end: &[i64]) -> bool {
    !groups_read_per_s.is_empty()
        && groups_read_per_s.iter().all(|r| *r >= 0.98 * written_per_s)
        && behind_at_end.iter().all(|b| (*b as f64) <= written_per_s.max(1.0))
}

/// [`keeps_up`] of a results line.
fn kept_up(r: &StandbyRun) -> bool {
    keeps_up(r.write_msgs_per_s, &r.group_read_msgs_per_s, &r.group_behind_at_end)
}

/// Parses the scenario's flags.
pub fn args(flags: &str, duration: Duration, warmup: Duration) -> Result<StandbyArgs> {
    let mut argv = vec!["scenario".to_string()];
    argv.extend(flags.split_whitespace().map(String::from));
    argv.extend(["--duration".into(), humantime::format_duration(duration).to_string()]);
    argv.extend(["--warmup".into(), humantime::format_duration(warmup).to_string()]);
    Ok(StandbyArgs::try_parse_from(argv)?)
}

/// A fresh schema on `url` with the workload's topic; its name.
pub async fn fresh_schema(url: &str, args: &PubsubArgs) -> Result<String> {
    // Built from a number only: safe to place in SQL text.
    let schema = format!("bench_standby_{}", std::process::id());
    drop_schema(url, &schema).await?;
    let broker = Broker::connect(BrokerConfig {
        database_url: url.to_string(),
        schema: schema.clone(),
        pool_size: 2,
        ..BrokerConfig::default()
    })
    .await?;
    let config = TopicConfig {
        partitions: args.partitions,
        ..TopicConfig::default()
    };
    broker.topics().create(&TopicName::new("bench")?, &config).await?;
    Ok(schema)
}

/// Drops `schema` (a name made by [`fresh_schema`]).
pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    let admin = crate::db::connect(url).await?;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    Ok(())
}

/// The probe of a run on `pair` through brokers with these HTTP listeners.
pub fn probe(pair: &Pair, http: Vec<String>) -> Probe {
    Probe {
        clusters: vec![
            ("primary".into(), pair.primary.pid),
            ("standby".into(), pair.standby.pid),
        ],
        metrics: http,
    }
}

/// Fetches the standbys served in `window`.
pub fn standby_reads(window: &Window) -> f64 {
    window
        .fetch_reads
        .iter()
        .filter(|(k, _)| *k != "primary")
        .fold(0.0, |sum, (_, n)| sum + n)
}

/// CPU seconds of the cluster `name` in `window`.
pub fn cpu_of(window: &Window, name: &str) -> f64 {
    window
        .cluster_cpu_s
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0.0, |(_, s)| *s)
}

/// One run of `system` at `rate` on `pair`.
async fn one(env: &Endpoints, pair: &Pair, args: &StandbyArgs, system: &str, rate: u64) -> Result<(Summary, Window)> {
    let primary = pair.primary.url();
    let mut workload = args.workload.clone();
    workload.rate = Some(rate);
    let schema = fresh_schema(&primary, &workload).await?;
    let outcome = async {
        let mut serve = Vec::new();
        if let Some(bytes) = args.cache_bytes_per_partition {
            serve.extend(["--cache-bytes-per-partition".to_string(), bytes.to_string()]);
        }
        if system == WITH_STANDBY {
            serve.extend(["--replica-url".to_string(), pair.standby.url()]);
        }
        let server = Server::start_with(&env.pgbroker_bin, &primary, &schema, false, &serve).await?;
        let target = Target {
            bootstrap: server.bootstrap.clone(),
            http: Some(server.http.clone()),
            pids: vec![server.pid()?],
        };
        let probe = probe(pair, vec![server.http.clone()]);
        let outcome = drive_probed(&target, &workload, Variant::Plain, Some(&probe)).await;
        server.stop().await?;
        let (summary, window) = outcome?;
        Ok((summary, window.unwrap_or_default()))
    }
    .await;
    drop_schema(&primary, &schema).await?;
    outcome
}

/// Where and how a run was made, for its results line.
struct Made<'a> {
    scenario: &'a str,
    round: u32,
    system: &'a str,
    rate: u64,
    args: &'a StandbyArgs,
    load: Option<String>,
}

fn line(made: Made<'_>, run: &(Summary, Window)) -> StandbyRun {
    let Made {
        scenario,
        round,
        system,
        rate,
        args,
        load,
    } = made;
    let (cache, args) = (args.cache_bytes_per_partition, &args.workload);
    let (s, w) = run;
    let f = &s.figures;
    let read_millions = (f.read_msgs_per_s * f.duration_s).max(1.0) / 1e6;
    let broker_cpu_s = f.broker_cpu_s_per_million * (f.write_msgs_per_s * f.duration_s).max(1.0) / 1e6;
    StandbyRun {
        scenario: scenario.into(),
        round,
        system: system.into(),
        cache_bytes_per_partition: cache,
        groups: args.groups,
        consumers_per_group: args.consumers_per_group,
        producers: args.producers,
        backlog: args.backlog,
        target_rate: rate,
        duration_s: f.duration_s,
        write_msgs_per_s: f.write_msgs_per_s,
        read_msgs_per_s: f.read_msgs_per_s,
        keeps_up: keeps_up(f.write_msgs_per_s, &w.group_read_msgs_per_s, &w.group_behind_at_end),
        group_read_msgs_per_s: w.group_read_msgs_per_s.clone(),
        group_behind_at_end: w.group_behind_at_end.clone(),
        e2e_p99_ms: f.e2e_p99_ms,
        primary_cpu_s_per_million_read: cpu_of(w, "primary") / read_millions,
        standby_cpu_s_per_million_read: cpu_of(w, "standby") / read_millions,
        broker_cpu_s_per_million_read: broker_cpu_s / read_millions,
        fetch_reads_primary: w.fetch_reads.get("primary").copied().unwrap_or(0.0),
        fetch_reads_standby: standby_reads(w),
        load_average: load,
    }
}

/// Runs the scenario as `scenario`: `rounds` of both systems (in turn,
/// the order reversed every other round) at every rate; appends each run
/// to `out`.
pub async fn run(
    env: &Endpoints,
    scenario: &str,
    args: &StandbyArgs,
    rounds: u32,
    out: &std::path::Path,
) -> Result<Vec<StandbyRun>> {
    let pair = Pair::start(&env.database_url).await?;
    eprintln!(
        "{scenario}: primary on port {}, standby on port {}",
        pair.primary.port, pair.standby.port
    );
    let mut runs = Vec::new();
    for round in 1..=rounds {
        let mut systems = [PRIMARY_ONLY, WITH_STANDBY];
        if round % 2 == 0 {
            systems.reverse();
        }
        for rate in &args.rates {
            for system in systems {
                eprintln!("{scenario} round {round}: {system} at {rate}/s");
                let load = std::fs::read_to_string("/proc/loadavg")
                    .ok()
                    .map(|s| s.trim().to_string());
                let measured = one(env, &pair, args, system, *rate)
                    .await
                    .with_context(|| format!("{scenario}: {system} at {rate}/s"))?;
                let context = Made {
                    scenario,
                    round,
                    system,
                    rate: *rate,
                    args,
                    load,
                };
                let run = line(context, &measured);
                append_jsonl(out, &Note::StandbyRun(run.clone()))?;
                runs.push(run);
            }
        }
    }
    let mut md = String::new();
    section(&mut md, &runs.iter().collect::<Vec<_>>());
    println!("\n{md}");
    Ok(runs)
}

/// The range of the one-minute load averages of the runs, as a sentence.
pub fn load_range<'a>(loads: impl Iterator<Item = Option<&'a str>>) -> String {
    let ones: Vec<f64> = loads
        .filter_map(|l| l?.split_whitespace().next()?.parse().ok())
        .collect();
    let lo = ones.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ones.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if ones.is_empty() {
        String::new()
    } else {
        format!("One-minute load average at the runs' start: {lo:.1} to {hi:.1}.")
    }
}

/// The highest measured write rate `system` kept up with in `round`, if any.
fn highest_kept_up(runs: &[&StandbyRun], system: &str, round: u32) -> Option<f64> {
    runs.iter()
        .filter(|r| r.system == system && r.round == round && kept_up(r))
        .map(|r| r.write_msgs_per_s)
        .max_by(f64::total_cmp)
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The section of BENCHMARKS.md on reads from a standby: a table per
/// scenario.
pub fn section(md: &mut String, runs: &[&StandbyRun]) {
    if runs.is_empty() {
        return;
    }
    md.push_str("## Reads from a standby\n\n");
    for name in ordered(runs.iter().map(|r| r.scenario.as_str())) {
        let mine: Vec<&StandbyRun> = runs.iter().copied().filter(|r| r.scenario == name).collect();
        scenario(md, &name, &mine);
    }
}

fn scenario(md: &mut String, name: &str, runs: &[&StandbyRun]) {
    let Some(first) = runs.first() else {
        return;
    };
    let cache = first.cache_bytes_per_partition.map_or_else(
        || "serve's default record cache".to_string(),
        |b| format!("`--cache-bytes-per-partition {b}`"),
    );
    let rounds = runs.iter().map(|r| r.round).max().unwrap_or(1);
    let _ = writeln!(
        md,
        "### {name}\n\n{} groups of {} consumers read everything {} producers write, \
         through `pgbroker serve` ({cache}) on a primary of the harness's own, without (`{PRIMARY_ONLY}`) and with \
         (`{WITH_STANDBY}`) `--replica-url` of its streaming standby (streaming in both); median of {rounds} \
         round(s) per target rate. The groups keep up with the write rate measured when every group reads \
         at least 98 % of what is written and none ends the window more than one second of writes behind; \
         the highest write rate kept up with is, per round, the highest measured write rate of a run where \
         they did (0 when none did). CPU is seconds per million records read (all groups' reads), by the primary's processes \
         (postmaster and its children), the standby's, and the broker.{} {}\n",
        first.groups,
        first.consumers_per_group,
        first.producers,
        if first.backlog > 0 {
            format!(
                " Each group starts at the beginning of a backlog of {} records produced before the run \
                 (not measured), far behind the record cache, and catches up while the producers go on.",
                first.backlog
            )
        } else {
            String::new()
        },
        load_range(runs.iter().map(|r| r.load_average.as_deref()))
    );
    md.push_str(
        "| system | target/s | written/s | slowest group read/s | kept up (rounds) | e2e p99 ms | \
         primary CPU s/M read | standby CPU s/M read | broker CPU s/M read | fetches served by the standby |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let systems = ordered(runs.iter().map(|r| r.system.as_str()));
    let mut rates: Vec<u64> = runs.iter().map(|r| r.target_rate).collect();
    rates.sort_unstable();
    rates.dedup();
    for system in &systems {
        for rate in &rates {
            let at: Vec<&&StandbyRun> = runs
                .iter()
                .filter(|r| &r.system == system && r.target_rate == *rate)
                .collect();
            if at.is_empty() {
                continue;
            }
            let med = |f: fn(&StandbyRun) -> f64| median(at.iter().map(|r| f(r)).collect());
            let slowest = |r: &StandbyRun| r.group_read_msgs_per_s.iter().copied().fold(f64::INFINITY, f64::min);
            let share = |r: &StandbyRun| crate::window::standby_share(r.fetch_reads_primary, r.fetch_reads_standby);
            let _ = writeln!(
                md,
                "| {system} | {rate} | {} | {} | {}/{} | {} | {} | {} | {} | {} % |",
                fmt(med(|r| r.write_msgs_per_s)),
                fmt(med(slowest)),
                at.iter().filter(|r| kept_up(r)).count(),
                at.len(),
                fmt(med(|r| r.e2e_p99_ms)),
                fmt(med(|r| r.primary_cpu_s_per_million_read)),
                fmt(med(|r| r.standby_cpu_s_per_million_read)),
                fmt(med(|r| r.broker_cpu_s_per_million_read)),
                fmt(med(share)),
            );
        }
    }
    md.push_str(
        "\n| system | highest write rate kept up with (median of rounds) | ratio | \
         primary CPU s/M read (median of all runs) | ratio |\n|---|---:|---:|---:|---:|\n",
    );
    let highest = |system: &str| {
        median(
            (1..=rounds)
                .map(|round| highest_kept_up(runs, system, round).unwrap_or(0.0))
                .collect(),
        )
    };
    let primary_cpu = |system: &str| {
        median(
            runs.iter()
                .filter(|r| r.system == system)
                .map(|r| r.primary_cpu_s_per_million_read)
                .collect(),
        )
    };
    let base = systems
        .first()
        .map_or((f64::NAN, f64::NAN), |s| (highest(s), primary_cpu(s)));
    for system in &systems {
        let (h, c) = (highest(system), primary_cpu(system));
        let _ = writeln!(
            md,
            "| {system} | {} | {:.2} | {} | {:.2} |",
            fmt(h),
            h / base.0,
            fmt(c),
            c / base.1
        );
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_up_needs_every_group_and_a_bounded_lag() {
        assert!(keeps_up(995.0, &[990.0, 1000.0], &[100, 900]));
        // Below the target, but every group kept up with what was written.
        assert!(keeps_up(950.0, &[950.0], &[0]));
        // One group reads less than 98 % of the writes.
        assert!(!keeps_up(1000.0, &[1000.0, 970.0], &[0, 0]));
        // One group ends more than a second of writes behind.
        assert!(!keeps_up(1000.0, &[1000.0, 1000.0], &[0, 1500]));
        // No group counted.
        assert!(!keeps_up(1000.0, &[], &[]));
    }

    fn run(round: u32, system: &str, rate: u64, written: f64, kept: bool) -> StandbyRun {
        StandbyRun {
            scenario: SCENARIO.into(),
            round,
            system: system.into(),
            cache_bytes_per_partition: None,
            groups: 5,
            consumers_per_group: 4,
            producers: 8,
            backlog: 0,
            target_rate: rate,
            duration_s: 20.0,
            write_msgs_per_s: written,
            read_msgs_per_s: written * 5.0,
            group_read_msgs_per_s: vec![if kept { written } else { written * 0.9 }; 5],
            group_behind_at_end: vec![0; 5],
            keeps_up: kept,
            e2e_p99_ms: 10.0,
            primary_cpu_s_per_million_read: 4.0,
            standby_cpu_s_per_million_read: 1.0,
            broker_cpu_s_per_million_read: 2.0,
            fetch_reads_primary: 10.0,
            fetch_reads_standby: 30.0,
            load_average: Some("1.00 1.00 1.00".into()),
        }
    }

    #[test]
    fn the_section_gives_the_highest_rate_kept_up_with_per_system() {
        let runs = [
            run(1, PRIMARY_ONLY, 1000, 1000.0, true),
            run(1, PRIMARY_ONLY, 2000, 2000.0, false),
            run(1, WITH_STANDBY, 1000, 1000.0, true),
            run(1, WITH_STANDBY, 2000, 1990.0, true),
        ];
        let refs: Vec<&StandbyRun> = runs.iter().collect();
        let mut md = String::new();
        section(&mut md, &refs);
        assert!(md.contains("| primary-only | 1000 | 1.00 | 4.00 | 1.00 |"), "{md}");
        assert!(md.contains("| with-standby | 1990 | 1.99 | 4.00 | 1.00 |"), "{md}");
        assert!(md.contains("| with-standby | 2000 | 1990 | 1990 | 1/1 |"), "{md}");
        assert!(md.contains("| 75.00 % |"), "{md}");
        assert!(md.contains("load average at the runs' start: 1.0 to 1.0."), "{md}");
        let note = serde_json::to_value(Note::StandbyRun(runs[0].clone())).expect("JSON");
        assert_eq!(note["kind"], "standby-run");
    }
}
