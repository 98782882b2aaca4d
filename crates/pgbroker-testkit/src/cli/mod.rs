//! The `pgbroker` binary of the `pgbroker-cli` tests, run in a fresh
//! schema: as a command, or as a server (`serve`).

pub mod certs;
pub mod compat;
pub mod kcat;
pub mod serve;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

use crate::{database_url, TestSchema};

/// The `pgbroker` binary built for the running test.
pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("pgbroker")
}

/// A fresh schema and ways to run the binary in it.
pub struct Env {
    /// The database.
    pub url: String,
    /// The schema's name.
    pub schema: String,
    _guard: TestSchema,
}

impl Default for Env {
    fn default() -> Env {
        Env::new()
    }
}

impl Env {
    /// A fresh schema.
    pub fn new() -> Env {
        let guard = TestSchema::new("cli");
        Env {
            url: database_url(),
            schema: guard.name().to_string(),
            _guard: guard,
        }
    }

    /// The binary with database and schema set, isolated from the caller's
    /// environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.env_remove("DATABASE_URL")
            .env_remove("PGBROKER_SCHEMA")
            .env_remove("PGBROKER_LOG")
            .args(["--database-url", &self.url, "--schema", &self.schema])
            .args(args)
            .timeout(Duration::from_secs(60));
        cmd
    }

    /// Runs the binary with `args` and `stdin`.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        self.cmd(args).write_stdin(stdin).output().expect("run pgbroker")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok_with(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, "")
    }

    /// Runs a command that must fail with `code`; returns its stderr.
    pub fn fail_with(&self, code: i32, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: unexpected exit; stderr: {stderr}"
        );
        stderr
    }

    /// Runs a command that must fail with code 1; returns its stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        self.fail_with(1, args, "")
    }

    /// Runs a command that must succeed and print JSON; returns it.
    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    /// Consumes with JSON output; returns the records.
    pub fn consume(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["consume", "--format", "json", "--idle-timeout", "1s"];
        all.extend_from_slice(args);
        self.ok(&all)
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }
}

/// The records' values.
pub fn values(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["value"].as_str().expect("string value"))
        .collect()
}

/// Lines `key:v<i>` for `i` in `from..to`, as `produce` reads them.
pub fn lines(from: usize, to: usize, key: impl Fn(usize) -> String) -> String {
    (from..to).map(|i| format!("{}:v{i}\n", key(i))).collect()
}

/// A finished process, for an assertion message: its status and output.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// True when a schema of this name exists in the test database.
pub fn schema_exists(schema: &str) -> bool {
    let schema = schema.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (client, conn) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
                .await
                .expect("connect to the test database");
            tokio::spawn(conn);
            client
                .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = $1", &[&schema])
                .await
                .expect("look up the schema")
                .get::<_, i64>(0)
                > 0
        })
    })
    .join()
    .expect("schema lookup thread")
}
