//! `pgbroker serve --embedded`: its own PostgreSQL cluster, started as root
//! (the server then runs as `postgres`) and as an ordinary user, records
//! produced and consumed through it with kcat, crashes of the broker and
//! of the postmaster, and the lock that keeps a second broker out.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgbroker_testkit::cli::kcat::kcat;
use pgbroker_testkit::cli::serve::{free_port, kcat_available};

/// The unprivileged user the ordinary-user test runs the broker as when
/// the tests run as root (as CI does).
const TEST_USER: &str = "pgbroker-test";

fn is_root() -> bool {
    id(&["-u"]) == 0
}

/// `id <args>` as a number.
fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("run id");
    assert!(
        out.status.success(),
        "id {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number from id")
}

/// A scratch directory, removed when the test passes and kept when it fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("pgbroker-embedded-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("scratch dir");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// One `pgbroker serve --embedded DIR` process.
struct Broker {
    child: Child,
    dir: PathBuf,
    out: PathBuf,
    kafka: u16,
}

impl Broker {
    /// Starts the broker on `dir` as `user` (uid, gid) or as ourselves, and
    /// waits until its Kafka listener answers.
    fn start(bin: &Path, dir: &Path, user: Option<(u32, u32)>, name: &str) -> Broker {
        let broker = Broker::spawn(bin, dir, user, name);
        let addr = SocketAddr::from(([127, 0, 0, 1], broker.kafka));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut broker = broker;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("the broker exited during start ({status}):\n{}", broker.output());
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not start:\n{}",
                broker.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        broker
    }

    fn spawn(bin: &Path, dir: &Path, user: Option<(u32, u32)>, name: &str) -> Broker {
        let kafka = free_port();
        let out = dir.parent().expect("a parent").join(format!("{name}.log"));
        let log = std::fs::File::create(&out).expect("broker log");
        let mut cmd = Command::new(bin);
        cmd.env_remove("DATABASE_URL")
            .env_remove("PGBROKER_SCHEMA")
            .env("PGBROKER_LOG", "info")
            .arg("serve")
            .arg("--embedded")
            .arg(dir)
            .args(["--kafka-listen", &format!("127.0.0.1:{kafka}")])
            .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid).env("HOME", dir);
        }
        let child = cmd.spawn().expect("start pgbroker serve --embedded");
        Broker {
            child,
            dir: dir.to_path_buf(),
            out,
            kafka,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Runs the `pgbroker --database-url ... topic list` line the broker
    /// printed, through a shell as a user would paste it, with `args`
    /// instead of `topic list`.
    fn cli(&self, bin: &Path, args: &[&str]) -> String {
        let out = self.output();
        let line = out
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("pgbroker --database-url ") && l.ends_with(" topic list"))
            .unwrap_or_else(|| panic!("no pgbroker command printed:\n{out}"));
        let url = line.trim_start_matches("pgbroker").trim_end_matches(" topic list");
        let script = format!("exec \"$0\" {url} \"$@\"");
        let out = Command::new("sh")
            .env_remove("DATABASE_URL")
            .env_remove("PGBROKER_SCHEMA")
            .args(["-c", &script])
            .arg(bin)
            .args(args)
            .output()
            .expect("run pgbroker");
        assert!(
            out.status.success(),
            "{line} ({args:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn signal(&self, sig: &str) {
        send(self.child.id(), sig);
    }

    /// Waits for the broker to exit; its exit status.
    fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the broker did not exit:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A killed broker leaves its postmaster running.
        if let Some(pid) = postmaster(&self.dir) {
            send(pid, "INT");
            wait_gone(pid, Duration::from_secs(30));
        }
    }
}

