//! Plain appends to one partition made together: every call gets the
//! offsets its own records landed at, consecutive and in its order, and a
//! bad call is refused alone.

use std::collections::HashMap;
use std::time::Duration;

use pgbroker::streams::FetchLimits;
use pgbroker::{Error, Record};
use pgbroker_testkit::db::{partitions, TestDb};

const CALLERS: usize = 24;
const CALLS: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_get_their_own_offsets() {
    let db = TestDb::new().await;
    // Small segments, so that batches made together cross segment ends.
    let config = pgbroker::TopicConfig {
        segment_records: 50,
        max_message_bytes: 4096,
        ..partitions(1)
    };
    let topic = db.topic("together", config).await;
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (broker, topic) = (db.broker.clone(), topic.clone());
            tokio::spawn(async move {
                let mut placed = Vec::new();
                for k in 0..CALLS {
                    let n = 1 + (c * 7 + k * 3) % 9;
                    let values: Vec<String> = (0..n).map(|i| format!("c{c}-k{k}-r{i}")).collect();
                    let records: Vec<Record> = values.iter().map(|v| Record::from_value(v.as_bytes())).collect();
                    let at = broker
                        .streams()
                        .produce(&topic, Some(0), &records)
                        .await
                        .expect("produce");
                    for (v, pos) in values.into_iter().zip(at) {
                        placed.push((pos.offset, v));
                    }
                    // Every third caller also sends a record over the
                    // topic's size limit: refused, alone.
                    if c % 3 == 0 && k == CALLS / 2 {
                        let big = [Record::from_value(vec![b'x'; 5000])];
                        let e = broker.streams().produce(&topic, Some(0), &big).await;
                        assert!(matches!(e, Err(Error::RecordTooLarge { .. })), "{e:?}");
                    }
                }
                placed
            })
        })
        .collect();
    let mut placed: HashMap<i64, String> = HashMap::new();
    for c in callers {
        for (offset, value) in c.await.expect("caller") {
            assert!(
                placed.insert(offset, value).is_none(),
                "offset {offset} handed out twice"
            );
        }
    }
    let (_, hw) = db.broker.streams().watermarks(&topic, 0).await.expect("watermarks");
    assert_eq!(
        hw,
        i64::try_from(placed.len()).expect("fits"),
        "only the accepted records were written"
    );
    // Read back through a broker without a record cache: what Postgres holds.
    let reader = pgbroker::Broker::connect(pgbroker::BrokerConfig {
        database_url: pgbroker_testkit::database_url(),
        schema: db.schema.clone(),
        cache_bytes_per_partition: 0,
        ..pgbroker::BrokerConfig::default()
    })
    .await
    .expect("reader");
    let mut next = 0;
    while next < hw {
        let limits = FetchLimits {
            max_records: 500,
            max_bytes: 1 << 20,
            max_wait: Duration::from_millis(10),
        };
        let r = reader.streams().fetch(&topic, 0, next, limits).await.expect("fetch");
        assert!(!r.records.is_empty(), "nothing at offset {next} below {hw}");
        for rec in r.records {
            assert_eq!(rec.offset, next, "gap at {next}");
            let value = String::from_utf8(rec.value.expect("value").to_vec()).expect("utf8");
            assert_eq!(
                placed.get(&next),
                Some(&value),
                "offset {next} holds another call's record"
            );
            next += 1;
        }
    }
    // Each call's records are consecutive and in its order.
    let mut by_call: HashMap<String, Vec<(i64, usize)>> = HashMap::new();
    for (offset, v) in &placed {
        let (call, r) = v.rsplit_once("-r").expect("value shape");
        by_call
            .entry(call.to_string())
            .or_default()
            .push((*offset, r.parse().expect("index")));
    }
    for (call, mut rs) in by_call {
        rs.sort();
        let first = rs[0].0;
        for (k, (offset, r)) in rs.into_iter().enumerate() {
            assert_eq!(
                (offset, r),
                (first + i64::try_from(k).expect("fits"), k),
                "call {call} split or reordered"
            );
        }
    }
}
