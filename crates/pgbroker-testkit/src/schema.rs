//! A schema per test, dropped when the test passes.

use std::time::Duration;

use rand::Rng;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// How often a drop that keeps meeting locks is tried.
const DROP_ATTEMPTS: u32 = 5;

/// The name of a fresh schema for one test, owned by this value: dropping it
/// drops the schema (with everything in it) if the test is passing, and
/// keeps it, printing its name, if the test is panicking, so that a failure
/// can be looked into.
///
/// Nothing is created here; whoever uses the name (a broker migrating it,
/// the binary) creates the schema. A schema that cannot be dropped fails
/// the test: a leak is a bug.
#[derive(Debug)]
pub struct TestSchema {
    name: String,
}

impl TestSchema {
    /// A new, unused schema name: `prefix`, an underscore and 16 random hex
    /// digits. `prefix` is lower-case letters only.
    pub fn new(prefix: &str) -> TestSchema {
        assert!(
            !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_lowercase()),
            "schema prefix {prefix:?}: lower-case letters only"
        );
        TestSchema {
            name: format!("{prefix}_{:016x}", rand::thread_rng().gen::<u64>()),
        }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: schema {} kept for inspection", self.name);
            return;
        }
        // A thread of its own with its own runtime: this may run inside a
        // test's runtime, which cannot be blocked on from within.
        let name = self.name.clone();
        let outcome = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(drop_schema(&name))
                .map_err(|e| e.to_string())
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("could not drop schema {}: {e}", self.name),
            Err(_) => panic!("dropping schema {} panicked", self.name),
        }
    }
}

/// Drops `schema`. The test is over, so whatever connection still holds a
/// lock in it (a background task of a broker that was dropped while its
/// runtime was not running) is ended; then the drop is tried again.
async fn drop_schema(schema: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&crate::database_url(), NoTls).await?;
    tokio::spawn(conn);
    client.batch_execute("SET lock_timeout = '3s'").await?;
    let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
    let mut attempt = 1;
    loop {
        let err = match client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {quoted} CASCADE"))
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let contended = matches!(
            err.code(),
            Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED
        );
        if !contended || attempt == DROP_ATTEMPTS {
            return Err(err);
        }
        attempt += 1;
        client
            .execute(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                 JOIN pg_class c ON c.oid = l.relation \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND l.granted AND l.pid <> pg_backend_pid()",
                &[&schema],
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
