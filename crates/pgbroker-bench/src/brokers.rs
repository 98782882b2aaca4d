//! `kafka-brokers-1-3`: the same pub/sub load through one and then three
//! `pgbroker serve` on one schema, every client given all of them as its
//! bootstrap list (Metadata spreads partition leadership over the
//! brokers), on a primary of the harness's own whose standby serves the
//! reads it has replayed (`--replica-url` on every broker), so that
//! Postgres bounds as little as it can. Each run says the records written
//! and read per second, and the CPU of the brokers (summed), of the
//! primary, of the standby and of the harness, as seconds per second
//! (cores busy), which say where a flat result comes from.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::kafka::{drive_probed, Server, Target, Variant};
use crate::pgpair::Pair;
use crate::standby::{cpu_of, drop_schema, fresh_schema, load_range, probe, standby_reads};
use crate::summary::{append_jsonl, median, Note};
use crate::systems::Endpoints;
use crate::workload::PubsubArgs;

/// The scenario's name in results.
pub const SCENARIO: &str = "kafka-brokers-1-3";

/// The scenario's flags.
#[derive(Debug, Clone, Parser)]
pub struct BrokersArgs {
    /// Broker counts, each run in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub brokers: Vec<u32>,
    /// The workload.
    #[command(flatten)]
    pub workload: PubsubArgs,
}

/// One run with a number of brokers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokersRun {
    /// [`SCENARIO`].
    pub scenario: String,
    /// The round, counted from 1.
    pub round: u32,
    /// `pgbroker serve` processes.
    pub brokers: u32,
    /// Target write rate, records/s; flat out when none.
    pub target_rate: Option<u64>,
    /// Measured time, s.
    pub duration_s: f64,
    /// Records written per second.
    pub write_msgs_per_s: f64,
    /// Records read per second, all groups together.
    pub read_msgs_per_s: f64,
    /// 99th percentile of end-to-end latency, ms.
    pub e2e_p99_ms: f64,
    /// CPU of the brokers, summed, in cores (CPU seconds per second).
    pub broker_cores: f64,
    /// CPU of the primary's processes, in cores.
    pub primary_cores: f64,
    /// CPU of the standby's processes, in cores.
    pub standby_cores: f64,
    /// CPU of the harness (producers and consumers), in cores.
    pub client_cores: f64,
    /// Fetches that read records on the primary in the window.
    pub fetch_reads_primary: f64,
    /// Fetches that read records on the standby in the window.
    pub fetch_reads_standby: f64,
    /// /proc/loadavg when the run began.
    pub load_average: Option<String>,
}

/// Parses the scenario's flags.
pub fn args(flags: &str, duration: Duration, warmup: Duration) -> Result<BrokersArgs> {
    let mut argv = vec!["scenario".to_string()];
    argv.extend(flags.split_whitespace().map(String::from));
    argv.extend(["--duration".into(), humantime::format_duration(duration).to_string()]);
    argv.extend(["--warmup".into(), humantime::format_duration(warmup).to_string()]);
    Ok(BrokersArgs::try_parse_from(argv)?)
}

