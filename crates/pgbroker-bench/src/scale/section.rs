//! The "Scale" section of BENCHMARKS.md: per curve, a table of the
//! metrics at each value of its knob (the median when a value was run more
//! than once) and a log-log plot per unit.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::ScalePoint;
use crate::plots;
use crate::summary::{median, ordered};

/// A metric of the points: its key, its column in the table, and its unit
/// (the plot it goes to; `None`: the table only).
struct Metric {
    key: &'static str,
    column: &'static str,
    unit: Option<&'static str>,
}

const fn metric(key: &'static str, column: &'static str, unit: Option<&'static str>) -> Metric {
    Metric { key, column, unit }
}

/// Every metric, in the tables' order.
const METRICS: &[Metric] = &[
    metric("write_per_s", "written/s", Some("records per second")),
    metric("read_per_s", "read/s", Some("records per second")),
    metric("e2e_p99_ms", "e2e p99 ms", Some("ms")),
    metric("rebalance_ms", "stable after ms", Some("ms")),
    metric("metadata_all_ms", "Metadata, all topics, ms", Some("ms")),
    metric("metadata_one_ms", "Metadata, one topic, ms", Some("ms")),
    metric("startup_ms", "start-up ms", Some("ms")),
    metric("pg_class_rows", "pg_class rows", Some("count")),
    metric("pg_class_rows_loaded", "pg_class rows after the runs", Some("count")),
    metric("pg_connections", "Postgres connections", Some("count")),
    metric("catalogue_mib", "relations MiB", Some("MiB")),
    metric("broker_rss_mib", "broker RSS MiB", Some("MiB")),
    metric("broker_cores", "broker CPU", Some("cores")),
    metric("postgres_cores", "Postgres CPU", Some("cores")),
    metric("client_cores", "harness CPU", Some("cores")),
    metric("idle_requests_per_s", "idle connections' requests/s", None),
    metric("create_s", "topics created in s", None),
    metric("claim_p50_ms", "claim p50 ms", Some("ms")),
    metric("claim_p99_ms", "claim p99 ms", Some("ms")),
    metric("ack_p99_ms", "ack p99 ms", Some("ms")),
    metric("rotation_ms", "rotation ms", Some("ms")),
    metric("rotation2_ms", "second rotation ms", Some("ms")),
    metric("sent_per_s", "sent/s", Some("messages per second")),
    metric("acked_per_s", "acked/s", Some("messages per second")),
    metric("queue_mib", "queue tables MiB", Some("MiB")),
    metric("queue_mib_after", "queue tables MiB after the runs", Some("MiB")),
    metric("rotated", "rotated", None),
    metric("rotation_moved", "moved", None),
    metric("rotated2", "rotated again", None),
    metric("queues_create_s", "queues created in s", None),
    metric("fill_s", "filled in s", None),
    metric("old_fetch_p50_ms", "old fetch p50 ms", Some("ms")),
    metric("old_fetch_p99_ms", "old fetch p99 ms", Some("ms")),
    metric("tail_fetch_p50_ms", "tail fetch p50 ms", Some("ms")),
    metric("tail_fetch_p99_ms", "tail fetch p99 ms", Some("ms")),
    metric("retention_ms", "retention pass ms", None),
    metric("retention_dropped", "segments dropped", None),
    metric("catalogue_mib_after_retention", "relations MiB after retention", None),
];

