//! How `pgbroker serve` starts: a listener that cannot bind ends the start
//! with an error naming it, what it logs to a file is plain text without
//! Postgres notices, and behind PgBouncer it serves in session mode and
//! refuses transaction mode before creating anything.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgbroker_testkit::cli::serve::free_port;
use pgbroker_testkit::cli::{bin, schema_exists, Env};
use pgbroker_testkit::pgbouncer::{PgBouncer, PoolMode};

/// `pgbroker serve` in `env`'s schema with `args`, stderr piped.
fn spawn_serve(env: &Env, args: &[&str]) -> Child {
    Command::new(bin())
        .env_remove("DATABASE_URL")
        .env_remove("PGBROKER_SCHEMA")
        .env_remove("PGBROKER_LOG")
        .env_remove("NO_COLOR")
        .args(["--database-url", &env.url, "--schema", &env.schema, "serve"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pgbroker serve")
}

/// Waits up to 30 s for the process to exit; its code and stderr.
fn wait_exit(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pgbroker serve kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status.code(), stderr)
}

#[test]
fn a_listener_that_cannot_bind_stops_the_start() {
    let env = Env::new();
    env.ok(&["migrate"]);
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("address").to_string();
    let free = || format!("127.0.0.1:{}", free_port());
    let cases = [
        ("--http-listen", "cannot serve HTTP on"),
        ("--kafka-listen", "cannot listen on"),
        ("--sqs-listen", "cannot listen on"),
    ];
    for (flag, words) in cases {
        let mut args = vec![];
        let others = [
            ("--kafka-listen", free()),
            ("--http-listen", free()),
            ("--sqs-listen", free()),
        ];
        for (f, addr) in &others {
            args.push(f.to_string());
            args.push(if *f == flag { busy.clone() } else { addr.clone() });
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = wait_exit(spawn_serve(&env, &args));
        assert_eq!(code, Some(1), "{flag} taken: {stderr}");
        // Listeners start concurrently: one that bound may still log a
        // line after the refusal is printed.
        let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
        assert!(
            line.contains(words) && line.contains(&busy) && line.contains(flag),
            "{flag} taken: {stderr}"
        );
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error: ")).count(),
            1,
            "{stderr}"
        );
        assert!(line.contains("in use"), "{flag} taken: {stderr}");
    }
    drop(taken);
}

#[test]
fn logs_to_a_file_are_plain_and_quiet_about_existing_tables() {
    let env = Env::new();
    env.ok(&["migrate"]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let http = format!("127.0.0.1:{}", free_port());
    // The default log level of serve (info), stderr into a pipe.
    let mut child = spawn_serve(
        &env,
        &["--kafka-listen", &listen, "--http-listen", &http, "--pool-size", "5"],
    );
    let addr: SocketAddr = listen.parse().expect("address");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(child.try_wait().expect("wait").is_none(), "serve exited early");
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // --pool-size reaches the pool.
    let mut s = TcpStream::connect(&http).expect("connect to /metrics");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").expect("request");
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).expect("read /metrics");
    assert!(
        metrics.contains("pgbroker_pool_connections{state=\"max\"} 5\n"),
        "{metrics}"
    );
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let (code, stderr) = wait_exit(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("kafka listener up"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in a log file: {stderr:?}");
    assert!(!stderr.contains("already exists"), "{stderr}");
    assert!(!stderr.contains("NOTICE"), "{stderr}");
}

#[test]
fn behind_pgbouncer_session_mode_serves_and_transaction_mode_is_refused() {
    let mut env = Env::new();
    let refusing = PgBouncer::start(PoolMode::Transaction);
    env.url = refusing.url();
    let (kafka, http) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (code, stderr) = wait_exit(spawn_serve(&env, &["--kafka-listen", &kafka, "--http-listen", &http]));
    assert_eq!(code, Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("pool_mode = session") && last.contains("LISTEN"),
        "{stderr}"
    );
    assert!(!schema_exists(&env.schema), "the refused broker created its schema");

    let session = PgBouncer::start(PoolMode::Session);
    env.url = session.url();
    let mut child = spawn_serve(&env, &["--kafka-listen", &kafka, "--http-listen", &http]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let healthy = loop {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "serve exited behind session mode"
        );
        assert!(
            Instant::now() < deadline,
            "serve did not become healthy behind session mode"
        );
        if let Ok(mut s) = TcpStream::connect(&http) {
            write!(s, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").expect("request");
            let mut answer = String::new();
            if s.read_to_string(&mut answer).is_ok() && answer.starts_with("HTTP/1.1 200") {
                break answer;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(schema_exists(&env.schema), "{healthy}");
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let (code, stderr) = wait_exit(child);
    assert_eq!(code, Some(0), "{stderr}");
}
