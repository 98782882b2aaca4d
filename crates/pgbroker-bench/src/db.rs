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
