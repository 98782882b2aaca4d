//! End-to-end tests of the `pgbroker` binary against a real PostgreSQL. Each
//! test works in its own fresh schema, dropped at the end.
//!
//! The database is `PGBROKER_TEST_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

use pgbroker_testkit::cli::{bin, lines, values, Env};

#[test]
fn round_trip_with_group() {
    let env = Env::new();
    env.ok(&["topic", "create", "t", "--partitions", "3"]);
    let out = env.run(
        &["produce", "t", "--key-separator", ":"],
        &lines(0, 10, |i| format!("k{i}")),
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrote 10 records to t"));

    let records = env.consume(&["t", "--group", "g", "--from-beginning", "--max-messages", "10"]);
    assert_eq!(records.len(), 10);
    let mut seen = BTreeSet::new();
    for r in &records {
        for key in ["topic", "partition", "offset", "timestamp", "key", "value", "headers"] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert_eq!(r["topic"], "t");
        assert!(r["timestamp"].is_i64() && r["partition"].is_i64() && r["offset"].is_i64());
        assert_eq!(r["headers"], Value::Array(vec![]));
        let key = r["key"].as_str().expect("key");
        let i = key.strip_prefix('k').expect("k prefix");
        assert_eq!(r["value"].as_str(), Some(format!("v{i}").as_str()));
        seen.insert(key.to_string());
    }
    assert_eq!(seen, (0..10).map(|i| format!("k{i}")).collect());

    let group = env.json(&["group", "describe", "g", "--format", "json"]);
    let parts = group["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p["lag"] == 0), "{group}");
    let committed: i64 = parts.iter().map(|p| p["committed"].as_i64().expect("committed")).sum();
    assert_eq!(committed, 10);

    // The next run continues after the committed offsets.
    env.ok_with(
        &["produce", "t", "--key-separator", ":"],
        &lines(10, 15, |i| format!("k{i}")),
    );
    let records = env.consume(&["t", "--group", "g", "--from-beginning"]);
    let keys: BTreeSet<&str> = records.iter().map(|r| r["key"].as_str().expect("key")).collect();
    assert_eq!(keys, ["k10", "k11", "k12", "k13", "k14"].into_iter().collect());

    // One key, so one partition and a known order; a run that stops early
    // commits only what it printed.
    env.ok_with(
        &[
            "produce",
            "t",
            "--key-separator",
            ":",
            "--header",
            "h=1",
            "--header",
            "x=a=b",
        ],
        &lines(0, 4, |_| "same".into()),
    );
    let first = env.consume(&["t", "--group", "g", "--max-messages", "2"]);
    assert_eq!(values(&first), ["v0", "v1"]);
    assert_eq!(
        first[0]["headers"],
        serde_json::json!([{"key": "h", "value": "1"}, {"key": "x", "value": "a=b"}])
    );
    let rest = env.consume(&["t", "--group", "g"]);
    assert_eq!(values(&rest), ["v2", "v3"]);
    let group = env.json(&["group", "describe", "g", "--format", "json"]);
    assert!(group["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .all(|p| p["lag"] == 0));
    assert!(env.ok(&["group", "list"]).lines().any(|l| l == "g"));
}

#[test]
fn keys_pick_partitions_like_kafka() {
    let env = Env::new();
    env.ok(&["topic", "create", "kp", "--partitions", "5"]);
    env.ok_with(
        &["produce", "kp", "--key-separator", "=>"],
        &lines(0, 20, |i| format!("user-{i}")).replace(':', "=>"),
    );
    let records = env.consume(&["kp", "--from-beginning", "--max-messages", "20"]);
    assert_eq!(records.len(), 20);
    for r in &records {
        let key = r["key"].as_str().expect("key");
        let want = pgbroker::partitioner::partition_for_key(key.as_bytes(), 5);
        assert_eq!(r["partition"].as_i64(), Some(i64::from(want)), "{r}");
    }

    // Lines without the separator have no key; bytes that are not UTF-8
    // come out as base64.
    env.ok(&["topic", "create", "raw"]);
    let out = env
        .cmd(&["produce", "raw", "--key-separator", ":"])
        .write_stdin(b"plain\r\n\xff\x00\n".to_vec())
        .output();
    assert!(out.expect("run").status.success());
    let records = env.consume(&["raw", "--from-beginning"]);
    assert_eq!(records.len(), 2);
    assert_eq!(
        (&records[0]["key"], &records[0]["value"]),
        (&Value::Null, &Value::from("plain"))
    );
    assert_eq!(records[1]["value"], serde_json::json!({"base64": "/wA="}));
    let text = env.ok(&[
        "consume",
        "raw",
        "--from-beginning",
        "--print-key",
        "--max-messages",
        "1",
    ]);
    assert_eq!(text, "null\tplain\n");
}

#[test]
fn bad_input_is_rejected() {
    let env = Env::new();
    env.ok(&["migrate"]);
    for args in [
        &["produce", "nope"][..],
        &["consume", "nope", "--idle-timeout", "1s"],
        &["consume", "nope", "--group", "g", "--idle-timeout", "1s"],
        &["topic", "describe", "nope"],
        &["topic", "delete", "nope"],
    ] {
        let err = env.fail_with(1, args, "x\n");
        assert!(err.starts_with("error: ") && err.contains("nope"), "{args:?}: {err}");
    }
    assert!(env
        .fail_with(2, &["topic", "create", "bad name;drop"], "")
        .contains("invalid topic name"));
    for args in [
        &["topic", "create", "t", "--partitions", "0"][..],
        &["topic", "create", "t", "--partitions", "1001"],
        &["topic", "create", "t", "--retention-bytes", "-1"],
        &["topic", "create", "t", "--retention", "soon"],
        &["topic", "add-partitions", "t", "--count", "0"],
        &["consume", "t", "--max-messages", "0"],
        &["consume", "t", "--offset", "0"],
        &["consume", "t", "--offset", "-1", "--partition", "0"],
        &["consume", "t", "--group", "g", "--partition", "0"],
        &["consume", "t", "--group", "g", "--partition", "0", "--offset", "0"],
        &["group", "reset-offsets", "g", "--topic", "t"],
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--to-latest",
        ],
    ] {
        env.fail_with(2, args, "");
    }
    assert!(env
        .json(&["topic", "list", "--format", "json"])
        .as_array()
        .expect("list")
        .is_empty());

    env.ok(&["topic", "create", "t", "--partitions", "3"]);
    let err = env.fail_with(1, &["produce", "t", "--partition", "7"], "a\nb\n");
    assert!(err.contains("partition 7"), "{err}");
    let d = env.json(&["topic", "describe", "t", "--format", "json"]);
    let states = d["partition_states"].as_array().expect("states");
    assert!(states.iter().all(|p| p["records"] == 0), "{d}");
    assert!(env.fail(&["consume", "t", "--partition", "7"]).contains("partition 7"));

    let url = "postgres://u:secret@127.0.0.1:1/db";
    let out = Command::new(bin())
        .args(["--database-url", url, "topic", "list"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.starts_with("error: ") && err.contains("127.0.0.1:1/db"), "{err}");
    assert!(err.contains("refused"), "the driver's reason is kept: {err}");
    assert!(!err.contains("secret"), "{err}");
    let help = Command::new(bin())
        .env("DATABASE_URL", url)
        .arg("--help")
        .output()
        .expect("run");
    assert!(!String::from_utf8_lossy(&help.stdout).contains("secret"));

    // Offsets outside [log start, high watermark].
    env.ok(&["topic", "create", "r", "--segment-records", "2", "--retention", "1ms"]);
    env.ok_with(&["produce", "r"], &lines(0, 6, |_| "k".into()));
    std::thread::sleep(Duration::from_millis(50));
    assert!(env.ok(&["maintain"]).starts_with("dropped "));
    let d = env.json(&["topic", "describe", "r", "--format", "json"]);
    let start = d["partition_states"][0]["log_start_offset"]
        .as_i64()
        .expect("log start");
    assert!(start > 0, "{d}");
    let below = (start - 1).to_string();
    let err = env.fail(&["consume", "r", "--partition", "0", "--offset", &below]);
    assert!(err.contains("out of range"), "{err}");
    let err = env.fail(&["consume", "r", "--partition", "0", "--offset", "100"]);
    assert!(err.contains("out of range"), "{err}");
}

#[test]
fn topic_lifecycle() {
    let env = Env::new();
    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|t| t["name"].as_str().expect("name").to_string())
            .collect()
    };
    env.ok(&[
        "topic",
        "create",
        "life",
        "--partitions",
        "3",
        "--retention",
        "7d",
        "--max-message-bytes",
        "1000",
    ]);
    // Global flags also work after the subcommand.
    let out = Command::new(bin())
        .args([
            "topic",
            "list",
            "--format",
            "json",
            "--database-url",
            &env.url,
            "--schema",
            &env.schema,
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(names(list.clone()), ["life"]);
    assert_eq!(list[0]["retention_ms"], 7 * 24 * 3600 * 1000);
    assert!(env.fail(&["topic", "create", "life"]).contains("already exists"));

    env.ok(&["topic", "add-partitions", "life", "--count", "2"]);
    let d = env.json(&["topic", "describe", "life", "--format", "json"]);
    assert_eq!(d["partitions"], 5);
    assert_eq!(d["partition_states"].as_array().expect("states").len(), 5);
    assert!(env.ok(&["topic", "describe", "life"]).contains("HIGH-WATERMARK"));

    env.ok(&["topic", "delete", "life"]);
    assert!(names(env.json(&["topic", "list", "--format", "json"])).is_empty());
    assert!(env.fail(&["topic", "describe", "life"]).contains("life"));
}

#[test]
fn reset_offsets() {
    let env = Env::new();
    env.ok(&["topic", "create", "rs", "--partitions", "2"]);
    env.ok_with(&["produce", "rs", "--partition", "0"], "a0\na1\na2\na3\n");
    env.ok_with(&["produce", "rs", "--partition", "1"], "b0\nb1\n");
    assert_eq!(
        env.consume(&["rs", "--group", "g", "--from-beginning", "--max-messages", "6"])
            .len(),
        6
    );
    assert!(env.consume(&["rs", "--group", "g"]).is_empty());

    env.ok(&["group", "reset-offsets", "g", "--topic", "rs", "--to-earliest"]);
    let mut again = values(&env.consume(&["rs", "--group", "g"])).join(",");
    assert_eq!(again.len(), "a0,a1,a2,a3,b0,b1".len());
    for v in ["a0", "a1", "a2", "a3", "b0", "b1"] {
        assert!(again.contains(v), "{again}");
    }

    // Clamped per partition: partition 0 to 3, partition 1 to its end (2).
    let out = env.ok(&["group", "reset-offsets", "g", "--topic", "rs", "--to-offset", "3"]);
    assert!(out.contains("NEW-OFFSET"));
    let offsets: BTreeMap<i64, i64> = env.json(&["group", "describe", "g", "--format", "json"])["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| (p["partition"].as_i64().expect("p"), p["committed"].as_i64().expect("c")))
        .collect();
    assert_eq!(offsets, [(0, 3), (1, 2)].into_iter().collect());
    assert_eq!(values(&env.consume(&["rs", "--group", "g"])), ["a3"]);

    env.ok(&[
        "group",
        "reset-offsets",
        "g",
        "--topic",
        "rs",
        "--to-datetime",
        "2000-01-01T00:00:00Z",
    ]);
    again = values(&env.consume(&["rs", "--group", "g", "--max-messages", "6"])).join(",");
    assert_eq!(again.split(',').count(), 6);
    env.ok(&["group", "reset-offsets", "g", "--topic", "rs", "--to-latest"]);
    assert!(env.consume(&["rs", "--group", "g"]).is_empty());

    assert!(env
        .fail(&["group", "reset-offsets", "g", "--topic", "nope", "--to-earliest"])
        .contains("nope"));
    env.ok(&["group", "delete", "g"]);
    assert!(env.fail(&["group", "describe", "g"]).contains("unknown group"));
}
