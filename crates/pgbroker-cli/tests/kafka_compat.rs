//! The Kafka client compatibility suite (`compat/run.sh`): real Kafka clients
//! that nobody here wrote (kcat, confluent-kafka from Debian and PyPI,
//! kafka-python from PyPI and Debian, aiokafka, kafkajs) against
//! `pgbroker serve` on the real PostgreSQL at `PGBROKER_TEST_DATABASE_URL`.
//!
//! One test per client family, so that a failure names the client. The suite
//! installs the clients itself (Debian packages, a venv, npm) and fails, never
//! skips, when one cannot be installed. Each test starts its own server in a
//! fresh schema; the tests take turns, since the clients' timeouts are tight.

use std::process::Command;
use std::sync::Mutex;

/// One server and one client at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(client: &str) {
    // A failed test poisons the lock; the next client still runs.
    let _turn = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../compat/run.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(client)
        .env("PGBROKER_BIN", env!("CARGO_BIN_EXE_pgbroker"))
        .output()
        .expect("run compat/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success(),
        "compat/run.sh {client} exited {}:\n{}",
        out.status,
        if failures.is_empty() {
            {
                let lines: Vec<&str> = stderr.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            }
        } else {
            failures.join("\n")
        }
    );
}

#[test]
fn kcat() {
    run("kcat");
}

#[test]
fn confluent_kafka_debian() {
    run("confluent-debian");
}

#[test]
fn confluent_kafka_pypi() {
    run("confluent-pypi");
}

#[test]
fn kafka_python() {
    run("kafka-python");
}

#[test]
fn kafka_python_debian() {
    run("kafka-python-debian");
}

#[test]
fn aiokafka() {
    run("aiokafka");
}

#[test]
fn kafkajs() {
    run("kafkajs");
}
