//! The systems the harness drives, where they are, and whether they answer.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use pgbroker::{Broker, BrokerConfig};
use pgbroker_cli::bench::{run_once, run_queue_once, PubsubArgs, QueueArgs, QueueSystem, System};

use crate::{kafka, nats, pgmq, rabbitmq, redis_streams};

/// Systems that run the pub/sub workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PubsubSystem {
    /// pgbroker's library in this process.
    Pgbroker,
    /// The source article's SQL design.
    Article,
    /// Binary COPY into a bare table (writes only).
    Ceiling,
    /// `pgbroker serve` driven by librdkafka.
    KafkaProtocol,
    /// NATS JetStream, file storage, durable pull consumers.
    Nats,
    /// Redis Streams with consumer groups.
    Redis,
}

/// Systems that run the queue workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueuePeer {
    /// pgbroker's work queues in this process.
    Pgbroker,
    /// The source article's SKIP LOCKED queue.
    Article,
    /// pgmq's SQL functions on the same Postgres.
    Pgmq,
    /// RabbitMQ: durable queue, persistent messages, confirms, manual acks.
    Rabbitmq,
}

/// Where every system is, from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoints {
    /// Postgres for pgbroker, the article's design, the ceiling and pgmq.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true,
          default_value = pgbroker::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// The `pgbroker` binary that `kafka-protocol` starts as `pgbroker serve`.
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

async fn library(url: &str, pool_size: usize) -> Result<Broker> {
    Ok(Broker::connect(BrokerConfig {
        database_url: url.to_string(),
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

impl Endpoints {
    /// Whether a peer's server answers; Postgres-based systems and
    /// `kafka-protocol` (which the harness starts) always count as there.
    pub async fn pubsub_available(&self, system: PubsubSystem) -> bool {
        match system {
            PubsubSystem::Nats => answers(&self.nats_url).await,
            PubsubSystem::Redis => answers(&self.redis_url).await,
            _ => true,
        }
    }

    /// Whether a queue peer's server answers.
    pub async fn queue_available(&self, system: QueuePeer) -> bool {
        match system {
            QueuePeer::Rabbitmq => answers(&self.amqp_url).await,
            _ => true,
        }
    }

    /// One pub/sub run against `system`.
    pub async fn run_pubsub(&self, system: PubsubSystem, args: &PubsubArgs) -> Result<serde_json::Value> {
        let url = &self.database_url;
        let local = |s: System| async move {
            let broker = library(url, args.pool_size()).await?;
            let args = PubsubArgs {
                system: s,
                ..args.clone()
            };
            run_once(&broker, url, &args).await
        };
        match system {
            PubsubSystem::Pgbroker => local(System::Pgbroker).await,
            PubsubSystem::Article => local(System::Article).await,
            PubsubSystem::Ceiling => local(System::Ceiling).await,
            PubsubSystem::KafkaProtocol => kafka::run(url, &self.pgbroker_bin, args).await,
            PubsubSystem::Nats => nats::run(&self.nats_url, args).await,
            PubsubSystem::Redis => redis_streams::run(&self.redis_url, args).await,
        }
    }

    /// One queue run against `system`.
    pub async fn run_queue(&self, system: QueuePeer, args: &QueueArgs) -> Result<serde_json::Value> {
        let url = &self.database_url;
        let local = |s: QueueSystem| async move {
            let broker = library(url, args.pool_size()).await?;
            let args = QueueArgs {
                system: s,
                ..args.clone()
            };
            run_queue_once(&broker, url, &args).await
        };
        match system {
            QueuePeer::Pgbroker => local(QueueSystem::Pgbroker).await,
            QueuePeer::Article => local(QueueSystem::Article).await,
            QueuePeer::Pgmq => pgmq::run(url, args).await,
            QueuePeer::Rabbitmq => rabbitmq::run(&self.amqp_url, args).await,
        }
    }
}

impl PubsubSystem {
    /// The `system` key of its summaries.
    pub fn name(self) -> &'static str {
        match self {
            PubsubSystem::Pgbroker => "pgbroker",
            PubsubSystem::Article => "article",
            PubsubSystem::Ceiling => "ceiling",
            PubsubSystem::KafkaProtocol => "kafka-protocol",
            PubsubSystem::Nats => "nats",
            PubsubSystem::Redis => "redis",
        }
    }
}

impl QueuePeer {
    /// The `system` key of its summaries.
    pub fn name(self) -> &'static str {
        match self {
            QueuePeer::Pgbroker => "pgbroker",
            QueuePeer::Article => "article",
            QueuePeer::Pgmq => "pgmq",
            QueuePeer::Rabbitmq => "rabbitmq",
        }
    }
}
