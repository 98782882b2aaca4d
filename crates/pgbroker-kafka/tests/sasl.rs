//! SASL authentication on the wire: SCRAM-SHA-256 computed by a client
//! written here, PLAIN, and what an unauthenticated connection may do.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use kafka_protocol::messages::{
    ApiVersionsRequest, MetadataRequest, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use pgbroker_kafka::{AuthConfig, KafkaConfig, Mechanism};
use pgbroker_testkit::kafka::{broker_on, Conn, TestServer};
use pgbroker_testkit::TestSchema;
use rand::Rng;
use sha2::{Digest, Sha256};

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

async fn start(mechanisms: Vec<Mechanism>) -> TestServer {
    let auth = AuthConfig {
        allow_plain_without_tls: true,
        ..AuthConfig::sasl(mechanisms)
    };
    TestServer::start_with(KafkaConfig {
        auth,
        ..KafkaConfig::default()
    })
    .await
}

async fn handshake(conn: &mut Conn, mechanism: &str) -> i16 {
    let mut req = SaslHandshakeRequest::default();
    req.mechanism = StrBytes::from_string(mechanism.to_string());
    conn.call(1, &req).await.error_code
}

async fn token(conn: &mut Conn, bytes: Vec<u8>) -> SaslAuthenticateResponse {
    let mut req = SaslAuthenticateRequest::default();
    req.auth_bytes = Bytes::from(bytes);
    conn.call(2, &req).await
}

/// How the client misbehaves in its final message.
#[derive(Clone, Copy, PartialEq)]
enum Tamper {
    None,
    /// Sends back its own nonce plus something else than the server's part.
    Nonce,
    /// Claims channel binding data other than `n,,`.
    Binding,
}

/// What a SCRAM exchange ended with.
struct Outcome {
    /// The server-first message, when the first round succeeded.
    server_first: Option<String>,
    /// The final answer.
    last: SaslAuthenticateResponse,
    /// Whether the server's signature checked out.
    server_verified: bool,
}

/// The client-final message for `server_first`, and the server-final
/// message the server must answer with.
fn client_final(
    client_nonce: &str,
    client_first_bare: &str,
    server_first: &str,
    password: &str,
    tamper: Tamper,
) -> (String, String) {
    let mut nonce = "";
    let mut salt = Vec::new();
    let mut iterations = 0u32;
    for attr in server_first.split(',') {
        match attr.split_at(2) {
            ("r=", v) => nonce = v,
            ("s=", v) => salt = B64.decode(v).expect("base64 salt"),
            ("i=", v) => iterations = v.parse().expect("iterations"),
            _ => {}
        }
    }
    assert!(nonce.starts_with(client_nonce), "combined nonce starts with ours");
    assert!(nonce.len() >= client_nonce.len() + 24, "server adds at least 18 bytes");
    assert!(iterations >= 4096);
    let nonce = match tamper {
        Tamper::Nonce => format!("{client_nonce}{}", "A".repeat(nonce.len() - client_nonce.len())),
        _ => nonce.to_string(),
    };
    let binding = if tamper == Tamper::Binding { "eSws" } else { "biws" };
    let without_proof = format!("c={binding},r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");

    let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), &salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
    let server_key = hmac(&salted, b"Server Key");
    let expected = format!("v={}", B64.encode(hmac(&server_key, auth_message.as_bytes())));
    (format!("{without_proof},p={}", B64.encode(proof)), expected)
}

/// Runs a SCRAM-SHA-256 exchange as a client: the proof is computed from
/// the password, the server's signature checked.
async fn scram(conn: &mut Conn, user: &str, password: &str, tamper: Tamper) -> Outcome {
    assert_eq!(handshake(conn, "SCRAM-SHA-256").await, 0);
    let client_nonce = B64.encode(rand::thread_rng().gen::<[u8; 18]>());
    let client_first_bare = format!("n={user},r={client_nonce}");
    let first = token(conn, format!("n,,{client_first_bare}").into_bytes()).await;
    if first.error_code != 0 {
        return Outcome {
            server_first: None,
            last: first,
            server_verified: false,
        };
    }
    let server_first = String::from_utf8(first.auth_bytes.to_vec()).expect("utf-8");
    let (client_final, expected) = client_final(&client_nonce, &client_first_bare, &server_first, password, tamper);
    let last = token(conn, client_final.into_bytes()).await;
    let server_verified = last.auth_bytes.as_ref() == expected.as_bytes();
    Outcome {
        server_first: Some(server_first),
        last,
        server_verified,
    }
}

