//! Standbys that serve record reads (`BrokerConfig::replica_urls`).
//!
//! A fetch that misses the record cache reads the partition's watermarks
//! on the primary, as always, and then its records on a standby that has
//! already replayed them: one whose own high watermark of the partition is
//! past the offset asked for. A standby shows only what the primary
//! committed and flushed, and the read never goes past the primary's
//! bounds (its high watermark, its last stable offset), so a consumer sees
//! the same records, in the same order, as from the primary. A standby
//! behind the offset, unreachable, or failing a query is skipped and the
//! primary serves at once: nobody waits for a standby to catch up. One
//! that fails is left alone for [`RETRY_AFTER`].
//!
//! Everything else (produce, commits, groups, queues, transactions, the
//! aborted transactions a read_committed fetch needs) stays on the primary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};

use crate::error::{Error, Invalid, Result};

/// How long a standby that failed is skipped.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Connections each standby's pool opens at most.
const POOL_SIZE: usize = 8;

/// Counter of fetches that read records below the high watermark from
/// Postgres, by the server that read them, labelled `server` (`primary`,
/// or the standby's host:port/database). Reads at the end of the log,
/// which find nothing, are not counted.
const READS: &str = "pgbroker_fetch_reads_total";
/// Gauge of a standby's replay lag in seconds (0 when it has replayed all
/// it received), labelled `replica`.
const LAG: &str = "pgbroker_replica_lag_seconds";

/// Describes the metrics to the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        READS,
        "Fetches that read records from Postgres, by the server that served them (the primary or a standby)"
    );
    metrics::describe_gauge!(
        LAG,
        "How far a standby serving reads is behind in replay, in seconds (0 when it has replayed all it received)"
    );
}

/// One standby.
pub(crate) struct Replica {
    /// Where it is, without the password (the metrics' label).
    pub name: String,
    pool: Pool,
    /// Skipped until then after a failure.
    skip_until: Mutex<Option<Instant>>,
}

impl Replica {
    fn available(&self, now: Instant) -> bool {
        self.skip_until
            .lock()
            .map(|until| until.is_none_or(|t| now >= t))
            .unwrap_or(true)
    }

    /// Skips this standby for [`RETRY_AFTER`].
    pub(crate) fn failed(&self, error: &Error) {
        tracing::warn!(replica = %self.name, %error, "standby read failed; reading from the primary for a while");
        if let Ok(mut until) = self.skip_until.lock() {
            *until = Some(Instant::now() + RETRY_AFTER);
        }
    }

    /// A connection, or the reason there is none (the standby is then
    /// skipped for a while).
    pub(crate) async fn client(&self) -> Result<Object> {
        match self.pool.get().await {
            Ok(c) => Ok(c),
            Err(e) => {
                let e = Error::from(e);
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Counts a fetch this standby served.
    pub(crate) fn served(&self) {
        metrics::counter!(READS, "server" => self.name.clone()).increment(1);
    }
}

/// Counts a fetch the primary served.
pub(crate) fn primary_served() {
    metrics::counter!(READS, "server" => "primary").increment(1);
}

/// The standbys of a broker, taken in turn.
#[derive(Default)]
pub(crate) struct Replicas {
    list: Vec<Replica>,
    next: AtomicUsize,
}

impl Replicas {
    /// Pools for each URL, in the broker's schema; nothing connects yet.
    pub(crate) fn new(urls: &[String], schema: &str) -> Result<Replicas> {
        let mut list = Vec::with_capacity(urls.len());
        for url in urls {
            super::check_url_scheme(url)?;
            let mut config: tokio_postgres::Config =
                url.parse().map_err(|e| Error::invalid(Invalid::DatabaseUrl, e))?;
            if config.get_application_name().is_none() {
                config.application_name("pgbroker-replica");
            }
            config.connect_timeout(Duration::from_secs(2));
            list.push(Replica {
                name: super::describe_target(&config),
                pool: super::session_pool(&config, schema, POOL_SIZE)?,
                skip_until: Mutex::new(None),
            });
        }
        Ok(Replicas {
            list,
            next: AtomicUsize::new(0),
        })
    }

    /// True when no standby is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The next standby not being skipped, if any.
    pub(crate) fn pick(&self) -> Option<&Replica> {
        let n = self.list.len();
        if n == 0 {
            return None;
        }
        let now = Instant::now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| &self.list[(start + i) % n]).find(|r| r.available(now))
    }

    /// Reads each standby's replay lag into the gauge.
    pub(crate) async fn probe_lag(&self) {
        for r in &self.list {
            let lag = async {
                let client = r.pool.get().await.map_err(Error::from)?;
                let row = client.query_one(LAG_SQL, &[]).await?;
                Ok::<f64, Error>(row.get(0))
            }
            .await;
            match lag {
                Ok(seconds) => metrics::gauge!(LAG, "replica" => r.name.clone()).set(seconds),
                Err(e) => tracing::debug!(replica = %r.name, error = %e, "replica lag probe failed"),
            }
        }
    }
}

/// A standby's replay lag: 0 when it has replayed everything it received
/// (the last replayed commit's age would grow while the primary is idle),
/// else the age of the last commit it replayed. -1 on a server that is not
/// in recovery.
const LAG_SQL: &str = "SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN -1
    WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
    ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8";
