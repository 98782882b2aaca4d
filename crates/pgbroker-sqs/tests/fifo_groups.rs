//! FIFO queues as SQS clients see them: `SequenceNumber` and
//! `MessageDeduplicationId` on sends and received messages, several
//! messages of one group in one receive, in order, and never two receivers
//! holding messages of one group at once.

mod common;

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

async fn fifo(s: &TestServer, name: &str) -> String {
    s.queue(name, json!({"FifoQueue": "true", "ContentBasedDeduplication": "true"}))
        .await
}

async fn send(s: &TestServer, url: &str, group: &str, body: &str) -> Value {
    s.ok(
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": body, "MessageGroupId": group}),
    )
    .await
}

async fn receive(s: &TestServer, url: &str, max: u32) -> Value {
    s.ok(
        "ReceiveMessage",
        json!({"QueueUrl": url, "MaxNumberOfMessages": max, "AttributeNames": ["All"]}),
    )
    .await
}

#[tokio::test]
async fn sequence_numbers_and_deduplication_ids_as_sqs_returns_them() {
    let s = TestServer::start().await;
    let url = fifo(&s, "seq.fifo").await;
    let a = s
        .ok(
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": "a", "MessageGroupId": "g", "MessageDeduplicationId": "dedup-a"}),
        )
        .await;
    let b = send(&s, &url, "g", "b").await;
    let batch = s
        .ok(
            "SendMessageBatch",
            json!({"QueueUrl": url, "Entries": [
                {"Id": "1", "MessageBody": "c", "MessageGroupId": "g", "MessageDeduplicationId": "dedup-c"}]}),
        )
        .await;
    let c = &batch["Successful"][0];
    let seqs: Vec<&str> = [&a, &b, c]
        .iter()
        .map(|v| v["SequenceNumber"].as_str().expect("SequenceNumber"))
        .collect();
    for seq in &seqs {
        assert!(seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit()), "{seq}");
    }
    assert!(seqs[0] < seqs[1] && seqs[1] < seqs[2], "{seqs:?}");
    let got = messages(&receive(&s, &url, 10).await);
    assert_eq!(got.len(), 3, "{got:?}");
    let sha_b = "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d";
    for (m, (seq, dedup)) in got.iter().zip(seqs.iter().zip(["dedup-a", sha_b, "dedup-c"])) {
        assert_eq!(m["Attributes"]["SequenceNumber"], *seq, "{m}");
        assert_eq!(m["Attributes"]["MessageDeduplicationId"], dedup, "{m}");
        assert_eq!(m["Attributes"]["MessageGroupId"], "g", "{m}");
        // The id is a system attribute, not a message attribute.
        assert!(m.get("MessageAttributes").is_none(), "{m}");
    }
    // Asked for by name alone.
    s.ok(
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 0}),
    )
    .await;
    let again = s
        .ok(
            "ReceiveMessage",
            json!({"QueueUrl": url, "MessageSystemAttributeNames": ["MessageDeduplicationId"]}),
        )
        .await;
    assert_eq!(
        messages(&again)[0]["Attributes"],
        json!({"MessageDeduplicationId": "dedup-a"})
    );
    // Standard queues have neither.
    let std_url = s.queue("plain", json!({})).await;
    let sent = s
        .ok("SendMessage", json!({"QueueUrl": std_url, "MessageBody": "x"}))
        .await;
    assert!(sent.get("SequenceNumber").is_none(), "{sent}");
    let m = &messages(&receive(&s, &std_url, 1).await)[0];
    assert!(m["Attributes"].get("SequenceNumber").is_none(), "{m}");
    assert!(m["Attributes"].get("MessageDeduplicationId").is_none(), "{m}");
}

#[tokio::test]
async fn one_receive_takes_a_groups_messages_in_order() {
    let s = TestServer::start().await;
    let url = fifo(&s, "runs.fifo").await;
    for i in 0..4 {
        send(&s, &url, "a", &format!("a{i}")).await;
        if i < 2 {
            send(&s, &url, "b", &format!("b{i}")).await;
        }
    }
    let got = receive(&s, &url, 10).await;
    assert_eq!(bodies(&got), ["a0", "a1", "a2", "a3", "b0", "b1"]);
    // Both groups are held: nothing for anyone else.
    assert!(messages(&receive(&s, &url, 10).await).is_empty());
    let attrs = s
        .ok(
            "GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessagesNotVisible"]}),
        )
        .await;
    assert_eq!(attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"], "6");
    // A receive of 3 stops at 3, the group's oldest first.
    let url2 = fifo(&s, "three.fifo").await;
    for i in 0..5 {
        send(&s, &url2, "g", &format!("m{i}")).await;
    }
    assert_eq!(bodies(&receive(&s, &url2, 3).await), ["m0", "m1", "m2"]);
}

