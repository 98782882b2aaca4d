//! The SQS compatibility scenario (`compat/sqs_run.sh`): boto3, which
//! nobody here wrote, against `pgbroker serve --sqs-listen` on the real
//! PostgreSQL at `PGBROKER_TEST_DATABASE_URL`, with moto as the reference
//! for response shapes. scripts/setup.sh installs boto3 and moto; the
//! script fails, never skips, without them.

use std::process::Command;

#[test]
#[ignore = "a compat suite: scripts/test.sh runs it in its own step, with --ignored"]
fn boto3_scenario() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../compat/sqs_run.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("PGBROKER_BIN", env!("CARGO_BIN_EXE_pgbroker"))
        .output()
        .expect("run compat/sqs_run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success(),
        "compat/sqs_run.sh exited {}:\n{}",
        out.status,
        failures.join("\n")
    );
    assert!(stdout.contains("PASS pgbroker: FIFO order per group"), "{stdout}");
}
