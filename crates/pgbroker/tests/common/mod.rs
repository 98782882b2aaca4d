//! Shared test set-up: every test gets its own fresh schema in a real
//! PostgreSQL, dropped when the test passes (kept for debugging if it fails).

#![allow(dead_code, missing_docs)]

use pgbroker::queues::ReceiveOptions;
use pgbroker::{Broker, BrokerConfig, Error, QueueConfig, QueueName, Receipt, ReceivedMessage, TopicConfig, TopicName};
use rand::Rng;
use tokio_postgres::NoTls;

pub fn database_url() -> String {
    std::env::var("PGBROKER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

pub struct TestDb {
    pub broker: Broker,
    pub schema: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let schema = format!("t_{:016x}", rand::thread_rng().gen::<u64>());
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
        TestDb { broker, schema }
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

    pub async fn topic(&self, name: &str, config: TopicConfig) -> TopicName {
        let t = TopicName::new(name).expect("valid name");
        self.broker.topics().create(&t, &config).await.expect("create topic");
        t
    }

    pub async fn queue(&self, name: &str, config: QueueConfig) -> QueueName {
        let q = QueueName::new(name).expect("valid name");
        self.broker.queues().create(&q, &config).await.expect("create queue");
        q
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

    /// Drops the test's schema. The broker goes first so its background
    /// maintenance stops; a maintenance pass already under way may still
    /// hold locks, and a deadlock with it is retried. Clean-up is not what
    /// a test asserts, so a schema that cannot be dropped is reported, not
    /// failed on.
    pub async fn drop(self) {
        let TestDb { broker, schema } = self;
        drop(broker);
        let (client, conn) = tokio_postgres::connect(&database_url(), NoTls).await.expect("connect");
        tokio::spawn(conn);
        let mut last = None;
        for attempt in 0..5u64 {
            match client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 * (attempt + 1))).await;
        }
        if let Some(e) = last {
            eprintln!("could not drop schema {schema}: {e}");
        }
    }
}

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

pub fn bodies(ms: &[ReceivedMessage]) -> Vec<String> {
    ms.iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

pub fn receipts(ms: &[ReceivedMessage]) -> Vec<Receipt> {
    ms.iter().map(|m| m.receipt.clone()).collect()
}

pub fn is_stale(r: Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(r, Err(Error::StaleReceipt { .. }))
}
