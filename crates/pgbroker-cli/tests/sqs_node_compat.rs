//! The SQS compatibility scenario for the AWS SDK for JavaScript v3
//! (`compat/sqs_node_run.sh`): `@aws-sdk/client-sqs`, which nobody here
//! wrote, against `pgbroker serve --sqs-listen` on the real PostgreSQL at
//! `PGBROKER_TEST_DATABASE_URL`, signing with a pgbroker user's access key.
//! scripts/setup.sh installs the SDK from npm; the script fails, never
//! skips, without it.

use std::process::Command;

#[test]
#[ignore = "a compat suite: scripts/test.sh runs it in its own step, with --ignored"]
fn javascript_sdk_scenario() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../compat/sqs_node_run.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("PGBROKER_BIN", env!("CARGO_BIN_EXE_pgbroker"))
        .output()
        .expect("run compat/sqs_node_run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success(),
        "compat/sqs_node_run.sh exited {}:\n{}",
        out.status,
        failures.join("\n")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for check in [
        "PASS received MD5OfMessageAttributes",
        "PASS move task brought the message back",
        "PASS FIFO order per group",
        "PASS QueueDoesNotExist raised",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in:\n{stdout}");
    }
    assert!(stdout.contains("MEASURE send-to-receive wake-up"), "{stdout}");
}
