//! A throwaway PgBouncer in front of the test database, for the tests of
//! pgbroker behind a connection pooler.
//!
//! `scripts/setup.sh` installs Debian's `pgbouncer`; a test that needs it
//! fails without it rather than skipping. PgBouncer refuses to run as root,
//! so under root it runs as the `postgres` OS user (through `runuser`).

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::serve::free_port;
use crate::database_url;

/// How PgBouncer hands server connections to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// One server connection per client connection, until it disconnects.
    Session,
    /// A server connection per transaction.
    Transaction,
    /// A server connection per statement.
    Statement,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// A PgBouncer process on a free port, forwarding every database to the
/// test database's server; stopped when dropped.
#[derive(Debug)]
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
    user: String,
    dbname: String,
}

impl PgBouncer {
    /// Starts PgBouncer in `mode` and waits until it accepts connections.
    /// Panics (failing the test) when `pgbouncer` is not installed.
    pub fn start(mode: PoolMode) -> PgBouncer {
        let target: tokio_postgres::Config = database_url().parse().expect("test database URL");
        let host = match target.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_string(),
        };
        let server_port = target.get_ports().first().copied().unwrap_or(5432);
        let user = target.get_user().unwrap_or("postgres").to_string();
        let dbname = target.get_dbname().unwrap_or(&user).to_string();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pgbroker-pgbouncer-{}-{port}", std::process::id()));
        fs::create_dir_all(&dir).expect("pgbouncer dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            let mut f = fs::File::create(&path).expect("pgbouncer file");
            f.write_all(text.as_bytes()).expect("write pgbouncer file");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
            path
        };
        write("users.txt", &format!("\"{user}\" \"\"\n"));
        let ini = write(
            "pgbouncer.ini",
            &format!(
                "[databases]\n* = host={host} port={server_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                 listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\npool_mode = {}\n\
                 default_pool_size = 60\nmax_client_conn = 500\n",
                dir.join("users.txt").display(),
                mode.as_str()
            ),
        );
        let log = fs::File::create(dir.join("pgbouncer.log")).expect("log file");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.trim_ascii() == b"0")
            .unwrap_or(false);
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "pgbouncer"]);
            c
        } else {
            Command::new("pgbouncer")
        };
        let child = cmd
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("pgbouncer must be installed (scripts/setup.sh installs it)");
        let mut bouncer = PgBouncer {
            child,
            dir,
            port,
            user,
            dbname,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = bouncer.child.try_wait() {
                panic!("pgbouncer exited with {status}: {}", bouncer.log());
            }
            assert!(Instant::now() < deadline, "pgbouncer not listening: {}", bouncer.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        bouncer
    }

    /// A URL of the test database through this PgBouncer.
    pub fn url(&self) -> String {
        format!("postgres://{}@127.0.0.1:{}/{}", self.user, self.port, self.dbname)
    }

    /// What PgBouncer logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser passes SIGTERM on to pgbouncer and waits for it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(self.child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
