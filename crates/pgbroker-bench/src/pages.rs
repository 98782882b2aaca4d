//! `console-pages`: how long the console's pages take to get their data
//! on a wide topic. On a fresh schema: topic `wide` of `--partitions`
//! partitions with records in each, group `wide-readers` with a committed
//! offset, behind the high watermark, on every partition, and a few queues
//! with messages; then `pgbroker serve` on it, and `--samples` loads of
//! each page per round, each load being the admin API requests the page
//! makes (sent together, as the page does). One `page-load` line per page
//! and round goes to the results, with the median, p99 and largest time.
//!
//! This is the server's side of a page load: the time a browser waits for
//! the data. `scripts/console-load.sh` times the same pages in chromium
//! until drawn and can append its figures to the same results file
//! (system `chromium`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use pgbroker::groups::OffsetCommit;
use pgbroker::{Broker, BrokerConfig, GroupId, Message, QueueConfig, QueueName, Record, TopicConfig, TopicName};
use serde::{Deserialize, Serialize};

use crate::console::{Session, OVERVIEW};
use crate::db;
use crate::kafka::Server;
use crate::summary::{append_jsonl, median, Note};
use crate::systems::Endpoints;

/// The scenario's name in results.
pub const SCENARIO: &str = "console-pages";

/// Flags of the page-load scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct PagesArgs {
    /// Partitions of the wide topic; the group lags on every one.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// Records written to each partition (the group has read half).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub records_per_partition: u32,
    /// Loads of each page per round.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub samples: u32,
}

/// Flags of `pages`, the scenario on its own.
#[derive(Debug, Clone, clap::Args)]
pub struct PagesCommand {
    #[command(flatten)]
    pages: PagesArgs,
    /// Rounds, each `--samples` loads of every page.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Append the page-load lines to this JSON-lines file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One page's load times over one round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageLoad {
    /// [`SCENARIO`].
    pub scenario: String,
    /// Who timed it: `api` (this harness: the page's API requests) or
    /// `chromium` (the page drawn in a browser).
    pub system: String,
    /// The page: `overview`, `topics`, `topic`, `messages`, `groups`,
    /// `group`, `queues`, `queue`.
    pub page: String,
    /// Partitions of the topic and of the group's lag.
    pub partitions: i32,
    /// The round, counted from 1.
    pub round: u32,
    /// Loads timed.
    pub samples: u32,
    /// Median time of a load, ms.
    pub median_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Longest load, ms.
    pub max_ms: f64,
    /// Bytes of the answers of one load (the last); 0 from `chromium`,
    /// which does not count them.
    pub bytes: u64,
}

const TOPIC: &str = "wide";
const GROUP: &str = "wide-readers";
const QUEUES: usize = 5;

/// Each page and the requests it makes, as in the console's pages.
fn pages() -> Vec<(&'static str, Vec<String>)> {
    let own = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    vec![
        ("overview", own(OVERVIEW)),
        ("topics", own(&["/api/topics"])),
        ("topic", own(&["/api/topics/wide", "/api/history?topic=wide"])),
        ("messages", own(&["/api/topics/wide/messages?partition=0&limit=50"])),
        ("groups", own(&["/api/groups"])),
        (
            "group",
            own(&["/api/groups/wide-readers", "/api/history?group=wide-readers"]),
        ),
        ("queues", own(&["/api/queues"])),
        (
            "queue",
            own(&[
                "/api/queues/jobs-0",
                "/api/history?queue=jobs-0",
                "/api/queues/jobs-0/messages?state=ready&after=0&limit=50",
            ]),
        ),
    ]
}

/// The `q`-quantile of sorted `v`, nearest rank; NaN if empty.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // The smallest rank r with r >= q * n, counted without floats.
    let n = sorted.len();
    let per_mille = (q * 1000.0).round().clamp(0.0, 1000.0);
    let rank = (1..=n).find(|r| (r * 1000) as f64 >= per_mille * n as f64).unwrap_or(n);
    sorted[rank.max(1) - 1]
}

/// Writes the topic, the group's offsets and the queues.
async fn fill(broker: &Broker, args: &PagesArgs) -> Result<()> {
    let topic = TopicName::new(TOPIC)?;
    let config = TopicConfig {
        partitions: args.partitions,
        ..TopicConfig::default()
    };
    broker.topics().create(&topic, &config).await?;
    let records: Vec<Record> = (0..args.records_per_partition)
        .map(|i| Record {
            key: Some(format!("key-{i}").into()),
            ..Record::from_value(format!("{{\"n\":{i},\"text\":\"a record of the wide topic\"}}"))
        })
        .collect();
    let (topic, records) = (&topic, &records);
    stream::iter(0..args.partitions)
        .map(|p| async move { broker.streams().produce(topic, Some(p), records).await })
        .buffer_unordered(4)
        .try_collect::<Vec<_>>()
        .await?;
    let read = i64::from(args.records_per_partition / 2);
    let offsets: Vec<OffsetCommit> = (0..args.partitions)
        .map(|partition| OffsetCommit {
            topic: topic.clone(),
            partition,
            offset: read,
            metadata: None,
        })
        .collect();
    broker.groups().commit(&GroupId::new(GROUP)?, None, &offsets).await?;
    for i in 0..QUEUES {
        let queue = QueueName::new(format!("jobs-{i}"))?;
        broker.queues().create(&queue, &QueueConfig::default()).await?;
        let messages: Vec<Message> = (0..100).map(|n| Message::new(format!("job {n}"))).collect();
        broker.queues().send_batch(&queue, &messages).await?;
    }
    Ok(())
}

