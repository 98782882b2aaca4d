//! End-to-end tests of `pgbroker queue ...` against a real PostgreSQL, each
//! in its own fresh schema.

// Helpers for the stream commands are unused here.

use std::collections::BTreeSet;

use serde_json::Value;

use pgbroker_testkit::cli::Env;

fn receive_json(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["queue", "receive", "--format", "json"];
    all.extend_from_slice(args);
    env.ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

fn stats(env: &Env, queue: &str) -> Value {
    env.json(&["queue", "stats", queue, "--format", "json"])
}

fn counts(env: &Env, queue: &str) -> (i64, i64, i64, i64) {
    let s = stats(env, queue);
    let n = |k: &str| s[k].as_i64().expect("count");
    (n("ready"), n("in_flight"), n("delayed"), n("dead_lettered"))
}

#[test]
fn create_send_stats_receive_ack() {
    let env = Env::new();
    env.ok(&["queue", "create", "jobs.dlq"]);
    let out = env.ok(&[
        "queue",
        "create",
        "jobs",
        "--visibility-timeout",
        "45s",
        "--max-attempts",
        "3",
        "--dead-letter",
        "jobs.dlq",
        "--backoff-base",
        "2s",
        "--backoff-max",
        "1m",
    ]);
    assert_eq!(out, "created queue jobs\n");
    let list = env.json(&["queue", "list", "--format", "json"]);
    let jobs = &list.as_array().expect("list")[0];
    assert_eq!(jobs["name"], "jobs");
    assert_eq!(
        (
            &jobs["visibility_timeout_ms"],
            &jobs["max_attempts"],
            &jobs["dead_letter"]
        ),
        (&Value::from(45_000), &Value::from(3), &Value::from("jobs.dlq"))
    );
    assert!(env.ok(&["queue", "list"]).contains("VISIBILITY-TIMEOUT"));

    let ids = env.ok_with(&["queue", "send", "jobs", "--priority", "2"], "first\nsecond\nthird\n");
    assert_eq!(ids.lines().count(), 3);
    let s = stats(&env, "jobs");
    let keys: BTreeSet<&str> = s.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["dead_lettered", "delayed", "in_flight", "oldest_ready_age_ms", "ready"]
            .into_iter()
            .collect()
    );
    assert_eq!(counts(&env, "jobs"), (3, 0, 0, 0));
    assert!(s["oldest_ready_age_ms"].is_i64());
    assert!(env.ok(&["queue", "stats", "jobs"]).contains("IN-FLIGHT"));

    let got = receive_json(&env, &["jobs", "--max", "10", "--ack"]);
    assert_eq!(got.len(), 3);
    for (m, body) in got.iter().zip(["first", "second", "third"]) {
        for key in ["id", "receipt", "attempt", "enqueued_at", "body", "group", "priority"] {
            assert!(m.get(key).is_some(), "{key} missing in {m}");
        }
        assert_eq!(
            (&m["body"], &m["attempt"], &m["priority"]),
            (&Value::from(body), &Value::from(1), &Value::from(2))
        );
        assert_eq!(m["group"], Value::Null);
        assert!(m["enqueued_at"].is_i64());
        assert!(ids.lines().any(|id| id.parse::<i64>().ok() == m["id"].as_i64()));
    }
    assert_eq!(counts(&env, "jobs"), (0, 0, 0, 0), "acknowledged before exit");
    assert_eq!(stats(&env, "jobs")["oldest_ready_age_ms"], Value::Null);
    // Nothing left: an empty receive prints nothing and succeeds.
    assert_eq!(env.ok(&["queue", "receive", "jobs", "--wait", "200ms"]), "");
}

