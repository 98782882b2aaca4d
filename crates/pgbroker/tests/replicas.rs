//! Reads from standbys (`BrokerConfig::replica_urls`): what a standby
//! serves, and the fall-back to the primary. A real standby under load is
//! in the `replica-reads` fault scenario; here the "standby" is the test
//! database itself (it has replayed everything) or an address where
//! nothing listens.

use std::time::{Duration, Instant};

use pgbroker::streams::FetchLimits;
use pgbroker::{Broker, BrokerConfig, Error, Invalid, Record, TopicName};
use pgbroker_testkit::database_url;
use pgbroker_testkit::db::{partitions, TestDb};

fn values(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: None,
            value: Some(format!("v{i}").into_bytes().into()),
            headers: vec![],
            timestamp: None,
        })
        .collect()
}

/// A broker on `db`'s schema with no record cache (every fetch reads
/// Postgres) and these standbys.
async fn reading_from(db: &TestDb, replica_urls: Vec<String>) -> pgbroker::Result<Broker> {
    Broker::connect(BrokerConfig {
        database_url: database_url(),
        schema: db.schema.clone(),
        pool_size: 4,
        cache_bytes_per_partition: 0,
        replica_urls,
        ..BrokerConfig::default()
    })
    .await
}

async fn read_all(broker: &Broker, t: &TopicName) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let r = broker
            .streams()
            .fetch(
                t,
                0,
                offset,
                FetchLimits {
                    max_records: 7,
                    ..FetchLimits::default()
                },
            )
            .await
            .expect("fetch");
        if r.records.is_empty() {
            return out;
        }
        assert_eq!(r.records[0].offset, offset, "no gap, no going back");
        offset = r.next_offset;
        out.extend(
            r.records
                .iter()
                .map(|x| String::from_utf8_lossy(x.value.as_deref().unwrap_or_default()).into_owned()),
        );
    }
}

/// Backends of the test database named `application_name`.
async fn sessions_named(db: &TestDb, name: &str) -> i64 {
    db.raw()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
            &[&name],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn a_standby_that_has_the_records_serves_them() {
    let db = TestDb::new().await;
    let t = db.topic("replicated", partitions(1)).await;
    db.broker
        .streams()
        .produce(&t, Some(0), &values(20))
        .await
        .expect("produce");
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let replica = format!("{url}{sep}application_name=pgbroker-replica-test");
    let broker = reading_from(&db, vec![replica]).await.expect("connect");
    let expected: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    assert_eq!(read_all(&broker, &t).await, expected);
    assert!(
        sessions_named(&db, "pgbroker-replica-test").await >= 1,
        "the records were read on the standby's connections"
    );
    // Past the end: out of range, decided by the primary.
    let past = broker.streams().fetch(&t, 0, 21, FetchLimits::default()).await;
    assert!(matches!(past, Err(Error::OffsetOutOfRange { .. })), "{past:?}");
}

#[tokio::test]
async fn an_unreachable_standby_leaves_the_reads_to_the_primary() {
    let db = TestDb::new().await;
    let t = db.topic("alone", partitions(1)).await;
    db.broker
        .streams()
        .produce(&t, Some(0), &values(15))
        .await
        .expect("produce");
    let nowhere = "postgres://postgres@127.0.0.1:1/postgres".to_string();
    let broker = reading_from(&db, vec![nowhere])
        .await
        .expect("connect: standbys are not dialled at start");
    let started = Instant::now();
    let expected: Vec<String> = (0..15).map(|i| format!("v{i}")).collect();
    assert_eq!(read_all(&broker, &t).await, expected);
    assert!(started.elapsed() < Duration::from_secs(5), "no wait for the standby");
}

#[tokio::test]
async fn a_bad_standby_url_is_refused_at_start() {
    let db = TestDb::new().await;
    for bad in ["mysql://root@localhost/db", "host=localhost port=notaport"] {
        let err = reading_from(&db, vec![bad.to_string()]).await.expect_err(bad);
        assert!(
            matches!(
                err,
                Error::Invalid {
                    what: Invalid::DatabaseUrl,
                    ..
                }
            ),
            "{bad}: {err:?}"
        );
    }
}