/// Times every page `samples` times; one line per page.
async fn round(session: &Session, args: &PagesArgs, round: u32) -> Result<Vec<PageLoad>> {
    let mut out = Vec::new();
    for (page, paths) in pages() {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..args.samples {
            let (took, size) = session.load(&paths).await.with_context(|| format!("page {page}"))?;
            times.push(took.as_secs_f64() * 1000.0);
            bytes = size;
        }
        times.sort_by(f64::total_cmp);
        out.push(PageLoad {
            scenario: SCENARIO.into(),
            system: "api".into(),
            page: page.into(),
            partitions: args.partitions,
            round,
            samples: args.samples,
            median_ms: median(times.clone()),
            p99_ms: quantile(&times, 0.99),
            max_ms: times.last().copied().unwrap_or(f64::NAN),
            bytes: u64::try_from(bytes).unwrap_or(u64::MAX),
        });
    }
    Ok(out)
}

/// Runs the scenario: fills a fresh schema (dropped afterwards), starts
/// `pgbroker serve` on it and times the pages for `rounds` rounds,
/// appending each line to `out`. Prints a table of the medians.
pub async fn run(env: &Endpoints, args: &PagesArgs, rounds: u32, out: Option<&Path>) -> Result<Vec<PageLoad>> {
    let url = env.database_url.as_str();
    // Built from a number only: safe to place in SQL text.
    let schema = format!("bench_pages_{}", std::process::id());
    let admin = db::connect(url).await?;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    let outcome = async {
        let broker = Broker::connect(BrokerConfig {
            database_url: url.to_string(),
            schema: schema.clone(),
            pool_size: 4,
            ..BrokerConfig::default()
        })
        .await?;
        eprintln!(
            "{SCENARIO}: topic {TOPIC} of {} partitions, group {GROUP} lagging on each",
            args.partitions
        );
        fill(&broker, args).await?;
        drop(broker);
        let server = Server::start(&env.pgbroker_bin, url, &schema, false).await?;
        let timed = async {
            let session = Session::open(&server.http).await?;
            // One load of each page first: the broker's statements are
            // prepared and its caches warm, as after a browser's first visit.
            round(
                &session,
                &PagesArgs {
                    samples: 1,
                    ..args.clone()
                },
                0,
            )
            .await?;
            let mut all = Vec::new();
            for r in 1..=rounds {
                for line in round(&session, args, r).await? {
                    if let Some(out) = out {
                        append_jsonl(out, &Note::PageLoad(line.clone()))?;
                    }
                    all.push(line);
                }
            }
            Ok::<_, anyhow::Error>(all)
        }
        .await;
        server.stop().await?;
        timed
    }
    .await;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    let all = outcome?;
    println!(
        "\n== {SCENARIO}: {} partitions, {rounds} round(s) of {} loads ==",
        args.partitions, args.samples
    );
    println!("{:<10}{:>12}{:>12}{:>12}", "page", "median ms", "p99 ms", "bytes");
    for (page, _) in pages() {
        let mine: Vec<&PageLoad> = all.iter().filter(|l| l.page == page).collect();
        let med = |f: fn(&PageLoad) -> f64| median(mine.iter().map(|l| f(l)).collect());
        let bytes = mine.last().map_or(0, |l| l.bytes);
        println!(
            "{page:<10}{:>12.1}{:>12.1}{bytes:>12}",
            med(|l| l.median_ms),
            med(|l| l.p99_ms)
        );
    }
    Ok(all)
}

/// The median over rounds of `figure` for each timer and page, in order
/// of first appearance: (system, page, partitions, rounds, value).
pub fn medians(loads: &[&PageLoad], figure: fn(&PageLoad) -> f64) -> Vec<(String, String, i32, usize, f64)> {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for l in loads {
        if !keys.contains(&(l.system.as_str(), l.page.as_str())) {
            keys.push((l.system.as_str(), l.page.as_str()));
        }
    }
    keys.into_iter()
        .map(|(system, page)| {
            let mine: Vec<&&PageLoad> = loads.iter().filter(|l| l.system == system && l.page == page).collect();
            let partitions = mine.iter().map(|l| l.partitions).max().unwrap_or(0);
            let value = median(mine.iter().map(|l| figure(l)).collect());
            (system.to_string(), page.to_string(), partitions, mine.len(), value)
        })
        .collect()
}

/// The report's section on page loads, when the results have some.
pub fn section(md: &mut String, loads: &[&PageLoad]) {
    use std::fmt::Write as _;
    if loads.is_empty() {
        return;
    }
    md.push_str(
        "## Console page loads\n\n\
        Time until a page has its data: `api` is the page's admin API requests sent together by the \
        harness, `chromium` the page drawn in a browser (`scripts/console-load.sh`). Median over rounds \
        of each round's median, p99 and largest load.\n\n\
        | timed by | page | partitions | rounds | median ms | p99 ms | max ms |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    let p99 = medians(loads, |l| l.p99_ms);
    let max = medians(loads, |l| l.max_ms);
    for (i, (system, page, partitions, rounds, med)) in medians(loads, |l| l.median_ms).into_iter().enumerate() {
        let _ = writeln!(
            md,
            "| {system} | {page} | {partitions} | {rounds} | {med:.1} | {:.1} | {:.1} |",
            p99[i].4, max[i].4
        );
    }
    md.push('\n');
}

/// `pgbroker-bench pages`.
pub async fn command(env: &Endpoints, args: &PagesCommand) -> Result<()> {
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    run(env, &args.pages, args.rounds, args.out.as_deref()).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), 20.0);
        assert_eq!(quantile(&v, 0.5), 10.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert!(quantile(&[], 0.99).is_nan());
    }
}
