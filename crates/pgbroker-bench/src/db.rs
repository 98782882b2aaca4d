//! Postgres connections and what the report says about the machine and
//! the server.

use anyhow::{Context, Result};
use tokio_postgres::{Client, NoTls};

use crate::summary::{Environment, Note};

/// One connection, its driver spawned on the runtime.
pub async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to Postgres")?;
    tokio::spawn(conn);
    Ok(client)
}

/// The Postgres settings that decide what durable writes cost.
const SETTINGS: &[&str] = &[
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "wal_compression",
    "wal_buffers",
    "wal_writer_delay",
    "commit_delay",
    "max_wal_size",
    "checkpoint_timeout",
    "shared_buffers",
    "work_mem",
    "max_connections",
    "autovacuum",
];

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The machine (CPU, cores, memory, kernel, load) and Postgres (version,
/// settings), as the results line with `"kind": "environment"`.
pub async fn environment(url: &str) -> Result<Note> {
    let client = connect(url).await?;
    let version: String = client.query_one("SELECT version()", &[]).await?.get(0);
    let rows = client
        .query(
            "SELECT name, setting, COALESCE(unit, '') FROM pg_settings WHERE name = ANY($1) ORDER BY name",
            &[&SETTINGS],
        )
        .await?;
    let settings = rows
        .iter()
        .map(|r| {
            let (name, setting, unit): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let value = if unit.is_empty() {
                setting
            } else {
                format!("{setting} × {unit}")
            };
            (name, value)
        })
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    Ok(Note::Environment(Environment {
        cpu: first_line_with("/proc/cpuinfo", "model name"),
        cores,
        memory: first_line_with("/proc/meminfo", "MemTotal"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string()),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|s| s.trim().to_string()),
        postgres: version,
        settings,
    }))
}

/// The database every run's storage costs are read from, set once by
/// `main` from `--database-url`: the drivers need not pass it down.
static PROBE_URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the database whose WAL and size [`StorageProbe`] reads.
pub fn set_probe_url(url: &str) {
    let _ = PROBE_URL.set(url.to_string());
}

/// Postgres's WAL position and the size of all its databases at one
/// moment: two of them around a measured window give the WAL and the table
/// bytes the window wrote, whichever database a system keeps its data in.
/// They are server-wide, so they are exact only on a machine where nothing
/// else writes meanwhile, as in a suite.
pub struct StorageProbe {
    client: Client,
    wal_lsn: i64,
    database_bytes: i64,
}

/// WAL and database growth of a window, per message written.
pub struct StorageCost {
    /// WAL bytes per message.
    pub wal_bytes_per_msg: f64,
    /// Growth of the databases' files per message.
    pub db_bytes_per_msg: f64,
}

impl StorageProbe {
    /// Reads the WAL position and the databases' size now; `None` when no
    /// probe database is set or it does not answer (the run goes on).
    pub async fn start() -> Option<StorageProbe> {
        let client = connect(PROBE_URL.get()?).await.ok()?;
        let (wal_lsn, database_bytes) = read(&client).await.ok()?;
        Some(StorageProbe {
            client,
            wal_lsn,
            database_bytes,
        })
    }

    /// What was written since [`StorageProbe::start`], per message of
    /// `written`.
    pub async fn since(&self, written: u64) -> Option<StorageCost> {
        let (wal_lsn, database_bytes) = read(&self.client).await.ok()?;
        let n = written.max(1) as f64;
        Some(StorageCost {
            wal_bytes_per_msg: (wal_lsn - self.wal_lsn) as f64 / n,
            db_bytes_per_msg: (database_bytes - self.database_bytes) as f64 / n,
        })
    }
}

/// The WAL insert position in bytes and the size of all databases.
async fn read(client: &Client) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint, \
             (SELECT sum(pg_database_size(oid))::bigint FROM pg_database)",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
