//! Consume, produce and commit offsets inside the application's own
//! Postgres transaction: the records polled are processed exactly once,
//! together with whatever else the application writes.

use std::time::Duration;

use pgbroker::groups::{JoinOptions, OffsetCommit, Strategy};
use pgbroker::streams::{ConsumedRecord, FetchLimits, OffsetReset};
use pgbroker::{Consumer, ConsumerConfig, Error, GroupId, Record, TopicName};
use pgbroker_testkit::db::{partitions, TestDb};

fn config(topic: &TopicName, group: &GroupId) -> ConsumerConfig {
    ConsumerConfig {
        join: JoinOptions {
            client_id: "etl".into(),
            session_timeout: Duration::from_secs(30),
            strategy: Strategy::Sticky,
        },
        reset: OffsetReset::Earliest,
        max_records: 5,
        ..ConsumerConfig::new(vec![topic.clone()], Some(group.clone()))
    }
}

fn text(r: &ConsumedRecord) -> String {
    String::from_utf8(r.record.value.clone().expect("value").to_vec()).expect("utf8")
}

async fn poll_some(consumer: &mut Consumer) -> Vec<ConsumedRecord> {
    for _ in 0..50 {
        let got = consumer.poll(Duration::from_millis(200)).await.expect("poll");
        if !got.is_empty() {
            return got;
        }
    }
    panic!(
        "nothing to poll at {:?}",
        consumer
            .assignment()
            .iter()
            .map(|tp| consumer.position(tp))
            .collect::<Vec<_>>()
    );
}

async fn outputs(db: &TestDb, topic: &TopicName) -> Vec<String> {
    let limits = FetchLimits {
        max_wait: Duration::ZERO,
        ..FetchLimits::default()
    };
    // A fetch may answer with fewer records than there are: read to the end.
    let (mut out, mut at) = (Vec::new(), 0);
    loop {
        let fetched = db.broker.streams().fetch(topic, 0, at, limits).await.expect("fetch");
        if fetched.records.is_empty() {
            return out;
        }
        at = fetched.next_offset;
        out.extend(
            fetched
                .records
                .iter()
                .map(|r| String::from_utf8(r.value.clone().expect("value").to_vec()).expect("utf8")),
        );
    }
}

async fn committed(db: &TestDb, group: &GroupId, topic: &TopicName) -> Option<i64> {
    let offsets = db.broker.groups().offsets(group, topic).await.expect("offsets");
    offsets.iter().find(|c| c.partition == 0).map(|c| c.offset)
}

/// Processes one poll's records in one transaction: the outputs, a row of
/// the application's own and the input offsets, then commits or rolls back.
async fn process(db: &TestDb, consumer: &Consumer, records: &[ConsumedRecord], output: &TopicName, commit: bool) {
    let mut client = db.raw().await;
    let tx = client.transaction().await.expect("begin");
    let out: Vec<Record> = records
        .iter()
        .map(|r| Record::from_value(text(r).to_uppercase()))
        .collect();
    db.broker
        .streams()
        .produce_in(&tx, output, Some(0), &out)
        .await
        .expect("produce_in");
    tx.execute(
        &format!("INSERT INTO {}.processed SELECT unnest($1::text[])", db.schema),
        &[&records.iter().map(text).collect::<Vec<_>>()],
    )
    .await
    .expect("own row");
    consumer.commit_in(&tx).await.expect("commit_in");
    if commit {
        tx.commit().await.expect("commit");
    } else {
        tx.rollback().await.expect("rollback");
    }
}

