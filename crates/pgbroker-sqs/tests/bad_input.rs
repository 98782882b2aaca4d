//! Requests SQS refuses get the error code SQS returns, change nothing,
//! and the server keeps serving.

mod common;

use common::TestServer;
use pgbroker::QueueName;
use serde_json::json;

async fn total(server: &TestServer, queue: &str) -> i64 {
    let s = server
        .broker
        .queue_stats(&QueueName::new(queue).expect("name"))
        .await
        .expect("stats");
    s.ready + s.in_flight + s.delayed + s.dead_lettered
}

/// The server still answers a full send/receive/delete round.
async fn still_serving(server: &TestServer) {
    let url = server.queue("alive", json!({})).await;
    server
        .ok("SendMessage", json!({"QueueUrl": url, "MessageBody": "still here"}))
        .await;
    let got = server
        .ok("ReceiveMessage", json!({"QueueUrl": url, "WaitTimeSeconds": 5}))
        .await;
    assert_eq!(got["Messages"][0]["Body"], "still here");
    let handle = got["Messages"][0]["ReceiptHandle"].clone();
    server
        .ok("DeleteMessage", json!({"QueueUrl": url, "ReceiptHandle": handle}))
        .await;
}

#[tokio::test]
async fn unknown_actions_and_malformed_bodies() {
    let s = TestServer::start().await;
    s.call("FlushEverything", json!({}))
        .await
        .assert_error(400, "UnknownOperationException", "InvalidAction");
    s.raw(&[("content-type", "application/x-amz-json-1.0")], b"{}".to_vec())
        .await
        .assert_error(400, "UnknownOperationException", "InvalidAction");
    s.raw(&[("x-amz-target", "Kinesis.PutRecord")], b"{}".to_vec())
        .await
        .assert_error(400, "UnknownOperationException", "InvalidAction");
    for body in [&b"{\"QueueName\": "[..], b"[1,2]", b"\"text\"", b"\xff\xfe"] {
        s.raw(&[("x-amz-target", "AmazonSQS.CreateQueue")], body.to_vec())
            .await
            .assert_error(400, "SerializationException", "SerializationException");
    }
    // A field of the wrong type.
    s.call("CreateQueue", json!({"QueueName": 7})).await.assert_error(
        400,
        "SerializationException",
        "SerializationException",
    );
    s.call("CreateQueue", json!({}))
        .await
        .assert_error(400, "MissingParameter", "MissingParameter");
    assert!(s.broker.list_queues().await.expect("list").is_empty());
    still_serving(&s).await;
}

#[tokio::test]
async fn bodies_over_the_limit() {
    let s = TestServer::start_with(pgbroker_sqs::SqsConfig {
        max_body_bytes: 64 << 10,
        allow_anonymous: true,
        ..Default::default()
    })
    .await;
    let url = s.queue("big", json!({})).await;
    let body = json!({"QueueUrl": url, "MessageBody": "x".repeat(100 << 10)});
    s.call("SendMessage", body)
        .await
        .assert_error(413, "RequestEntityTooLarge", "RequestEntityTooLarge");
    assert_eq!(total(&s, "big").await, 0);
    // Within the body limit but over the queue's MaximumMessageSize.
    let small = s.queue("small", json!({"MaximumMessageSize": "1024"})).await;
    s.call(
        "SendMessage",
        json!({"QueueUrl": small, "MessageBody": "y".repeat(2000)}),
    )
    .await
    .assert_error(400, "InvalidParameterValue", "InvalidParameterValue");
    assert_eq!(total(&s, "small").await, 0);
    still_serving(&s).await;
}

#[tokio::test]
async fn bad_batches_change_nothing() {
    let s = TestServer::start().await;
    let url = s.queue("batches", json!({})).await;
    let entry = |id: &str| json!({"Id": id, "MessageBody": "m"});
    let cases = [
        (
            json!([]),
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
        ),
        (
            json!((0..11).map(|i| entry(&format!("e{i}"))).collect::<Vec<_>>()),
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
        ),
        (
            json!([entry("a"), entry("a")]),
            "BatchEntryIdsNotDistinct",
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
        ),
        (
            json!([entry("no spaces")]),
            "InvalidBatchEntryId",
            "AWS.SimpleQueueService.InvalidBatchEntryId",
        ),
    ];
    for (entries, shape, code) in &cases {
        s.call("SendMessageBatch", json!({"QueueUrl": url, "Entries": entries}))
            .await
            .assert_error(400, shape, code);
        s.call("DeleteMessageBatch", json!({"QueueUrl": url, "Entries": entries}))
            .await
            .assert_error(400, shape, code);
    }
    s.call("SendMessageBatch", json!({"QueueUrl": url})).await.assert_error(
        400,
        "EmptyBatchRequest",
        "AWS.SimpleQueueService.EmptyBatchRequest",
    );
    assert_eq!(total(&s, "batches").await, 0);
    // One bad entry fails alone; the others are sent.
    let mixed = s
        .ok(
            "SendMessageBatch",
            json!({"QueueUrl": url, "Entries": [entry("ok"), {"Id": "bad", "MessageBody": "\u{1}"}]}),
        )
        .await;
    assert_eq!(mixed["Successful"].as_array().expect("list").len(), 1);
    assert_eq!(mixed["Failed"][0]["Id"], "bad");
    assert_eq!(mixed["Failed"][0]["Code"], "InvalidMessageContents");
    assert_eq!(mixed["Failed"][0]["SenderFault"], true);
    assert_eq!(total(&s, "batches").await, 1);
    still_serving(&s).await;
}