fn send(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// The live postmaster's pid, from the cluster's `postmaster.pid`.
fn postmaster(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("data/postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The real user id a process runs as.
fn process_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("a Uid line")
}

/// Produces `values` with kcat (acks=all by default) and checks it succeeded.
fn produce(port: u16, topic: &str, values: &[String]) {
    let input = values.join("\n") + "\n";
    let out = kcat(
        port,
        &["-P", "-t", topic, "-X", "message.timeout.ms=30000"],
        Some(&input),
    );
    assert!(
        out.status.success(),
        "kcat -P: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every value of `topic`, read with kcat from the beginning to the end.
fn consume(port: u16, topic: &str) -> Vec<String> {
    let out = kcat(
        port,
        &["-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\n"],
        None,
    );
    assert!(
        out.status.success(),
        "kcat -C: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut values: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    values.sort();
    values
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Starts a broker as `user`, produces and consumes through it, checks
/// who runs the server, and stops it with SIGTERM: broker first, then a
/// clean shutdown of the server.
fn produce_consume_stop(bin: &Path, dir: &Path, user: Option<(u32, u32)>, server_uid: u32) {
    let mut broker = Broker::start(bin, dir, user, "broker");
    let out = broker.output();
    assert!(out.contains("psql -h "), "no psql command printed:\n{out}");
    assert_eq!(
        std::fs::metadata(dir).expect("dir").uid(),
        server_uid,
        "owner of the data directory"
    );
    let pm = postmaster(dir).expect("a running postmaster");
    assert_eq!(process_uid(pm), server_uid, "the user the postmaster runs as");
    broker.cli(bin, &["topic", "create", "events", "--partitions", "2"]);
    assert!(broker.cli(bin, &["topic", "list"]).contains("events"));
    let sent = values("v", 20);
    produce(broker.kafka, "events", &sent);
    assert_eq!(consume(broker.kafka, "events"), sent);
    broker.signal("TERM");
    let status = broker.wait(Duration::from_secs(60));
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", broker.output());
    assert!(
        wait_gone(pm, Duration::from_secs(5)),
        "the postmaster outlived the broker"
    );
    assert!(
        !dir.join("data/postmaster.pid").exists(),
        "no clean shutdown: postmaster.pid left"
    );
    let log = std::fs::read_to_string(dir.join("postgres.log")).expect("server log");
    assert!(
        log.contains("database system is shut down"),
        "no clean shutdown:\n{log}"
    );
}

#[test]
fn started_as_root_runs_postgres_as_postgres() {
    if !is_root() || !kcat_available() {
        eprintln!("needs root and kcat; skipping");
        return;
    }
    let scratch = Scratch::new("root");
    let dir = scratch.0.join("data dir");
    let postgres_uid = id(&["-u", "postgres"]);
    produce_consume_stop(&pgbroker_testkit::cli::bin(), &dir, None, postgres_uid);
}

#[test]
fn started_as_an_ordinary_user() {
    if !kcat_available() {
        return;
    }
    let scratch = Scratch::new("user");
    let dir = scratch.0.join("cluster");
    std::fs::create_dir(&dir).expect("data dir");
    let (bin, user) = if is_root() {
        let (uid, gid) = test_user();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
        // The user must reach the binary: a copy in the scratch directory.
        let copy = scratch.0.join("pgbroker");
        std::fs::hard_link(pgbroker_testkit::cli::bin(), &copy)
            .or_else(|_| std::fs::copy(pgbroker_testkit::cli::bin(), &copy).map(|_| ()))
            .expect("copy the binary");
        (copy, Some((uid, gid)))
    } else {
        (pgbroker_testkit::cli::bin(), None)
    };
    let uid = user.map_or_else(|| id(&["-u"]), |(uid, _)| uid);
    produce_consume_stop(&bin, &dir, user, uid);
}

/// The unprivileged test user, created when missing.
fn test_user() -> (u32, u32) {
    if Command::new("id")
        .arg(TEST_USER)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                TEST_USER,
            ])
            .output()
            .expect("run useradd");
        // Another test may have made it meanwhile; `id` below decides.
        eprintln!("useradd {TEST_USER}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (id(&["-u", TEST_USER]), id(&["-g", TEST_USER]))
}

#[test]
fn killed_broker_and_postmaster_lose_no_acknowledged_record() {
    if !kcat_available() {
        return;
    }
    let scratch = Scratch::new("crash");
    let dir = scratch.0.join("cluster");
    let bin = pgbroker_testkit::cli::bin();
    let mut acked = Vec::new();

    // The broker is killed; its postmaster runs on, and the next broker
    // stops it and starts its own.
    let mut broker = Broker::start(&bin, &dir, None, "broker-1");
    broker.cli(&bin, &["topic", "create", "t", "--partitions", "3"]);
    acked.extend(values("a", 50));
    produce(broker.kafka, "t", &acked[..]);
    let orphan = postmaster(&dir).expect("postmaster");
    broker.signal("KILL");
    broker.wait(Duration::from_secs(10));
    assert!(alive(orphan), "the postmaster should outlive a killed broker");
    drop(broker);
    let broker = Broker::start(&bin, &dir, None, "broker-2");
    assert!(!alive(orphan), "the left-over postmaster was not stopped");
    assert_eq!(consume(broker.kafka, "t"), acked);

    // The postmaster is killed under the running broker, which starts it
    // again.
    let killed = postmaster(&dir).expect("postmaster");
    send(killed, "KILL");
    let deadline = Instant::now() + Duration::from_secs(60);
    while postmaster(&dir).is_none_or(|p| p == killed) || !ready(&dir) {
        assert!(
            Instant::now() < deadline,
            "the postmaster was not restarted:\n{}",
            broker.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let more = values("b", 50);
    produce(broker.kafka, "t", &more);
    acked.extend(more);
    acked.sort();
    assert_eq!(consume(broker.kafka, "t"), acked);

    // Both are killed at once; a new broker recovers the cluster.
    let pm = postmaster(&dir).expect("postmaster");
    broker.signal("KILL");
    send(pm, "KILL");
    drop(broker);
    let mut broker = Broker::start(&bin, &dir, None, "broker-3");
    assert_eq!(consume(broker.kafka, "t"), acked);
    broker.signal("TERM");
    assert!(broker.wait(Duration::from_secs(60)).success());
}

/// Line 8 of `postmaster.pid` says `ready` once connections are accepted.
fn ready(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("data/postmaster.pid"))
        .map(|t| t.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
        .unwrap_or(false)
}

#[test]
fn two_brokers_refuse_one_data_directory() {
    if !kcat_available() {
        return;
    }
    let scratch = Scratch::new("lock");
    let dir = scratch.0.join("cluster");
    let bin = pgbroker_testkit::cli::bin();
    let first = Broker::start(&bin, &dir, None, "first");
    let pm = postmaster(&dir).expect("postmaster");
    let mut second = Broker::spawn(&bin, &dir, None, "second");
    let status = second.wait(Duration::from_secs(30));
    assert!(!status.success(), "a second broker started on the same directory");
    let out = second.output();
    assert!(
        out.contains(&format!(
            "is in use by another pgbroker serve (pid {})",
            first.child.id()
        )),
        "{out}"
    );
    assert_eq!(
        postmaster(&dir),
        Some(pm),
        "the second broker disturbed the first's server"
    );
    let out = kcat(first.kafka, &["-L"], None);
    assert!(out.status.success(), "the first broker stopped answering");
}

#[test]
fn embedded_and_a_database_url_are_refused_together() {
    let out = Command::new(pgbroker_testkit::cli::bin())
        .env_remove("DATABASE_URL")
        .args([
            "--database-url",
            "postgres://postgres@127.0.0.1:1/postgres",
            "serve",
            "--embedded",
            "/nonexistent",
        ])
        .output()
        .expect("run pgbroker");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--embedded runs its own PostgreSQL"), "{stderr}");
    assert!(!Path::new("/nonexistent").exists());
}

/// A process started by a test, killed (and its cluster stopped) when
/// dropped.
struct Running {
    child: Child,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = postmaster(&self.dir) {
            send(pid, "INT");
            wait_gone(pid, Duration::from_secs(30));
        }
    }
}

/// Sends one HTTP/1.1 request to 127.0.0.1:`port`; the whole response.
/// The listeners of one `serve` open one after the other, so the port is
/// given up to 30 s to accept.
fn http(port: u16, head: &str, body: &str) -> String {
    use std::io::{Read as _, Write as _};
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() < deadline => {
                eprintln!("port {port} not accepting yet: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("connect to port {port}: {e}"),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let request = format!(
        "{head}\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

#[test]
fn quickstart_script_starts_every_listener() {
    if !kcat_available() {
        return;
    }
    let scratch = Scratch::new("quickstart");
    let dir = scratch.0.join("cluster");
    let (kafka, http_port, sqs) = (free_port(), free_port(), free_port());
    let log = scratch.0.join("quickstart.log");
    let out = std::fs::File::create(&log).expect("log");
    let child = Command::new(format!("{}/../../scripts/quickstart.sh", env!("CARGO_MANIFEST_DIR")))
        .arg(&dir)
        .env("PGBROKER_BIN", pgbroker_testkit::cli::bin())
        .env("KAFKA_LISTEN", format!("127.0.0.1:{kafka}"))
        .env("HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
        .env("SQS_LISTEN", format!("127.0.0.1:{sqs}"))
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("run scripts/quickstart.sh");
    // Killed with its cluster if the test fails.
    let mut running = Running {
        child,
        dir: dir.clone(),
    };
    let child = &mut running.child;
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", kafka)).is_err() {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "quickstart exited:\n{}",
            text()
        );
        assert!(
            Instant::now() < deadline,
            "quickstart did not start the broker:\n{}",
            text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let printed = text();
    for listener in [
        format!("Kafka: 127.0.0.1:{kafka}"),
        format!("HTTP:  http://127.0.0.1:{http_port}"),
        format!("SQS:   http://127.0.0.1:{sqs}"),
    ] {
        assert!(
            printed.contains(&listener),
            "quickstart did not say {listener:?}:\n{printed}"
        );
    }
    assert!(printed.contains("psql -h "), "no psql command printed:\n{printed}");
    let health = http(http_port, "GET /healthz HTTP/1.1", "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let created = http(
        sqs,
        "POST / HTTP/1.1\r\nX-Amz-Target: AmazonSQS.CreateQueue\r\nContent-Type: application/x-amz-json-1.0",
        r#"{"QueueName":"quickstart"}"#,
    );
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    let sent = values("q", 5);
    produce(kafka, "quickstart", &sent);
    assert_eq!(consume(kafka, "quickstart"), sent);
    send(child.id(), "INT");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "quickstart did not stop on SIGINT:\n{}",
            text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit after SIGINT: {status}\n{}", text());
    assert!(postmaster(&dir).is_none(), "the cluster outlived the broker");
}
