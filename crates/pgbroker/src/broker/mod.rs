//! The [`Broker`] handle: configuration, the connection pool and the caches
//! that every operation shares.

pub(crate) mod backoff;
pub(crate) mod notify;
pub(crate) mod replicas;
pub(crate) mod session;
pub(crate) mod statements;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::broker::notify::Wakeups;
use crate::error::{Error, Invalid, Result};
use crate::migrate::{self, MigrationReport};
use crate::sql::Schema;
use crate::streams::cache::RecordCache;
use crate::types::TopicName;

/// The database URL used when none is configured.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The schema used when none is configured.
pub const DEFAULT_SCHEMA: &str = "pgbroker";

/// How to reach the database and where pgbroker's tables live.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// A libpq-style URL or key=value string.
    pub database_url: String,
    /// The Postgres schema holding pgbroker's tables.
    pub schema: String,
    /// Most connections the pool opens.
    pub pool_size: usize,
    /// Apply migrations when connecting (the default), creating the schema
    /// if need be. When false, nothing is created or changed: a schema
    /// without pgbroker's tables is [`Error::SchemaMissing`], and one that
    /// is behind is left alone and calls may fail.
    pub migrate: bool,
    /// Memory for each partition's most recent records, served to fetches
    /// without a query; 0 disables the cache.
    pub cache_bytes_per_partition: usize,
    /// How often a long poll (fetch, consumer poll, queue receive) reads
    /// again without being woken. A commit wakes waiters through NOTIFY at
    /// once; this bounds the delay when a notification is lost (after a
    /// reconnect, or behind a pooler that drops LISTEN).
    pub poll_interval: Duration,
    /// Standbys of the database (libpq-style URLs) that serve record reads
    /// once they have replayed them; everything else stays on the primary.
    /// Empty by default.
    pub replica_urls: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            database_url: DEFAULT_DATABASE_URL.to_string(),
            schema: DEFAULT_SCHEMA.to_string(),
            pool_size: 16,
            migrate: true,
            cache_bytes_per_partition: 64 << 20,
            poll_interval: crate::broker::notify::DEFAULT_POLL_INTERVAL,
            replica_urls: Vec::new(),
        }
    }
}

/// What the broker caches about a topic. Partition counts can grow, so the
/// cache expires quickly and is dropped on any miss.
#[derive(Debug, Clone)]
pub(crate) struct TopicMeta {
    pub name: TopicName,
    /// Internal partition ids, indexed by partition number.
    pub partition_ids: Vec<i64>,
    pub segment_records: i64,
    pub max_message_bytes: usize,
    /// The topic is compacted: records need a key.
    pub compacted: bool,
}

const TOPIC_CACHE_TTL: Duration = Duration::from_secs(2);

/// Connections kept apart for creating segments. A producer that needs a
/// segment may hold a pooled connection and its partition's row lock while
/// every other pooled connection waits for that lock: creating the segment
/// on the same pool could then wait forever.
const SEGMENT_POOL_SIZE: usize = 2;

pub(crate) struct Inner {
    pub pool: Pool,
    /// See [`SEGMENT_POOL_SIZE`]; used by [`crate::streams::segments::ensure_segments`].
    pub segment_pool: Pool,
    pub pg_config: tokio_postgres::Config,
    pub schema: String,
    pub channel: String,
    /// The produce statement, schema-qualified so that it also runs on a
    /// caller's own connection whatever its search_path.
    pub produce_sql: String,
    /// Locks a partition row in a caller's transaction (outbox path).
    pub outbox_lock_sql: String,
    /// Every other area's statements, qualified with the schema.
    pub sql: crate::sql::Registry,
    pub wakeups: Wakeups,
    /// Spaces connection attempts out while Postgres is unreachable.
    pub(crate) connect_backoff: crate::broker::backoff::ConnectBackoff,
    pub cache: RecordCache,
    /// Queue metadata cache, statements and maintenance state.
    pub queues: crate::queues::QueueState,
    /// EndTxns waiting to be decided together.
    pub(crate) decisions: crate::txn::batch::Decisions,
    /// Transactional appends waiting to be made together, by partition.
    pub(crate) appends: crate::txn::append_batch::Appends,
    /// Plain appends waiting to be made together, by partition.
    pub(crate) plain_appends: crate::streams::append_batch::PlainAppends,
    /// Partitions whose next segment is being made in the background
    /// (see [`crate::streams::segments::make_room_ahead`]).
    pub(crate) making_room: Mutex<std::collections::HashSet<i64>>,
    /// Partitions whose bucket waits for a follow-up refresh (see
    /// [`crate::streams::bucket_maps::refresh_later`]).
    pub(crate) refreshing: Mutex<std::collections::HashSet<i64>>,
    topics: Mutex<HashMap<String, (Instant, Arc<TopicMeta>)>>,
    pub round_robin: AtomicUsize,
    /// Kafka's `group.initial.rebalance.delay.ms`, in milliseconds.
    pub group_initial_delay_ms: AtomicU64,
    /// Kafka's `group.consumer.session.timeout.ms`, in milliseconds.
    pub consumer_session_ms: AtomicU64,
    /// Kafka's `group.consumer.heartbeat.interval.ms`, in milliseconds.
    pub consumer_heartbeat_ms: AtomicU64,
    /// [`BrokerConfig::poll_interval`], at least 1 ms.
    pub poll_interval: Duration,
    /// [`BrokerConfig::replica_urls`]' pools.
    pub replicas: crate::broker::replicas::Replicas,
}

