//! `pgbroker serve --tls-cert --tls-key` with a real Kafka client: kcat
//! (librdkafka) over TLS, verifying the server against a test CA.
//!
//! Without kcat on the PATH the test is skipped, except under CI, where it
//! fails; `scripts/setup.sh` installs it.

use pgbroker_testkit::cli::certs::make_certs;
use pgbroker_testkit::cli::kcat::kcat;
use pgbroker_testkit::cli::serve::{kcat_available, Server};
use pgbroker_testkit::cli::{text, Env};

#[test]
fn kcat_produces_and_consumes_over_tls() {
    if !kcat_available() {
        return;
    }
    let env = Env::new();
    let dir = std::env::temp_dir().join(format!("pgbroker-tls-{}", env.schema));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (ca, chain, key) = make_certs(&dir);
    env.ok(&["topic", "create", "secure", "--partitions", "2"]);
    let server = Server::start(&env, &["--tls-cert", &chain, "--tls-key", &key]);
    let tls = ["-X", "security.protocol=ssl", "-X"];
    let ca_setting = format!("ssl.ca.location={ca}");

    let listed = kcat(
        server.port,
        &[&tls[..], &[ca_setting.as_str(), "-L", "-m", "5"]].concat(),
        None,
    );
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("topic \"secure\" with 2 partitions"));

    let produced = kcat(
        server.port,
        &[&tls[..], &[ca_setting.as_str(), "-P", "-t", "secure", "-K:"]].concat(),
        Some("a:one\nb:two\nc:three\n"),
    );
    assert!(produced.status.success(), "{}", text(&produced));
    let consumed = kcat(
        server.port,
        &[
            &tls[..],
            &[ca_setting.as_str(), "-C", "-t", "secure", "-e", "-q", "-f", "%k=%s\\n"],
        ]
        .concat(),
        None,
    );
    assert!(consumed.status.success(), "{}", text(&consumed));
    let mut got: Vec<String> = String::from_utf8_lossy(&consumed.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    assert_eq!(got, vec!["a=one", "b=two", "c=three"]);

    // A client that does not speak TLS gets nowhere, and one that does not
    // trust the CA is refused.
    let plain = kcat(server.port, &["-L", "-m", "3"], None);
    assert!(!plain.status.success(), "{}", text(&plain));
    let untrusted = kcat(server.port, &["-X", "security.protocol=ssl", "-L", "-m", "3"], None);
    assert!(!untrusted.status.success(), "{}", text(&untrusted));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plain_sasl_is_allowed_over_tls_without_opting_in() {
    if !kcat_available() {
        return;
    }
    let env = Env::new();
    let dir = std::env::temp_dir().join(format!("pgbroker-tls-sasl-{}", env.schema));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (ca, chain, key) = make_certs(&dir);
    env.ok_with(&["user", "add", "alice", "--password-stdin"], "s3cret\n");
    let server = Server::start(
        &env,
        &["--tls-cert", &chain, "--tls-key", &key, "--sasl-mechanisms", "PLAIN"],
    );
    let ca_setting = format!("ssl.ca.location={ca}");
    let login = |password: &str| {
        let pw = format!("sasl.password={password}");
        kcat(
            server.port,
            &[
                "-X",
                "security.protocol=sasl_ssl",
                "-X",
                &ca_setting,
                "-X",
                "sasl.mechanisms=PLAIN",
                "-X",
                "sasl.username=alice",
                "-X",
                &pw,
                "-L",
                "-m",
                "5",
            ],
            None,
        )
    };
    let ok = login("s3cret");
    assert!(ok.status.success(), "{}", text(&ok));
    let bad = login("wrong");
    assert!(!bad.status.success(), "{}", text(&bad));
    let _ = std::fs::remove_dir_all(&dir);
}
