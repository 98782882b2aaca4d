//! The systems each workload runs against, where they are, and whether
//! they answer. Each system's driver is a module with `run(env, args)`
//! returning the run's [`Summary`]; the enums below are the one place that
//! lists them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::ValueEnum;
use pgbroker::{Broker, BrokerConfig};

use crate::kafka::Variant;
use crate::summary::Summary;
use crate::workload::{PubsubArgs, QueueArgs};
use crate::{
    article, article_queue, ceiling, kafka, nats, pgbroker_queue, pgbroker_sql, pgbroker_streams, pgmq, rabbitmq,
    redis_streams, sqs, tansu,
};

/// Systems that run the pub/sub workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PubsubSystem {
    /// pgbroker's library in this process: segments, groups, record cache.
    Pgbroker,
    /// The source article's SQL design, with the same client library and
    /// payloads: per-partition tables, a counter row, claim-then-read
    /// consumers, one fixed reader per partition and group.
    Article,
    /// Binary COPY into a bare table: what Postgres takes at most, writes only.
    Ceiling,
    /// `pgbroker serve` driven by librdkafka.
    KafkaProtocol,
    /// `pgbroker serve` driven by librdkafka's transactional producer:
    /// one transaction per batch, offsets sent to it, read_committed
    /// consumers.
    KafkaTransactional,
    /// `kafka-protocol` with the console's overview page open and
    /// refreshing all along (an HTTP client making the page's requests at
    /// its refresh interval).
    KafkaConsole,
    /// NATS JetStream, file storage, durable pull consumers.
    Nats,
    /// Redis Streams with consumer groups.
    Redis,
    /// Tansu (a Kafka broker keeping its data in Postgres) on a database of
    /// its own on the same Postgres, driven by librdkafka as
    /// `kafka-protocol` is.
    Tansu,
}

/// Systems that run the queue workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueSystem {
    /// pgbroker's work queues in this process: leases, receipts, batch
    /// receive and ack.
    Pgbroker,
    /// The source article's SKIP LOCKED queue: delete and archive per
    /// message in one transaction, workers polling.
    Article,
    /// pgmq's SQL functions on the same Postgres.
    Pgmq,
    /// RabbitMQ: durable queue, persistent messages, confirms, manual acks.
    Rabbitmq,
    /// `pgbroker serve`'s SQS-compatible API, through the AWS JSON 1.0
    /// protocol over keep-alive HTTP connections.
    Sqs,
    /// pgbroker's queue SQL functions over plain Postgres connections. A
    /// worker of one message at a time takes it in its transaction.
    PgbrokerSql,
    /// The same, with a worker of one message at a time holding a lease:
    /// receive and ack in its transaction.
    PgbrokerSqlLease,
}

/// The name a system goes by on the command line and in summaries.
pub fn name_of(system: &impl ValueEnum) -> String {
    system
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// Whether the system named `system` (as in results) keeps its messages in
/// Postgres, so that Postgres's WAL and size measure what it writes.
pub fn on_postgres(system: &str) -> bool {
    let elsewhere = [
        name_of(&PubsubSystem::Nats),
        name_of(&PubsubSystem::Redis),
        name_of(&QueueSystem::Rabbitmq),
    ];
    !elsewhere.iter().any(|n| n == system)
}

/// Where every system is, from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoints {
    /// Postgres for pgbroker, the article's design, the ceiling and pgmq.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true,
          default_value = pgbroker::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// The `pgbroker` binary that `kafka-protocol` and `sqs` start as `pgbroker serve`.
    #[arg(long, global = true, env = "PGBROKER_BIN", default_value = "target/release/pgbroker")]
    pub pgbroker_bin: PathBuf,
    /// NATS server with JetStream.
    #[arg(long, global = true, env = "NATS_URL", default_value = "127.0.0.1:4222")]
    pub nats_url: String,
    /// Redis server.
    #[arg(long, global = true, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// RabbitMQ server.
    #[arg(
        long,
        global = true,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Tansu's broker binary (`cargo install tansu --locked
    /// --no-default-features --features postgres`).
    #[arg(long, global = true, env = "TANSU_BIN", default_value = "tansu")]
    pub tansu_bin: PathBuf,
    /// Tansu's Postgres schema (`etc/initdb.d/010-schema.sql` of its
    /// repository, at the tag of the installed version); without it Tansu
    /// is skipped.
    #[arg(long, global = true, env = "TANSU_SCHEMA")]
    pub tansu_schema: Option<PathBuf>,
}

