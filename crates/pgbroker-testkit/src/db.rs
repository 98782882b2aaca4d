//! A library broker on a fresh schema, and the small helpers the
//! library's tests read their results with.

use pgbroker::queues::ReceiveOptions;
use pgbroker::streams::{FetchResult, Isolation, ManyLimits, PartitionRead};
use pgbroker::{Broker, BrokerConfig, Error, QueueConfig, QueueName, Receipt, ReceivedMessage, TopicConfig, TopicName};
use tokio_postgres::NoTls;

use crate::{database_url, TestSchema};

/// A broker on a fresh, migrated schema. The broker is dropped before the
/// schema, which goes as [`TestSchema`] says.
pub struct TestDb {
    /// The broker under test.
    pub broker: Broker,
    /// The schema's name.
    pub schema: String,
    // Last: dropped after the broker.
    _guard: TestSchema,
}

impl TestDb {
    /// A broker on a fresh schema, migrated.
    pub async fn new() -> TestDb {
        let guard = TestSchema::new("t");
        let schema = guard.name().to_string();
        let broker = Broker::connect(BrokerConfig {
            database_url: database_url(),
            schema: schema.clone(),
            pool_size: 24,
            migrate: true,
            cache_bytes_per_partition: 8 << 20,
            ..BrokerConfig::default()
        })
        .await
        .expect("connect to test database");
        TestDb {
            broker,
            schema,
            _guard: guard,
        }
    }

    /// A plain connection of the test's own, for transactions and SQL checks.
    pub async fn raw(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&database_url(), NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("SET search_path = {}", self.schema))
            .await
            .expect("search_path");
        client
    }

    /// Creates topic `name` with `config`.
    pub async fn topic(&self, name: &str, config: TopicConfig) -> TopicName {
        let t = TopicName::new(name).expect("valid name");
        self.broker.topics().create(&t, &config).await.expect("create topic");
        t
    }

    /// Creates queue `name` with `config`.
    pub async fn queue(&self, name: &str, config: QueueConfig) -> QueueName {
        let q = QueueName::new(name).expect("valid name");
        self.broker.queues().create(&q, &config).await.expect("create queue");
        q
    }

    /// A queue whose messages die on their first failed delivery
    /// (`max_attempts` 1): into the dead-letter queue `dlq` when given,
    /// else dead in the queue itself.
    pub async fn queue_failing_once(&self, name: &str, dlq: Option<&QueueName>) -> QueueName {
        let config = QueueConfig {
            max_attempts: 1,
            dead_letter: dlq.cloned(),
            ..QueueConfig::default()
        };
        self.queue(name, config).await
    }

    /// Another broker on the same schema, as another process would be.
    pub async fn other_broker(&self) -> Broker {
        self.broker_polling_every(BrokerConfig::default().poll_interval).await
    }

    /// As [`TestDb::other_broker`], re-reading long polls only every
    /// `interval` when no notification wakes them.
    pub async fn broker_polling_every(&self, interval: std::time::Duration) -> Broker {
        Broker::connect(BrokerConfig {
            database_url: database_url(),
            schema: self.schema.clone(),
            pool_size: 8,
            poll_interval: interval,
            ..BrokerConfig::default()
        })
        .await
        .expect("connect second broker")
    }
}

/// Reads partition `partition` of `t` from `offset`, up to 1000 records,
/// without waiting, with the isolation asked.
pub async fn read_partition(
    b: &Broker,
    t: &TopicName,
    partition: i32,
    offset: i64,
    isolation: Isolation,
) -> FetchResult {
    let reads = [PartitionRead {
        topic: t.clone(),
        partition,
        offset,
        max_bytes: 1 << 20,
    }];
    let limits = ManyLimits {
        min_bytes: 0,
        max_bytes: 1 << 20,
        max_records: 1000,
        max_wait: std::time::Duration::ZERO,
        isolation,
    };
    b.streams().fetch_many(&reads, limits).await.remove(0).expect("fetch")
}

/// A topic config with `n` partitions.
pub fn partitions(n: i32) -> TopicConfig {
    TopicConfig {
        partitions: n,
        ..TopicConfig::default()
    }
}

/// Receive options taking up to `n` messages, without waiting.
pub fn take(n: usize) -> ReceiveOptions {
    ReceiveOptions {
        max_messages: n,
        ..ReceiveOptions::default()
    }
}

/// The messages' bodies, as text.
pub fn bodies(ms: &[ReceivedMessage]) -> Vec<String> {
    ms.iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// The messages' receipts.
pub fn receipts(ms: &[ReceivedMessage]) -> Vec<Receipt> {
    ms.iter().map(|m| m.receipt.clone()).collect()
}

/// True when `r` failed because its receipt was stale.
pub fn is_stale(r: Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(r, Err(Error::StaleReceipt { .. }))
}

/// A digest of every row the SQL functions can change in schema `s`
/// (queue messages and their bookkeeping, partitions, segments, records).
pub async fn sql_state_digest(c: &tokio_postgres::Client, s: &str) -> String {
    let sql = format!(
        "SELECT md5(concat_ws('#',
            (SELECT string_agg(x::text, '|' ORDER BY x.id) FROM {s}.queue_messages x),
            (SELECT string_agg(x::text, '|' ORDER BY x::text) FROM {s}.queue_dedup x),
            (SELECT string_agg(x::text, '|' ORDER BY x::text) FROM {s}.queue_groups x),
            (SELECT string_agg(x::text, '|' ORDER BY x::text) FROM {s}.queue_archive x),
            (SELECT string_agg(x::text, '|' ORDER BY x.id) FROM {s}.partitions x),
            (SELECT string_agg(x::text, '|' ORDER BY x::text) FROM {s}.segments x),
            (SELECT string_agg(x::text, '|' ORDER BY x::text) FROM {s}.records x)))"
    );
    c.query_one(&sql, &[]).await.expect("digest").get(0)
}

/// Runs `sql`, which must fail with SQLSTATE `code` and a message starting
/// "pgbroker: ", and change nothing in schema `s`.
pub async fn assert_refused(c: &tokio_postgres::Client, s: &str, sql: &str, code: &str) {
    let before = sql_state_digest(c, s).await;
    let e = c.batch_execute(sql).await.expect_err(sql);
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e:?}"));
    assert_eq!(db.code().code(), code, "{sql}: {}", db.message());
    assert!(
        db.message().starts_with("pgbroker: "),
        "{sql}: unclear message {:?}",
        db.message()
    );
    assert_eq!(sql_state_digest(c, s).await, before, "{sql} changed something");
}
