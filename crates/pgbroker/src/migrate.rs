//! Versioned schema migrations, applied under an advisory lock.

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// The migrations this build knows, in order. Version `i + 1` is entry `i`.
const MIGRATIONS: &[(&str, &str)] = &[
    ("streams", include_str!("migrations/0001_streams.sql")),
    ("queues", include_str!("migrations/0002_queues.sql")),
    ("kafka_groups", include_str!("migrations/0003_kafka_groups.sql")),
    ("kafka_nodes", include_str!("migrations/0004_kafka_nodes.sql")),
    ("users", include_str!("migrations/0005_users.sql")),
    ("acls", include_str!("migrations/0006_acls.sql")),
    ("queue_settle", include_str!("migrations/0007_queue_settle.sql")),
    ("access_keys", include_str!("migrations/0008_access_keys.sql")),
    ("sql_functions", include_str!("migrations/0009_sql_functions.sql")),
    ("sqs", include_str!("migrations/0010_sqs.sql")),
    ("compaction", include_str!("migrations/0011_compaction.sql")),
    ("transactions", include_str!("migrations/0012_transactions.sql")),
    ("consumer_groups", include_str!("migrations/0013_consumer_groups.sql")),
    ("node_listeners", include_str!("migrations/0014_node_listeners.sql")),
    ("share_groups", include_str!("migrations/0015_share_groups.sql")),
    ("member_principal", include_str!("migrations/0016_member_principal.sql")),
    ("record_buckets", include_str!("migrations/0017_record_buckets.sql")),
    ("refresh_bucket", include_str!("migrations/0018_refresh_bucket.sql")),
];

/// The newest schema version this build knows.
pub fn latest_version() -> i32 {
    i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX)
}

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Version before the run (0 for a new schema).
    pub from: i32,
    /// Version after the run.
    pub to: i32,
}

/// Brings `schema` up to the latest version. Concurrent callers serialise on
/// an advisory lock, so exactly one applies each migration. A schema at a
/// newer version than this build knows is refused.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<MigrationReport> {
    let quoted = quote_ident(schema);
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('pgbroker.migrate'), hashtext($1))",
        &[&schema],
    )
    .await?;
    // Notices such as "schema ... already exists, skipping" would be
    // logged by every start; warnings and errors still come through.
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning;
         CREATE SCHEMA IF NOT EXISTS {quoted};
         SET LOCAL search_path = {quoted};
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());"
    ))
    .await?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
        .await?;
    let from: i32 = row.get(0);
    let known = latest_version();
    if from > known {
        return Err(Error::SchemaTooNew {
            schema: schema.to_string(),
            found: from,
            known,
        });
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(usize::try_from(from).unwrap_or(0)) {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tracing::info!(schema, version, name, "applying migration");
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, name],
        )
        .await?;
    }
    crate::sql_api::install(&tx, schema).await?;
    tx.commit().await?;
    Ok(MigrationReport { from, to: known })
}

/// Quotes an identifier that [`crate::types::validate_schema`] accepted.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
