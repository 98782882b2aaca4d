//! `pgbroker acl` and ACLs enforced on a real Kafka client: kcat
//! (librdkafka) with SASL sees, produces and consumes only what its user
//! was granted.
//!
//! Without kcat on the PATH the kcat test is skipped, except under CI
//! (`CI=true`), where it fails; `scripts/setup.sh` installs it. The same
//! holds for the consumer-protocol test and the PyPI confluent-kafka of
//! `compat/.venv`.

// Helpers for the stream commands are unused here.

use std::process::Output;

use pgbroker_testkit::cli::kcat::{self, librdkafka_version};
use pgbroker_testkit::cli::serve::{kcat_available, Server};
use pgbroker_testkit::cli::{text, Env};
use serde_json::{json, Value};

#[test]
fn acl_commands() {
    let env = Env::new();
    env.ok(&["user", "add", "alice", "--password", "pw"]);
    env.ok(&["user", "add", "bob", "--password", "pw"]);
    assert_eq!(
        env.ok(&["acl", "add", "--user", "alice", "--allow", "produce", "--topic", "orders"]),
        "granted: alice may produce on topic \"orders\"\n"
    );
    assert_eq!(
        env.ok(&["acl", "add", "--user", "alice", "--allow", "produce", "--topic", "orders"]),
        "already granted: alice may produce on topic \"orders\"\n"
    );
    env.ok(&[
        "acl",
        "add",
        "--user",
        "alice",
        "--allow",
        "group",
        "--group-prefix",
        "app-",
    ]);
    env.ok(&[
        "acl",
        "add",
        "--user",
        "bob",
        "--allow",
        "consume",
        "--topic-prefix",
        "",
    ]);
    env.ok(&["acl", "add", "--user", "bob", "--allow", "admin", "--group", "ops"]);

    let all = env.json(&["acl", "list", "--format", "json"]);
    let expected = json!([
        {"user": "alice", "permission": "group", "resource_type": "group", "pattern": "prefix", "name": "app-"},
        {"user": "alice", "permission": "produce", "resource_type": "topic", "pattern": "literal", "name": "orders"},
        {"user": "bob", "permission": "admin", "resource_type": "group", "pattern": "literal", "name": "ops"},
        {"user": "bob", "permission": "consume", "resource_type": "topic", "pattern": "prefix", "name": ""},
    ]);
    assert_eq!(all, expected);
    let bob = env.json(&["acl", "list", "--user", "bob", "--format", "json"]);
    assert_eq!(bob.as_array().map(Vec::len), Some(2));
    let table = env.ok(&["acl", "list", "--user", "alice"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].starts_with("USER") && rows[0].contains("PERMISSION"), "{table}");
    assert!(rows[2].contains("produce") && rows[2].contains("orders"), "{table}");

    // Bad input: a clear error and nothing changed.
    let refusals: &[(i32, &[&str], &str)] = &[
        (
            2,
            &["acl", "add", "--user", "alice", "--allow", "write", "--topic", "t"],
            "write",
        ),
        (
            2,
            &["acl", "add", "--user", "alice", "--allow", "produce", "--topic", "a b"],
            "topic name",
        ),
        (
            2,
            &[
                "acl",
                "add",
                "--user",
                "alice",
                "--allow",
                "produce",
                "--topic-prefix",
                "x;",
            ],
            "topic prefix",
        ),
        (
            2,
            &["acl", "add", "--user", "a,b", "--allow", "produce", "--topic", "t"],
            "user name",
        ),
        (2, &["acl", "add", "--user", "alice", "--allow", "produce"], "--topic"),
        (
            2,
            &[
                "acl", "add", "--user", "alice", "--allow", "produce", "--topic", "t", "--group", "g",
            ],
            "cannot be used",
        ),
        (
            1,
            &["acl", "add", "--user", "carol", "--allow", "produce", "--topic", "t"],
            "unknown user \"carol\"",
        ),
        (
            1,
            &["acl", "add", "--user", "alice", "--allow", "consume", "--group", "g"],
            "applies to topics",
        ),
        (
            1,
            &["acl", "add", "--user", "alice", "--allow", "group", "--topic", "t"],
            "applies to groups",
        ),
        (
            1,
            &[
                "acl", "remove", "--user", "alice", "--allow", "admin", "--topic", "orders",
            ],
            "no such ACL",
        ),
        (1, &["acl", "list", "--user", "carol"], "unknown user"),
    ];
    for (code, args, says) in refusals {
        let err = env.fail_with(*code, args, "");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(
        env.json(&["acl", "list", "--format", "json"]),
        expected,
        "nothing changed"
    );

    assert_eq!(
        env.ok(&["acl", "remove", "--user", "alice", "--allow", "produce", "--topic", "orders"]),
        "revoked: alice may produce on topic \"orders\"\n"
    );
    env.ok(&["user", "remove", "bob"]);
    let left = env.json(&["acl", "list", "--format", "json"]);
    assert_eq!(left, json!([expected[0]]), "revoked, and bob's grants went with bob");
}

#[test]
fn super_users_need_authentication() {
    let env = Env::new();
    let err = env.fail_with(2, &["serve", "--super-users", "root"], "");
    assert!(err.contains("--sasl-mechanisms"), "{err}");
}

/// Runs kcat as `user` with `args`, killed after 30 s.
fn kcat(port: u16, mechanism: &str, user: &str, args: &[&str], stdin: &str) -> Output {
    let sasl = [
        "security.protocol=SASL_PLAINTEXT".to_string(),
        format!("sasl.mechanisms={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password={user}-pw"),
    ];
    let mut all: Vec<&str> = sasl.iter().flat_map(|x| ["-X", x.as_str()]).collect();
    all.extend_from_slice(args);
    kcat::kcat(port, &all, Some(stdin))
}

fn high_watermark(env: &Env, topic: &str) -> i64 {
    let d: Value = env.json(&["topic", "describe", topic, "--format", "json"]);
    d["partition_states"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["high_watermark"].as_i64().expect("high watermark"))
        .sum()
}

#[test]
fn kcat_is_held_to_its_acls() {
    if !kcat_available() {
        return;
    }
    let env = Env::new();
    env.ok(&["topic", "create", "orders"]);
    env.ok(&["topic", "create", "audit"]);
    for user in ["alice", "root"] {
        env.ok_with(&["user", "add", user, "--password-stdin"], &format!("{user}-pw\n"));
    }
    for right in ["produce", "consume"] {
        env.ok(&["acl", "add", "--user", "alice", "--allow", right, "--topic", "orders"]);
    }
    // librdkafka before 2.6.1 cannot log in with SCRAM here (see
    // kafka_sasl.rs); PLAIN, allowed without TLS for the test, stands in.
    let scram = librdkafka_version() >= (2, 6, 1);
    let mechanism = if scram { "SCRAM-SHA-256" } else { "PLAIN" };
    let mut flags = vec!["--sasl-mechanisms", mechanism, "--super-users", "root"];
    if !scram {
        flags.push("--allow-plain-without-tls");
    }
    let server = Server::start(&env, &flags);

    let listed = kcat(server.port, mechanism, "alice", &["-L"], "");
    let all = text(&listed);
    assert!(listed.status.success(), "{all}");
    assert!(all.contains("topic \"orders\""), "{all}");
    assert!(
        !all.contains("\"audit\""),
        "a topic without rights is not listed: {all}"
    );
    let root = text(&kcat(server.port, mechanism, "root", &["-L"], ""));
    assert!(root.contains("\"audit\"") && root.contains("\"orders\""), "{root}");

    let produced = kcat(server.port, mechanism, "alice", &["-P", "-t", "orders"], "granted\n");
    assert!(produced.status.success(), "{}", text(&produced));
    assert_eq!(high_watermark(&env, "orders"), 1);
    let consumed = kcat(
        server.port,
        mechanism,
        "alice",
        &["-C", "-t", "orders", "-o", "beginning", "-c", "1", "-e"],
        "",
    );
    assert!(consumed.status.success(), "{}", text(&consumed));
    assert_eq!(String::from_utf8_lossy(&consumed.stdout).trim(), "granted");

    let refused = kcat(server.port, mechanism, "alice", &["-P", "-t", "audit"], "refused\n");
    let all = text(&refused);
    assert!(all.to_lowercase().contains("authorization failed"), "{all}");
    assert_eq!(high_watermark(&env, "audit"), 0, "nothing written: {all}");
    let refused = kcat(
        server.port,
        mechanism,
        "alice",
        &["-C", "-t", "audit", "-o", "beginning", "-e"],
        "",
    );
    let all = text(&refused);
    assert!(!refused.status.success(), "{all}");
    assert!(all.to_lowercase().contains("authorization failed"), "{all}");
}

/// The PyPI confluent-kafka of `compat/.venv` (librdkafka with the
/// consumer group protocol), or `None` outside CI when it is missing.
fn compat_python() -> Option<String> {
    let python = format!("{}/../../compat/.venv/bin/python", env!("CARGO_MANIFEST_DIR"));
    if std::path::Path::new(&python).exists() {
        return Some(python);
    }
    assert!(
        std::env::var("CI").is_err(),
        "compat/.venv is missing: scripts/setup.sh installs it"
    );
    None
}

#[test]
fn a_regex_subscription_gets_only_the_topics_its_user_may_see() {
    let Some(python) = compat_python() else { return };
    let env = Env::new();
    for topic in ["logs-app", "logs-billing", "logs-audit"] {
        env.ok(&["topic", "create", topic]);
        env.ok_with(&["produce", topic], &format!("{topic}-record\n"));
    }
    for user in ["alice", "root"] {
        env.ok_with(&["user", "add", user, "--password-stdin"], &format!("{user}-pw\n"));
    }
    for (right, topic) in [("consume", "logs-app"), ("produce", "logs-billing")] {
        env.ok(&["acl", "add", "--user", "alice", "--allow", right, "--topic", topic]);
    }
    for user in ["alice", "root"] {
        env.ok(&[
            "acl",
            "add",
            "--user",
            user,
            "--allow",
            "group",
            "--group-prefix",
            "regex-",
        ]);
    }
    let flags = [
        "--sasl-mechanisms",
        "PLAIN",
        "--allow-plain-without-tls",
        "--super-users",
        "root",
        "--group-consumer-heartbeat-interval",
        "1s",
    ];
    let server = Server::start(&env, &flags);
    let script = format!("{}/../../compat/regex_acl.py", env!("CARGO_MANIFEST_DIR"));
    let start = |user: &str, group: &str, seconds: &str| {
        std::process::Command::new(&python)
            .args([
                &script,
                &format!("127.0.0.1:{}", server.port),
                user,
                &format!("{user}-pw"),
                group,
                "^logs-.*",
                seconds,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run regex_acl.py")
    };
    let outcome = |child: std::process::Child| -> Value {
        let out = child.wait_with_output().expect("regex_acl.py");
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    };
    let consume = |user: &str, group: &str| outcome(start(user, group, "3"));
    // alice sees logs-app (consume) and logs-billing (produce only: the
    // assignment names it, its fetches are refused), never logs-audit.
    let alice = consume("alice", "regex-alice");
    assert_eq!(alice["assigned"], json!(["logs-app", "logs-billing"]), "{alice}");
    assert_eq!(alice["read"], json!(["logs-app"]), "{alice}");
    // A super user is held to nothing.
    let root = consume("root", "regex-root");
    assert_eq!(
        root["assigned"],
        json!(["logs-app", "logs-audit", "logs-billing"]),
        "{root}"
    );
    assert_eq!(
        root["read"],
        json!(["logs-app", "logs-audit", "logs-billing"]),
        "{root}"
    );
    // Both in one group: logs-audit is in root's subscription only, so it
    // is root's to read, never given to alice, who could not.
    let (alice, root) = (start("alice", "regex-shared", "8"), start("root", "regex-shared", "8"));
    let (alice, root) = (outcome(alice), outcome(root));
    let read = |v: &Value| -> Vec<String> {
        v["read"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    assert!(read(&root).contains(&"logs-audit".to_string()), "{root} {alice}");
    assert!(!read(&alice).contains(&"logs-audit".to_string()), "{alice}");
}
