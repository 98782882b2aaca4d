//! The harness's smoke runs: every system for a couple of seconds, then the
//! report; and `compare`, `sweep` and `soak` at their shortest. It asserts only that each run happened and produced well-formed
//! results; it times nothing. Peers (NATS, Redis, RabbitMQ) are expected
//! only when their server answers; `kafka-protocol` always runs, against the
//! `pgbroker` binary built beside this one.
//!
//! The database is `PGBROKER_TEST_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgbroker_testkit::database_url;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pgbroker-bench");

/// The `pgbroker` binary of this build, built if `cargo test` did not.
fn pgbroker_bin() -> PathBuf {
    let bin = Path::new(BIN).with_file_name(format!("pgbroker{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "pgbroker-cli", "--bin", "pgbroker"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building pgbroker");
    }
    bin
}

fn answers(addr: &str) -> bool {
    addr.parse()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

fn harness(args: &[&str]) {
    let out = Command::new(BIN)
        .args(["--database-url", &database_url()])
        .arg("--pgbroker-bin")
        .arg(pgbroker_bin())
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run pgbroker-bench");
    assert!(
        out.status.success(),
        "pgbroker-bench {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh directory for one test's results.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgbroker-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Every line of a results file.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("results")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Runs `report` on `results` into `dir`; returns the Markdown.
fn report(results: &str, dir: &Path) -> String {
    let md = dir.join("BENCHMARKS.md");
    harness(&[
        "report",
        "--from",
        results,
        "--out",
        md.to_str().expect("utf-8"),
        "--plots",
        dir.join("plots").to_str().expect("utf-8"),
    ]);
    std::fs::read_to_string(&md).expect("report")
}

#[test]
fn smoke_suite_then_report() {
    let dir = temp_dir("smoke");
    let results = dir.join("smoke.jsonl");
    let results_arg = results.to_str().expect("utf-8 path");
    harness(&["suite", "--smoke", "--out", results_arg]);

    let lines = lines(&results);
    assert_eq!(lines[0]["kind"], "environment", "{}", lines[0]);
    assert!(lines[0]["postgres"].as_str().is_some_and(|v| v.contains("PostgreSQL")));
    let runs = &lines[1..];
    for run in runs {
        for key in ["system", "workload", "scenario"] {
            assert!(run[key].is_string(), "{key} missing in {run}");
        }
        for key in [
            "write_msgs_per_s",
            "read_msgs_per_s",
            "e2e_p50_ms",
            "e2e_p99_ms",
            "broker_cpu_s_per_million",
        ] {
            assert!(run[key].as_f64().is_some_and(f64::is_finite), "{key} missing in {run}");
        }
    }
    let ran = |scenario: &str, system: &str| runs.iter().any(|r| r["scenario"] == scenario && r["system"] == system);
    let mut pubsub = vec!["kafka-protocol", "pgbroker", "article", "ceiling"];
    if answers("127.0.0.1:4222") {
        pubsub.push("nats");
    }
    if answers("127.0.0.1:6379") {
        pubsub.push("redis");
    }
    let mut queue = vec!["pgbroker", "article", "pgmq", "sqs", "pgbroker-sql"];
    if answers("127.0.0.1:5672") {
        queue.push("rabbitmq");
    }
    for system in pubsub {
        assert!(ran("smoke-pubsub", system), "no pub/sub run of {system}");
    }
    for system in queue {
        assert!(ran("smoke-queue", system), "no queue run of {system}");
    }
    // Storage costs: measured for systems on Postgres, absent for the rest.
    for run in runs {
        let on_postgres = !["nats", "redis", "rabbitmq"].contains(&run["system"].as_str().unwrap_or(""));
        let wal = run["wal_bytes_per_msg"].as_f64();
        assert_eq!(wal.is_some(), on_postgres, "wal_bytes_per_msg in {run}");
        assert_eq!(
            run["db_bytes_per_msg"].as_f64().is_some(),
            on_postgres,
            "db_bytes_per_msg in {run}"
        );
        // A durable write of a 1 KiB message writes at least its payload to the WAL.
        if run["workload"] == "pubsub" && on_postgres {
            assert!(
                wal.is_some_and(|w| w >= 1024.0),
                "wal_bytes_per_msg below the payload in {run}"
            );
        }
    }
    // A file compared with itself has nothing beyond noise.
    let same = Command::new(BIN)
        .args(["diff", results_arg, results_arg])
        .output()
        .expect("run pgbroker-bench diff");
    let said = String::from_utf8_lossy(&same.stdout);
    assert!(
        same.status.success() && said.contains(" 0 worse and 0 better"),
        "{said}"
    );

    let plots = dir.join("plots");
    let report = report(results_arg, &dir);
    for heading in [
        "## Machine and Postgres",
        "## Targets",
        "## Where pgbroker loses",
        "### smoke-pubsub",
        "### smoke-queue",
    ] {
        assert!(report.contains(heading), "{heading} missing in the report");
    }
    for plot in [
        "smoke-pubsub-throughput.svg",
        "smoke-pubsub-latency.svg",
        "smoke-queue-latency.svg",
    ] {
        let svg = std::fs::read_to_string(plots.join(plot)).expect("plot");
        assert!(svg.starts_with("<svg"), "{plot} is not an SVG");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_sweep_and_soak_at_their_shortest() {
    let dir = temp_dir("families");
    let results = dir.join("families.jsonl");
    let out = results.to_str().expect("utf-8 path");
    let short = ["--duration", "2s", "--warmup", "1s"];
    let small = "--groups 1 --consumers-per-group 1 --producers 1 --partitions 1";
    let mut compare = vec![
        "compare",
        "--systems",
        "pgbroker,article",
        "--rounds",
        "1",
        "--out",
        out,
    ];
    compare.extend(small.split(' '));
    compare.extend(short);
    harness(&compare);
    let mut sweep = vec![
        "sweep",
        "--rates",
        "500,max",
        "--systems",
        "ceiling",
        "--flags",
        small,
        "--out",
        out,
    ];
    sweep.extend(short);
    harness(&sweep);
    harness(&[
        "soak",
        "--workload",
        "queue",
        "--rate",
        "200",
        "--duration",
        "3s",
        "--sample-every",
        "1s",
        "--out",
        out,
    ]);

    let lines = lines(&results);
    let of = |scenario: &str| lines.iter().filter(|l| l["scenario"] == scenario).count();
    assert_eq!(of("compare"), 2, "one compare run per system");
    assert_eq!(of("sweep"), 2, "one sweep run per rate");
    assert!(lines.iter().any(|l| l["kind"] == "soak-sample"), "no soak sample");
    assert!(lines
        .iter()
        .any(|l| l["scenario"] == "soak-queue" && l["workload"] == "queue"));
    let rates: Vec<&Value> = lines
        .iter()
        .filter(|l| l["scenario"] == "sweep")
        .map(|l| &l["target_rate"])
        .collect();
    assert_eq!(rates, [&Value::from(500), &Value::Null]);

    let report = report(out, &dir);
    for heading in ["### compare", "## Latency against offered rate", "## Soak"] {
        assert!(report.contains(heading), "{heading} missing in the report");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn console_scenarios_at_their_shortest() {
    let dir = temp_dir("console");
    let results = dir.join("console.jsonl");
    let out = results.to_str().expect("utf-8 path");
    harness(&[
        "suite",
        "--only",
        "kafka-one-group-console",
        "--rounds",
        "1",
        "--duration",
        "2s",
        "--warmup",
        "1s",
        "--out",
        out,
    ]);
    harness(&[
        "pages",
        "--partitions",
        "20",
        "--samples",
        "3",
        "--rounds",
        "2",
        "--out",
        out,
    ]);

    let lines = lines(&results);
    let systems: Vec<&Value> = lines
        .iter()
        .filter(|l| l["scenario"] == "kafka-one-group-console")
        .map(|l| &l["system"])
        .collect();
    assert_eq!(
        systems,
        ["kafka-protocol", "kafka-console"],
        "without, then with the overview"
    );
    let pages: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "page-load").collect();
    assert_eq!(pages.len(), 2 * 8, "every page in every round");
    for page in [
        "overview", "topics", "topic", "messages", "groups", "group", "queues", "queue",
    ] {
        let mine: Vec<&&Value> = pages.iter().filter(|l| l["page"] == page).collect();
        assert_eq!(mine.len(), 2, "{page}");
        for l in mine {
            let (median, p99) = (l["median_ms"].as_f64(), l["p99_ms"].as_f64());
            assert!(median.is_some_and(|m| m > 0.0) && p99 >= median, "{page}: {l}");
            assert!(l["bytes"].as_u64().is_some_and(|b| b > 2), "{page}: {l}");
            assert_eq!(l["partitions"], 20);
        }
    }

    let report = report(out, &dir);
    for text in [
        "| kafka-one-group-console: kafka-console write_msgs_per_s ≥ 0.95x kafka-protocol |",
        "## Console page loads",
        "| console-pages: group page (api) p99 < 300 ms at 1,000 partitions | ",
        "not measured (fewer partitions)",
        "### kafka-one-group-console",
    ] {
        assert!(report.contains(text), "{text} missing in the report:\n{report}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compaction_at_its_smallest() {
    let dir = temp_dir("compaction");
    let results = dir.join("compaction.jsonl");
    let out = results.to_str().expect("utf-8 path");
    harness(&[
        "compaction",
        "--target-mb",
        "2",
        "--keys",
        "50",
        "--value-bytes",
        "500",
        "--partitions",
        "2",
        "--segment-records",
        "500",
        "--rate",
        "200",
        "--phase-secs",
        "1",
        "--rounds",
        "2",
        "--out",
        out,
    ]);
    let lines = lines(&results);
    assert_eq!(lines[0]["kind"], "environment");
    let runs: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "compaction").collect();
    assert_eq!(runs.len(), 2, "one line per round");
    let first = runs[0];
    // 2 MB of 500-byte values: 4,194 records of 50 keys. The closed segments
    // keep one record per key each at most, so nearly all go.
    assert!(first["records"].as_i64().is_some_and(|n| n >= 4194), "{first}");
    assert!(first["records_removed"].as_i64().is_some_and(|n| n > 3000), "{first}");
    let (before, after) = (
        first["table_bytes_before"].as_i64(),
        first["table_bytes_after"].as_i64(),
    );
    assert!(before.zip(after).is_some_and(|(b, a)| a < b), "{first}");
    assert!(first["dead_tuples_after"].as_i64().is_some(), "{first}");
    for l in &runs {
        let (p50, p99) = (
            l["produce_p50_ms_cleaning"].as_f64(),
            l["produce_p99_ms_cleaning"].as_f64(),
        );
        assert!(p50.is_some_and(|m| m > 0.0) && p99 >= p50, "{l}");
    }

    let report = report(out, &dir);
    assert!(report.contains("## Compaction"), "{report}");
    assert!(report.contains("Later rounds (1)"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scale_curves_at_their_smallest() {
    let dir = temp_dir("scale");
    let results = dir.join("scale.jsonl");
    let out = results.to_str().expect("utf-8 path");
    harness(&[
        "scale",
        "--curves",
        "partitions,members,connections",
        "--partitions",
        "2",
        "--members",
        "2",
        "--connections",
        "5",
        "--backlog",
        "2000",
        "--duration",
        "1s",
        "--warmup",
        "500ms",
        "--out",
        out,
    ]);
    let lines = lines(&results);
    assert_eq!(lines[0]["kind"], "environment");
    let points: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "scale-point").collect();
    let scenarios: Vec<&str> = points.iter().filter_map(|p| p["scenario"].as_str()).collect();
    assert_eq!(scenarios, ["scale-partitions", "scale-members", "scale-connections"]);
    let metric = |i: usize, key: &str| points[i]["metrics"][key].as_f64().unwrap_or(f64::NAN);
    assert_eq!(points[0]["value"], 2);
    assert!(metric(0, "write_per_s") > 0.0, "{}", points[0]);
    assert!(metric(0, "pg_class_rows") > 10.0, "{}", points[0]);
    assert!(metric(0, "startup_ms") > 0.0, "{}", points[0]);
    assert!(metric(1, "rebalance_ms") > 0.0, "{}", points[1]);
    assert!(metric(2, "pg_connections") >= 1.0, "{}", points[2]);
    assert!(metric(2, "idle_requests_per_s") > 0.0, "{}", points[2]);
    let md = report(out, &dir);
    assert!(md.contains("## Scale"), "{md}");
    assert!(md.contains("### scale-members: members"), "{md}");
    assert!(dir.join("plots/scale-connections-MiB.svg").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tails_and_the_retained_curve_at_their_smallest() {
    let dir = temp_dir("tails");
    let results = dir.join("tails.jsonl");
    let out = results.to_str().expect("utf-8 path");
    harness(&[
        "tails",
        "--runs",
        "1",
        "--disturbed-runs",
        "1",
        "--disturbances",
        "retention",
        "--segment-records",
        "100",
        "--retention-bytes",
        "1000",
        "--pause",
        "0s",
        "--groups",
        "1",
        "--consumers-per-group",
        "1",
        "--producers",
        "1",
        "--write-batch",
        "10",
        "--rate",
        "1000",
        "--duration",
        "3s",
        "--warmup",
        "1s",
        "--out",
        out,
    ]);
    harness(&["scale", "--curves", "retained", "--retained-mib", "1,2", "--out", out]);
    let lines = lines(&results);
    let runs: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "tail-run").collect();
    assert_eq!(runs.len(), 2, "{lines:?}");
    assert_eq!(runs[0]["disturbance"], "none");
    assert_eq!(runs[1]["disturbance"], "retention");
    for r in &runs {
        assert!(r["e2e_p99_ms"].as_f64().is_some_and(|p| p > 0.0), "{r}");
        assert!(r["read_msgs_per_s"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    }
    // Segments of 100 records at 1,000 records/s: the pass has closed
    // segments to drop.
    let detail = runs[1]["disturbance_detail"].as_str().unwrap_or("");
    let dropped: u64 = detail.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(dropped > 0 && detail.ends_with("segments dropped"), "{detail}");
    let points: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "scale-point").collect();
    assert_eq!(points.len(), 2, "{lines:?}");
    assert_eq!(points[0]["scenario"], "scale-retained");
    let metric = |i: usize, key: &str| points[i]["metrics"][key].as_f64().unwrap_or(f64::NAN);
    assert!(metric(0, "old_fetch_p50_ms") > 0.0, "{}", points[0]);
    assert!(metric(1, "tail_fetch_p99_ms") > 0.0, "{}", points[1]);
    assert!(metric(1, "catalogue_mib") > 2.0, "{}", points[1]);
    assert!(metric(1, "retention_ms") > 0.0, "{}", points[1]);
    assert!(metric(0, "retention_ms").is_nan(), "{}", points[0]);
    let md = report(out, &dir);
    assert!(md.contains("## Tail stability"), "{md}");
    assert!(md.contains("| 100 | retention | 1 |"), "{md}");
    assert!(md.contains("### scale-retained: retained_mib"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}
