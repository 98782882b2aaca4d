//! What SQS clients rely on, over the JSON protocol against the real
//! server: long polls woken by sends, visibility changes, dead letters and
//! move tasks, FIFO deduplication, attributes, pagination, tags.

mod common;

use common::TestServer;
use serde_json::{json, Value};

fn messages(v: &Value) -> Vec<Value> {
    v["Messages"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_send_wakes_a_long_poll() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let url = s.queue("wake", json!({})).await;
    let (s2, u2) = (s.clone(), url.clone());
    let waiting = tokio::spawn(async move {
        s2.ok("ReceiveMessage", json!({"QueueUrl": u2, "WaitTimeSeconds": 20}))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.ok("SendMessage", json!({"QueueUrl": url, "MessageBody": "wake up"}))
        .await;
    let got = waiting.await.expect("receive");
    assert_eq!(messages(&got)[0]["Body"], "wake up");
}

#[tokio::test]
async fn visibility_changes_keep_or_end_the_lease() {
    let s = TestServer::start().await;
    let url = s.queue("vis", json!({"VisibilityTimeout": "60"})).await;
    s.ok("SendMessage", json!({"QueueUrl": url, "MessageBody": "m"})).await;
    let first = messages(&s.ok("ReceiveMessage", json!({"QueueUrl": url})).await);
    let handle = first[0]["ReceiptHandle"].clone();
    // Released at once: received again, counted twice.
    s.ok(
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": handle, "VisibilityTimeout": 0}),
    )
    .await;
    let again = s
        .ok(
            "ReceiveMessage",
            json!({"QueueUrl": url, "AttributeNames": ["ApproximateReceiveCount"]}),
        )
        .await;
    let again = messages(&again);
    assert_eq!(again[0]["Attributes"]["ApproximateReceiveCount"], "2");
    // The old handle no longer names the lease.
    s.call(
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": handle, "VisibilityTimeout": 5}),
    )
    .await
    .assert_error(400, "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight");
    // A new timeout keeps the handle valid for the delete.
    let h2 = again[0]["ReceiptHandle"].clone();
    let batch = s
        .ok(
            "ChangeMessageVisibilityBatch",
            json!({"QueueUrl": url, "Entries": [{"Id": "a", "ReceiptHandle": h2, "VisibilityTimeout": 120}]}),
        )
        .await;
    assert_eq!(batch["Successful"][0]["Id"], "a");
    let counts = s
        .ok(
            "GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessagesNotVisible"]}),
        )
        .await;
    assert_eq!(counts["Attributes"]["ApproximateNumberOfMessagesNotVisible"], "1");
    s.ok("DeleteMessage", json!({"QueueUrl": url, "ReceiptHandle": h2}))
        .await;
    // Deleting again with a handle that no longer names a lease succeeds, as in SQS.
    s.ok("DeleteMessage", json!({"QueueUrl": url, "ReceiptHandle": h2}))
        .await;
    let all = s
        .ok(
            "GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": ["All"]}),
        )
        .await;
    assert_eq!(all["Attributes"]["ApproximateNumberOfMessages"], "0");
    assert_eq!(all["Attributes"]["ApproximateNumberOfMessagesNotVisible"], "0");
}

