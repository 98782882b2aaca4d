//! Every bad argument to the SQL functions raises its stable SQLSTATE with
//! a clear message, and changes nothing. Each test runs in a fresh schema
//! of a real PostgreSQL.

use pgbroker::sql_api::sqlstate::{
    INVALID_ARGUMENT as INVALID, INVALID_NAME, STALE_RECEIPT, TOO_LARGE, UNKNOWN_PARTITION, UNKNOWN_QUEUE,
    UNKNOWN_TOPIC,
};
use pgbroker::{QueueConfig, TopicConfig};
use pgbroker_testkit::db::{assert_refused, partitions, TestDb};
use tokio_postgres::Client;

/// Each call must fail with its code and a "pgbroker: " message, and
/// leave everything as it was.
async fn all_refused(c: &Client, s: &str, cases: &[(&str, &str)]) {
    for (call, code) in cases {
        assert_refused(c, s, &format!("SELECT * FROM {s}.{call}"), code).await;
    }
}

#[tokio::test]
async fn bad_sends_are_refused() {
    let db = TestDb::new().await;
    db.queue(
        "small",
        QueueConfig {
            max_message_bytes: 10,
            ..QueueConfig::default()
        },
    )
    .await;
    let c = db.raw().await;
    let s = &db.schema;
    c.batch_execute(&format!(
        "SELECT {s}.send('small', 'x', group_key => 'g', dedup_key => 'k')"
    ))
    .await
    .expect("one message, so that a failed send has state to change");
    let long = "q".repeat(250);
    let key = "k".repeat(256);
    let cases: Vec<(String, &str)> = vec![
        ("send('nope', 'x')".into(), UNKNOWN_QUEUE),
        ("send('x''; DROP TABLE queues; --', 'x')".into(), INVALID_NAME),
        (format!("send('{long}', 'x')"), INVALID_NAME),
        ("send(NULL, 'x')".into(), INVALID_NAME),
        ("send('..', 'x')".into(), INVALID_NAME),
        ("send('small', NULL::bytea)".into(), INVALID),
        ("send('small', 'x', priority => 10)".into(), INVALID),
        ("send('small', 'x', priority => -1)".into(), INVALID),
        ("send('small', 'x', delay => interval '-1 s')".into(), INVALID),
        ("send('small', 'x', delay => interval '31 days')".into(), INVALID),
        (
            "send('small', 'x', delay => interval '1 s', deliver_at => now())".into(),
            INVALID,
        ),
        (
            "send('small', 'x', deliver_at => now() + interval '31 days')".into(),
            INVALID,
        ),
        ("send('small', 'x', dedup_key => '')".into(), INVALID),
        (format!("send('small', 'x', dedup_key => '{key}')"), INVALID),
        ("send('small', 'x', group_key => E'a\\nb')".into(), INVALID),
        ("send('small', 'x', headers => '[1]')".into(), INVALID),
        ("send('small', 'x', headers => '\"h\"')".into(), INVALID),
        (
            "send('small', 'x', headers => '[{\"key\": \"a\", \"value\": \"not base64!\"}]')".into(),
            INVALID,
        ),
        ("send('small', '12345678901')".into(), TOO_LARGE),
        (
            "send('small', '12345', headers => '{\"key\": \"123456\"}')".into(),
            TOO_LARGE,
        ),
        (
            "send_batch('small', ARRAY['a', 'b'], dedup_keys => ARRAY['k'])".into(),
            INVALID,
        ),
        ("send_batch('small', ARRAY['a', '12345678901'])".into(), TOO_LARGE),
        (
            "send_batch('small', ARRAY['a', 'b'], group_keys => ARRAY['g', ''])".into(),
            INVALID,
        ),
        ("send_batch('small', NULL::text[])".into(), INVALID),
    ];
    let cases: Vec<(&str, &str)> = cases.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    all_refused(&c, s, &cases).await;
}

