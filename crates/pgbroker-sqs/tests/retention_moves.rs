//! `MessageRetentionPeriod` enforced (old messages are not delivered and
//! the sweep removes them), and message move tasks paced by
//! `MaxNumberOfMessagesPerSecond`, with the refusals of both.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};

fn messages(v: &Value) -> Vec<Value> {
    v["Messages"].as_array().cloned().unwrap_or_default()
}

fn bodies(v: &Value) -> Vec<String> {
    messages(v)
        .iter()
        .map(|m| m["Body"].as_str().expect("body").to_string())
        .collect()
}

async fn counts(s: &TestServer, url: &str) -> (String, String) {
    let a = s
        .ok(
            "GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": ["All"]}),
        )
        .await;
    let get = |k: &str| a["Attributes"][k].as_str().expect(k).to_string();
    (
        get("ApproximateNumberOfMessages"),
        get("ApproximateNumberOfMessagesNotVisible"),
    )
}

/// Makes the messages with these bodies look `secs` old.
async fn age(s: &TestServer, bodies: &[&str], secs: u32) {
    let list = bodies.iter().map(|b| format!("'{b}'")).collect::<Vec<_>>().join(",");
    let n = s
        .sql(&format!(
            "UPDATE queue_messages SET enqueued_at = now() - interval '{secs} seconds' \
             WHERE convert_from(body, 'UTF8') IN ({list})"
        ))
        .await;
    assert_eq!(n, bodies.len() as u64);
}

#[tokio::test]
async fn messages_past_retention_are_not_delivered_and_are_swept() {
    let s = TestServer::start().await;
    let url = s.queue("short", json!({"MessageRetentionPeriod": "60"})).await;
    for b in ["old-1", "fresh", "old-2"] {
        s.ok("SendMessage", json!({"QueueUrl": url, "MessageBody": b})).await;
    }
    age(&s, &["old-1", "old-2"], 61).await;
    // A receive hands out only the fresh one and deletes the others.
    let got = s
        .ok("ReceiveMessage", json!({"QueueUrl": url, "MaxNumberOfMessages": 10}))
        .await;
    assert_eq!(bodies(&got), ["fresh"]);
    assert_eq!(counts(&s, &url).await, ("0".into(), "1".into()));
    // A long poll that finds only expired messages goes on waiting and
    // returns empty.
    s.ok("SendMessage", json!({"QueueUrl": url, "MessageBody": "old-3"}))
        .await;
    age(&s, &["old-3"], 120).await;
    let t = Instant::now();
    let got = s
        .ok("ReceiveMessage", json!({"QueueUrl": url, "WaitTimeSeconds": 1}))
        .await;
    assert!(messages(&got).is_empty(), "{got}");
    assert!(t.elapsed() >= Duration::from_millis(900));

    // The sweep removes expired messages nobody receives, in standard and
    // FIFO queues (the group's next message becomes its head), and leaves
    // alone messages in a current lease, younger messages, and queues
    // made without SQS settings.
    let fifo = s
        .queue(
            "short.fifo",
            json!({"FifoQueue": "true", "ContentBasedDeduplication": "true", "MessageRetentionPeriod": "60"}),
        )
        .await;
    for b in ["g-old", "g-new"] {
        s.ok(
            "SendMessage",
            json!({"QueueUrl": fifo, "MessageBody": b, "MessageGroupId": "g"}),
        )
        .await;
    }
    s.ok("SendMessage", json!({"QueueUrl": url, "MessageBody": "old-4"}))
        .await;
    let plain = pgbroker::QueueName::new("library-queue").expect("name");
    s.broker
        .queues()
        .create(&plain, &pgbroker::QueueConfig::default())
        .await
        .expect("create");
    s.broker
        .queues()
        .send(&plain, &pgbroker::Message::new(b"lib-old".to_vec()))
        .await
        .expect("send");
    // "fresh" is still leased: aged, it stays.
    age(&s, &["g-old", "old-4", "lib-old", "fresh"], 3600).await;
    let removed = s.broker.queues().sqs_sweep().await.expect("sweep");
    assert!(removed >= 2, "{removed}");
    assert_eq!(counts(&s, &url).await, ("0".into(), "1".into()));
    assert_eq!(counts(&s, &fifo).await, ("1".into(), "0".into()));
    let got = s
        .ok("ReceiveMessage", json!({"QueueUrl": fifo, "MaxNumberOfMessages": 10}))
        .await;
    assert_eq!(bodies(&got), ["g-new"]);
    let stats = s.broker.queues().stats(&plain).await.expect("stats");
    assert_eq!(stats.ready, 1);
    assert_eq!(
        s.sql("SELECT 1 FROM queue_messages WHERE convert_from(body, 'UTF8') = 'fresh'")
            .await,
        1
    );
    assert_eq!(
        s.sql("SELECT 1 FROM queue_messages WHERE convert_from(body, 'UTF8') LIKE 'old-%'")
            .await,
        0
    );

    // Bad periods are refused and change nothing.
    for bad in ["59", "1209601", "ten", ""] {
        s.call(
            "SetQueueAttributes",
            json!({"QueueUrl": url, "Attributes": {"MessageRetentionPeriod": bad}}),
        )
        .await
        .assert_error(400, "InvalidAttributeValue", "InvalidAttributeValue");
        s.call(
            "CreateQueue",
            json!({"QueueName": "never", "Attributes": {"MessageRetentionPeriod": bad}}),
        )
        .await
        .assert_error(400, "InvalidAttributeValue", "InvalidAttributeValue");
    }
    let a = s
        .ok(
            "GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": ["MessageRetentionPeriod"]}),
        )
        .await;
    assert_eq!(a["Attributes"]["MessageRetentionPeriod"], "60");
    s.call("GetQueueUrl", json!({"QueueName": "never"})).await.assert_error(
        400,
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
    );
}