#[tokio::test]
async fn two_receivers_never_hold_one_group() {
    let s = TestServer::start().await;
    let url = fifo(&s, "excl.fifo").await;
    for i in 0..5 {
        send(&s, &url, "g", &format!("m{i}")).await;
    }
    // A holds m0 and m1.
    let a = receive(&s, &url, 2).await;
    assert_eq!(bodies(&a), ["m0", "m1"]);
    let a = messages(&a);
    // B gets nothing of the group while A holds any of it: not after A
    // deletes m0 (m1, still A's, becomes the head).
    s.ok(
        "DeleteMessage",
        json!({"QueueUrl": url, "ReceiptHandle": a[0]["ReceiptHandle"]}),
    )
    .await;
    assert!(messages(&receive(&s, &url, 10).await).is_empty());
    s.ok(
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": a[1]["ReceiptHandle"], "VisibilityTimeout": 0}),
    )
    .await;
    let b = receive(&s, &url, 10).await;
    assert_eq!(bodies(&b), ["m1", "m2", "m3", "m4"]);
    let counts: Vec<String> = messages(&b)
        .iter()
        .map(|m| {
            m["Attributes"]["ApproximateReceiveCount"]
                .as_str()
                .expect("count")
                .to_string()
        })
        .collect();
    assert_eq!(counts, ["2", "1", "1", "1"]);
    // B releases only its last message: a visibility change applies to all
    // of the group B holds, so the group goes back whole, in order.
    let b = messages(&b);
    s.ok(
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": b[3]["ReceiptHandle"], "VisibilityTimeout": 0}),
    )
    .await;
    let c = s
        .ok(
            "ReceiveMessage",
            json!({"QueueUrl": url, "MaxNumberOfMessages": 2, "VisibilityTimeout": 1}),
        )
        .await;
    assert_eq!(bodies(&c), ["m1", "m2"]);
    // B's receipts no longer change anything: m1 and m2 are C's now.
    for m in &b[..2] {
        s.call(
            "ChangeMessageVisibility",
            json!({"QueueUrl": url, "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 5}),
        )
        .await
        .assert_error(400, "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight");
    }
    // C extends m2 only; m1, whose own lease was 1 s, is held as long.
    let c = messages(&c);
    s.ok(
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": c[1]["ReceiptHandle"], "VisibilityTimeout": 30}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert!(messages(&receive(&s, &url, 10).await).is_empty());
    // Shortened through m1 (a batch this time), both leases end together
    // and the group is free again.
    s.ok(
        "ChangeMessageVisibilityBatch",
        json!({"QueueUrl": url, "Entries": [{"Id": "x", "ReceiptHandle": c[0]["ReceiptHandle"], "VisibilityTimeout": 1}]}),
    )
    .await;
    assert!(messages(&receive(&s, &url, 10).await).is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(bodies(&receive(&s, &url, 10).await), ["m1", "m2", "m3", "m4"]);
}

#[tokio::test]
async fn followers_out_of_receives_are_dead_lettered_in_their_turn() {
    let s = TestServer::start().await;
    let dlq = s
        .queue(
            "dead.fifo",
            json!({"FifoQueue": "true", "ContentBasedDeduplication": "true"}),
        )
        .await;
    let policy = json!({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:dead.fifo", "maxReceiveCount": 1})
        .to_string();
    let url = s
        .queue(
            "src.fifo",
            json!({"FifoQueue": "true", "ContentBasedDeduplication": "true", "RedrivePolicy": policy}),
        )
        .await;
    for i in 0..3 {
        send(&s, &url, "g", &format!("m{i}")).await;
    }
    let got = messages(&receive(&s, &url, 10).await);
    assert_eq!(got.len(), 3);
    s.ok(
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 0}),
    )
    .await;
    // Each was received once, its maximum: none is handed out again, and
    // all three reach the dead-letter queue (one per receive, as each
    // comes to the head of its group), in order.
    let count = |a: &Value, k: &str| a["Attributes"][k].as_str().map(|v| v.to_string());
    for _ in 0..10 {
        assert!(messages(&receive(&s, &url, 10).await).is_empty());
        let attrs = s
            .ok(
                "GetQueueAttributes",
                json!({"QueueUrl": url, "AttributeNames": ["All"]}),
            )
            .await;
        if count(&attrs, "ApproximateNumberOfMessages").as_deref() == Some("0")
            && count(&attrs, "ApproximateNumberOfMessagesNotVisible").as_deref() == Some("0")
        {
            break;
        }
    }
    assert_eq!(bodies(&receive(&s, &dlq, 10).await), ["m0", "m1", "m2"]);
}
