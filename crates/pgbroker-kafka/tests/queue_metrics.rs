//! `/metrics` of the HTTP listener: queue depths and consumer lag read
//! from Postgres, the queue operations this process ran, and a `# HELP`
//! line for every metric. One test per binary: the recorder and its
//! counters belong to the process.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pgbroker::queues::NackOptions;
use pgbroker::{Message, QueueConfig};
use pgbroker_kafka::Shutdown;
use pgbroker_testkit::db::{receipts, take, TestDb};

/// GET `path`; the body.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of the sample `name{labels}`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_metrics_and_help_lines() {
    let db = TestDb::new().await;
    let q = db.broker.queues();
    let dlq = db.queue("mjobs.dlq", QueueConfig::default()).await;
    let jobs = db.queue_failing_once("mjobs", Some(&dlq)).await;

    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let shutdown = Shutdown::default();
    let http = tokio::spawn(pgbroker_kafka::serve_http(db.broker.clone(), addr, shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the HTTP listener did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 4 sent; 3 received; 1 acknowledged; 2 released out of attempts,
    // so dead-lettered; 1 of them redriven back.
    let sent: Vec<Message> = (0..4).map(|i| Message::new(format!("m{i}"))).collect();
    q.send_batch(&jobs, &sent).await.expect("send");
    let got = q.receive(&jobs, &take(3)).await.expect("receive");
    assert_eq!(got.len(), 3);
    let r = receipts(&got);
    q.ack(&jobs, &r[..1]).await.expect("ack");
    let nack = NackOptions {
        delay: None,
        error: Some("broken".into()),
    };
    q.nack(&jobs, &r[1..], &nack).await.expect("nack");
    let moved = q.redrive(&dlq, Some(&jobs)).await.expect("redrive");
    assert_eq!(moved, 2);
    // One of the two back in jobs is received and dead-lettered again.
    let again = q.receive(&jobs, &take(1)).await.expect("receive");
    q.nack(&jobs, &receipts(&again), &nack).await.expect("nack");
    let stats = q.stats(&jobs).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead_lettered), (2, 0, 1));

    // Consumer lag, listed for every group in one statement: 4 records,
    // 1 committed.
    let topic = db.topic("mtopic", pgbroker_testkit::db::partitions(1)).await;
    let records: Vec<pgbroker::Record> = (0..4).map(|i| pgbroker::Record::from_value(format!("r{i}"))).collect();
    db.broker
        .streams()
        .produce(&topic, Some(0), &records)
        .await
        .expect("produce");
    let group = pgbroker::GroupId::new("mgroup").expect("group");
    let one = pgbroker::groups::OffsetCommit {
        topic: topic.clone(),
        partition: 0,
        offset: 1,
        metadata: None,
    };
    db.broker.groups().commit(&group, None, &[one]).await.expect("commit");

    let text = get(addr, "/metrics");
    assert_eq!(
        sample(
            &text,
            "pgbroker_consumer_lag{group=\"mgroup\",topic=\"mtopic\",partition=\"0\"}"
        ),
        3.0
    );
    let jobs_label = "queue=\"mjobs\"";
    let value = |name: &str, extra: &str| sample(&text, &format!("{name}{{{jobs_label}{extra}}}"));
    assert_eq!(value("pgbroker_queue_sent_messages_total", ""), 4.0);
    assert_eq!(value("pgbroker_queue_received_messages_total", ""), 4.0);
    assert_eq!(value("pgbroker_queue_acked_messages_total", ""), 1.0);
    assert_eq!(value("pgbroker_queue_nacked_messages_total", ""), 3.0);
    assert_eq!(value("pgbroker_queue_dead_letters_total", ""), 3.0);
    assert_eq!(
        sample(&text, "pgbroker_queue_redriven_messages_total{queue=\"mjobs.dlq\"}"),
        2.0
    );
    assert_eq!(value("pgbroker_queue_messages", ",state=\"ready\""), 2.0);
    assert_eq!(value("pgbroker_queue_messages", ",state=\"in_flight\""), 0.0);
    assert_eq!(value("pgbroker_queue_messages", ",state=\"delayed\""), 0.0);
    assert_eq!(value("pgbroker_queue_dead_lettered_messages", ""), 1.0);
    assert_eq!(
        sample(&text, "pgbroker_queue_messages{queue=\"mjobs.dlq\",state=\"ready\"}"),
        1.0
    );
    let age = value("pgbroker_queue_oldest_ready_age_seconds", "");
    assert!(age > 0.0 && age < 600.0, "{age}");

    // Every metric family has its HELP line before its TYPE line, and
    // every sample belongs to a family so described.
    let mut families: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_whitespace().next().expect("name");
            assert!(rest.len() > name.len() + 5, "empty help: {line}");
            families.entry(name).or_default().0 = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().expect("name");
            let f = families.entry(name).or_default();
            assert!(f.0, "{name} has no # HELP before its # TYPE");
            f.1 = true;
        } else if !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().expect("name");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| families.contains_key(f)))
                .unwrap_or(name);
            assert_eq!(families.get(family), Some(&(true, true)), "{line}: no HELP and TYPE");
        }
    }
    assert!(families.len() >= 8, "{families:?}");

    shutdown.trigger();
    http.await.expect("join").expect("HTTP listener");
}
