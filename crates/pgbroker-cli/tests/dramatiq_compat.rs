//! The Dramatiq compatibility scenario (`compat/dramatiq_run.sh`): a
//! Dramatiq worker, started by the scenario, whose broker is dramatiq-sqs's
//! `SQSBroker` pointed at `pgbroker serve --sqs-listen` on the real
//! PostgreSQL at `PGBROKER_TEST_DATABASE_URL`. Messages to two actors each
//! run exactly once, a message that fails once is retried, and one that
//! always fails is retried and then dead-lettered into dramatiq-sqs's
//! `_dlq` queue. The script needs dramatiq, dramatiq-sqs and boto3
//! (scripts/setup.sh installs them) and fails, never skips, without them.

use pgbroker_testkit::cli::compat;

#[test]
#[ignore = "a compat suite: scripts/test.sh runs it in its own step, with --ignored"]
fn dramatiq_scenario() {
    compat::run(
        "dramatiq_run.sh",
        env!("CARGO_BIN_EXE_pgbroker"),
        &[
            "PASS 200 messages: each ran exactly once",
            "PASS retry: a message that failed once ran again, exactly twice",
            "PASS dead letter: the dead-letter queue holds exactly the failed messages",
        ],
    );
}