#[test]
fn nack_extend_dead_letter_and_redrive() {
    let env = Env::new();
    env.ok(&["queue", "create", "d"]);
    env.ok(&["queue", "create", "q", "--max-attempts", "2", "--dead-letter", "d"]);
    env.ok_with(&["queue", "send", "q"], "payload\n");
    // Text output: receipt, tab, body.
    let line = env.ok(&["queue", "receive", "q"]);
    let (receipt, body) = line.trim_end().split_once('\t').expect("receipt<TAB>body");
    assert_eq!(body, "payload");
    let out = env.ok(&["queue", "extend", "q", receipt, "--by", "1m"]);
    assert!(out.starts_with(&format!("lease of {receipt} now ends at ")), "{out}");
    env.ok(&[
        "queue",
        "nack",
        "q",
        receipt,
        "--delay",
        "0s",
        "--error",
        "first failure",
    ]);
    // The receipt was spent by the nack.
    assert!(env.fail(&["queue", "ack", "q", receipt]).contains("no longer valid"));
    let second = receive_json(&env, &["q"]);
    assert_eq!(
        (&second[0]["attempt"], &second[0]["last_error"]),
        (&Value::from(2), &Value::from("first failure"))
    );
    let r = second[0]["receipt"].as_str().expect("receipt");
    env.ok(&["queue", "nack", "q", r, "--error", "second failure"]);
    assert_eq!(counts(&env, "q"), (0, 0, 0, 1));
    assert_eq!(counts(&env, "d"), (1, 0, 0, 0));
    let dead = receive_json(&env, &["d"]);
    assert_eq!(dead[0]["dead_letter_source"], "q");
    assert_eq!(dead[0]["dead_letter_attempts"], 2);
    assert_eq!(dead[0]["last_error"], "second failure");
    let r = dead[0]["receipt"].as_str().expect("receipt");
    env.ok(&["queue", "nack", "d", r, "--delay", "0s"]);
    assert_eq!(env.ok(&["queue", "redrive", "d"]), "moved 1 message from d\n");
    assert_eq!(counts(&env, "q"), (1, 0, 0, 0));
    let back = receive_json(&env, &["q", "--ack"]);
    assert_eq!(
        (&back[0]["body"], &back[0]["attempt"]),
        (&Value::from("payload"), &Value::from(1))
    );

    // Redrive to another queue.
    env.ok(&["queue", "create", "elsewhere"]);
    env.ok_with(&["queue", "send", "q"], "again\n");
    for _ in 0..2 {
        let m = receive_json(&env, &["q"]);
        env.ok(&[
            "queue",
            "nack",
            "q",
            m[0]["receipt"].as_str().expect("receipt"),
            "--delay",
            "0s",
        ]);
    }
    assert!(env
        .ok(&["queue", "redrive", "d", "--to", "elsewhere"])
        .starts_with("moved 1 "));
    assert_eq!(counts(&env, "elsewhere"), (1, 0, 0, 0));
}

#[test]
fn an_expired_lease_comes_back_and_the_old_receipt_is_refused() {
    let env = Env::new();
    env.ok(&["queue", "create", "w"]);
    env.ok_with(&["queue", "send", "w"], "job\n");
    // A worker that received and went away without acknowledging.
    let first = receive_json(&env, &["w", "--visibility-timeout", "5s"]);
    let old = first[0]["receipt"].as_str().expect("receipt").to_string();
    assert!(receive_json(&env, &["w"]).is_empty(), "leased");
    let again = receive_json(&env, &["w", "--wait", "20s"]);
    assert_eq!(again[0]["attempt"], 2);
    let err = env.fail(&["queue", "ack", "w", &old]);
    assert!(err.starts_with("error: ") && err.contains(&old), "{err}");
    assert_eq!(counts(&env, "w"), (0, 1, 0, 0), "the stale ack changed nothing");
    env.ok(&["queue", "ack", "w", again[0]["receipt"].as_str().expect("receipt")]);
    assert_eq!(counts(&env, "w"), (0, 0, 0, 0));
}

#[test]
fn dedup_keys_groups_delays_and_priorities() {
    let env = Env::new();
    env.ok(&["queue", "create", "o"]);
    let first = env.ok_with(&["queue", "send", "o", "--dedup-key", "order-1"], "a\n");
    let out = env.run(&["queue", "send", "o", "--dedup-key", "order-1"], "b\n");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), first, "the first message's id");
    assert!(String::from_utf8_lossy(&out.stderr).contains("(1 duplicate)"));
    env.ok(&["queue", "purge", "o"]);

    env.ok_with(&["queue", "send", "o", "--group", "g"], "g1\ng2\n");
    env.ok_with(&["queue", "send", "o", "--priority", "9"], "urgent\n");
    env.ok_with(&["queue", "send", "o", "--delay", "1h"], "later\n");
    let got = receive_json(&env, &["o", "--max", "10"]);
    let bodies: Vec<&str> = got.iter().map(|m| m["body"].as_str().expect("body")).collect();
    assert_eq!(
        bodies,
        ["urgent", "g1"],
        "one of the group at a time, highest priority first"
    );
    assert_eq!(got[1]["group"], "g");
    assert_eq!(counts(&env, "o"), (1, 2, 1, 0));
    let receipts: Vec<&str> = got.iter().map(|m| m["receipt"].as_str().expect("receipt")).collect();
    let mut ack = vec!["queue", "ack", "o"];
    ack.extend(receipts);
    assert_eq!(env.ok(&ack), "acknowledged 2 messages\n");
    assert_eq!(env.ok(&["queue", "receive", "o", "--ack"]), "g2\n");
    assert_eq!(env.ok(&["queue", "purge", "o"]), "purged 1 message from o\n");
}

