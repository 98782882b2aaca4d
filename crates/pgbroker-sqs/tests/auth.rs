//! Authentication and authorization of the SQS listener over real HTTP:
//! requests signed with a user's access key are served as far as the
//! user's ACLs allow; unsigned, badly signed, stale and unknown-key
//! requests get the error SQS returns, change nothing, and the server
//! keeps serving.

mod common;

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue};
use common::{Answer, TestServer};
use pgbroker::{Acl, AclResource, Permission};
use pgbroker_sqs::sigv4::{self, Request, Signed};
use pgbroker_sqs::SqsConfig;
use serde_json::{json, Value};

/// An access key as `pgbroker user key create` prints it.
struct Key {
    id: String,
    secret: String,
}

/// Signs an SQS JSON request as the SDKs do: content-type, host,
/// x-amz-date and x-amz-target signed, dated `at`.
fn signed_headers(
    server: &TestServer,
    key_id: &str,
    secret: &str,
    action: &str,
    body: &[u8],
    at: SystemTime,
) -> Vec<(String, String)> {
    let host = server.addr.to_string();
    let target = format!("AmazonSQS.{action}");
    let amz_date = sigv4::format_amz_date(at);
    let mut map = HeaderMap::new();
    map.insert("content-type", HeaderValue::from_static("application/x-amz-json-1.0"));
    map.insert("host", HeaderValue::from_str(&host).expect("host"));
    map.insert("x-amz-date", HeaderValue::from_str(&amz_date).expect("date"));
    map.insert("x-amz-target", HeaderValue::from_str(&target).expect("target"));
    let signed = Signed {
        access_key_id: key_id.to_string(),
        scope_date: amz_date[..8].to_string(),
        region: "us-east-1".to_string(),
        service: "sqs".to_string(),
        signed_headers: ["content-type", "host", "x-amz-date", "x-amz-target"]
            .map(str::to_string)
            .to_vec(),
        signature: [0; 32],
        amz_date: amz_date.clone(),
    };
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &map,
        body,
    };
    let signature = hex::encode(sigv4::signature(&req, &signed, secret));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={key_id}/{}/us-east-1/sqs/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={signature}",
        signed.scope_date
    );
    vec![
        ("content-type".into(), "application/x-amz-json-1.0".into()),
        ("x-amz-target".into(), target),
        ("x-amz-date".into(), amz_date),
        ("authorization".into(), authorization),
    ]
}

async fn send(server: &TestServer, headers: &[(String, String)], body: Vec<u8>) -> Answer {
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    server.raw(&refs, body).await
}

/// Calls `action` signed with `key`, now.
async fn call_as(server: &TestServer, key: &Key, action: &str, body: Value) -> Answer {
    let body = body.to_string().into_bytes();
    let headers = signed_headers(server, &key.id, &key.secret, action, &body, SystemTime::now());
    send(server, &headers, body).await
}

async fn user_with_key(server: &TestServer, name: &str, grants: &[(Permission, AclResource)]) -> Key {
    let b = &server.broker;
    b.add_user(name, &format!("{name}-pw"), 4096).await.expect("user");
    for (permission, resource) in grants {
        b.grant(&Acl::new(name, *permission, resource.clone()).expect("acl"))
            .await
            .expect("grant");
    }
    let key = b.create_access_key(name).await.expect("key");
    Key {
        id: key.access_key_id,
        secret: key.secret_access_key,
    }
}

async fn signed_only() -> TestServer {
    TestServer::start_with_auth(SqsConfig {
        allow_anonymous: false,
        ..SqsConfig::default()
    })
    .await
}

fn queue(name: &str) -> AclResource {
    AclResource::queue(name).expect("queue")
}

async fn visible_messages(server: &TestServer, key: &Key, url: &str) -> String {
    let a = call_as(
        server,
        key,
        "GetQueueAttributes",
        json!({"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessages"]}),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body["Attributes"]["ApproximateNumberOfMessages"]
        .as_str()
        .expect("count")
        .to_string()
}

#[tokio::test]
async fn signed_requests_are_served_as_the_acls_allow() {
    let server = signed_only().await;
    let alice = user_with_key(
        &server,
        "alice",
        &[
            (Permission::Admin, queue("jobs")),
            (Permission::Produce, queue("jobs")),
            (Permission::Consume, queue("jobs")),
        ],
    )
    .await;
    let bob = user_with_key(
        &server,
        "bob",
        &[(Permission::Produce, AclResource::queue_prefix("bob-").expect("p"))],
    )
    .await;

    let created = call_as(&server, &alice, "CreateQueue", json!({"QueueName": "jobs"})).await;
    assert_eq!(created.status, 200, "{created:?}");
    let url = created.body["QueueUrl"].as_str().expect("url").to_string();
    let sent = call_as(
        &server,
        &alice,
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "one"}),
    )
    .await;
    assert_eq!(sent.status, 200, "{sent:?}");

    // bob has no right on "jobs": every action is refused the same way,
    // and so is a queue that does not exist.
    for (action, body) in [
        ("SendMessage", json!({"QueueUrl": url, "MessageBody": "from bob"})),
        ("ReceiveMessage", json!({"QueueUrl": url})),
        ("PurgeQueue", json!({"QueueUrl": url})),
        ("GetQueueUrl", json!({"QueueName": "jobs"})),
        ("CreateQueue", json!({"QueueName": "other"})),
        ("GetQueueUrl", json!({"QueueName": "nonexistent"})),
    ] {
        call_as(&server, &bob, action, body)
            .await
            .assert_error(403, "AccessDenied", "AccessDenied");
    }
    let listed = call_as(&server, &bob, "ListQueues", json!({})).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert!(
        listed.body["QueueUrls"].as_array().is_none_or(Vec::is_empty),
        "{listed:?}"
    );
    let listed = call_as(&server, &alice, "ListQueues", json!({})).await;
    assert_eq!(listed.body["QueueUrls"], json!([url]));

    // Nothing bob tried changed the queue.
    assert_eq!(visible_messages(&server, &alice, &url).await, "1");
    let got = call_as(&server, &alice, "ReceiveMessage", json!({"QueueUrl": url})).await;
    assert_eq!(got.body["Messages"][0]["Body"], "one", "{got:?}");
}