const DLQ_ARN: &str = "arn:aws:sqs:us-east-1:000000000000:paced-dlq";

/// A dead-letter queue holding `n` dead letters of `src`.
async fn dead_letters(s: &TestServer, n: usize) -> (String, String) {
    let dlq = s.queue("paced-dlq", json!({})).await;
    let policy = json!({"deadLetterTargetArn": DLQ_ARN, "maxReceiveCount": 1}).to_string();
    let src = s.queue("paced-src", json!({"RedrivePolicy": policy})).await;
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let entries: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"Id": format!("e{i}"), "MessageBody": format!("m{i}")}))
            .collect();
        s.ok("SendMessageBatch", json!({"QueueUrl": src, "Entries": entries}))
            .await;
    }
    // Received once each, then released: each is out of receives.
    loop {
        let got = messages(
            &s.ok("ReceiveMessage", json!({"QueueUrl": src, "MaxNumberOfMessages": 10}))
                .await,
        );
        if got.is_empty() {
            break;
        }
        let entries: Vec<Value> = got
            .iter()
            .enumerate()
            .map(|(i, m)| json!({"Id": format!("v{i}"), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}))
            .collect();
        s.ok(
            "ChangeMessageVisibilityBatch",
            json!({"QueueUrl": src, "Entries": entries}),
        )
        .await;
    }
    assert_eq!(counts(s, &dlq).await.0, n.to_string());
    (dlq, src)
}

async fn task(s: &TestServer) -> Value {
    s.ok("ListMessageMoveTasks", json!({"SourceArn": DLQ_ARN})).await["Results"][0].clone()
}

