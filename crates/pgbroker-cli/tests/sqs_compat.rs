//! The SQS compatibility scenario (`compat/sqs_run.sh`): boto3, which
//! nobody here wrote, against `pgbroker serve --sqs-listen` on the real
//! PostgreSQL at `PGBROKER_TEST_DATABASE_URL`, with moto as the reference
//! for response shapes. scripts/setup.sh installs boto3 and moto; the
//! script fails, never skips, without them.

use pgbroker_testkit::cli::compat;

#[test]
#[ignore = "a compat suite: scripts/test.sh runs it in its own step, with --ignored"]
fn boto3_scenario() {
    compat::run(
        "sqs_run.sh",
        env!("CARGO_BIN_EXE_pgbroker"),
        &["PASS pgbroker: FIFO order per group"],
    );
}