async fn plain(conn: &mut Conn, user: &str, password: &str) -> SaslAuthenticateResponse {
    assert_eq!(handshake(conn, "PLAIN").await, 0);
    token(conn, format!("\0{user}\0{password}").into_bytes()).await
}

/// True when Metadata is answered (the connection is authenticated).
async fn metadata_works(conn: &mut Conn) -> bool {
    let resp = conn.call(12, &MetadataRequest::default()).await;
    !resp.brokers.is_empty()
}

fn assert_failed(resp: &SaslAuthenticateResponse) {
    assert_eq!(resp.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert!(resp.error_message.is_some());
}

#[tokio::test]
async fn scram_login_then_requests_are_served() {
    let server = start(vec![Mechanism::ScramSha256]).await;
    assert!(server
        .broker
        .auth()
        .add_user("alice", "pencil", 4096)
        .await
        .expect("add"));
    let mut conn = server.connect().await;
    let versions = conn.call(3, &ApiVersionsRequest::default()).await;
    let listed = |key: i16| {
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == key)
            .map(|k| (k.min_version, k.max_version))
    };
    assert_eq!(listed(17), Some((0, 1)), "SaslHandshake v0-1");
    assert_eq!(listed(36), Some((0, 2)), "SaslAuthenticate v0-2");

    let out = scram(&mut conn, "alice", "pencil", Tamper::None).await;
    assert_eq!(out.last.error_code, 0, "{:?}", out.last.error_message);
    assert!(out.server_verified, "server signature checks out");
    assert_eq!(out.last.session_lifetime_ms, 0);
    assert!(metadata_works(&mut conn).await);
    // A second handshake on an authenticated connection is refused.
    assert_eq!(handshake(&mut conn, "SCRAM-SHA-256").await, 34);
    assert!(conn.closed_by_server().await);
    server.stop().await;
}

#[tokio::test]
async fn scram_wrong_password_fails_slowly_and_closes() {
    let server = start(vec![Mechanism::ScramSha256]).await;
    server
        .broker
        .auth()
        .add_user("alice", "pencil", 4096)
        .await
        .expect("add");
    let mut conn = server.connect().await;
    let started = Instant::now();
    let out = scram(&mut conn, "alice", "pen", Tamper::None).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "failures are answered late"
    );
    assert_failed(&out.last);
    assert!(!out.server_verified && out.last.auth_bytes.is_empty());
    assert!(conn.closed_by_server().await);
    server.stop().await;
}

#[tokio::test]
async fn scram_unknown_user_looks_like_a_wrong_password() {
    let server = start(vec![Mechanism::ScramSha256]).await;
    server
        .broker
        .auth()
        .add_user("alice", "pencil", 4096)
        .await
        .expect("add");
    let mut salts = Vec::new();
    for _ in 0..2 {
        let mut conn = server.connect().await;
        let out = scram(&mut conn, "mallory", "pencil", Tamper::None).await;
        let first = out.server_first.expect("a server-first message, as for a real user");
        salts.push(
            first
                .split(',')
                .find(|a| a.starts_with("s="))
                .expect("salt")
                .to_string(),
        );
        assert_failed(&out.last);
        assert!(conn.closed_by_server().await);
    }
    assert_eq!(salts[0], salts[1], "the made-up salt does not change between attempts");

    // The answer to a wrong password says the same.
    let mut conn = server.connect().await;
    let wrong = scram(&mut conn, "alice", "nope", Tamper::None).await;
    let mut conn = server.connect().await;
    let unknown = scram(&mut conn, "mallory", "nope", Tamper::None).await;
    assert_eq!(wrong.last.error_message, unknown.last.error_message);
    server.stop().await;
}

