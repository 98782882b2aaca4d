//! pgbroker behind PgBouncer (Debian's, installed by scripts/setup.sh; these
//! tests fail without it). In session mode everything works, long polls
//! woken through LISTEN included; in transaction and statement modes
//! `Broker::connect` refuses with a message naming what needs a session,
//! before changing anything; the queue SQL functions work through a
//! transaction-mode pool all the same.

use std::time::{Duration, Instant};

use pgbroker::groups::OffsetCommit;
use pgbroker::queues::ReceiveOptions;
use pgbroker::streams::FetchLimits;
use pgbroker::{Broker, BrokerConfig, Error, GroupId, Message, QueueConfig, QueueName, Record, TopicName};
use pgbroker_testkit::db::{partitions, TestDb};
use pgbroker_testkit::pgbouncer::{PgBouncer, PoolMode};
use pgbroker_testkit::{database_url, TestSchema};
use tokio_postgres::{NoTls, SimpleQueryMessage};

async fn connect(url: String, schema: &str, poll_interval: Duration) -> Result<Broker, Error> {
    Broker::connect(BrokerConfig {
        database_url: url,
        schema: schema.to_string(),
        pool_size: 6,
        poll_interval,
        ..BrokerConfig::default()
    })
    .await
}

async fn direct() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&database_url(), NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_serves_streams_groups_and_queues() {
    let bouncer = PgBouncer::start(PoolMode::Session);
    let guard = TestSchema::new("t");
    let schema = guard.name();
    // Readers re-read on their own only every 30 s: a quick wake-up below
    // came through LISTEN and NOTIFY, through the pooler.
    let slow = Duration::from_secs(30);
    let writer = connect(bouncer.url(), schema, slow)
        .await
        .expect("connect through session mode");
    let reader = connect(bouncer.url(), schema, slow).await.expect("second broker");

    let t = TopicName::new("events").expect("name");
    writer.topics().create(&t, &partitions(2)).await.expect("create topic");
    let (r, topic) = (reader.clone(), t.clone());
    let waiter = tokio::spawn(async move {
        let wait = FetchLimits {
            max_wait: Duration::from_secs(20),
            ..FetchLimits::default()
        };
        let got = r.streams().fetch(&topic, 1, 0, wait).await.expect("long poll");
        (Instant::now(), got.records.len())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    let at = writer
        .streams()
        .produce(&t, Some(1), &[Record::from_value("a"), Record::from_value("b")])
        .await
        .expect("produce");
    assert_eq!(at.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![0, 1]);
    let (woke, n) = waiter.await.expect("waiter");
    assert_eq!(n, 2, "the long poll returned both records");
    assert!(
        woke.duration_since(sent) < Duration::from_secs(10),
        "woken by NOTIFY, not by the 30 s timer: {:?}",
        woke.duration_since(sent)
    );

    let g = GroupId::new("g").expect("group");
    let commit = OffsetCommit {
        topic: t.clone(),
        partition: 1,
        offset: 2,
        metadata: None,
    };
    reader.groups().commit(&g, None, &[commit]).await.expect("commit");
    let offsets = writer.groups().offsets(&g, &t).await.expect("offsets");
    assert!(offsets.iter().any(|o| o.partition == 1 && o.offset == 2), "{offsets:?}");

    let q = QueueName::new("jobs").expect("name");
    writer
        .queues()
        .create(&q, &QueueConfig::default())
        .await
        .expect("create queue");
    writer.queues().send(&q, &Message::new("job 1")).await.expect("send");
    let got = reader
        .queues()
        .receive(
            &q,
            &ReceiveOptions {
                max_messages: 10,
                ..ReceiveOptions::default()
            },
        )
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"job 1");
    reader.queues().ack(&q, &[got[0].receipt.clone()]).await.expect("ack");
    let stats = writer.queues().stats(&q).await.expect("stats");
    assert_eq!(stats.ready + stats.in_flight, 0, "{stats:?}");

    assert!(
        bouncer.log().contains("login attempt"),
        "the brokers did not connect through PgBouncer: {}",
        bouncer.log()
    );
    drop((writer, reader));
}

#[tokio::test]
async fn transaction_and_statement_modes_are_refused_before_any_change() {
    for mode in [PoolMode::Transaction, PoolMode::Statement] {
        let bouncer = PgBouncer::start(mode);
        let guard = TestSchema::new("t");
        let started = Instant::now();
        let e = connect(bouncer.url(), guard.name(), Duration::from_millis(500))
            .await
            .expect_err("a transaction-mode pooler must be refused");
        assert!(matches!(e, Error::SessionPooler { .. }), "{mode:?}: {e:?}");
        let text = e.to_string();
        for needed in [
            "pool_mode = session",
            "prepares each statement",
            "LISTEN",
            "--database-url",
        ] {
            assert!(text.contains(needed), "{mode:?}: the message lacks {needed:?}: {text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{mode:?}: {:?}",
            started.elapsed()
        );
        let found: i64 = direct()
            .await
            .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = $1", &[&guard.name()])
            .await
            .expect("schema lookup")
            .get(0);
        assert_eq!(found, 0, "{mode:?}: the refused broker created its schema");
    }
}

#[tokio::test]
async fn sql_functions_work_through_transaction_mode() {
    let db = TestDb::new().await;
    db.queue("jobs", QueueConfig::default()).await;
    db.topic("events", partitions(1)).await;
    let bouncer = PgBouncer::start(PoolMode::Transaction);
    let (c, conn) = tokio_postgres::connect(&bouncer.url(), NoTls).await.expect("connect");
    tokio::spawn(conn);
    let s = &db.schema;
    // Simple queries: PgBouncer 1.18 keeps no prepared statements in
    // transaction mode, and a client of such a pool must not rely on them.
    let one = |msgs: Vec<SimpleQueryMessage>| -> Vec<String> {
        msgs.iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).unwrap_or("").to_string())),
                _ => None,
            })
            .flatten()
            .collect()
    };
    let sent = one(c
        .simple_query(&format!("SELECT {s}.send('jobs', 'resize 1.png')"))
        .await
        .expect("send"));
    assert_eq!(sent.len(), 1);
    let got = one(c
        .simple_query(&format!("SELECT id, receipt FROM {s}.receive('jobs', max => 10)"))
        .await
        .expect("receive"));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], sent[0]);
    c.simple_query(&format!("SELECT {s}.ack('jobs', '{}')", got[1]))
        .await
        .expect("ack");
    let q = QueueName::new("jobs").expect("name");
    let stats = db.broker.queues().stats(&q).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (0, 0), "{stats:?}");
    c.simple_query(&format!(
        "SELECT partition, \"offset\" FROM {s}.produce('events', value => 'v')"
    ))
    .await
    .expect("produce");
    let t = TopicName::new("events").expect("name");
    assert_eq!(db.broker.streams().watermarks(&t, 0).await.expect("watermarks").1, 1);
}
