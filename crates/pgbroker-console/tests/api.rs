//! The admin API over a real broker: topics, the message browser (by
//! offset, timestamp and key, in bounded pages), groups, queues with
//! browse, redrive and purge; and bad input, which gets a 4xx with a
//! sentence and changes nothing.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use common::{console, Client};
use pgbroker::queues::{NackOptions, ReceiveOptions};
use pgbroker::{Header, Message, QueueConfig, Record};
use pgbroker_console::ConsoleConfig;
use pgbroker_testkit::db::{partitions, TestDb};
use serde_json::Value;

fn text(v: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64"))
        .expect("decode");
    String::from_utf8(bytes).expect("utf-8")
}

async fn open(db: &TestDb) -> Client {
    let app = console(db, ConsoleConfig::default()).await;
    let mut c = Client::loopback(&app);
    let s = c.get("/api/session").await;
    c.keep(&s);
    c
}

#[tokio::test]
async fn topics_and_messages() {
    let db = TestDb::new().await;
    let c = open(&db).await;
    let a = c.post("/api/topics", r#"{"name": "orders", "partitions": 3}"#).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(
        c.post("/api/topics", r#"{"name": "orders"}"#).await.status,
        StatusCode::CONFLICT
    );
    let a = c.post("/api/topics/orders/partitions", r#"{"additional": 1}"#).await;
    assert_eq!(a.body["partitions"], 4);
    let t = pgbroker::TopicName::new("orders").expect("name");
    let records: Vec<Record> = (0..120)
        .map(|i| Record {
            key: Some(format!("k{}", i % 7).into_bytes().into()),
            value: Some(format!("{{\"n\": {i}}}").into_bytes().into()),
            headers: vec![Header {
                key: "h".into(),
                value: Some(b"<b>v</b>".to_vec()),
            }],
            timestamp: None,
        })
        .collect();
    db.broker
        .streams()
        .produce(&t, Some(2), &records)
        .await
        .expect("produce");

    // The newest page.
    let page = c.get("/api/topics/orders/messages?partition=2&limit=20").await.body;
    let rs = page["records"].as_array().expect("records");
    assert_eq!(rs.len(), 20);
    assert_eq!(rs[0]["offset"], 100);
    assert_eq!(page["next_offset"], 120);
    assert_eq!(text(&rs[0]["value"]), "{\"n\": 100}");
    assert_eq!(text(&rs[0]["headers"][0]["value"]), "<b>v</b>");
    // From an offset, then on from next_offset.
    let page = c
        .get("/api/topics/orders/messages?partition=2&offset=10&limit=5")
        .await
        .body;
    assert_eq!(page["records"][0]["offset"], 10);
    assert_eq!(page["next_offset"], 15);
    // By timestamp: everything is newer than 1970.
    let page = c
        .get("/api/topics/orders/messages?partition=2&timestamp_ms=0&limit=1")
        .await
        .body;
    assert_eq!(page["records"][0]["offset"], 0);
    // By key, scanning at most 50 records: only k3's records among them,
    // and where to go on.
    let page = c
        .get("/api/topics/orders/messages?partition=2&key=k3&scan=50&limit=200")
        .await
        .body;
    let offsets: Vec<i64> = page["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["offset"].as_i64().expect("offset"))
        .collect();
    assert_eq!(offsets, [3, 10, 17, 24, 31, 38, 45]);
    assert_eq!(page["scanned"], 50);
    assert_eq!(page["next_offset"], 50);
    // A full page stops the search where it is: going on misses nothing.
    let page = c
        .get("/api/topics/orders/messages?partition=2&key=k3&limit=2")
        .await
        .body;
    assert_eq!(page["records"][1]["offset"], 10);
    assert_eq!(page["next_offset"], 11);
    let page = c
        .get("/api/topics/orders/messages?partition=2&key=k3&limit=1&offset=11")
        .await
        .body;
    assert_eq!(page["records"][0]["offset"], 17);

    // A test message, then read back.
    let a = c
        .post(
            "/api/topics/orders/messages",
            r#"{"partition": 1, "key": "<img src=x onerror=alert(1)>", "value": "hi", "headers": [{"key": "a", "value": null}]}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let page = c.get("/api/topics/orders/messages?partition=1").await.body;
    assert_eq!(text(&page["records"][0]["key"]), "<img src=x onerror=alert(1)>");
    assert_eq!(page["records"][0]["headers"][0]["value"], Value::Null);

    let d = c.get("/api/topics/orders").await.body;
    assert_eq!(d["partition_states"].as_array().expect("parts").len(), 4);
    assert_eq!(d["partition_states"][2]["high_watermark"], 120);

    assert_eq!(
        c.post("/api/topics/orders/delete", r#"{"confirm": "order"}"#)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.post("/api/topics/orders/delete", r#"{"confirm": "orders"}"#)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(c.get("/api/topics/orders").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let db = TestDb::new().await;
    let c = open(&db).await;
    db.topic("t", partitions(2)).await;
    db.queue("q", QueueConfig::default()).await;
    let gets = [
        "/api/topics/%3Cscript%3E",
        "/api/topics/t/messages?partition=2",
        "/api/topics/t/messages?partition=-1",
        "/api/topics/t/messages?limit=0",
        "/api/topics/t/messages?limit=100000",
        "/api/topics/t/messages?offset=1&timestamp_ms=1",
        "/api/topics/t/messages?timestamp_ms=-5",
        "/api/topics/t/messages?timestamp_ms=99999999999999999",
        "/api/topics/t/messages?scan=0",
        "/api/topics/t/messages?offset=abc",
        "/api/topics/t/messages?bogus=1",
        "/api/queues/q/messages",
        "/api/queues/q/messages?state=everything",
        "/api/queues/q/messages?state=ready&limit=0",
        "/api/queues/q/messages?state=ready&limit=501",
        "/api/queues/%00/messages?state=ready",
        "/api/history?topic=t&group=g",
        "/api/groups/%0A",
    ];
    for path in gets {
        let a = c.get(path).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}: {}", a.body);
    }
    for path in [
        "/api/topics/nope",
        "/api/queues/nope",
        "/api/topics/nope/messages",
        "/api/nothing",
    ] {
        assert_eq!(c.get(path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let posts = [
        ("/api/topics", r#"{"name": "<script>alert(1)</script>"}"#),
        ("/api/topics", r#"{"name": "ok", "partitions": 0}"#),
        ("/api/topics", r#"{"name": "ok", "partitions": 1000000}"#),
        ("/api/topics", r#"{"name": "ok", "retention_ms": -1}"#),
        ("/api/topics", r#"{"name": "ok", "extra": 1}"#),
        ("/api/topics", r#"{"name": 5}"#),
        ("/api/topics", "not json"),
        ("/api/topics/t/partitions", r#"{"additional": 0}"#),
        ("/api/topics/t/partitions", r#"{"additional": -3}"#),
        ("/api/topics/t/messages", r#"{"partition": 9, "value": "x"}"#),
        ("/api/topics/t/messages", r#"{"value": 5}"#),
        (
            "/api/topics/t/messages",
            r#"{"value": "x", "headers": [{"value": "v"}]}"#,
        ),
        ("/api/groups/g/reset", r#"{"topic": "t", "to": "sideways"}"#),
        ("/api/groups/g/reset", r#"{"topic": "t", "to": "timestamp"}"#),
        ("/api/groups/g/reset", r#"{"topic": "t", "to": "offset", "offset": -1}"#),
        ("/api/queues/q/purge", r#"{"confirm": "Q"}"#),
        ("/api/queues/q/redrive", r#"{"to": "no such/queue"}"#),
    ];
    for (path, body) in posts {
        let a = c.post(path, body).await;
        assert!(a.status.is_client_error(), "{path} {body}: {} {}", a.status, a.body);
        assert!(a.body["error"].is_string(), "{path} {body}: {}", a.body);
    }
    let topics = db.broker.topics().list().await.expect("list");
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].partitions, 2);
    let totals = db.broker.topics().totals().await.expect("totals");
    assert_eq!(totals[0].high_watermarks, 0);
}

#[tokio::test]
async fn queues_browse_redrive_and_purge() {
    let db = TestDb::new().await;
    let c = open(&db).await;
    let dlq = db.queue("jobs.dlq", QueueConfig::default()).await;
    let jobs = db.queue_failing_once("jobs", Some(&dlq)).await;
    let qs = db.broker.queues();
    for body in ["one", "<script>alert('two')</script>", "three"] {
        qs.send(&jobs, &Message::new(body)).await.expect("send");
    }
    qs.send(
        &jobs,
        &Message {
            delay: Some(Duration::from_secs(3600)),
            ..Message::new("later")
        },
    )
    .await
    .expect("send");
    let got = qs
        .receive(
            &jobs,
            &ReceiveOptions {
                max_messages: 1,
                ..ReceiveOptions::default()
            },
        )
        .await
        .expect("receive");
    qs.nack(
        &jobs,
        &[got[0].receipt.clone()],
        &NackOptions {
            error: Some("<b>boom</b>".into()),
            ..NackOptions::default()
        },
    )
    .await
    .expect("nack");
    let got = qs
        .receive(
            &jobs,
            &ReceiveOptions {
                max_messages: 1,
                ..ReceiveOptions::default()
            },
        )
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);

    let page = |q: &'static str, s: &'static str| {
        let c = &c;
        async move { c.get(&format!("/api/queues/{q}/messages?state={s}")).await.body }
    };
    assert_eq!(page("jobs", "ready").await["messages"].as_array().expect("m").len(), 1);
    assert_eq!(
        page("jobs", "in_flight").await["messages"].as_array().expect("m").len(),
        1
    );
    let delayed = page("jobs", "delayed").await;
    assert_eq!(text(&delayed["messages"][0]["body"]), "later");
    let dead = page("jobs.dlq", "dead").await;
    let dead = dead["messages"].as_array().expect("m");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["last_error"], "<b>boom</b>");
    assert_eq!(dead[0]["dead_letter_source"], "jobs");
    assert_eq!(dead[0]["dead_attempts"], 1);

    // Pages by id.
    let first = c.get("/api/queues/jobs/messages?state=ready&limit=1").await.body;
    assert!(first["next_after"].is_i64());

    let r = c.post("/api/queues/jobs.dlq/redrive", "{}").await;
    assert_eq!(r.body["moved"], 1, "{}", r.body);
    assert_eq!(qs.stats(&jobs).await.expect("stats").ready, 2);
    assert!(page("jobs.dlq", "dead").await["messages"]
        .as_array()
        .expect("m")
        .is_empty());

    let d = c.get("/api/queues/jobs").await.body;
    assert_eq!(d["stats"]["ready"], 2);
    let p = c.post("/api/queues/jobs/purge", r#"{"confirm": "jobs"}"#).await;
    assert_eq!(p.body["purged"], 4);
    assert_eq!(qs.stats(&jobs).await.expect("stats").ready, 0);
}

#[tokio::test]
async fn groups_overview_history_and_users() {
    let db = TestDb::new().await;
    let app = console(
        &db,
        ConsoleConfig {
            sample_every: Duration::from_millis(100),
            ..ConsoleConfig::default()
        },
    )
    .await;
    let mut c = Client::loopback(&app);
    let s = c.get("/api/session").await;
    c.keep(&s);
    let t = db.topic("events", partitions(2)).await;
    let records: Vec<Record> = (0..10).map(|i| Record::from_value(format!("{i}"))).collect();
    db.broker
        .streams()
        .produce(&t, Some(0), &records)
        .await
        .expect("produce");
    let g = pgbroker::GroupId::new("readers").expect("group");
    db.broker
        .groups()
        .commit(
            &g,
            None,
            &[pgbroker::groups::OffsetCommit {
                topic: t.clone(),
                partition: 0,
                offset: 4,
                metadata: None,
            }],
        )
        .await
        .expect("commit");
    let d = c.get("/api/groups/readers").await.body;
    let p0 = d["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|p| p["partition"] == 0)
        .cloned()
        .expect("partition 0");
    assert_eq!(p0["lag"], 6);
    let reset = c
        .post("/api/groups/readers/reset", r#"{"topic": "events", "to": "latest"}"#)
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let o = c.get("/api/overview").await.body;
    assert_eq!(o["postgres"]["ok"], true);
    assert_eq!(o["topics"], 1);
    assert_eq!(o["records"], 10);
    let h = c.get("/api/history?group=readers").await.body;
    let points = h["points"].as_array().expect("points");
    assert!(points.len() >= 2, "{h}");
    assert_eq!(points.last().expect("point")["lag"], 0);
    assert_eq!(c.get("/api/users").await.status, StatusCode::OK);
    let doc = c.get("/api/openapi.json").await;
    assert_eq!(doc.body["openapi"], "3.0.3");
}
