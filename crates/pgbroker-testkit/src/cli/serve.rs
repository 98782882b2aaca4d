//! A `pgbroker serve` process for tests that drive it with real Kafka
//! clients.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use super::{bin, Env};

/// A port free on 127.0.0.1 at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// True when kcat can be run. Without it the calling test is skipped, but
/// under CI (`CI` set) it fails.
pub fn kcat_available() -> bool {
    let found = StdCommand::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "kcat is needed for this test; install it (apt-get install kcat)"
        );
        eprintln!("kcat not found; skipping");
    }
    found
}

/// A `pgbroker serve` process, killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Port of the Kafka listener.
    pub port: u16,
    /// Port of the HTTP listener.
    pub http_port: u16,
}

impl Server {
    /// Starts `pgbroker serve` in `env`'s schema, with `extra` arguments,
    /// and waits until it listens.
    pub fn start(env: &Env, extra: &[&str]) -> Server {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let http_port = free_port();
        let http = format!("127.0.0.1:{http_port}");
        let mut child = StdCommand::new(bin())
            .env_remove("DATABASE_URL")
            .env_remove("PGBROKER_SCHEMA")
            .args(["--database-url", &env.url, "--schema", &env.schema, "--log", "warn"])
            .args(["serve", "--kafka-listen", &listen, "--http-listen", &http])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pgbroker serve");
        let addr: SocketAddr = listen.parse().expect("address");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("pgbroker serve exited early: {status}");
            }
            assert!(Instant::now() < deadline, "pgbroker serve did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
        Server { child, port, http_port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