/// What each curve's points measured.
fn description(scenario: &str) -> &'static str {
    match scenario {
        "scale-partitions" => {
            "One topic of N partitions (pgbroker takes at most 1,000 per topic; `scale-topics` goes further in \
             partitions overall). Each point, on a fresh schema: end-to-end p99 at 1,000 records/s (2 producers, \
             measured first, on the empty topic), produce and fetch rates flat out (4 librdkafka producers, \
             acks=all, batches of 100 records of 256 bytes; one group of 2 consumers), the median of 20 Metadata \
             requests for all topics and for the topic, the schema's catalogue once the topics are created (rows \
             of `pg_class`, bytes of its tables with their indexes and TOAST) and its rows again after the \
             runs, and the time from starting `pgbroker serve` on the \
             schema to its first Metadata answer."
        }
        "scale-topics" => {
            "N topics of 4 partitions (40 to 10,000 partitions in all), measured as `scale-partitions` is, the \
             workload on one of the topics; \"topics created in s\" is the time the harness took to create them \
             one after another through pgbroker's library."
        }
        "scale-groups" => {
            "N consumer groups of one librdkafka consumer each, reading a backlog of 256-byte records on a topic \
             of 8 partitions from its start (each consumer prefetching at most 4 MiB). Time from the first subscription to every group holding all its \
             partitions, then, over the measured time (which ends early once every group has read the whole \
             backlog), the records read per second by all groups together and the CPU of the broker, of Postgres \
             and of the harness, whose consumers compete with them for the 2 cores."
        }
        "scale-members" => {
            "One consumer group of N librdkafka consumers reading the backlog of a topic of 100 partitions, \
             measured as `scale-groups` is: stable once every partition is assigned and every member has some."
        }
        "scale-connections" => {
            "N idle Kafka connections (plain TCP: ApiVersions and Metadata, then a Metadata request every 5 s \
             each, phases spread) held open on one `pgbroker serve` (started with `--max-connections 4096`) \
             while one librdkafka producer and one consumer run flat out on a topic of 4 partitions: their \
             rates and p99, the broker's largest resident memory and CPU, Postgres's CPU, and the most Postgres \
             connections the broker held (`pg_stat_activity` rows with its `application_name`)."
        }
        "scale-queues" => {
            "N work queues created one after another in a fresh schema through pgbroker's library (in the \
             harness's process), measured on one of them holding a backlog of 1,000 messages of 100 bytes. Claim: \
             a receive of one message (no wait), then its ack, each timed, about 2,000 times or for the measured \
             time (an untimed send before each keeps the depth); then two maintenance passes (`maintain_queues`) \
             in a row, each timed, with whether it rotated the message partitions (1) or not (0) and how many \
             live messages the first moved (a rotation moves the older partition's live messages into the \
             current one: the first pass usually finds the backlog in the current partition, the second finds \
             it in the older one); then sends of 100 messages from 2 tasks and receives of up to 100, each \
             acked, from 2 others, flat out for 5 s after 2 s of warm-up (the senders outpace the workers, so \
             the backlog grows meanwhile); the bytes of the queue tables (with their indexes and TOAST) after \
             the fill and after the runs. The broker's own background maintenance runs meanwhile, as it does \
             in use (it may rotate during a long fill)."
        }
        "scale-backlog" => {
            "One work queue holding D messages of 100 bytes, sent in batches of 1,000 from 2 tasks (\"filled in \
             s\"), measured as `scale-queues` is. A rotation moves at most 20,000 live messages: above that it is \
             skipped while the older partition drains (vacuuming it instead), which the \"rotated\" columns show."
        }
        "scale-retained" => {
            "One topic of 4 partitions in segments of the default 1,048,576 records, filled through pgbroker's \
             library (in the harness's process) with records of 1 KiB, 1,000 per produce call, one task per \
             partition, up to each point's size in turn (\"filled in s\": the time to grow from the previous \
             point of the same run; a point run alone starts from empty). Each point times 200 fetches of up to 100 records at random offsets in the oldest tenth of \
             each partition, through a second broker whose record cache starts empty (so they are read from \
             Postgres, as old records are), and 200 at the tail (a batch of 10 records just produced, read \
             through the producing broker, as a consumer that keeps up reads it), and measures the schema's \
             relations. After the last point of a run, a retention pass with a size limit of half of what \
             each partition holds is timed: it cuts each log and drops the whole segments below the limit."
        }
        _ => "",
    }
}

