//! Helpers for the CLI tests: a fresh schema per test and ways to run the
//! binary in it.

pub mod certs;
pub mod serve;

use std::hash::{BuildHasher, Hasher};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use assert_cmd::Command;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pgbroker");

pub fn database_url() -> String {
    std::env::var("PGBROKER_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn random_u64() -> u64 {
    // RandomState is seeded randomly per process; the clock and pid make
    // names differ between threads and runs too.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

/// A fresh schema and helpers to run the binary in it.
pub struct Env {
    pub url: String,
    pub schema: String,
}

impl Env {
    pub fn new() -> Env {
        Env {
            url: database_url(),
            schema: format!("cli_{:016x}", random_u64()),
        }
    }

    /// The binary with database and schema set, isolated from the caller's
    /// environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("DATABASE_URL")
            .env_remove("PGBROKER_SCHEMA")
            .env_remove("PGBROKER_LOG")
            .args(["--database-url", &self.url, "--schema", &self.schema])
            .args(args)
            .timeout(Duration::from_secs(60));
        cmd
    }

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

    pub fn fail(&self, args: &[&str]) -> String {
        self.fail_with(1, args, "")
    }

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

impl Drop for Env {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let drop_schema = async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = rt {
            if let Err(e) = rt.block_on(drop_schema) {
                eprintln!("could not drop schema {}: {e}", self.schema);
            }
        }
    }
}

pub fn values(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["value"].as_str().expect("string value"))
        .collect()
}

pub fn lines(from: usize, to: usize, key: impl Fn(usize) -> String) -> String {
    (from..to).map(|i| format!("{}:v{i}\n", key(i))).collect()
}

/// A finished process, for an assertion message: its status and output.
#[allow(dead_code)] // not every test file shows processes
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