/// A handle to pgbroker's storage in one Postgres schema. Cheap to clone;
/// all clones share one connection pool.
#[derive(Clone)]
pub struct Broker {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("schema", &self.inner.schema).finish()
    }
}

/// Describes where a config points, without the password.
pub fn describe_target(cfg: &tokio_postgres::Config) -> String {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_string());
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let db = cfg.get_dbname().or(cfg.get_user()).unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// The driver's error followed by its causes. tokio-postgres's own text is
/// often only "db error" or "error connecting to server"; the reason (a
/// refused connection, a missing database, a failed login) is in the source.
/// None of these carry the password.
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl Broker {
    /// Connects, checks the database is reachable and, unless disabled,
    /// applies pending migrations.
    pub async fn connect(config: BrokerConfig) -> Result<Broker> {
        let schema = Schema::new(&config.schema)?;
        check_url_scheme(&config.database_url)?;
        let mut pg_config: tokio_postgres::Config = config
            .database_url
            .parse()
            .map_err(|e| Error::invalid(Invalid::DatabaseUrl, e))?;
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("pgbroker");
        }
        pg_config.connect_timeout(Duration::from_secs(10));
        let target = describe_target(&pg_config);
        let pool = session_pool(&pg_config, &config.schema, config.pool_size.max(2))?;
        let segment_pool = session_pool(&pg_config, &config.schema, SEGMENT_POOL_SIZE)?;
        let replicas = crate::broker::replicas::Replicas::new(&config.replica_urls, &config.schema)?;
        let inner = Inner {
            replicas,
            pool,
            segment_pool,
            pg_config,
            channel: format!("pgbroker_{}", config.schema),
            produce_sql: schema.qualify(crate::streams::produce::PRODUCE),
            outbox_lock_sql: schema.qualify(crate::streams::produce::OUTBOX_LOCK),
            sql: crate::sql::Registry::new(&schema),
            schema: config.schema.clone(),
            wakeups: Wakeups::default(),
            connect_backoff: Default::default(),
            cache: RecordCache::new(config.cache_bytes_per_partition),
            queues: crate::queues::QueueState::new(&schema),
            decisions: crate::txn::batch::Decisions::default(),
            appends: crate::txn::append_batch::Appends::default(),
            making_room: Mutex::new(std::collections::HashSet::new()),
            refreshing: Mutex::new(std::collections::HashSet::new()),
            plain_appends: Default::default(),
            topics: Mutex::new(HashMap::new()),
            round_robin: AtomicUsize::new(0),
            poll_interval: config.poll_interval.max(Duration::from_millis(1)),
            group_initial_delay_ms: AtomicU64::new(
                u64::try_from(crate::groups::DEFAULT_GROUP_INITIAL_REBALANCE_DELAY.as_millis()).unwrap_or(0),
            ),
            consumer_session_ms: AtomicU64::new(
                u64::try_from(crate::groups::consumer::DEFAULT_CONSUMER_SESSION_TIMEOUT.as_millis()).unwrap_or(0),
            ),
            consumer_heartbeat_ms: AtomicU64::new(
                u64::try_from(crate::groups::consumer::DEFAULT_CONSUMER_HEARTBEAT_INTERVAL.as_millis()).unwrap_or(0),
            ),
        };
        let broker = Broker { inner: Arc::new(inner) };
        // Before the pool's first connection, whose settings would stay on
        // a transaction-mode pooler's server connection.
        session::check(&broker.inner.pg_config, &target).await?;
        let mut client = broker.client().await.map_err(|e| match e {
            Error::Db(e) => Error::Connect {
                target: target.clone(),
                reason: with_causes(&e),
            },
            other => other,
        })?;
        if config.migrate {
            migrate::migrate(&mut client, &config.schema).await?;
        } else {
            check_version(&broker.inner.sql.broker, &client, &config.schema).await?;
        }
        Ok(broker)
    }

    /// Applies pending migrations and reports the versions.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        let mut client = self.client().await?;
        migrate::migrate(&mut client, &self.inner.schema).await
    }

    /// The schema this broker works in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// A pooled connection whose search_path is pgbroker's schema.
    /// While Postgres is unreachable, attempts to connect are spaced out
    /// (doubling up to 2 s); calls in between fail at once, retriably.
    pub(crate) async fn client(&self) -> Result<Object> {
        self.client_from(&self.inner.pool).await
    }

    /// A connection of the pool kept for segment creation.
    pub(crate) async fn segment_client(&self) -> Result<Object> {
        self.client_from(&self.inner.segment_pool).await
    }

    async fn client_from(&self, pool: &Pool) -> Result<Object> {
        let backoff = &self.inner.connect_backoff;
        // An idle connection may still serve (Postgres may refuse only new
        // ones, at max_connections); a dead one is dropped by the pool.
        let idle = pool.status().available > 0;
        if let Some(wait) = backoff.check(Instant::now()).filter(|_| !idle) {
            return Err(Error::Pool(format!(
                "postgres unreachable; next connection attempt in {} ms",
                wait.as_millis()
            )));
        }
        match pool.get().await {
            Ok(client) => {
                backoff.succeeded();
                Ok(client)
            }
            Err(e) => {
                if matches!(e, deadpool_postgres::PoolError::Backend(_)) {
                    backoff.failed(Instant::now());
                }
                Err(e.into())
            }
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Reads each standby's replay lag into the `pgbroker_replica_lag_seconds`
    /// gauge (see [`BrokerConfig::replica_urls`]).
    pub async fn probe_replicas(&self) {
        self.inner.replicas.probe_lag().await;
    }

    /// Connections of the pool: `(open, idle, max)`.
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let s = self.inner.pool.status();
        (s.size, s.available, s.max_size)
    }

    pub(crate) fn forget_topic(&self, name: &str) {
        if let Ok(mut m) = self.inner.topics.lock() {
            m.remove(name);
        }
    }

    /// Topic metadata, from the cache when fresh.
    pub(crate) async fn topic_meta(&self, name: &TopicName) -> Result<Arc<TopicMeta>> {
        if let Ok(m) = self.inner.topics.lock() {
            if let Some((at, meta)) = m.get(name.as_str()) {
                if at.elapsed() < TOPIC_CACHE_TTL {
                    return Ok(meta.clone());
                }
            }
        }
        let client = self.client().await?;
        let meta = Arc::new(load_topic_meta(&self.inner.sql.broker, &client, name).await?);
        if let Ok(mut m) = self.inner.topics.lock() {
            m.insert(name.as_str().to_string(), (Instant::now(), meta.clone()));
        }
        Ok(meta)
    }

    /// The internal id of a topic partition, checking the partition exists.
    pub(crate) async fn partition_id(&self, topic: &TopicName, partition: i32) -> Result<(Arc<TopicMeta>, i64)> {
        let meta = self.topic_meta(topic).await?;
        match usize::try_from(partition).ok().and_then(|p| meta.partition_ids.get(p)) {
            Some(id) => Ok((meta.clone(), *id)),
            None => Err(Error::UnknownPartition {
                topic: topic.to_string(),
                partition,
                count: meta.partition_ids.len(),
            }),
        }
    }

    /// The initial rebalance delay in milliseconds.
    pub(crate) fn consumer_session_ms(&self) -> i32 {
        i32::try_from(self.inner.consumer_session_ms.load(Ordering::Relaxed)).unwrap_or(i32::MAX)
    }

    pub(crate) fn consumer_heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.inner.consumer_heartbeat_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn group_initial_delay_ms(&self) -> i64 {
        i64::try_from(self.inner.group_initial_delay_ms.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub(crate) fn next_round_robin(&self) -> usize {
        self.inner.round_robin.fetch_add(1, Ordering::Relaxed)
    }
}

/// A pool of connections to `pg_config` whose sessions work in `schema`.
///
/// Generic plans: planning the produce statement anew for each batch (its
/// parameters are large arrays) costs more than executing it. Hot
/// statements read segment tables directly, so they need no plan-time
/// partition pruning. No JIT: a generic plan's `LIMIT $n` is costed as a
/// tenth of the rows, so on a deep queue (10 million messages) the claim's
/// estimate passed `jit_above_cost` and every claim spent about 25 ms
/// compiling what then ran in 1 ms. All three are set by a statement on
/// each new connection rather than as the `options` startup parameter,
/// which PgBouncer refuses.
fn session_pool(pg_config: &tokio_postgres::Config, schema: &str, size: usize) -> Result<Pool> {
    let manager = Manager::from_config(
        pg_config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let settings = session_settings(schema);
    Pool::builder(manager)
        .max_size(size)
        .post_create(Hook::async_fn(move |client, _| {
            let settings = settings.clone();
            Box::pin(async move { client.batch_execute(&settings).await.map_err(HookError::Backend) })
        }))
        .build()
        .map_err(|e| Error::Pool(e.to_string()))
}

/// The statement that sets up each pooled connection (see [`session_pool`]).
fn session_settings(schema: &str) -> String {
    // The schema name was validated by `Schema::new`; quoted all the same.
    format!(
        "SET search_path = {}; SET plan_cache_mode = force_generic_plan; SET jit = off",
        crate::migrate::quote_ident(schema)
    )
}

/// Refuses a URL of another database (`mysql://...`) with words that say
/// so, rather than the driver's "invalid connection string".
fn check_url_scheme(url: &str) -> Result<()> {
    let Some((scheme, _)) = url.split_once("://") else {
        return Ok(()); // key=value pairs
    };
    // Key=value pairs whose password holds "://" are not a scheme, and
    // must not be echoed.
    let is_scheme = !scheme.is_empty()
        && scheme.len() <= 20
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !is_scheme || scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql") {
        return Ok(());
    }
    Err(Error::invalid(
        Invalid::DatabaseUrl,
        format!(
            "a PostgreSQL URL is needed (postgres://user@host:5432/database, or key=value pairs such as \
             `host=localhost user=postgres`), not a {scheme}:// URL"
        ),
    ))
}

async fn check_version(sql: &statements::Statements, client: &tokio_postgres::Client, schema: &str) -> Result<()> {
    let row = client.query_opt(&sql.check_version, &[]).await;
    if let Err(e) = &row {
        use tokio_postgres::error::SqlState;
        if matches!(e.code(), Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME) {
            return Err(Error::SchemaMissing {
                schema: schema.to_string(),
            });
        }
    }
    if let Ok(Some(row)) = row {
        let found: i32 = row.get(0);
        if found > migrate::latest_version() {
            return Err(Error::SchemaTooNew {
                schema: schema.to_string(),
                found,
                known: migrate::latest_version(),
            });
        }
    }
    Ok(())
}

pub(crate) async fn load_topic_meta(
    sql: &statements::Statements,
    client: &tokio_postgres::Client,
    name: &TopicName,
) -> Result<TopicMeta> {
    let row = client
        .query_opt(&sql.load_topic_meta, &[&name.as_str()])
        .await?
        .ok_or_else(|| Error::UnknownTopic(name.to_string()))?;
    let max: i32 = row.get(1);
    Ok(TopicMeta {
        name: name.clone(),
        segment_records: row.get(0),
        max_message_bytes: usize::try_from(max).unwrap_or(0),
        partition_ids: row.get(2),
        compacted: row.get(3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_sessions_use_the_schema_generic_plans_and_no_jit() {
        let s = session_settings("my schema");
        assert!(s.starts_with("SET search_path = \"my schema\";"), "{s}");
        assert!(s.contains("SET plan_cache_mode = force_generic_plan"), "{s}");
        assert!(s.contains("SET jit = off"), "{s}");
    }
}