#[tokio::test]
async fn invalid_receipt_handles() {
    let s = TestServer::start().await;
    let url = s.queue("receipts", json!({})).await;
    s.ok("SendMessage", json!({"QueueUrl": url, "MessageBody": "m"})).await;
    let got = s.ok("ReceiveMessage", json!({"QueueUrl": url})).await;
    assert_eq!(got["Messages"].as_array().expect("messages").len(), 1);
    for handle in ["", "garbage", "1:not-a-uuid", "-5:00000000-0000-0000-0000-000000000000"] {
        s.call("DeleteMessage", json!({"QueueUrl": url, "ReceiptHandle": handle}))
            .await
            .assert_error(400, "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid");
        s.call(
            "ChangeMessageVisibility",
            json!({"QueueUrl": url, "ReceiptHandle": handle, "VisibilityTimeout": 0}),
        )
        .await
        .assert_error(400, "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid");
    }
    let batch = s
        .ok(
            "DeleteMessageBatch",
            json!({"QueueUrl": url, "Entries": [{"Id": "x", "ReceiptHandle": "garbage"}]}),
        )
        .await;
    assert_eq!(batch["Failed"][0]["Code"], "ReceiptHandleIsInvalid");
    // A well-formed handle of no current lease: not in flight.
    let stale = "1:00000000-0000-4000-8000-000000000000";
    s.call(
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": stale, "VisibilityTimeout": 10}),
    )
    .await
    .assert_error(400, "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight");
    let st = s
        .broker
        .queue_stats(&QueueName::new("receipts").expect("name"))
        .await
        .expect("stats");
    assert_eq!((st.ready, st.in_flight), (0, 1));
    still_serving(&s).await;
}

#[tokio::test]
async fn names_and_limits_sqs_refuses() {
    let s = TestServer::start().await;
    let long = "q".repeat(81);
    for name in [
        "",
        "a b",
        "semi;colon",
        "dot.ted",
        long.as_str(),
        ".fifo",
        "x'; drop table queues; --",
    ] {
        s.call("CreateQueue", json!({"QueueName": name})).await.assert_error(
            400,
            "InvalidParameterValue",
            "InvalidParameterValue",
        );
    }
    // A .fifo name needs FifoQueue=true, and FifoQueue=true needs the name.
    s.call("CreateQueue", json!({"QueueName": "f.fifo"}))
        .await
        .assert_error(400, "InvalidParameterValue", "InvalidParameterValue");
    s.call(
        "CreateQueue",
        json!({"QueueName": "f", "Attributes": {"FifoQueue": "true"}}),
    )
    .await
    .assert_error(400, "InvalidAttributeValue", "InvalidAttributeValue");
    s.call(
        "CreateQueue",
        json!({"QueueName": "f", "Attributes": {"Colour": "blue"}}),
    )
    .await
    .assert_error(400, "InvalidAttributeName", "InvalidAttributeName");
    s.call(
        "CreateQueue",
        json!({"QueueName": "f", "Attributes": {"VisibilityTimeout": "43201"}}),
    )
    .await
    .assert_error(400, "InvalidAttributeValue", "InvalidAttributeValue");
    assert!(s.broker.list_queues().await.expect("list").is_empty());

    let url = s.queue("limits", json!({})).await;
    for (field, value) in [
        ("WaitTimeSeconds", 21),
        ("MaxNumberOfMessages", 11),
        ("MaxNumberOfMessages", 0),
        ("VisibilityTimeout", -1),
    ] {
        s.call("ReceiveMessage", json!({"QueueUrl": url, field: value}))
            .await
            .assert_error(400, "InvalidParameterValue", "InvalidParameterValue");
    }
    s.call(
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "m", "DelaySeconds": 901}),
    )
    .await
    .assert_error(400, "InvalidParameterValue", "InvalidParameterValue");
    s.call(
        "GetQueueAttributes",
        json!({"QueueUrl": url, "AttributeNames": ["Nope"]}),
    )
    .await
    .assert_error(400, "InvalidAttributeName", "InvalidAttributeName");
    s.call("GetQueueUrl", json!({"QueueName": "missing"}))
        .await
        .assert_error(400, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue");
    s.call(
        "SendMessage",
        json!({"QueueUrl": "http://h/000000000000/missing", "MessageBody": "m"}),
    )
    .await
    .assert_error(400, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue");
    assert_eq!(total(&s, "limits").await, 0);
    still_serving(&s).await;
}
