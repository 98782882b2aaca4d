//! The SQS listener over HTTPS (`--sqs-tls-cert`/`--sqs-tls-key`), with
//! requests signed by curl's own SigV4 implementation, and the start-up
//! rule for anonymous access.

use std::process::{Command as StdCommand, Output};
use std::time::{Duration, Instant};

use pgbroker_testkit::cli::certs::make_certs;
use pgbroker_testkit::cli::serve::{free_port, Server};
use pgbroker_testkit::cli::{text, Env};

/// POSTs an SQS JSON request with curl; `extra` adds flags (TLS, signing).
fn curl(url: &str, action: &str, body: &str, extra: &[&str]) -> Output {
    StdCommand::new("curl")
        .args(["-sS", "--max-time", "5", "-X", "POST", url])
        .args(["-H", "Content-Type: application/x-amz-json-1.0"])
        .args(["-H", &format!("X-Amz-Target: AmazonSQS.{action}")])
        .args(["--data-binary", body])
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .output()
        .expect("run curl")
}

/// The status code curl printed last, and the body before it.
fn answer(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (status.trim().to_string(), body.to_string())
}

#[test]
fn signed_requests_over_https() {
    let env = Env::new();
    let dir = std::env::temp_dir().join(format!("pgbroker-sqs-tls-{}", env.schema));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (ca, chain, key) = make_certs(&dir);
    env.ok(&["user", "add", "alice", "--password", "pw"]);
    env.ok(&[
        "acl",
        "add",
        "--user",
        "alice",
        "--allow",
        "admin",
        "--queue-prefix",
        "",
    ]);
    let created = env.json(&["user", "key", "create", "alice", "--format", "json"]);
    let user = format!(
        "{}:{}",
        created["access_key_id"].as_str().expect("id"),
        created["secret_access_key"].as_str().expect("secret")
    );
    let sqs_port = free_port();
    let listen = format!("127.0.0.1:{sqs_port}");
    let _server = Server::start(
        &env,
        &["--sqs-listen", &listen, "--sqs-tls-cert", &chain, "--sqs-tls-key", &key],
    );
    let url = format!("https://{listen}/");
    let sign = ["--aws-sigv4", "aws:amz:us-east-1:sqs", "--user", &user, "--cacert", &ca];

    // The Kafka port is up; the SQS one follows within moments.
    let deadline = Instant::now() + Duration::from_secs(20);
    let created = loop {
        let out = curl(&url, "CreateQueue", r#"{"QueueName":"tls-jobs"}"#, &sign);
        if answer(&out).0 == "200" || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (status, body) = answer(&created);
    assert_eq!(status, "200", "{}", text(&created));
    assert!(body.contains("/tls-jobs"), "{body}");

    let listed = curl(&url, "ListQueues", "{}", &sign);
    let (status, body) = answer(&listed);
    assert_eq!(status, "200", "{}", text(&listed));
    assert!(body.contains("tls-jobs"), "{body}");

    // Unsigned: refused, over TLS too.
    let unsigned = curl(&url, "ListQueues", "{}", &["--cacert", &ca]);
    let (status, body) = answer(&unsigned);
    assert_eq!(status, "403", "{}", text(&unsigned));
    assert!(body.contains("MissingAuthenticationToken"), "{body}");
    // Plain HTTP to the TLS port gets no SQS answer.
    let plain = curl(&format!("http://{listen}/"), "ListQueues", "{}", &[]);
    assert_ne!(answer(&plain).0, "200", "{}", text(&plain));
}

#[test]
fn anonymous_access_on_a_public_address_needs_tls() {
    let env = Env::new();
    let port = free_port();
    let err = env.fail_with(
        1,
        &[
            "serve",
            "--kafka-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--http-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--sqs-listen",
            &format!("0.0.0.0:{port}"),
            "--sqs-allow-anonymous",
        ],
        "",
    );
    assert!(
        err.contains("--sqs-allow-anonymous") && err.contains("--sqs-tls-cert"),
        "{err}"
    );
}