#[tokio::test]
async fn scram_final_must_echo_the_servers_nonce_and_binding() {
    let server = start(vec![Mechanism::ScramSha256]).await;
    server
        .broker
        .auth()
        .add_user("alice", "pencil", 4096)
        .await
        .expect("add");
    // A proof computed correctly over a nonce that is not the one the
    // server sent (CVE-2024-56128) is refused.
    let mut conn = server.connect().await;
    let out = scram(&mut conn, "alice", "pencil", Tamper::Nonce).await;
    assert_failed(&out.last);
    assert!(conn.closed_by_server().await);
    // So is channel binding data that does not match the GS2 header.
    let mut conn = server.connect().await;
    let out = scram(&mut conn, "alice", "pencil", Tamper::Binding).await;
    assert_failed(&out.last);
    assert!(conn.closed_by_server().await);
    // Malformed client-first messages.
    for bad in [
        "n=alice,r=abc",
        "p=tls-unique,,n=alice,r=abc",
        "n,,r=abc,n=alice",
        "n,,n=alice",
    ] {
        let mut conn = server.connect().await;
        assert_eq!(handshake(&mut conn, "SCRAM-SHA-256").await, 0);
        assert_failed(&token(&mut conn, bad.as_bytes().to_vec()).await);
        assert!(conn.closed_by_server().await, "{bad}");
    }
    server.stop().await;
}

#[tokio::test]
async fn only_authentication_is_served_before_login() {
    let server = start(vec![Mechanism::ScramSha256]).await;
    server
        .broker
        .auth()
        .add_user("alice", "pencil", 4096)
        .await
        .expect("add");
    // ApiVersions is answered; Metadata closes the connection unanswered.
    let mut conn = server.connect().await;
    assert_eq!(conn.call(3, &ApiVersionsRequest::default()).await.error_code, 0);
    conn.send(12, &MetadataRequest::default()).await;
    assert!(conn.read_frame().await.is_none(), "no answer, connection closed");

    // An unknown API key closes it too.
    let mut conn = server.connect().await;
    conn.send_raw_frame(&[3, 231, 0, 0, 0, 0, 0, 1, 0, 0]).await;
    assert!(conn.closed_by_server().await);

    // After the handshake only SaslAuthenticate may follow.
    let mut conn = server.connect().await;
    assert_eq!(handshake(&mut conn, "SCRAM-SHA-256").await, 0);
    conn.send(3, &ApiVersionsRequest::default()).await;
    assert!(conn.read_frame().await.is_none());

    // A mechanism not offered is refused, with the list of those offered.
    let mut conn = server.connect().await;
    let mut req = SaslHandshakeRequest::default();
    req.mechanism = StrBytes::from_static_str("PLAIN");
    let resp = conn.call(1, &req).await;
    assert_eq!(resp.error_code, 33);
    assert_eq!(resp.mechanisms, vec![StrBytes::from_static_str("SCRAM-SHA-256")]);
    assert!(conn.closed_by_server().await);

    // Large frames and many requests before authentication are refused.
    let mut conn = server.connect().await;
    let size: i32 = (64 << 10) + 1;
    let mut big = size.to_be_bytes().to_vec();
    big.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 1]);
    big.resize(4 + (64 << 10) + 1, 0);
    conn.send_bytes(&big).await;
    assert!(conn.closed_by_server().await);
    let mut conn = server.connect().await;
    for _ in 0..10 {
        assert_eq!(conn.call(3, &ApiVersionsRequest::default()).await.error_code, 0);
    }
    conn.send(3, &ApiVersionsRequest::default()).await;
    assert!(
        conn.read_frame().await.is_none(),
        "the 11th request closes the connection"
    );

    // None of that affects a client that logs in.
    let mut conn = server.connect().await;
    assert_eq!(
        scram(&mut conn, "alice", "pencil", Tamper::None).await.last.error_code,
        0
    );
    assert!(metadata_works(&mut conn).await);
    server.stop().await;
}