/// Waits (at most 30 s) until Metadata through `bootstrap` lists `n` brokers.
async fn wait_for_brokers(bootstrap: &str, n: usize) -> Result<()> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating a metadata client")?;
    let started = Instant::now();
    loop {
        let seen = client
            .fetch_metadata(None, Duration::from_secs(5))
            .map(|m| m.brokers().len())
            .unwrap_or(0);
        if seen >= n {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("Metadata lists {seen} brokers, not {n}, after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn one(env: &Endpoints, pair: &Pair, workload: &PubsubArgs, brokers: u32, round: u32) -> Result<BrokersRun> {
    let primary = pair.primary.url();
    let schema = fresh_schema(&primary, workload).await?;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.trim().to_string());
    let serve = ["--replica-url".to_string(), pair.standby.url()];
    let outcome = async {
        let mut servers = Vec::new();
        for _ in 0..brokers {
            servers.push(Server::start_with(&env.pgbroker_bin, &primary, &schema, false, &serve).await?);
        }
        let bootstrap = servers
            .iter()
            .map(|s| s.bootstrap.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let measured = async {
            wait_for_brokers(&bootstrap, servers.len()).await?;
            let target = Target {
                bootstrap: bootstrap.clone(),
                http: servers.first().map(|s| s.http.clone()),
                pids: servers.iter().map(Server::pid).collect::<Result<_>>()?,
            };
            let probe = probe(pair, servers.iter().map(|s| s.http.clone()).collect());
            drive_probed(&target, workload, Variant::Plain, Some(&probe)).await
        }
        .await;
        for server in servers {
            server.stop().await?;
        }
        let (summary, window) = measured?;
        let window = window.unwrap_or_default();
        let f = &summary.figures;
        let secs = f.duration_s.max(f64::MIN_POSITIVE);
        let written_m = f.write_msgs_per_s * f.duration_s / 1e6;
        Ok(BrokersRun {
            scenario: SCENARIO.into(),
            round,
            brokers,
            target_rate: workload.rate,
            duration_s: f.duration_s,
            write_msgs_per_s: f.write_msgs_per_s,
            read_msgs_per_s: f.read_msgs_per_s,
            e2e_p99_ms: f.e2e_p99_ms,
            broker_cores: f.broker_cpu_s_per_million * written_m / secs,
            primary_cores: cpu_of(&window, "primary") / secs,
            standby_cores: cpu_of(&window, "standby") / secs,
            client_cores: f.client_cpu_s_per_million * written_m / secs,
            fetch_reads_primary: window.fetch_reads.get("primary").copied().unwrap_or(0.0),
            fetch_reads_standby: standby_reads(&window),
            load_average: load.clone(),
        })
    }
    .await;
    drop_schema(&primary, &schema).await?;
    outcome
}

/// Runs the scenario: `rounds` of each broker count (in turn, the order
/// reversed every other round); appends each run to `out`.
pub async fn run(env: &Endpoints, args: &BrokersArgs, rounds: u32, out: &std::path::Path) -> Result<Vec<BrokersRun>> {
    let pair = Pair::start(&env.database_url).await?;
    let mut runs = Vec::new();
    for round in 1..=rounds {
        let mut counts = args.brokers.clone();
        if round % 2 == 0 {
            counts.reverse();
        }
        for n in counts {
            eprintln!("{SCENARIO} round {round}: {n} broker(s)");
            let run = one(env, &pair, &args.workload, n, round)
                .await
                .with_context(|| format!("{SCENARIO}: {n} broker(s)"))?;
            append_jsonl(out, &Note::BrokersRun(run.clone()))?;
            runs.push(run);
        }
    }
    let mut md = String::new();
    section(&mut md, &runs.iter().collect::<Vec<_>>());
    println!("\n{md}");
    Ok(runs)
}

/// The scenario's section of BENCHMARKS.md.
pub fn section(md: &mut String, runs: &[&BrokersRun]) {
    if runs.is_empty() {
        return;
    }
    let rounds = runs.iter().map(|r| r.round).max().unwrap_or(1);
    let rate = runs[0]
        .target_rate
        .map_or_else(|| "flat out".to_string(), |r| format!("at {r} records/s"));
    let _ = writeln!(
        md,
        "## One broker and three\n\n`{SCENARIO}`: the same pub/sub load ({rate}) through one and through three \
         `pgbroker serve` on one schema, clients bootstrapped with all of them, reads served by a streaming \
         standby where it has replayed them; median of {rounds} round(s), ratio against the first row. CPU in \
         cores busy (CPU seconds per second), brokers summed. {}\n",
        load_range(runs.iter().map(|r| r.load_average.as_deref()))
    );
    md.push_str(
        "| brokers | written/s | read/s | ratio (read) | e2e p99 ms | brokers' CPU | primary CPU | standby CPU | \
         harness CPU | fetches served by the standby |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut counts: Vec<u32> = runs.iter().map(|r| r.brokers).collect();
    counts.dedup();
    let mut seen = Vec::new();
    let mut base = f64::NAN;
    for n in counts {
        if seen.contains(&n) {
            continue;
        }
        seen.push(n);
        let at: Vec<&&BrokersRun> = runs.iter().filter(|r| r.brokers == n).collect();
        let med = |f: fn(&BrokersRun) -> f64| median(at.iter().map(|r| f(r)).collect());
        let read = med(|r| r.read_msgs_per_s);
        if base.is_nan() {
            base = read;
        }
        let share = med(|r| crate::window::standby_share(r.fetch_reads_primary, r.fetch_reads_standby));
        let _ = writeln!(
            md,
            "| {n} | {:.0} | {:.0} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {share:.0} % |",
            med(|r| r.write_msgs_per_s),
            read,
            read / base,
            med(|r| r.e2e_p99_ms),
            med(|r| r.broker_cores),
            med(|r| r.primary_cores),
            med(|r| r.standby_cores),
            med(|r| r.client_cores),
        );
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: u32, brokers: u32, read: f64) -> BrokersRun {
        BrokersRun {
            scenario: SCENARIO.into(),
            round,
            brokers,
            target_rate: None,
            duration_s: 20.0,
            write_msgs_per_s: read / 5.0,
            read_msgs_per_s: read,
            e2e_p99_ms: 50.0,
            broker_cores: 0.5 * f64::from(brokers),
            primary_cores: 0.4,
            standby_cores: 0.2,
            client_cores: 0.9,
            fetch_reads_primary: 1.0,
            fetch_reads_standby: 3.0,
            load_average: None,
        }
    }

    #[test]
    fn the_section_has_a_row_per_broker_count_with_its_ratio() {
        let runs = [
            run(1, 1, 50000.0),
            run(1, 3, 45000.0),
            run(2, 3, 55000.0),
            run(2, 1, 50000.0),
        ];
        let refs: Vec<&BrokersRun> = runs.iter().collect();
        let mut md = String::new();
        section(&mut md, &refs);
        assert!(md.contains("| 1 | 10000 | 50000 | 1.00 |"), "{md}");
        assert!(md.contains("| 3 | 10000 | 50000 | 1.00 | 50.0 | 1.50 |"), "{md}");
        assert!(md.contains("| 75 % |"), "{md}");
        assert_eq!(md.matches("\n| 3 |").count(), 1, "{md}");
        let note = serde_json::to_value(Note::BrokersRun(runs[0].clone())).expect("JSON");
        assert_eq!(note["kind"], "brokers-run");
    }
}
