//! `/metrics` of a running `pgbroker serve` counts the messages it
//! dead-letters: a message received through the SQS API whose lease
//! expires after its last attempt is dead-lettered by the next receive,
//! and `pgbroker_queue_dead_letters_total` of its queue says so.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pgbroker_testkit::cli::serve::{free_port, Server};
use pgbroker_testkit::cli::Env;

/// One HTTP/1.1 request on a connection of its own; status line and body.
fn http(port: u16, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(request.as_bytes()).expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// Calls SQS `action` with the JSON `input`; the answer's body.
fn sqs(port: u16, action: &str, input: &str) -> String {
    let (status, body) = http(
        port,
        &format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
             Content-Type: application/x-amz-json-1.0\r\nX-Amz-Target: AmazonSQS.{action}\r\n\
             Content-Length: {}\r\n\r\n{input}",
            input.len()
        ),
    );
    assert!(status.contains(" 200"), "{action}: {status}\n{body}");
    body
}

/// The value of the sample `series` in a Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_dead_lettered_message_is_counted_on_metrics() {
    let env = Env::new();
    env.ok(&["migrate"]);
    env.ok(&["queue", "create", "sjobs-dlq"]);
    env.ok(&[
        "queue",
        "create",
        "sjobs",
        "--max-attempts",
        "1",
        "--dead-letter",
        "sjobs-dlq",
    ]);
    let sqs_port = free_port();
    let listen = format!("127.0.0.1:{sqs_port}");
    let server = Server::start(&env, &["--sqs-listen", &listen, "--sqs-allow-anonymous"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", sqs_port)).is_err() {
        assert!(Instant::now() < deadline, "the SQS listener did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let answer = sqs(sqs_port, "GetQueueUrl", r#"{"QueueName":"sjobs"}"#);
    let url = answer
        .split("\"QueueUrl\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no QueueUrl in {answer}"))
        .to_string();
    sqs(
        sqs_port,
        "SendMessage",
        &format!(r#"{{"QueueUrl":"{url}","MessageBody":"doomed"}}"#),
    );
    let first = sqs(
        sqs_port,
        "ReceiveMessage",
        &format!(r#"{{"QueueUrl":"{url}","MaxNumberOfMessages":1,"VisibilityTimeout":1}}"#),
    );
    assert!(first.contains("doomed"), "{first}");
    // Its only attempt's lease expires; the next receive dead-letters it.
    std::thread::sleep(Duration::from_millis(1500));
    let second = sqs(
        sqs_port,
        "ReceiveMessage",
        &format!(r#"{{"QueueUrl":"{url}","MaxNumberOfMessages":1}}"#),
    );
    assert!(!second.contains("doomed"), "{second}");
    let stats = env.ok(&["queue", "stats", "sjobs-dlq"]);
    assert!(
        stats.contains('1'),
        "the dead letter is in the dead-letter queue: {stats}"
    );

    let (status, text) = http(
        server.http_port,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            server.http_port
        ),
    );
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(
        sample(&text, "pgbroker_queue_dead_letters_total{queue=\"sjobs\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "pgbroker_queue_dead_letters_total{queue=\"sjobs-dlq\"}"),
        None,
        "nothing died in the dead-letter queue"
    );
    assert!(
        text.contains("# HELP pgbroker_queue_dead_letters_total "),
        "no HELP line"
    );
}