#[tokio::test]
async fn consume_transform_produce_commits_once_or_not_at_all() {
    let db = TestDb::new().await;
    let input = db.topic("in", partitions(1)).await;
    let output = db.topic("out", partitions(1)).await;
    let group = GroupId::new("etl").expect("group");
    let records: Vec<Record> = (0..10).map(|i| Record::from_value(format!("v{i}"))).collect();
    db.broker
        .streams()
        .produce(&input, Some(0), &records)
        .await
        .expect("produce");
    db.raw()
        .await
        .batch_execute(&format!(
            "CREATE TABLE {}.processed (value text PRIMARY KEY)",
            db.schema
        ))
        .await
        .expect("table");
    let mut consumer = db
        .broker
        .streams()
        .consumer(config(&input, &group))
        .await
        .expect("consumer");

    // A rolled-back transaction leaves no output, no offset and no row.
    let first = poll_some(&mut consumer).await;
    assert_eq!(text(&first[0]), "v0");
    process(&db, &consumer, &first, &output, false).await;
    assert!(
        outputs(&db, &output).await.is_empty(),
        "output of a rolled-back transaction"
    );
    assert_eq!(
        committed(&db, &group, &input).await,
        None,
        "offset of a rolled-back transaction"
    );

    // Rewound, the same records come again and are processed for good.
    consumer.rewind().await.expect("rewind");
    let again = poll_some(&mut consumer).await;
    assert_eq!(
        again.iter().map(text).collect::<Vec<_>>(),
        first.iter().map(text).collect::<Vec<_>>()
    );
    process(&db, &consumer, &again, &output, true).await;
    let done = again.len();
    assert_eq!(
        committed(&db, &group, &input).await,
        Some(i64::try_from(done).expect("len"))
    );

    while outputs(&db, &output).await.len() < 10 {
        let next = poll_some(&mut consumer).await;
        process(&db, &consumer, &next, &output, true).await;
    }
    let expected: Vec<String> = (0..10).map(|i| format!("V{i}")).collect();
    assert_eq!(
        outputs(&db, &output).await,
        expected,
        "each input's effect exactly once, in order"
    );
    assert_eq!(committed(&db, &group, &input).await, Some(10));
    let rows = db
        .raw()
        .await
        .query_one(&format!("SELECT count(*) FROM {}.processed", db.schema), &[])
        .await
        .expect("count");
    assert_eq!(rows.get::<_, i64>(0), 10);

    // A consumer that starts afresh resumes after the last commit.
    consumer.close().await.expect("close");
    let mut next = db
        .broker
        .streams()
        .consumer(config(&input, &group))
        .await
        .expect("consumer");
    assert!(next.poll(Duration::from_millis(300)).await.expect("poll").is_empty());
}

#[tokio::test]
async fn a_fenced_member_commits_nothing_in_its_transaction() {
    let db = TestDb::new().await;
    let input = db.topic("in", partitions(1)).await;
    let output = db.topic("out", partitions(1)).await;
    let group = GroupId::new("etl").expect("group");
    db.broker
        .streams()
        .produce(&input, Some(0), &[Record::from_value("a")])
        .await
        .expect("produce");
    let mut consumer = db
        .broker
        .streams()
        .consumer(config(&input, &group))
        .await
        .expect("consumer");
    let polled = poll_some(&mut consumer).await;
    let m = consumer.membership().expect("member").clone();
    let stale = [OffsetCommit {
        topic: input.clone(),
        partition: 0,
        offset: i64::try_from(polled.len()).expect("len"),
        metadata: None,
    }];

    let mut client = db.raw().await;
    let tx = client.transaction().await.expect("begin");
    db.broker
        .streams()
        .produce_in(&tx, &output, Some(0), &[Record::from_value("A")])
        .await
        .expect("produce_in");
    let err = db
        .broker
        .groups()
        .commit_in(&tx, &group, Some((&m.member_id, m.generation + 1)), &stale)
        .await
        .expect_err("a wrong generation is fenced");
    assert!(matches!(err, Error::RebalanceInProgress { .. }), "{err:?}");
    let err = db
        .broker
        .groups()
        .commit_in(&tx, &group, Some(("nobody", m.generation)), &stale)
        .await
        .expect_err("an unknown member is fenced");
    assert!(matches!(err, Error::UnknownMember { .. }), "{err:?}");
    tx.rollback().await.expect("rollback");
    assert!(outputs(&db, &output).await.is_empty());
    assert_eq!(committed(&db, &group, &input).await, None);

    // Bad input is refused before anything is written.
    let tx = client.transaction().await.expect("begin");
    let negative = [OffsetCommit {
        offset: -1,
        ..stale[0].clone()
    }];
    let err = db
        .broker
        .groups()
        .commit_in(&tx, &group, Some((&m.member_id, m.generation)), &negative)
        .await
        .expect_err("negative offset");
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    tx.commit().await.expect("commit");
    assert_eq!(committed(&db, &group, &input).await, None);
}
