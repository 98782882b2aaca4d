//! The embedded cluster's life: `initdb` on first start, the settings file,
//! the postmaster as a child process in its own process group (so that a
//! Ctrl-C reaches the broker alone, which then stops the server), its
//! readiness, and its fast shutdown.
//!
//! Crashes: PostgreSQL itself recovers from a killed postmaster (it replays
//! its WAL, and checks its stale `postmaster.pid` against the running
//! processes). A killed broker leaves its postmaster running; the next
//! broker on the directory finds it through `postmaster.pid`, sees from
//! `/proc` that it serves this data directory, and stops it before starting
//! its own.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::binaries::Binaries;
use super::dir::ServerUser;

/// The superuser `initdb` creates, and the database the broker uses.
pub const SUPERUSER: &str = "postgres";

/// How long a start (which may replay WAL after a crash) may take.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a server that exits during its start is started again.
const START_RETRIES_FOR: Duration = Duration::from_secs(20);
/// How long a fast shutdown may take before an immediate one.
const FAST_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// One embedded cluster: where it is, what runs it, and on which port.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The directory (canonical), also the socket's directory.
    pub dir: PathBuf,
    /// The server installation.
    pub bin: Binaries,
    /// Who the server runs as.
    pub user: ServerUser,
    /// The loopback TCP port (the socket's name carries it too).
    pub port: u16,
}

