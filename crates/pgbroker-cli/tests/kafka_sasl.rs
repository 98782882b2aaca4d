//! `pgbroker user` and `pgbroker serve --sasl-mechanisms` with a real Kafka
//! client: kcat (librdkafka) lists metadata over SASL_PLAINTEXT.
//!
//! Without kcat on the PATH the test is skipped, except under CI
//! (`CI=true`), where it fails; `scripts/setup.sh` installs it.

// Helpers for the stream commands are unused here.

use std::process::{Command as StdCommand, Output, Stdio};

use pgbroker_testkit::cli::kcat::librdkafka_version;
use pgbroker_testkit::cli::serve::{kcat_available, Server};
use pgbroker_testkit::cli::{text, Env};

/// kcat runs against a server.
trait Kcat {
    fn kcat_list(&self, mechanism: &str, user: &str, password: &str) -> Output;
    fn kcat_list_plaintext(&self) -> Output;
}

impl Kcat for Server {
    /// `kcat -L` as `user` with `password` over SASL_PLAINTEXT.
    fn kcat_list(&self, mechanism: &str, user: &str, password: &str) -> Output {
        StdCommand::new("kcat")
            .args(["-b", &format!("127.0.0.1:{}", self.port), "-L", "-m", "5"])
            .args(["-X", "security.protocol=SASL_PLAINTEXT"])
            .args(["-X", &format!("sasl.mechanisms={mechanism}")])
            .args(["-X", &format!("sasl.username={user}")])
            .args(["-X", &format!("sasl.password={password}")])
            .stdin(Stdio::null())
            .output()
            .expect("run kcat")
    }

    /// `kcat -L` without authentication.
    fn kcat_list_plaintext(&self) -> Output {
        StdCommand::new("kcat")
            .args(["-b", &format!("127.0.0.1:{}", self.port), "-L", "-m", "5"])
            .stdin(Stdio::null())
            .output()
            .expect("run kcat")
    }
}

#[test]
fn user_commands() {
    let env = Env::new();
    assert_eq!(
        env.ok_with(&["user", "add", "alice", "--password-stdin"], "s3cret\n"),
        "added user alice\n"
    );
    assert_eq!(
        env.ok(&["user", "add", "alice", "--password", "other", "--iterations", "8192"]),
        "set a new password for user alice\n"
    );
    env.ok_with(&["user", "add", "bob", "--password-stdin"], "pw\r\n");
    let users = env.json(&["user", "list", "--format", "json"]);
    let users = users.as_array().expect("array");
    assert_eq!(users.len(), 2);
    assert_eq!(
        (users[0]["name"].as_str(), users[0]["iterations"].as_i64()),
        (Some("alice"), Some(8192))
    );
    assert_eq!(users[1]["name"], "bob");
    let listing = env.ok(&["user", "list"]);
    assert!(listing.contains("alice") && listing.contains("8192"), "{listing}");
    assert!(!listing.contains("s3cret") && !listing.contains("other"));

    // Refused: no password source, two sources, few iterations, bad names,
    // an empty password.
    env.fail_with(2, &["user", "add", "carol"], "");
    env.fail_with(
        2,
        &["user", "add", "carol", "--password", "x", "--password-stdin"],
        "y\n",
    );
    env.fail_with(
        2,
        &["user", "add", "carol", "--password", "x", "--iterations", "1000"],
        "",
    );
    env.fail_with(2, &["user", "add", "a,b", "--password", "x"], "");
    env.fail_with(1, &["user", "add", "carol", "--password-stdin"], "\n");

    assert_eq!(env.ok(&["user", "remove", "bob"]), "removed user bob\n");
    let err = env.fail(&["user", "remove", "bob"]);
    assert!(err.contains("unknown user"), "{err}");
    assert_eq!(
        env.json(&["user", "list", "--format", "json"]).as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn serve_refuses_plain_without_opting_in() {
    let env = Env::new();
    let err = env.fail(&[
        "serve",
        "--kafka-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--sasl-mechanisms",
        "PLAIN",
    ]);
    assert!(err.contains("--allow-plain-without-tls"), "{err}");
    env.fail_with(2, &["serve", "--sasl-mechanisms", "GSSAPI"], "");
}

#[test]
fn kcat_authenticates_with_plain_and_scram() {
    if !kcat_available() {
        return;
    }
    let env = Env::new();
    env.ok(&["topic", "create", "orders", "--partitions", "2"]);
    env.ok_with(&["user", "add", "alice", "--password-stdin"], "s3cret\n");
    // With authentication on, a user sees only topics it has a right on.
    env.ok(&[
        "acl", "add", "--user", "alice", "--allow", "consume", "--topic", "orders",
    ]);
    let server = Server::start(
        &env,
        &["--sasl-mechanisms", "SCRAM-SHA-256,PLAIN", "--allow-plain-without-tls"],
    );

    let out = server.kcat_list("PLAIN", "alice", "s3cret");
    let all = text(&out);
    assert!(out.status.success(), "PLAIN: {all}");
    assert!(all.contains("1 brokers"), "{all}");
    assert!(all.contains("topic \"orders\" with 2 partitions"), "{all}");
    let out = server.kcat_list("PLAIN", "alice", "wrong");
    assert!(!out.status.success(), "PLAIN with a wrong password: {}", text(&out));

    // librdkafka before 2.6.1 repeats its own nonce in front of the
    // combined nonce in client-final (librdkafka#4895); the server wants
    // exactly the nonce it sent, as Kafka 4 does, and refuses it.
    let scram = server.kcat_list("SCRAM-SHA-256", "alice", "s3cret");
    if librdkafka_version() >= (2, 6, 1) {
        assert!(scram.status.success(), "SCRAM: {}", text(&scram));
        assert!(String::from_utf8_lossy(&scram.stdout).contains("topic \"orders\""));
    } else {
        assert!(
            !scram.status.success(),
            "old librdkafka's SCRAM nonce: {}",
            text(&scram)
        );
        assert!(
            String::from_utf8_lossy(&scram.stderr).contains("invalid credentials"),
            "{}",
            text(&scram)
        );
    }
    let out = server.kcat_list("SCRAM-SHA-256", "alice", "wrong");
    assert!(!out.status.success(), "SCRAM with a wrong password: {}", text(&out));

    // Without SASL the broker closes the connection: no metadata.
    let out = server.kcat_list_plaintext();
    assert!(!out.status.success(), "no SASL: {}", text(&out));

    // A removed user can no longer log in.
    env.ok(&["user", "remove", "alice"]);
    let out = server.kcat_list("PLAIN", "alice", "s3cret");
    assert!(!out.status.success(), "removed user: {}", text(&out));
}