/// Medians of each metric per knob value, values ascending, with the
/// metrics any point of the curve has.
fn rows(points: &[&ScalePoint]) -> (Vec<&'static Metric>, Vec<(u64, Vec<f64>)>) {
    let metrics: Vec<&Metric> = METRICS
        .iter()
        .filter(|m| points.iter().any(|p| p.metrics.contains_key(m.key)))
        .collect();
    let mut values: Vec<u64> = points.iter().map(|p| p.value).collect();
    values.sort_unstable();
    values.dedup();
    let rows = values
        .into_iter()
        .map(|v| {
            let at: Vec<&&ScalePoint> = points.iter().filter(|p| p.value == v).collect();
            let medians = metrics
                .iter()
                .map(|m| median(at.iter().filter_map(|p| p.metrics.get(m.key).copied()).collect()))
                .collect();
            (v, medians)
        })
        .collect();
    (metrics, rows)
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The curves' tables, one after another.
pub fn tables(md: &mut String, points: &[&ScalePoint]) {
    for scenario in ordered(points.iter().map(|p| p.scenario.as_str())) {
        let mine: Vec<&ScalePoint> = points.iter().copied().filter(|p| p.scenario == scenario).collect();
        table(md, &mine);
    }
}

fn table(md: &mut String, points: &[&ScalePoint]) {
    let (metrics, rows) = rows(points);
    let knob = points.first().map_or("value", |p| p.knob.as_str());
    let _ = write!(md, "| {knob} |");
    for m in &metrics {
        let _ = write!(md, " {} |", m.column);
    }
    let _ = writeln!(md, "\n|---:|{}", "---:|".repeat(metrics.len()));
    for (v, medians) in rows {
        let _ = write!(md, "| {v} |");
        for x in medians {
            let _ = write!(md, " {} |", fmt(x));
        }
        md.push('\n');
    }
    md.push('\n');
}

/// The section, with a plot per curve and unit written to `plots` (linked
/// as `rel`); nothing without points.
pub fn section(md: &mut String, points: &[&ScalePoint], plots: &Path, rel: &Path) -> Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let _ = writeln!(
        md,
        "## Scale\n\nOne knob swept at a time against `pgbroker serve` (`pgbroker-bench scale`), one short point \
         per value (a few seconds measured), one round: curves of how things grow, not reference figures. The \
         machine was shared with other work while they ran, so rates and CPU carry its noise; Postgres's CPU is that \
         of every `postgres` process on the machine, other work's included. CPU is in cores busy (CPU seconds per \
         second). {}\n",
        crate::standby::load_range(points.iter().map(|p| p.load_average.as_deref()))
    );
    for scenario in ordered(points.iter().map(|p| p.scenario.as_str())) {
        let mine: Vec<&ScalePoint> = points.iter().copied().filter(|p| p.scenario == scenario).collect();
        let knob = mine.first().map_or("value", |p| p.knob.as_str());
        let _ = writeln!(md, "### {scenario}: {knob}\n\n{}\n", description(&scenario));
        table(md, &mine);
        let (metrics, rows) = rows(&mine);
        let mut units: Vec<&str> = metrics.iter().filter_map(|m| m.unit).collect();
        units.dedup();
        let mut links = Vec::new();
        for unit in ordered(units.into_iter()) {
            let lines: Vec<(String, Vec<(f64, f64)>)> = metrics
                .iter()
                .enumerate()
                .filter(|(_, m)| m.unit == Some(unit.as_str()))
                .map(|(i, m)| {
                    let points = rows.iter().map(|(v, x)| (*v as f64, x[i])).collect();
                    (m.column.to_string(), points)
                })
                .collect();
            let file = format!("{scenario}-{}.svg", unit.replace(' ', "-"));
            plots::loglog(&plots.join(&file), &format!("{scenario}: {unit}"), knob, &unit, &lines)?;
            links.push(format!("![{scenario} {unit}]({})", rel.join(&file).display()));
        }
        let _ = writeln!(md, "{}\n", links.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(scenario: &str, value: u64, metrics: &[(&str, f64)]) -> ScalePoint {
        let mut p = ScalePoint::new(
            scenario,
            if scenario == "scale-groups" {
                "groups"
            } else {
                "partitions"
            },
            value,
        );
        for (k, v) in metrics {
            p.set(k, *v);
        }
        p
    }

    #[test]
    fn each_curve_has_a_table_by_knob_value_and_a_plot_per_unit() {
        let points = [
            point(
                "scale-partitions",
                400,
                &[("write_per_s", 9000.0), ("startup_ms", 300.0)],
            ),
            point(
                "scale-partitions",
                4,
                &[("write_per_s", 20000.0), ("startup_ms", 100.0)],
            ),
            point("scale-groups", 10, &[("rebalance_ms", 800.0), ("read_per_s", 30000.0)]),
            point("scale-groups", 10, &[("rebalance_ms", 1000.0), ("read_per_s", 50000.0)]),
            point("scale-backlog", 0, &[("claim_p99_ms", 2.0), ("rotated", 1.0)]),
            point("scale-backlog", 1000, &[("claim_p99_ms", 3.0), ("rotated", 0.0)]),
        ];
        let refs: Vec<&ScalePoint> = points.iter().collect();
        let dir = std::env::temp_dir().join(format!("pgbroker-bench-scale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut md = String::new();
        section(&mut md, &refs, &dir, Path::new("docs/bench")).expect("section");
        assert!(md.contains("## Scale"), "{md}");
        assert!(md.contains("| partitions | written/s | start-up ms |"), "{md}");
        let four = md.find("| 4 | 20000 | 100 |").expect("the row of 4");
        let four_hundred = md.find("| 400 | 9000 | 300 |").expect("the row of 400");
        assert!(four < four_hundred, "values ascending: {md}");
        assert!(md.contains("| groups | read/s | stable after ms |"), "{md}");
        assert!(md.contains("| 10 | 40000 | 900 |"), "medians: {md}");
        assert!(
            md.contains("(docs/bench/scale-partitions-records-per-second.svg)"),
            "{md}"
        );
        assert!(md.contains("(docs/bench/scale-groups-ms.svg)"), "{md}");
        assert!(md.contains("### scale-backlog"), "{md}");
        assert!(md.contains("| 0 | 2 | 1 |"), "a backlog of none: {md}");
        assert!(md.contains("| 1000 | 3 | 0 |"), "{md}");
        let svg = std::fs::read_to_string(dir.join("scale-backlog-ms.svg")).expect("the backlog's plot");
        assert!(svg.contains("claim p99 ms"), "the line's legend");
        let svg = std::fs::read_to_string(dir.join("scale-partitions-ms.svg")).expect("a plot");
        assert!(svg.contains("start-up ms"), "the line's legend");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_points_no_section() {
        let mut md = String::new();
        section(&mut md, &[], Path::new("."), Path::new(".")).expect("section");
        assert!(md.is_empty());
    }
}
