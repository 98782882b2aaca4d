//! A server that requires SASL (PLAIN, allowed without TLS for tests),
//! users with grants, and connections logged in as them.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use pgbroker::auth::{Acl, AclResource, Permission};
use pgbroker_kafka::{AuthConfig, KafkaConfig, Mechanism};

use super::{Conn, TestServer};

/// The only super user of [`start`].
pub const ROOT: &str = "root";

/// A server requiring SASL PLAIN, with [`ROOT`] as super user.
pub async fn start() -> TestServer {
    let auth = AuthConfig {
        allow_plain_without_tls: true,
        failure_delay: Duration::from_millis(10),
        super_users: vec![ROOT.to_string()],
        ..AuthConfig::sasl(vec![Mechanism::Plain])
    };
    let server = TestServer::start_with(KafkaConfig {
        auth,
        ..KafkaConfig::default()
    })
    .await;
    user(&server, ROOT, &[]).await;
    server
}

/// Adds `name` (password `<name>-pw`) with these grants.
pub async fn user(server: &TestServer, name: &str, grants: &[(Permission, AclResource)]) {
    server
        .broker
        .auth()
        .add_user(name, &format!("{name}-pw"), 4096)
        .await
        .expect("add user");
    for (permission, resource) in grants {
        let acl = Acl::new(name, *permission, resource.clone()).expect("valid acl");
        server.broker.auth().grant(&acl).await.expect("grant");
    }
}

/// A connection logged in as `name`.
pub async fn login(server: &TestServer, name: &str) -> Conn {
    let mut conn = server.connect().await;
    let mut hs = SaslHandshakeRequest::default();
    hs.mechanism = StrBytes::from_static_str("PLAIN");
    assert_eq!(conn.call(1, &hs).await.error_code, 0, "handshake");
    let mut auth = SaslAuthenticateRequest::default();
    auth.auth_bytes = Bytes::from(format!("\0{name}\0{name}-pw").into_bytes());
    assert_eq!(conn.call(2, &auth).await.error_code, 0, "login as {name}");
    conn
}

/// The ACL resource of topic `name`.
pub fn topic(name: &str) -> AclResource {
    AclResource::topic(name).expect("topic")
}

/// The ACL resource of the topics starting with `prefix`.
pub fn topic_prefix(prefix: &str) -> AclResource {
    AclResource::topic_prefix(prefix).expect("prefix")
}

/// The ACL resource of group `name`.
pub fn group(name: &str) -> AclResource {
    AclResource::group(name).expect("group")
}

/// The ACL resource of the groups starting with `prefix`.
pub fn group_prefix(prefix: &str) -> AclResource {
    AclResource::group_prefix(prefix).expect("prefix")
}
