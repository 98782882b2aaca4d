//! The message actions use a queue's settings read at most a second
//! before: a change through the same server applies at once, one through
//! another server within the second. First receives that no answer
//! reported are still recorded.

mod common;

use std::time::{Duration, SystemTime};

use common::TestServer;
use pgbroker_sqs::{SqsConfig, SqsServer};
use serde_json::{json, Value};

fn messages(v: &Value) -> Vec<Value> {
    v["Messages"].as_array().cloned().unwrap_or_default()
}

fn millis(t: SystemTime) -> i64 {
    i64::try_from(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

/// Sends one message and answers whether a receive gets it at once.
async fn delivered_at_once(s: &TestServer, url: &str) -> bool {
    s.ok("SendMessage", json!({"QueueUrl": url, "MessageBody": "m"})).await;
    let got = messages(&s.ok("ReceiveMessage", json!({"QueueUrl": url})).await);
    if let Some(m) = got.first() {
        s.ok(
            "DeleteMessage",
            json!({"QueueUrl": url, "ReceiptHandle": m["ReceiptHandle"]}),
        )
        .await;
    }
    !got.is_empty()
}

#[tokio::test]
async fn a_change_through_this_server_applies_at_once() {
    let s = TestServer::start().await;
    let url = s.queue("cached", json!({})).await;
    assert!(delivered_at_once(&s, &url).await, "no delay yet");
    s.ok(
        "SetQueueAttributes",
        json!({"QueueUrl": url, "Attributes": {"DelaySeconds": "60"}}),
    )
    .await;
    assert!(!delivered_at_once(&s, &url).await, "the new delay applies at once");

    // Deleted and made again without a delay: the old settings are gone.
    s.ok("DeleteQueue", json!({"QueueUrl": url})).await;
    let again = s.queue("cached", json!({})).await;
    assert!(delivered_at_once(&s, &again).await, "the new queue has no delay");
}

#[tokio::test]
async fn a_change_through_another_server_applies_within_a_second() {
    let s = TestServer::start().await;
    let other = SqsServer::bind(
        s.broker.clone(),
        SqsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            allow_anonymous: true,
            ..SqsConfig::default()
        },
    )
    .await
    .expect("bind");
    let other_addr = other.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(other.run(async move {
        let _ = stopped.await;
    }));

    let url = s.queue("shared", json!({})).await;
    assert!(delivered_at_once(&s, &url).await, "no delay yet");
    // The other server changes the queue; this one has it cached.
    let body = json!({"QueueUrl": url, "Attributes": {"DelaySeconds": "60"}}).to_string();
    let answer = common::raw_to(
        other_addr,
        &[
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "AmazonSQS.SetQueueAttributes"),
        ],
        body.into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!delivered_at_once(&s, &url).await, "the delay set elsewhere applies");
    let _ = stop.send(());
}

#[tokio::test]
async fn a_first_receive_not_reported_is_recorded() {
    let s = TestServer::start().await;
    let url = s.queue("first", json!({})).await;
    s.ok("SendMessage", json!({"QueueUrl": url, "MessageBody": "m"})).await;
    let before_first = millis(SystemTime::now());
    let first = messages(&s.ok("ReceiveMessage", json!({"QueueUrl": url})).await);
    assert!(first[0].get("Attributes").is_none(), "{first:?}");
    s.ok(
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": first[0]["ReceiptHandle"], "VisibilityTimeout": 0}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_second = millis(SystemTime::now());
    let second = messages(
        &s.ok(
            "ReceiveMessage",
            json!({"QueueUrl": url, "MessageSystemAttributeNames": ["All"]}),
        )
        .await,
    );
    let attrs = &second[0]["Attributes"];
    assert_eq!(attrs["ApproximateReceiveCount"], "2", "{second:?}");
    let at: i64 = attrs["ApproximateFirstReceiveTimestamp"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a timestamp");
    // Clocks of one host; a little slack for the rounding of now().
    assert!(
        at >= before_first - 50 && at < before_second,
        "first receive at {at}, between {before_first} and {before_second}"
    );
}