#[tokio::test]
async fn dead_letters_and_their_move_back() {
    let s = TestServer::start().await;
    let dlq = s.queue("dlq", json!({})).await;
    let dlq_arn = "arn:aws:sqs:us-east-1:000000000000:dlq";
    let policy = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}).to_string();
    let url = s.queue("src", json!({"RedrivePolicy": policy})).await;
    s.ok("SendMessage", json!({"QueueUrl": url, "MessageBody": "poison"}))
        .await;
    for _ in 0..2 {
        let got = messages(&s.ok("ReceiveMessage", json!({"QueueUrl": url})).await);
        s.ok(
            "ChangeMessageVisibility",
            json!({"QueueUrl": url, "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 0}),
        )
        .await;
    }
    assert!(messages(&s.ok("ReceiveMessage", json!({"QueueUrl": url})).await).is_empty());
    let sources = s.ok("ListDeadLetterSourceQueues", json!({"QueueUrl": dlq})).await;
    assert_eq!(sources["queueUrls"], json!([url]));
    let dead = s
        .ok(
            "ReceiveMessage",
            json!({"QueueUrl": dlq, "VisibilityTimeout": 1, "AttributeNames": ["All"]}),
        )
        .await;
    assert_eq!(messages(&dead)[0]["Body"], "poison");
    assert_eq!(
        messages(&dead)[0]["Attributes"]["DeadLetterQueueSourceArn"],
        "arn:aws:sqs:us-east-1:000000000000:src"
    );
    s.ok(
        "ChangeMessageVisibility",
        json!({"QueueUrl": dlq, "ReceiptHandle": messages(&dead)[0]["ReceiptHandle"], "VisibilityTimeout": 0}),
    )
    .await;
    // Only a dead-letter queue can be a move source.
    s.call(
        "StartMessageMoveTask",
        json!({"SourceArn": "arn:aws:sqs:us-east-1:000000000000:src"}),
    )
    .await
    .assert_error(400, "InvalidParameterValue", "InvalidParameterValue");
    let task = s.ok("StartMessageMoveTask", json!({"SourceArn": dlq_arn})).await;
    assert!(task["TaskHandle"].as_str().is_some_and(|h| !h.is_empty()));
    let mut status = Value::Null;
    for _ in 0..100 {
        let list = s.ok("ListMessageMoveTasks", json!({"SourceArn": dlq_arn})).await;
        status = list["Results"][0].clone();
        if status["Status"] != "RUNNING" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["Status"], "COMPLETED", "{status}");
    assert_eq!(status["ApproximateNumberOfMessagesMoved"], 1);
    let back = messages(&s.ok("ReceiveMessage", json!({"QueueUrl": url})).await);
    assert_eq!(back[0]["Body"], "poison");
}

#[tokio::test]
async fn fifo_deduplication_holds_for_the_window() {
    let s = TestServer::start().await;
    let url = s
        .queue(
            "orders.fifo",
            json!({"FifoQueue": "true", "ContentBasedDeduplication": "true"}),
        )
        .await;
    let a = s
        .ok(
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": "m", "MessageGroupId": "g", "MessageDeduplicationId": "d1"}),
        )
        .await;
    let got = messages(
        &s.ok("ReceiveMessage", json!({"QueueUrl": url, "AttributeNames": ["All"]}))
            .await,
    );
    assert_eq!(got[0]["Attributes"]["MessageGroupId"], "g");
    s.ok(
        "DeleteMessage",
        json!({"QueueUrl": url, "ReceiptHandle": got[0]["ReceiptHandle"]}),
    )
    .await;
    // Deleted, but the id is within its window: the send is a no-op.
    let b = s
        .ok(
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": "other", "MessageGroupId": "g", "MessageDeduplicationId": "d1"}),
        )
        .await;
    assert_eq!(a["MessageId"], b["MessageId"]);
    // Content-based: the same body twice is one message.
    let c = s
        .ok(
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": "same", "MessageGroupId": "g"}),
        )
        .await;
    let d = s
        .ok(
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": "same", "MessageGroupId": "h"}),
        )
        .await;
    assert_eq!(c["MessageId"], d["MessageId"]);
    let attrs = s
        .ok(
            "GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessages", "FifoQueue"]}),
        )
        .await;
    assert_eq!(
        attrs["Attributes"],
        json!({"ApproximateNumberOfMessages": "1", "FifoQueue": "true"})
    );
    // A FIFO message needs its group, and takes no per-message delay.
    s.call("SendMessage", json!({"QueueUrl": url, "MessageBody": "x"}))
        .await
        .assert_error(400, "MissingParameter", "MissingParameter");
    s.call(
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "x", "MessageGroupId": "g", "DelaySeconds": 1}),
    )
    .await
    .assert_error(400, "InvalidParameterValue", "InvalidParameterValue");
}

#[tokio::test]
async fn attributes_digests_listing_and_tags() {
    let s = TestServer::start().await;
    let url = s.queue("attrs", json!({})).await;
    // Same attributes: the existing queue; different ones: refused.
    assert_eq!(s.queue("attrs", json!({"VisibilityTimeout": "30"})).await, url);
    s.call(
        "CreateQueue",
        json!({"QueueName": "attrs", "Attributes": {"VisibilityTimeout": "31"}}),
    )
    .await
    .assert_error(400, "QueueNameExists", "QueueAlreadyExists");
    let attrs = json!({
        "attribName1": {"DataType": "String", "StringValue": "attribValue 1"},
        "pgbroker.priority": {"DataType": "Number", "StringValue": "7"},
    });
    let sent = s
        .ok(
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": "hello", "MessageAttributes": attrs}),
        )
        .await;
    assert_eq!(sent["MD5OfMessageBody"], "5d41402abc4b2a76b9719d911017c592");
    let got = s
        .ok(
            "ReceiveMessage",
            json!({"QueueUrl": url, "MessageAttributeNames": ["All"]}),
        )
        .await;
    let m = &messages(&got)[0];
    assert_eq!(m["MD5OfMessageAttributes"], sent["MD5OfMessageAttributes"]);
    assert_eq!(m["MessageAttributes"], attrs);
    let one = s
        .ok("ReceiveMessage", json!({"QueueUrl": url, "VisibilityTimeout": 0}))
        .await;
    assert!(messages(&one).is_empty(), "still leased: {one}");
    for i in 0..5 {
        s.queue(&format!("page-{i}"), json!({})).await;
    }
    let mut seen = Vec::new();
    let mut token: Option<Value> = None;
    loop {
        let mut req = json!({"QueueNamePrefix": "page-", "MaxResults": 2});
        if let Some(t) = &token {
            req["NextToken"] = t.clone();
        }
        let page = s.ok("ListQueues", req).await;
        seen.extend(page["QueueUrls"].as_array().expect("urls").iter().cloned());
        match page.get("NextToken") {
            Some(t) => token = Some(t.clone()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|u| u.as_str().is_some_and(|u| u.contains("/page-"))));
    s.ok(
        "TagQueue",
        json!({"QueueUrl": url, "Tags": {"team": "a", "env": "test"}}),
    )
    .await;
    s.ok("UntagQueue", json!({"QueueUrl": url, "TagKeys": ["env"]})).await;
    assert_eq!(
        s.ok("ListQueueTags", json!({"QueueUrl": url})).await,
        json!({"Tags": {"team": "a"}})
    );
}
