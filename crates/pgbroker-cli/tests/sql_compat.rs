//! pgbroker's SQL functions through real Postgres drivers (`compat/sql/run.sh`):
//! psycopg 3 and node-postgres send, receive, ack and nack through the
//! functions and produce to a topic in transactions rolled back and
//! committed; kcat, through `pgbroker serve`, must then read exactly the
//! committed records. scripts/setup.sh installs the drivers; the script fails,
//! never skips, without them.

use std::process::Command;

#[test]
#[ignore = "a compat suite: scripts/test.sh runs it in its own step, with --ignored"]
fn psycopg_node_postgres_and_kcat() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../compat/sql/run.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("PGBROKER_BIN", env!("CARGO_BIN_EXE_pgbroker"))
        .output()
        .expect("run compat/sql/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let passed = stdout.lines().filter(|l| l.starts_with("PASS")).count();
    assert!(
        out.status.success(),
        "compat/sql/run.sh exited {}:\n{stdout}",
        out.status
    );
    assert_eq!(passed, 8, "every check must report PASS:\n{stdout}");
}
