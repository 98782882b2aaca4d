//! The fault scenarios of `faults/` in their short form, against this
//! build's binary: each starts its own PostgreSQL cluster, injects its
//! fault under load from real Kafka clients (or queue workers) and checks
//! the history (nothing
//! acknowledged lost, duplicates only from at-least-once redelivery).
//! Installs what it needs (postgresql-15, python3-confluent-kafka) when
//! missing. Scenarios run one at a time: each loads both cores.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn run(args: &[&str]) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(root.join("faults/run.sh"))
        .current_dir(&root)
        .args(["--bin", env!("CARGO_BIN_EXE_pgbroker")])
        .args(args)
        .status()
        .expect("run faults/run.sh");
    assert!(status.success(), "faults/run.sh {args:?} failed: see its output above");
}

fn scenario(name: &str) {
    run(&[
        "--scenario",
        name,
        "--duration",
        "6",
        "--gap",
        "1",
        "2.5",
        "--outage",
        "1",
        "2.5",
    ]);
}

#[test]
fn broker_sigkill_loses_nothing_acknowledged() {
    scenario("broker-kill");
}

#[test]
fn broker_sigterm_loses_nothing_acknowledged() {
    scenario("broker-term");
}

#[test]
fn postgres_sigkill_is_survived_and_reported_by_healthz() {
    scenario("pg-kill");
}

#[test]
fn a_cut_link_to_postgres_is_survived_without_a_reconnect_storm() {
    scenario("link-cut");
}

#[test]
fn a_stalled_link_to_postgres_is_survived() {
    scenario("link-stall");
}

#[test]
fn consumers_killed_mid_batch_get_their_records_again() {
    scenario("consumer-kill");
}

#[test]
fn queue_workers_killed_holding_leases_lose_nothing() {
    scenario("queue-worker-kill");
}

#[test]
fn queue_workers_ride_out_postgres_sigkill_and_lose_nothing() {
    scenario("queue-pg-kill");
}