impl Cluster {
    /// The data directory (`PGDATA`).
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Where the server's log goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The superuser's password for TCP connections.
    pub fn password_path(&self) -> PathBuf {
        self.dir.join("password")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.program(program));
        // The server must not find itself in a directory it cannot read
        // (root's home, say).
        cmd.current_dir(&self.dir);
        cmd.env_remove("PGDATA").env("LC_ALL", "C");
        if self.user.switch {
            // std drops root's supplementary groups when the uid changes.
            cmd.uid(self.user.uid.as_raw()).gid(self.user.gid.as_raw());
        }
        cmd
    }

    /// Runs `initdb` unless the cluster exists. The cluster is made beside
    /// its final place and renamed into it, so an interrupted `initdb`
    /// leaves nothing a later start could mistake for a cluster.
    pub async fn init_if_needed(&self) -> anyhow::Result<bool> {
        if self.data().join("PG_VERSION").exists() {
            return Ok(false);
        }
        let staging = self.dir.join("data.initdb");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
        }
        if self.data().exists() {
            bail!(
                "{} exists but holds no PostgreSQL cluster (no PG_VERSION); move it away and start again",
                self.data().display()
            );
        }
        self.write_password()?;
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&staging)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--no-locale"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", self.password_path().display()))
            .output()
            .await
            .with_context(|| format!("running {}", self.bin.program("initdb").display()))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&staging);
            bail!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        let mut conf = OpenOptions::new()
            .append(true)
            .open(staging.join("postgresql.conf"))
            .context("opening postgresql.conf")?;
        writeln!(
            conf,
            "\n# Chosen by pgbroker serve --embedded; see that file.\ninclude_if_exists = 'pgbroker.conf'"
        )?;
        std::fs::rename(&staging, self.data()).context("moving the new cluster into place")?;
        Ok(true)
    }

    /// A random password for the superuser, readable by its owner only.
    fn write_password(&self) -> anyhow::Result<()> {
        let mut bytes = [0u8; 18];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.password_path();
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(file, "{password}")?;
        if self.user.switch {
            std::os::unix::fs::chown(&path, Some(self.user.uid.as_raw()), Some(self.user.gid.as_raw()))?;
        }
        Ok(())
    }

    /// Writes `data/pgbroker.conf`, the settings pgbroker chooses; the
    /// server reads it after `postgresql.conf`, and `ALTER SYSTEM` still
    /// overrides it.
    pub fn write_settings(&self) -> anyhow::Result<()> {
        let path = self.data().join("pgbroker.conf");
        std::fs::write(&path, settings(&self.dir, self.port)).with_context(|| format!("writing {}", path.display()))?;
        if self.user.switch {
            std::os::unix::fs::chown(&path, Some(self.user.uid.as_raw()), Some(self.user.gid.as_raw()))?;
        }
        Ok(())
    }

    /// Stops a postmaster left running on this data directory by a broker
    /// that was killed. Only a process whose command line names this data
    /// directory is signalled; any other pid in a stale `postmaster.pid` is
    /// left to PostgreSQL's own check.
    pub async fn stop_orphan(&self) -> anyhow::Result<()> {
        let Some(pid) = postmaster_pid(&self.data()) else {
            return Ok(());
        };
        if !serves(pid, &self.data()) {
            return Ok(());
        }
        tracing::warn!(%pid, "a PostgreSQL server left by an earlier broker still runs on this directory; stopping it");
        signal(pid, Signal::SIGINT);
        let deadline = Instant::now() + FAST_SHUTDOWN_TIMEOUT;
        while alive(pid) {
            if Instant::now() > deadline {
                signal(pid, Signal::SIGQUIT);
            }
            if Instant::now() > deadline + Duration::from_secs(10) {
                bail!("the PostgreSQL server left running on this directory (pid {pid}) does not stop");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Starts the postmaster and waits until it accepts connections. A
    /// server that exits during its start is tried again for a while:
    /// after a crash, the dead postmaster's backends (or its unreaped
    /// process) may still hold the data directory for a moment, and
    /// PostgreSQL refuses to start until they are gone.
    pub async fn start(&self) -> anyhow::Result<Child> {
        let give_up = Instant::now() + START_RETRIES_FOR;
        loop {
            match self.start_once().await? {
                Ok(child) => return Ok(child),
                Err(status) if Instant::now() > give_up => bail!(
                    "PostgreSQL exited during start ({status}); the end of {}:\n{}",
                    self.log_path().display(),
                    log_tail(&self.log_path(), 15)
                ),
                Err(status) => {
                    tracing::info!(%status, "PostgreSQL exited during start; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// One start: the running server, or the status it exited with.
    async fn start_once(&self) -> anyhow::Result<Result<Child, std::process::ExitStatus>> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.program("postgres").display()))?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Err(status));
            }
            if pid.is_some() && pid == postmaster_pid(&self.data()) && is_ready(&self.data()) {
                return Ok(Ok(child));
            }
            if Instant::now() > deadline {
                stop(&mut child).await;
                bail!(
                    "PostgreSQL did not accept connections within {READY_TIMEOUT:?}; see {}",
                    self.log_path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Fast shutdown (SIGINT: running transactions are rolled back, a
/// checkpoint is written), then immediate (SIGQUIT), then SIGKILL.
pub async fn stop(child: &mut Child) {
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw) else {
        return;
    };
    signal(pid, Signal::SIGINT);
    if tokio::time::timeout(FAST_SHUTDOWN_TIMEOUT, child.wait()).await.is_ok() {
        return;
    }
    tracing::warn!("PostgreSQL did not stop within {FAST_SHUTDOWN_TIMEOUT:?}; immediate shutdown");
    signal(pid, Signal::SIGQUIT);
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_ok()
    {
        return;
    }
    let _ = child.kill().await;
}

fn signal(pid: Pid, sig: Signal) {
    let _ = nix::sys::signal::kill(pid, sig);
}

/// The settings file: durability as PostgreSQL ships it, sizes for a
/// broker's many short write transactions.
pub fn settings(dir: &Path, port: u16) -> String {
    let dir = dir.display().to_string().replace('\'', "''");
    format!(
        "# Written by pgbroker serve --embedded at every start: edits here are lost.\n\
         # Change a setting with ALTER SYSTEM, which takes precedence.\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{dir}'\n\
         unix_socket_permissions = 0700\n\
         # Durability stays on: a record is acknowledged once its commit is on disk.\n\
         fsync = on\n\
         synchronous_commit = on\n\
         full_page_writes = on\n\
         # A broker's pools (32 connections per serve), CLI commands and SQL clients.\n\
         max_connections = 200\n\
         shared_buffers = 256MB\n\
         # Appends: room for bursts of WAL between checkpoints, fewer full-page images.\n\
         wal_buffers = 16MB\n\
         max_wal_size = 2GB\n\
         min_wal_size = 256MB\n\
         checkpoint_timeout = 15min\n\
         # Reads across a topic's segment tables lock each of them.\n\
         max_locks_per_transaction = 256\n\
         # Short statements: compiling them costs more than it saves.\n\
         jit = off\n\
         random_page_cost = 1.1\n\
         # Queue and partition rows change all the time.\n\
         autovacuum_naptime = 10s\n\
         autovacuum_vacuum_cost_limit = 2000\n"
    )
}

/// The pid in line 1 of `postmaster.pid`, if the file is there.
fn postmaster_pid(data: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok().map(Pid::from_raw)
}

/// Line 8 of `postmaster.pid` says `ready` once connections are accepted.
fn is_ready(data: &Path) -> bool {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .map(|t| t.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
        .unwrap_or(false)
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// True when `pid` is a live process whose command line names `data`.
fn serves(pid: Pid, data: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let data = data.as_os_str().as_encoded_bytes();
    alive(pid) && cmdline.split(|b| *b == 0).any(|arg| arg == data)
}

/// The last `lines` lines of a file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