#[tokio::test]
async fn plain_login_and_refusals() {
    let server = start(vec![Mechanism::ScramSha256, Mechanism::Plain]).await;
    server
        .broker
        .auth()
        .add_user("bob", "hunter2", 8192)
        .await
        .expect("add");
    let mut conn = server.connect().await;
    let ok = plain(&mut conn, "bob", "hunter2").await;
    assert_eq!(ok.error_code, 0, "{:?}", ok.error_message);
    assert!(metadata_works(&mut conn).await);

    for (user, password) in [("bob", "hunter3"), ("nobody", "hunter2"), ("bob", "")] {
        let mut conn = server.connect().await;
        assert_failed(&plain(&mut conn, user, password).await);
        assert!(conn.closed_by_server().await);
    }
    // An authorization id other than the user is refused.
    let mut conn = server.connect().await;
    assert_eq!(handshake(&mut conn, "PLAIN").await, 0);
    assert_failed(&token(&mut conn, b"admin\0bob\0hunter2".to_vec()).await);
    // SCRAM works beside it, for the same user.
    let mut conn = server.connect().await;
    assert_eq!(
        scram(&mut conn, "bob", "hunter2", Tamper::None).await.last.error_code,
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn plain_needs_an_explicit_opt_in() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let schema = TestSchema::new("k");
    let broker = broker_on(schema.name()).await;
    let config = KafkaConfig {
        auth: AuthConfig::sasl(vec![Mechanism::Plain]),
        ..KafkaConfig::default()
    };
    let refused = pgbroker_kafka::serve_on(listener, broker.clone(), config, Default::default()).await;
    let message = refused.expect_err("PLAIN without TLS is refused").to_string();
    assert!(message.contains("PLAIN"), "{message}");
}

#[tokio::test]
async fn users_added_replaced_and_removed_through_the_library() {
    let server = start(vec![Mechanism::ScramSha256, Mechanism::Plain]).await;
    let broker = &server.broker;
    assert!(broker.auth().add_user("carol", "first", 4096).await.expect("add"));
    assert!(
        broker.auth().add_user("a,b", "pw", 4096).await.is_err(),
        "',' is refused"
    );
    assert!(
        broker.auth().add_user("dave", "pw", 1000).await.is_err(),
        "too few iterations"
    );
    let users = broker.auth().list_users().await.expect("list");
    assert_eq!(users.len(), 1);
    assert_eq!((users[0].name.as_str(), users[0].iterations), ("carol", 4096));

    let mut conn = server.connect().await;
    assert_eq!(
        scram(&mut conn, "carol", "first", Tamper::None).await.last.error_code,
        0
    );

    // Replacing the password: the old one stops working.
    assert!(!broker.auth().add_user("carol", "second", 5000).await.expect("replace"));
    assert_eq!(broker.auth().list_users().await.expect("list")[0].iterations, 5000);
    let mut conn = server.connect().await;
    assert_failed(&plain(&mut conn, "carol", "first").await);
    let mut conn = server.connect().await;
    assert_eq!(
        scram(&mut conn, "carol", "second", Tamper::None).await.last.error_code,
        0
    );

    // Removed: logins fail; removing again says the user is unknown.
    broker.auth().remove_user("carol").await.expect("remove");
    assert!(matches!(
        broker.auth().remove_user("carol").await,
        Err(pgbroker::Error::UnknownUser(_))
    ));
    let mut conn = server.connect().await;
    assert_failed(&scram(&mut conn, "carol", "second", Tamper::None).await.last);
    let mut conn = server.connect().await;
    assert_failed(&plain(&mut conn, "carol", "second").await);
    assert!(broker.auth().list_users().await.expect("list").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn without_authentication_sasl_is_refused_and_everything_served() {
    let server = TestServer::start().await;
    let mut conn = server.connect().await;
    assert!(metadata_works(&mut conn).await);
    assert_eq!(handshake(&mut conn, "SCRAM-SHA-256").await, 34, "ILLEGAL_SASL_STATE");
    assert!(conn.closed_by_server().await);
    server.stop().await;
}

async fn handshake_v0(conn: &mut Conn, mechanism: &'static str) {
    let mut req = SaslHandshakeRequest::default();
    req.mechanism = StrBytes::from_static_str(mechanism);
    assert_eq!(conn.call(0, &req).await.error_code, 0);
}

#[tokio::test]
async fn handshake_v0_exchanges_bare_tokens() {
    let server = start(vec![Mechanism::ScramSha256, Mechanism::Plain]).await;
    server
        .broker
        .auth()
        .add_user("erin", "secret", 4096)
        .await
        .expect("add");

    // SCRAM: client-first and client-final as bare frames, answered with
    // bare frames.
    for (password, ok) in [("secret", true), ("wrong", false)] {
        let mut conn = server.connect().await;
        handshake_v0(&mut conn, "SCRAM-SHA-256").await;
        let client_nonce = "rOprNGfwEbeRWgbNEkqO";
        let bare = format!("n=erin,r={client_nonce}");
        conn.send_raw_frame(format!("n,,{bare}").as_bytes()).await;
        let server_first = conn.read_frame().await.expect("server-first");
        let server_first = String::from_utf8(server_first.to_vec()).expect("utf-8");
        let (last, expected) = client_final(client_nonce, &bare, &server_first, password, Tamper::None);
        conn.send_raw_frame(last.as_bytes()).await;
        let answer = conn.read_frame().await;
        if ok {
            assert_eq!(answer.as_deref(), Some(expected.as_bytes()));
            assert!(metadata_works(&mut conn).await);
        } else {
            assert!(answer.is_none(), "a failure closes the connection unanswered");
        }
    }

    // PLAIN: one short bare token, answered with an empty frame.
    let mut conn = server.connect().await;
    handshake_v0(&mut conn, "PLAIN").await;
    conn.send_raw_frame(b"\0erin\0secret").await;
    assert_eq!(conn.read_frame().await.as_deref(), Some(&b""[..]));
    assert!(metadata_works(&mut conn).await);
    let mut conn = server.connect().await;
    handshake_v0(&mut conn, "PLAIN").await;
    conn.send_raw_frame(b"\0e\0s").await;
    assert!(conn.read_frame().await.is_none());
    server.stop().await;
}

/// Ports of the brokers a connection's Metadata lists, and whether every
/// partition of every topic is led by one of them.
async fn listed_brokers(conn: &mut Conn) -> (Vec<u16>, bool) {
    let mut all = MetadataRequest::default();
    all.topics = None;
    let resp = conn.call(12, &all).await;
    let ids: Vec<i32> = resp.brokers.iter().map(|b| b.node_id.0).collect();
    let led = resp
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .all(|p| ids.contains(&p.leader_id.0));
    let mut ports: Vec<u16> = resp.brokers.iter().filter_map(|b| u16::try_from(b.port).ok()).collect();
    ports.sort_unstable();
    (ports, led)
}

#[tokio::test]
async fn brokers_name_only_brokers_of_their_own_security() {
    let sasl = start(vec![Mechanism::Plain]).await;
    let sasl_config = KafkaConfig {
        auth: AuthConfig {
            allow_plain_without_tls: true,
            ..AuthConfig::sasl(vec![Mechanism::Plain])
        },
        ..KafkaConfig::default()
    };
    let plaintext = sasl.another(KafkaConfig::default()).await;
    let sasl_too = sasl.another(sasl_config).await;
    sasl.broker.auth().add_user("bob", "hunter2", 4096).await.expect("add");
    sasl.topic(
        "spread",
        pgbroker::TopicConfig {
            partitions: 6,
            ..Default::default()
        },
    )
    .await;

    let mut both_sasl = vec![sasl.addr.port(), sasl_too.addr.port()];
    both_sasl.sort_unstable();
    let mut conn = sasl.connect().await;
    assert_eq!(plain(&mut conn, "bob", "hunter2").await.error_code, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ports, led) = listed_brokers(&mut conn).await;
        assert!(
            !ports.contains(&plaintext.addr.port()),
            "a SASL broker named a plaintext one: {ports:?}"
        );
        assert!(led, "every partition led by a listed broker");
        if ports == both_sasl {
            break;
        }
        assert!(Instant::now() < deadline, "both SASL brokers listed: {ports:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The plaintext broker, refreshed by now, names itself alone.
    let mut plain_conn = plaintext.connect().await;
    let (ports, led) = listed_brokers(&mut plain_conn).await;
    assert_eq!(ports, vec![plaintext.addr.port()]);
    assert!(led);
    sasl_too.stop().await;
    plaintext.stop().await;
    sasl.stop().await;
}
