//! `pgbroker serve --http-tls-cert --http-tls-key`: `/healthz`,
//! `/metrics` and the console over HTTPS, checked with curl against a test
//! CA.

use std::process::{Command as StdCommand, Output};
use std::time::{Duration, Instant};

use pgbroker_testkit::cli::certs::make_certs;
use pgbroker_testkit::cli::serve::Server;
use pgbroker_testkit::cli::{text, Env};

fn curl(args: &[&str]) -> Output {
    StdCommand::new("curl")
        .args(["-sS", "--fail", "--max-time", "5"])
        .args(args)
        .output()
        .expect("run curl")
}

#[test]
fn health_and_metrics_over_https() {
    let env = Env::new();
    let dir = std::env::temp_dir().join(format!("pgbroker-http-tls-{}", env.schema));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (ca, chain, key) = make_certs(&dir);
    let server = Server::start(&env, &["--http-tls-cert", &chain, "--http-tls-key", &key]);
    let base = format!("https://127.0.0.1:{}", server.http_port);

    // The Kafka port is up; the HTTP one follows within moments.
    let healthz = format!("{base}/healthz");
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        let out = curl(&["--cacert", &ca, &healthz]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(health.status.success(), "{}", text(&health));
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok\n");
    let metrics = curl(&["--cacert", &ca, &format!("{base}/metrics")]);
    assert!(metrics.status.success(), "{}", text(&metrics));
    assert!(
        String::from_utf8_lossy(&metrics.stdout).contains("pgbroker_pool_connections{state=\"max\"}"),
        "{}",
        text(&metrics)
    );

    // The console: its page, and a session whose cookie is Secure (a
    // loopback client of a broker without users, known as such through
    // the TLS listener).
    let page = curl(&["--cacert", &ca, &format!("{base}/console/")]);
    assert!(
        String::from_utf8_lossy(&page.stdout).contains("pgbroker console"),
        "{}",
        text(&page)
    );
    let session = curl(&["--cacert", &ca, "-i", &format!("{base}/api/session")]);
    let session = String::from_utf8_lossy(&session.stdout).to_lowercase();
    assert!(
        session.contains("set-cookie: pgbroker_console=") && session.contains("httponly; samesite=strict; secure"),
        "{session}"
    );

    // Plain HTTP gets no answer, and a client that does not trust the CA
    // refuses the certificate.
    let plain = curl(&[&format!("http://127.0.0.1:{}/healthz", server.http_port)]);
    assert!(!plain.status.success(), "{}", text(&plain));
    let untrusted = curl(&[&healthz]);
    assert!(!untrusted.status.success(), "{}", text(&untrusted));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("certificate"),
        "{}",
        text(&untrusted)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_https_settings_are_refused() {
    let env = Env::new();
    let dir = std::env::temp_dir().join(format!("pgbroker-http-tls-bad-{}", env.schema));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (_, chain, _) = make_certs(&dir);
    // A certificate without its key, and a key file that is not there.
    env.fail_with(2, &["serve", "--http-tls-cert", &chain], "");
    let missing = dir.join("missing.key");
    let missing = missing.to_string_lossy();
    let err = env.fail(&[
        "serve",
        "--kafka-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--http-tls-cert",
        &chain,
        "--http-tls-key",
        &missing,
    ]);
    assert!(err.contains("missing.key") && err.contains("HTTP listener"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
