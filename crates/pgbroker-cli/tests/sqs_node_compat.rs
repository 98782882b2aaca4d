//! The SQS compatibility scenario for the AWS SDK for JavaScript v3
//! (`compat/sqs_node_run.sh`): `@aws-sdk/client-sqs`, which nobody here
//! wrote, against `pgbroker serve --sqs-listen` on the real PostgreSQL at
//! `PGBROKER_TEST_DATABASE_URL`, signing with a pgbroker user's access key.
//! scripts/setup.sh installs the SDK from npm; the script fails, never
//! skips, without it.

use pgbroker_testkit::cli::compat;

#[test]
#[ignore = "a compat suite: scripts/test.sh runs it in its own step, with --ignored"]
fn javascript_sdk_scenario() {
    compat::run(
        "sqs_node_run.sh",
        env!("CARGO_BIN_EXE_pgbroker"),
        &[
            "PASS received MD5OfMessageAttributes",
            "PASS move task brought the message back",
            "PASS FIFO order per group",
            "PASS QueueDoesNotExist raised",
            "MEASURE send-to-receive wake-up",
        ],
    );
}
