//! The Celery compatibility scenario (`compat/celery_run.sh`): a Celery
//! worker, started by the scenario, whose broker is kombu's SQS transport
//! pointed at `pgbroker serve --sqs-listen` on the real PostgreSQL at
//! `PGBROKER_TEST_DATABASE_URL`. 1,000 tasks each run exactly once with a
//! recorded result, a task that calls `self.retry` runs again, and with
//! `task_acks_late` a worker killed mid-task loses no task. The script
//! needs Celery, kombu, pycurl and boto3 (scripts/setup.sh installs them)
//! and fails, never skips, without them.

use pgbroker_testkit::cli::compat;

#[test]
#[ignore = "a compat suite: scripts/test.sh runs it in its own step, with --ignored"]
fn celery_scenario() {
    compat::run(
        "celery_run.sh",
        env!("CARGO_BIN_EXE_pgbroker"),
        &[
            "PASS 1000 tasks: each ran exactly once",
            "PASS retry: the retried task ran again",
            "PASS acks_late: every task completed after the worker was killed",
        ],
    );
}