#[test]
fn update_and_delete() {
    let env = Env::new();
    env.ok(&["queue", "create", "dl"]);
    env.ok(&[
        "queue",
        "create",
        "u",
        "--dead-letter",
        "dl",
        "--archive-retention",
        "1d",
    ]);
    assert!(env
        .fail(&["queue", "delete", "dl"])
        .contains("dead-letter queue of \"u\""));
    let out = env.ok(&["queue", "update", "u", "--no-dead-letter", "--max-attempts", "7"]);
    assert!(out.contains("ARCHIVE"), "{out}");
    let list = env.json(&["queue", "list", "--format", "json"]);
    let u = list
        .as_array()
        .expect("list")
        .iter()
        .find(|q| q["name"] == "u")
        .expect("u");
    assert_eq!((&u["dead_letter"], &u["max_attempts"]), (&Value::Null, &Value::from(7)));
    assert_eq!(u["archive_retention_ms"], 86_400_000, "kept");
    env.ok(&["queue", "delete", "dl"]);
    env.ok(&["queue", "delete", "u"]);
    assert!(env
        .json(&["queue", "list", "--format", "json"])
        .as_array()
        .expect("list")
        .is_empty());
    assert!(env.ok(&["maintain"]).contains("queues: storage"));
}

#[test]
fn bad_input_is_rejected_and_changes_nothing() {
    let env = Env::new();
    env.ok(&["queue", "create", "b", "--max-message-bytes", "10"]);
    env.ok_with(&["queue", "send", "b"], "ok\n");
    let stale = "1:00000000-0000-0000-0000-000000000000";
    // Usage errors: exit 2, nothing sent to the database.
    for args in [
        &["queue", "create", "bad name;drop"][..],
        &["queue", "create", "x", "--max-attempts", "0"],
        &["queue", "create", "x", "--visibility-timeout", "0s"],
        &["queue", "send", "b", "--priority", "10"],
        &[
            "queue",
            "send",
            "b",
            "--delay",
            "1s",
            "--deliver-at",
            "2030-01-01T00:00:00Z",
        ],
        &["queue", "receive", "b", "--max", "0"],
        &["queue", "receive", "b", "--max", "-1"],
        &["queue", "receive", "b", "--max", "1001"],
        &["queue", "ack", "b"],
        &["queue", "ack", "b", "not-a-receipt"],
        &["queue", "ack", "b", "1:'; DROP TABLE queues; --"],
        &["queue", "extend", "b", stale],
        &["queue", "extend", "b", stale, "--by", "0s"],
        &["queue", "stats", "b", "--format", "yaml"],
    ] {
        let err = env.fail_with(2, args, "");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    // Runtime errors: exit 1 with one clear line, nothing changed.
    for (args, stdin, needle) in [
        (&["queue", "send", "nope"][..], "x\n", "unknown queue \"nope\""),
        (&["queue", "receive", "nope"], "", "unknown queue \"nope\""),
        (&["queue", "stats", "nope"], "", "unknown queue \"nope\""),
        (&["queue", "purge", "nope"], "", "unknown queue \"nope\""),
        (&["queue", "delete", "nope"], "", "unknown queue \"nope\""),
        (&["queue", "redrive", "b", "--to", "nope"], "", "unknown queue \"nope\""),
        (&["queue", "create", "b"], "", "already exists"),
        (
            &["queue", "create", "c", "--dead-letter", "nope"],
            "",
            "unknown queue \"nope\"",
        ),
        (&["queue", "ack", "b", stale], "", "no longer valid"),
        (&["queue", "nack", "b", stale], "", "no longer valid"),
        (&["queue", "extend", "b", stale, "--by", "1s"], "", "no longer valid"),
        (
            &["queue", "send", "b"],
            "far too long a line\n",
            "exceeds the queue's maximum",
        ),
        (&["queue", "send", "b", "--delay", "400d"], "x\n", "invalid delay"),
        (&["queue", "nack", "b", stale, "--delay", "400d"], "", "invalid delay"),
    ] {
        let err = env.fail_with(1, args, stdin);
        assert!(err.starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    assert_eq!(counts(&env, "b"), (1, 0, 0, 0));
    let names: Vec<Value> = env
        .json(&["queue", "list", "--format", "json"])
        .as_array()
        .expect("list")
        .clone();
    assert_eq!(names.len(), 1, "nothing created");
}
