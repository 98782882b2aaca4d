//! `pgbroker serve --embedded [DIR]`: a private PostgreSQL cluster, started
//! before the broker and stopped after it.
//!
//! The order of a start: resolve the directory and the user the server
//! runs as ([`dir`]), take the directory's lock (a second broker stops
//! here), find the server installation ([`binaries`]), stop a server a
//! killed broker left running, `initdb` on first start, write the
//! settings, start the postmaster and wait for it ([`cluster`]). While the
//! broker runs, a supervisor restarts a postmaster that dies; the broker
//! meanwhile answers as it does whenever Postgres is unreachable. At the
//! end the broker stops first, then the server (fast shutdown), then the
//! lock is released.

mod binaries;
mod cluster;
mod dir;

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use cluster::{Cluster, SUPERUSER};
use dir::{DirLock, ServerUser};

/// The flags of `serve` that run the embedded cluster.
#[derive(Debug, Args)]
pub struct EmbeddedArgs {
    /// Run a private PostgreSQL cluster in DIR instead of connecting to
    /// --database-url: made with the installed PostgreSQL's initdb on first
    /// start (fsync and synchronous_commit on), listening on a Unix socket
    /// in DIR and on 127.0.0.1, started before the broker and stopped
    /// (fast shutdown) after it. Started as root, PostgreSQL runs as
    /// --embedded-user. One broker per DIR. DIR defaults to
    /// /var/lib/pgbroker for root and to $XDG_DATA_HOME/pgbroker
    /// (~/.local/share/pgbroker) for other users.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
    pub embedded: Option<PathBuf>,
    /// The unprivileged user the embedded PostgreSQL runs as when pgbroker
    /// is started as root (default: postgres); it is given DIR.
    #[arg(long, value_name = "USER", requires = "embedded")]
    pub embedded_user: Option<String>,
    /// The embedded PostgreSQL's port on 127.0.0.1 (default: the one it had
    /// last time, or on first start a free one).
    #[arg(long, value_name = "PORT", requires = "embedded",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub embedded_port: Option<u16>,
}

/// A running embedded cluster. Call [`Embedded::stop`] once the broker has
/// stopped.
#[derive(Debug)]
pub struct Embedded {
    cluster: Cluster,
    stop: watch::Sender<bool>,
    supervisor: JoinHandle<()>,
    _lock: DirLock,
}

/// Starts the embedded cluster when `--embedded` was given. `database_url`
/// is the global flag's value: naming one as well is refused.
pub async fn start(args: &EmbeddedArgs, database_url: &str) -> anyhow::Result<Option<Embedded>> {
    let Some(requested) = &args.embedded else {
        return Ok(None);
    };
    if database_url != pgbroker::DEFAULT_DATABASE_URL {
        anyhow::bail!(
            "--embedded runs its own PostgreSQL, and --database-url (or DATABASE_URL) names another; give one of them"
        );
    }
    let path = if requested.as_os_str().is_empty() {
        dir::default_dir()?
    } else {
        requested.clone()
    };
    let user = ServerUser::resolve(args.embedded_user.as_deref())?;
    let path = dir::prepare(&path, &user)?;
    let lock = DirLock::acquire(&path)?;
    let mut cluster = Cluster {
        bin: binaries::find(cluster_major(&path)?)?,
        dir: path,
        user,
        port: 0,
    };
    cluster.stop_orphan().await?;
    cluster.port = choose_port(args.embedded_port, &cluster)?;
    if cluster.init_if_needed().await? {
        tracing::info!(dir = %cluster.data().display(), "initialised the embedded cluster");
    }
    cluster.write_settings()?;
    let child = cluster.start().await?;
    print_access(&cluster);
    let (stop, stopping) = watch::channel(false);
    let supervisor = tokio::spawn(supervise(cluster.clone(), child, stopping));
    Ok(Some(Embedded {
        cluster,
        stop,
        supervisor,
        _lock: lock,
    }))
}