#[tokio::test]
async fn bad_receives_and_settlements_are_refused() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    let c = db.raw().await;
    let s = &db.schema;
    c.batch_execute(&format!("SELECT {s}.send('jobs', 'a'); SELECT {s}.send('jobs', 'b')"))
        .await
        .expect("send");
    let rows = c
        .query(&format!("SELECT receipt FROM {s}.receive('jobs', max => 2)"), &[])
        .await
        .expect("receive");
    let (a, b): (String, String) = (rows[0].get(0), rows[1].get(0));
    let (id_a, token_a) = a.split_once(':').expect("receipt shape");
    let wrong = format!("{id_a}:00000000-0000-4000-8000-000000000000");
    let unknown = "999999999:00000000-0000-4000-8000-000000000000";
    let upper = format!("{id_a}:{}", token_a.to_uppercase());
    let cases: Vec<(String, &str)> = vec![
        ("receive('nope')".into(), UNKNOWN_QUEUE),
        ("receive('a b')".into(), INVALID_NAME),
        ("receive('jobs', max => 0)".into(), INVALID),
        ("receive('jobs', max => 1001)".into(), INVALID),
        ("receive('jobs', max => NULL)".into(), INVALID),
        ("receive('jobs', visibility_timeout => interval '0 s')".into(), INVALID),
        (
            "receive('jobs', visibility_timeout => interval '13 hours')".into(),
            INVALID,
        ),
        ("receive('jobs', wait => interval '2 minutes')".into(), INVALID),
        ("receive('jobs', wait => interval '-1 s')".into(), INVALID),
        ("ack('jobs', 'garbage')".into(), INVALID),
        ("ack('jobs', '0:00000000-0000-4000-8000-000000000000')".into(), INVALID),
        ("ack('jobs', NULL::text)".into(), INVALID),
        ("ack('jobs', NULL::text[])".into(), INVALID),
        (format!("ack('nope', '{a}')"), UNKNOWN_QUEUE),
        (format!("ack('jobs', '{wrong}')"), STALE_RECEIPT),
        (format!("ack('jobs', '{unknown}')"), STALE_RECEIPT),
        // All or nothing: one stale receipt refuses the good one too.
        (format!("ack('jobs', ARRAY['{a}', '{wrong}'])"), STALE_RECEIPT),
        (format!("ack('jobs', ARRAY['{b}', '{unknown}'])"), STALE_RECEIPT),
        (format!("nack('jobs', ARRAY['{a}', '{wrong}'])"), STALE_RECEIPT),
        (format!("nack('jobs', '{a}', delay => interval '-1 s')"), INVALID),
        (format!("nack('jobs', '{a}', delay => interval '31 days')"), INVALID),
        (format!("nack('jobs', '{wrong}')"), STALE_RECEIPT),
        (format!("extend('jobs', '{a}', interval '0 s')"), INVALID),
        (format!("extend('jobs', '{a}', interval '13 hours')"), INVALID),
        (format!("extend('jobs', '{a}', NULL)"), INVALID),
        (
            format!("extend('jobs', ARRAY['{a}', '{wrong}'], interval '1 s')"),
            STALE_RECEIPT,
        ),
        ("stats('nope')".into(), UNKNOWN_QUEUE),
        ("stats('')".into(), INVALID_NAME),
    ];
    let cases: Vec<(&str, &str)> = cases.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    all_refused(&c, s, &cases).await;
    // Two receipts of one message, the current one among them: refused.
    let dup = format!("ack('jobs', ARRAY['{a}', '{wrong}', '{b}'])");
    all_refused(&c, s, &[(dup.as_str(), STALE_RECEIPT)]).await;
    // Receipts are case-insensitive, as the library's are; the good ones
    // still work after all the refusals.
    c.batch_execute(&format!("SELECT {s}.ack('jobs', ARRAY['{upper}', '{b}'])"))
        .await
        .expect("ack both");
}

#[tokio::test]
async fn bad_produces_are_refused() {
    let db = TestDb::new().await;
    db.topic(
        "orders",
        TopicConfig {
            max_message_bytes: 10,
            ..partitions(3)
        },
    )
    .await;
    let c = db.raw().await;
    let s = &db.schema;
    c.batch_execute(&format!("SELECT {s}.produce('orders', 'v', key => 'k')"))
        .await
        .expect("one record");
    let cases = [
        ("produce('nope', 'v')", UNKNOWN_TOPIC),
        ("produce('bad name', 'v')", INVALID_NAME),
        ("produce('x''; DROP TABLE topics; --', 'v')", INVALID_NAME),
        ("produce(NULL, 'v')", INVALID_NAME),
        ("produce('orders', 'v', to_partition => 3)", UNKNOWN_PARTITION),
        ("produce('orders', 'v', to_partition => -1)", UNKNOWN_PARTITION),
        ("produce('orders', '12345678901')", TOO_LARGE),
        ("produce('orders', '123456', key => '12345')", TOO_LARGE),
        ("produce('orders', 'v', headers => '[1]')", INVALID),
        ("produce_batch('orders', NULL::text[])", INVALID),
        ("produce_batch('orders', ARRAY['a', 'b'], keys => ARRAY['k'])", INVALID),
        ("produce_batch('orders', ARRAY['a', '12345678901'])", TOO_LARGE),
    ];
    all_refused(&c, s, &cases).await;
}
