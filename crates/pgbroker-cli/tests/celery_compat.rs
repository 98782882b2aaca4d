//! The Celery compatibility scenario (`compat/celery_run.sh`): a Celery
//! worker, started by the scenario, whose broker is kombu's SQS transport
//! pointed at `pgbroker serve --sqs-listen` on the real PostgreSQL at
//! `PGBROKER_TEST_DATABASE_URL`. 1,000 tasks each run exactly once with a
//! recorded result, a task that calls `self.retry` runs again, and with
//! `task_acks_late` a worker killed mid-task loses no task. The script
//! needs Celery, kombu, pycurl and boto3 (scripts/setup.sh installs them)
//! and fails, never skips, without them.

use std::process::Command;

#[test]
#[ignore = "a compat suite: scripts/test.sh runs it in its own step, with --ignored"]
fn celery_scenario() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../compat/celery_run.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("PGBROKER_BIN", env!("CARGO_BIN_EXE_pgbroker"))
        .output()
        .expect("run compat/celery_run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success(),
        "compat/celery_run.sh exited {}:\n{}",
        out.status,
        failures.join("\n")
    );
    for check in [
        "PASS 1000 tasks: each ran exactly once",
        "PASS retry: the retried task ran again",
        "PASS acks_late: every task completed after the worker was killed",
    ] {
        assert!(stdout.contains(check), "missing {check:?}:\n{stdout}");
    }
}