/// The schema pgbroker's in-process runs use; dropped by [`drop_schema`].
pub fn library_schema() -> String {
    format!("bench_lib_{}", std::process::id())
}

/// Drops the library runs' schema.
pub async fn drop_schema(url: &str) -> Result<()> {
    let client = crate::db::connect(url).await?;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", library_schema()))
        .await?;
    Ok(())
}

/// pgbroker's library on the database, in the schema of this process's
/// runs, with a pool for `pool_size` concurrent clients.
pub async fn library(env: &Endpoints, pool_size: usize) -> Result<Broker> {
    Ok(Broker::connect(BrokerConfig {
        database_url: env.database_url.clone(),
        schema: library_schema(),
        pool_size,
        ..BrokerConfig::default()
    })
    .await?)
}

/// Whether something listens on the host and port of `url` (a missing
/// peer is skipped, not an error).
async fn answers(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let host_port = host_port.rsplit_once('@').map_or(host_port, |(_, h)| h);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(host_port)).await,
        Ok(Ok(_))
    )
}

impl PubsubSystem {
    /// Whether its server answers; Postgres-based systems and
    /// `kafka-protocol` (which the harness starts) always count as there.
    pub async fn available(self, env: &Endpoints) -> bool {
        match self {
            PubsubSystem::Nats => answers(&env.nats_url).await,
            PubsubSystem::Redis => answers(&env.redis_url).await,
            PubsubSystem::Tansu => tansu::installed(env).await,
            _ => true,
        }
    }

    /// One run of the pub/sub workload.
    pub async fn run(self, env: &Endpoints, args: &PubsubArgs) -> Result<Summary> {
        let kafka = matches!(
            self,
            PubsubSystem::KafkaProtocol
                | PubsubSystem::KafkaConsole
                | PubsubSystem::KafkaTransactional
                | PubsubSystem::Tansu
        );
        if args.backlog > 0 && !kafka {
            anyhow::bail!("--backlog is supported by the Kafka-protocol systems only");
        }
        match self {
            PubsubSystem::Pgbroker => pgbroker_streams::run(env, args).await,
            PubsubSystem::Article => article::run(env, args).await,
            PubsubSystem::Ceiling => ceiling::run(env, args).await,
            PubsubSystem::KafkaProtocol => kafka::run(env, args, Variant::Plain).await,
            PubsubSystem::KafkaConsole => kafka::run(env, args, Variant::Console).await,
            PubsubSystem::KafkaTransactional => kafka::run(env, args, Variant::Transactional).await,
            PubsubSystem::Nats => nats::run(env, args).await,
            PubsubSystem::Redis => redis_streams::run(env, args).await,
            PubsubSystem::Tansu => tansu::run(env, args).await,
        }
    }
}

impl QueueSystem {
    /// Whether its server answers; Postgres-based systems and `sqs` (which
    /// the harness starts) always count as there.
    pub async fn available(self, env: &Endpoints) -> bool {
        match self {
            QueueSystem::Rabbitmq => answers(&env.amqp_url).await,
            _ => true,
        }
    }

    /// One run of the queue workload.
    pub async fn run(self, env: &Endpoints, args: &QueueArgs) -> Result<Summary> {
        match self {
            QueueSystem::Pgbroker => pgbroker_queue::run(env, args).await,
            QueueSystem::Article => article_queue::run(env, args).await,
            QueueSystem::Pgmq => pgmq::run(env, args).await,
            QueueSystem::Rabbitmq => rabbitmq::run(env, args).await,
            QueueSystem::Sqs => sqs::run(env, args).await,
            QueueSystem::PgbrokerSql => pgbroker_sql::run(env, args, false).await,
            QueueSystem::PgbrokerSqlLease => pgbroker_sql::run(env, args, true).await,
        }
    }
}
