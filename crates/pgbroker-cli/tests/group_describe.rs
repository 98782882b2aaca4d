//! `pgbroker group describe` on a group of Kafka clients: the protocol
//! their leader chose and the partitions each member owns, decoded from
//! the assignment the clients exchanged.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgbroker_testkit::cli::kcat::kcat;
use pgbroker_testkit::cli::serve::{kcat_available, Server};
use pgbroker_testkit::cli::Env;
use serde_json::Value;

#[test]
fn describe_shows_what_kafka_clients_chose() {
    if !kcat_available() {
        return;
    }
    let env = Env::new();
    env.ok(&["topic", "create", "orders", "--partitions", "3"]);
    let server = Server::start(&env, &[]);
    let out = kcat(
        server.port,
        &["-P", "-t", "orders", "-K:"],
        Some("a:1\nb:2\nc:3\nd:4\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A balanced kcat consumer (classic protocol, librdkafka's default
    // strategies range then roundrobin) that stays in the group.
    let mut consumer = Command::new("kcat")
        .args(["-b", &format!("127.0.0.1:{}", server.port), "-G", "billing", "orders"])
        .args(["-X", "partition.assignment.strategy=roundrobin,range"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kcat");
    let deadline = Instant::now() + Duration::from_secs(30);
    let described = loop {
        // Unknown until kcat has joined.
        let out = env.run(&["group", "describe", "billing", "--format", "json"], "");
        let d: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let owned = d["partitions"]
            .as_array()
            .is_some_and(|ps| ps.len() == 3 && ps.iter().all(|p| p["member"].is_string()));
        if owned {
            break d;
        }
        assert!(Instant::now() < deadline, "kcat never got its partitions: {d}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let table = env.ok(&["group", "describe", "billing"]);
    let _ = consumer.kill();
    let _ = consumer.wait();

    assert_eq!(described["protocol_type"], "consumer", "{described}");
    // The first strategy kcat listed, which the group chose.
    assert_eq!(described["strategy"], "roundrobin", "{described}");
    let members = described["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{described}");
    let member = members[0]["member_id"].as_str().expect("member id");
    let assigned: Vec<(String, i64)> = members[0]["assignment"]
        .as_array()
        .expect("assignment")
        .iter()
        .map(|tp| {
            (
                tp["topic"].as_str().expect("topic").to_string(),
                tp["partition"].as_i64().expect("partition"),
            )
        })
        .collect();
    assert_eq!(
        assigned,
        (0..3).map(|p| ("orders".to_string(), p)).collect::<Vec<_>>(),
        "{described}"
    );
    for p in described["partitions"].as_array().expect("partitions") {
        assert_eq!(p["member"].as_str(), Some(member), "{described}");
    }
    assert!(table.contains("strategy roundrobin, 1 member)"), "{table}");
    assert!(table.contains("orders/0,orders/1,orders/2"), "{table}");
}
