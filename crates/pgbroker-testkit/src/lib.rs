//! What the tests of the pgbroker crates share.
//!
//! Every test works in a schema of its own in a real PostgreSQL
//! ([`database_url`]), held by a [`TestSchema`]: when the test passes the
//! schema is dropped, when it fails the schema is kept for inspection.
//! The fixtures built on it own their schema the same way, so no test can
//! forget to clean up:
//!
//! - [`db`]: a library [`pgbroker::Broker`] on a fresh schema;
//! - [`kafka`]: an in-process Kafka server, a raw Kafka client, and the
//!   bad-input battery that both the in-process server and the binary face;
//! - [`cli`]: the `pgbroker` binary run in a fresh schema, as a command or
//!   as a server;
//! - [`pgbouncer`]: a throwaway PgBouncer in front of the test database.

pub mod cli;
pub mod db;
pub mod kafka;
pub mod pgbouncer;
mod schema;

pub use schema::TestSchema;

/// The test database: `PGBROKER_TEST_DATABASE_URL`, by default
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn database_url() -> String {
    std::env::var("PGBROKER_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}
