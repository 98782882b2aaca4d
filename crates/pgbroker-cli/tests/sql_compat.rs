//! pgbroker's SQL functions through real Postgres drivers (`compat/sql/run.sh`):
//! psycopg 3 and node-postgres send, receive, ack, nack and take through
//! the functions and produce to a topic in transactions rolled back and
//! committed; kcat, through `pgbroker serve`, must then read exactly the
//! committed records. scripts/setup.sh installs the drivers; the script fails,
//! never skips, without them.

use pgbroker_testkit::cli::compat;

#[test]
#[ignore = "a compat suite: scripts/test.sh runs it in its own step, with --ignored"]
fn psycopg_node_postgres_and_kcat() {
    let stdout = compat::run("sql/run.sh", env!("CARGO_BIN_EXE_pgbroker"), &[]);
    let passed = stdout.lines().filter(|l| l.starts_with("PASS")).count();
    assert_eq!(passed, 10, "every check must report PASS:\n{stdout}");
}
