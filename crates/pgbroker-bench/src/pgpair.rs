//! A throwaway Postgres primary and its streaming standby, for the
//! scenarios that read from a standby: two clusters in a temporary
//! directory on free ports, made with `initdb` and `pg_basebackup -R`,
//! run as the `postgres` user when the harness runs as root (Postgres
//! refuses root), stopped and removed when dropped. The primary takes the
//! durability and memory settings of the suite's own Postgres, so that a
//! write costs what it costs there.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::db;

/// Settings copied from the suite's Postgres (`current_setting`).
const COPIED: &[&str] = &[
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_compression",
    "wal_buffers",
    "wal_writer_delay",
    "commit_delay",
    "max_wal_size",
    "checkpoint_timeout",
    "shared_buffers",
    "work_mem",
    "autovacuum",
];

/// One running cluster.
pub struct Cluster {
    data: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its postmaster's pid (for its CPU: see [`crate::procfs::cluster`]).
    pub pid: u32,
}

impl Cluster {
    /// Its URL, database `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn stop(&self) {
        let _ = as_postgres(&mut Command::new(bin("pg_ctl")))
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A primary and its standby, removed when dropped.
pub struct Pair {
    dir: PathBuf,
    /// The primary.
    pub primary: Cluster,
    /// Its streaming standby.
    pub standby: Cluster,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.standby.stop();
        self.primary.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Postgres's programs: `PG_BIN`, else the newest under
/// /usr/lib/postgresql, else the `PATH`.
fn bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Path::new(&dir).join(name);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir): &(u32, PathBuf)| dir.join(name).exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map_or_else(|| PathBuf::from(name), |(_, dir)| dir.join(name))
}

/// The uid and gid of the `postgres` user, when this process runs as root.
fn postgres_user() -> Option<(u32, u32)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    if uid.split_whitespace().nth(1)? != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let fields: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))?
        .split(':')
        .collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

fn as_postgres(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    if let Some((uid, gid)) = postgres_user() {
        command.uid(uid).gid(gid);
    }
    command
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let out = as_postgres(command)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: starting it"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts the cluster in `data` on `port` with `settings`, and waits until
/// it accepts connections.
fn start(data: &Path, port: u16, settings: &[(String, String)]) -> Result<Cluster> {
    let mut options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", data.display());
    for (k, v) in settings {
        options.push_str(&format!(" -c {k}={v}"));
    }
    let log = data.with_extension("log");
    run(
        Command::new(bin("pg_ctl"))
            .args(["start", "-w", "-t", "120", "-D"])
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &options])
            .stdout(Stdio::null()),
        "pg_ctl start",
    )
    .with_context(|| {
        format!(
            "starting the cluster in {} (its log: {})",
            data.display(),
            log.display()
        )
    })?;
    let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).context("reading postmaster.pid")?;
    let pid = pid_file
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("no pid in postmaster.pid")?;
    Ok(Cluster {
        data: data.to_path_buf(),
        port,
        pid,
    })
}

/// The primary's settings: the suite Postgres's durability and memory
/// settings, with what replication needs.
async fn settings(suite_url: &str) -> Result<Vec<(String, String)>> {
    let client = db::connect(suite_url).await?;
    let mut out = Vec::new();
    for name in COPIED {
        let row = client.query_one("SELECT current_setting($1)", &[name]).await?;
        let value: String = row.get(0);
        // Values are unit-suffixed numbers and words; nothing else is passed on.
        if !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
            out.push((name.to_string(), value));
        }
    }
    for (k, v) in [
        ("wal_level", "replica"),
        ("max_wal_senders", "10"),
        ("max_connections", "300"),
        ("hot_standby", "on"),
        ("hot_standby_feedback", "on"),
    ] {
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

impl Pair {
    /// Makes and starts a primary and its streaming standby, and waits
    /// until the standby streams.
    pub async fn start(suite_url: &str) -> Result<Pair> {
        let settings = settings(suite_url).await?;
        tokio::task::spawn_blocking(move || Pair::start_blocking(&settings))
            .await
            .context("setting up the primary and its standby")?
    }

    fn start_blocking(settings: &[(String, String)]) -> Result<Pair> {
        let dir = std::env::temp_dir().join(format!("pgbroker-bench-pair-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some((uid, gid)) = postgres_user() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).context("giving the directory to postgres")?;
        }
        let (primary_data, standby_data) = (dir.join("primary"), dir.join("standby"));
        let made = (|| {
            run(
                Command::new(bin("initdb"))
                    .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                    .arg(&primary_data),
                "initdb",
            )?;
            let primary = start(&primary_data, free_port()?, settings)?;
            let conninfo = format!(
                "host=127.0.0.1 port={} user=postgres application_name=standby",
                primary.port
            );
            let backup = run(
                Command::new(bin("pg_basebackup"))
                    .arg("-D")
                    .arg(&standby_data)
                    .args(["-d", &conninfo, "-X", "stream", "-R", "-c", "fast"]),
                "pg_basebackup",
            );
            let standby = backup.and_then(|()| start(&standby_data, free_port()?, settings));
            match standby {
                Ok(standby) => Ok((primary, standby)),
                Err(e) => {
                    primary.stop();
                    Err(e)
                }
            }
        })();
        let (primary, standby) = match made {
            Ok(both) => both,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let pair = Pair { dir, primary, standby };
        pair.wait_streaming()?;
        Ok(pair)
    }

    /// Waits (at most 60 s) until the primary has a streaming WAL sender.
    fn wait_streaming(&self) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let out = Command::new(bin("psql"))
                .args(["-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .args(["-p", &self.primary.port.to_string()])
                .args([
                    "-c",
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                ])
                .output()
                .context("psql")?;
            if String::from_utf8_lossy(&out.stdout).trim() == "1" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("the standby did not stream within 60 s")
    }
}