impl Embedded {
    /// How the broker reaches the cluster: its Unix socket.
    pub fn database_url(&self) -> String {
        socket_conninfo(&self.cluster)
    }

    /// Stops the server (fast shutdown) and then releases the directory.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.supervisor.await {
            tracing::warn!(error = %e, "the embedded PostgreSQL's supervisor failed");
        }
        tracing::info!("embedded PostgreSQL stopped");
    }
}

/// Keeps the postmaster running until asked to stop: one that dies is
/// started again, with a pause doubling from 0.5 s to 10 s while starts fail.
async fn supervise(cluster: Cluster, mut child: Child, mut stopping: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::error!(%status, log = %cluster.log_path().display(),
                    "the embedded PostgreSQL exited; starting it again");
                let mut pause = Duration::from_millis(500);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stopping.changed() => return,
                    }
                    match cluster.start().await {
                        Ok(restarted) => {
                            child = restarted;
                            tracing::info!("the embedded PostgreSQL is running again");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "the embedded PostgreSQL did not start");
                            pause = (pause * 2).min(Duration::from_secs(10));
                        }
                    }
                }
                if *stopping.borrow() {
                    cluster::stop(&mut child).await;
                    return;
                }
            }
            _ = stopping.changed() => {
                cluster::stop(&mut child).await;
                return;
            }
        }
    }
}

/// The major version of an existing cluster, from its `PG_VERSION`.
fn cluster_major(dir: &std::path::Path) -> anyhow::Result<Option<u32>> {
    let path = dir.join("data").join("PG_VERSION");
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{} says {:?}, not a major version", path.display(), text.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `--embedded-port`, else the port of the last start if it is free, else
/// a free one.
fn choose_port(requested: Option<u16>, cluster: &Cluster) -> anyhow::Result<u16> {
    if let Some(port) = requested {
        return Ok(port);
    }
    let previous = std::fs::read_to_string(cluster.data().join("pgbroker.conf"))
        .ok()
        .and_then(|conf| {
            conf.lines()
                .find_map(|l| l.strip_prefix("port = ").and_then(|p| p.trim().parse::<u16>().ok()))
        });
    if let Some(port) = previous {
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
        tracing::warn!(port, "the embedded PostgreSQL's port is taken; choosing another");
    }
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .context("finding a free port for the embedded PostgreSQL")?
        .port();
    Ok(port)
}

/// A libpq key=value string for the cluster's socket.
fn socket_conninfo(cluster: &Cluster) -> String {
    let host = cluster.dir.display().to_string();
    let host = if host.contains([' ', '\'', '\\']) {
        format!("'{}'", host.replace('\\', "\\\\").replace('\'', "\\'"))
    } else {
        host
    };
    format!("host={host} port={} user={SUPERUSER} dbname=postgres", cluster.port)
}

/// Says on standard output where the cluster is and how to reach it.
fn print_access(cluster: &Cluster) {
    let dir = cluster.dir.display();
    let port = cluster.port;
    let who = if cluster.user.switch {
        format!("root and {}", cluster.user.name)
    } else {
        format!("{} only", cluster.user.name)
    };
    println!(
        "embedded PostgreSQL {major} ({bin}) running as {user} in {dir}\n\
         \x20 psql -h {qdir} -p {port} -U {SUPERUSER} postgres    # Unix socket: {who}\n\
         \x20 psql postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres    # password in {qpassword}\n\
         \x20 pgbroker --database-url {qurl} topic list\n\
         \x20 server log: {log}",
        major = cluster.bin.major,
        bin = cluster.bin.dir.display(),
        user = cluster.user.name,
        qdir = shell_quote(&dir.to_string()),
        qpassword = shell_quote(&cluster.password_path().display().to_string()),
        qurl = shell_quote(&socket_conninfo(cluster)),
        log = cluster.log_path().display(),
    );
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-:@=+,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_words() {
        assert_eq!(shell_quote("/var/lib/pgbroker"), "/var/lib/pgbroker");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("host='/x' port=1"), "'host='\\''/x'\\'' port=1'");
    }
}