#[tokio::test]
async fn a_move_task_keeps_to_its_rate() {
    let s = TestServer::start().await;
    let (dlq, src) = dead_letters(&s, 25).await;
    // Refused rates start nothing.
    for bad in [json!(0), json!(501), json!(-1), json!(2.5)] {
        s.call(
            "StartMessageMoveTask",
            json!({"SourceArn": DLQ_ARN, "MaxNumberOfMessagesPerSecond": bad}),
        )
        .await
        .assert_error(400, "InvalidParameterValue", "InvalidParameterValue");
    }
    let a = s
        .call(
            "StartMessageMoveTask",
            json!({"SourceArn": DLQ_ARN, "MaxNumberOfMessagesPerSecond": "ten"}),
        )
        .await;
    assert_eq!(
        (a.status, a.error_type()),
        (400, Some("SerializationException")),
        "{a:?}"
    );
    assert_eq!(
        s.ok("ListMessageMoveTasks", json!({"SourceArn": DLQ_ARN})).await["Results"],
        json!([])
    );
    assert_eq!(counts(&s, &dlq).await.0, "25");

    let started = Instant::now();
    s.ok(
        "StartMessageMoveTask",
        json!({"SourceArn": DLQ_ARN, "MaxNumberOfMessagesPerSecond": 10}),
    )
    .await;
    // At most 10 in each second begun: watch the source drain in steps.
    let mut seen = Vec::new();
    let status = loop {
        let t = task(&s).await;
        let elapsed = started.elapsed();
        let moved = t["ApproximateNumberOfMessagesMoved"].as_u64().expect("moved");
        let (left, _) = counts(&s, &dlq).await;
        let allowed = 10 * (elapsed.as_secs() + 1);
        assert!(moved <= allowed, "{moved} moved after {elapsed:?}");
        assert!(
            25 - left.parse::<u64>().expect("n") <= allowed.max(moved),
            "{left} left after {elapsed:?}"
        );
        assert_eq!(t["MaxNumberOfMessagesPerSecond"], 10);
        seen.push(moved);
        if t["Status"] != "RUNNING" {
            break t;
        }
        assert!(elapsed < Duration::from_secs(20), "{t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["Status"], "COMPLETED", "{status}");
    assert_eq!(status["ApproximateNumberOfMessagesMoved"], 25);
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(seen.contains(&10) && seen.contains(&20), "{seen:?}");
    assert_eq!(counts(&s, &dlq).await.0, "0");
    assert_eq!(counts(&s, &src).await.0, "25");
}

#[tokio::test]
async fn a_paced_move_task_can_be_cancelled() {
    let s = TestServer::start().await;
    let (dlq, src) = dead_letters(&s, 6).await;
    let handle = s
        .ok(
            "StartMessageMoveTask",
            json!({"SourceArn": DLQ_ARN, "MaxNumberOfMessagesPerSecond": 1}),
        )
        .await["TaskHandle"]
        .as_str()
        .expect("handle")
        .to_string();
    // A second task on the same source is refused while it runs.
    s.call(
        "StartMessageMoveTask",
        json!({"SourceArn": DLQ_ARN, "MaxNumberOfMessagesPerSecond": 1}),
    )
    .await
    .assert_error(
        400,
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let cancelled = s.ok("CancelMessageMoveTask", json!({"TaskHandle": handle})).await;
    let moved = cancelled["ApproximateNumberOfMessagesMoved"].as_u64().expect("moved");
    assert!((1..=2).contains(&moved), "{cancelled}");
    let mut t = task(&s).await;
    for _ in 0..40 {
        if t["Status"] == "CANCELLED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        t = task(&s).await;
    }
    assert_eq!(t["Status"], "CANCELLED", "{t}");
    let at_cancel = moved;
    let moved = t["ApproximateNumberOfMessagesMoved"].as_u64().expect("moved");
    // A step under way when the cancel came may finish; none begins after.
    assert!(moved >= at_cancel && moved <= at_cancel + 1, "{t}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(counts(&s, &src).await.0, moved.to_string());
    assert_eq!(counts(&s, &dlq).await.0, (6 - moved).to_string());
    // Cancelled, it cannot be cancelled again.
    s.call("CancelMessageMoveTask", json!({"TaskHandle": handle}))
        .await
        .assert_error(400, "ResourceNotFoundException", "ResourceNotFoundException");
}
