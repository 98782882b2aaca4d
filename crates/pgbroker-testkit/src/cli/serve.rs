//! A `pgbroker serve` process for tests that drive it with real Kafka
//! clients.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{bin, Env};

/// A port free on 127.0.0.1 at the time of asking.
///
/// Ports come from below the kernel's ephemeral range (32768 and up on
/// Linux), so an outgoing connection made by any process between this call
/// and the server's bind cannot take the port. Each test process starts at
/// its own place in the range and walks on from there.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = u16::try_from(LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN).expect("a port below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN)
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