#[tokio::test]
async fn bad_credentials_are_refused_and_change_nothing() {
    let server = signed_only().await;
    let alice = user_with_key(
        &server,
        "alice",
        &[(Permission::Admin, queue("jobs")), (Permission::Produce, queue("jobs"))],
    )
    .await;
    let created = call_as(&server, &alice, "CreateQueue", json!({"QueueName": "jobs"})).await;
    let url = created.body["QueueUrl"].as_str().expect("url").to_string();
    let body = json!({"QueueUrl": url, "MessageBody": "must not arrive"})
        .to_string()
        .into_bytes();
    let now = SystemTime::now();

    // Unsigned.
    server
        .raw(
            &[
                ("content-type", "application/x-amz-json-1.0"),
                ("x-amz-target", "AmazonSQS.SendMessage"),
            ],
            body.clone(),
        )
        .await
        .assert_error(403, "MissingAuthenticationToken", "MissingAuthenticationToken");
    // Signed with the wrong secret.
    let wrong = signed_headers(
        &server,
        &alice.id,
        "not-the-secret-of-this-key-at-all",
        "SendMessage",
        &body,
        now,
    );
    send(&server, &wrong, body.clone())
        .await
        .assert_error(403, "SignatureDoesNotMatch", "SignatureDoesNotMatch");
    // Signed correctly, then the body changed.
    let good = signed_headers(&server, &alice.id, &alice.secret, "SendMessage", &body, now);
    let tampered = json!({"QueueUrl": url, "MessageBody": "tampered"})
        .to_string()
        .into_bytes();
    send(&server, &good, tampered)
        .await
        .assert_error(403, "SignatureDoesNotMatch", "SignatureDoesNotMatch");
    // Replayed: signed 20 minutes ago, or dated 20 minutes ahead.
    for at in [now - Duration::from_secs(1200), now + Duration::from_secs(1200)] {
        let stale = signed_headers(&server, &alice.id, &alice.secret, "SendMessage", &body, at);
        let a = send(&server, &stale, body.clone()).await;
        a.assert_error(403, "SignatureDoesNotMatch", "SignatureDoesNotMatch");
        assert!(
            a.body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Signature expired")),
            "{a:?}"
        );
    }
    // An access key nobody has.
    let unknown = signed_headers(
        &server,
        "PGBKNOSUCHKEY0000000",
        &alice.secret,
        "SendMessage",
        &body,
        now,
    );
    send(&server, &unknown, body.clone())
        .await
        .assert_error(403, "InvalidClientTokenId", "InvalidClientTokenId");
    // A malformed Authorization header.
    let mut malformed = good.clone();
    malformed[3].1 = "AWS4-HMAC-SHA256 Credential=x".to_string();
    send(&server, &malformed, body.clone())
        .await
        .assert_error(400, "IncompleteSignature", "IncompleteSignature");

    // Nothing arrived, and the server still serves a good request.
    assert_eq!(visible_messages(&server, &alice, &url).await, "0");
    assert_eq!(send(&server, &good, body.clone()).await.status, 200);
    assert_eq!(visible_messages(&server, &alice, &url).await, "1");

    // A deleted key is unknown from then on.
    assert!(server.broker.delete_access_key(&alice.id).await.expect("delete"));
    let after = signed_headers(
        &server,
        &alice.id,
        &alice.secret,
        "SendMessage",
        &body,
        SystemTime::now(),
    );
    send(&server, &after, body)
        .await
        .assert_error(403, "InvalidClientTokenId", "InvalidClientTokenId");
}

#[tokio::test]
async fn anonymous_access_when_allowed_still_verifies_signatures() {
    let server = TestServer::start_with_auth(SqsConfig {
        allow_anonymous: true,
        ..SqsConfig::default()
    })
    .await;
    let url = server.queue("open", json!({})).await;
    let body = json!({"QueueUrl": url, "MessageBody": "x"}).to_string().into_bytes();
    let wrong = signed_headers(
        &server,
        "PGBKNOSUCHKEY0000000",
        "whatever-secret-value",
        "SendMessage",
        &body,
        SystemTime::now(),
    );
    send(&server, &wrong, body)
        .await
        .assert_error(403, "InvalidClientTokenId", "InvalidClientTokenId");
    let attrs = server
        .ok(
            "GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessages"]}),
        )
        .await;
    assert_eq!(attrs["Attributes"]["ApproximateNumberOfMessages"], "0");
}
