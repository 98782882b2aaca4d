//! What a scenario may read at both ends of a run's measured window
//! besides its summary: the CPU of each Postgres cluster it started (told
//! apart by postmaster), the fetches each server served according to
//! pgbroker's `/metrics`, and each consumer group's read rate and how far
//! it is behind at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procfs::{self, PerPid};

/// The counter of fetches that read records from Postgres, by server.
const FETCH_READS: &str = "pgbroker_fetch_reads_total";

/// What to read at both ends of the window.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Postgres clusters, by name and postmaster pid.
    pub clusters: Vec<(String, u32)>,
    /// `host:port` of each `pgbroker serve`'s HTTP listener.
    pub metrics: Vec<String>,
}

/// One end of the window.
pub struct Reading {
    clusters: Vec<PerPid>,
    reads: BTreeMap<String, f64>,
}

/// What the window added to the run's summary.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// CPU seconds of each cluster of the probe, in its order.
    pub cluster_cpu_s: Vec<(String, f64)>,
    /// Fetches that read records from Postgres, by server (`primary` or a
    /// standby), summed over the brokers.
    pub fetch_reads: BTreeMap<String, f64>,
    /// Records each consumer group read per second.
    pub group_read_msgs_per_s: Vec<f64>,
    /// Records written (acknowledged) since the run began less those each
    /// group received, at the end of the window: its lag.
    pub group_behind_at_end: Vec<i64>,
}

impl Probe {
    /// Reads the clusters' CPU and the brokers' counters now.
    pub async fn read(&self) -> Result<Reading> {
        let clusters = self.clusters.iter().map(|(_, pid)| procfs::cluster(*pid)).collect();
        let mut reads = BTreeMap::new();
        for http in &self.metrics {
            let text = get(http, "/metrics").await?;
            for (server, n) in fetch_reads(&text) {
                *reads.entry(server).or_insert(0.0) += n;
            }
        }
        Ok(Reading { clusters, reads })
    }

    /// The clusters' CPU and the counters from `before` to `after`.
    pub fn between(&self, before: &Reading, after: &Reading) -> Window {
        let cluster_cpu_s = self
            .clusters
            .iter()
            .zip(before.clusters.iter().zip(&after.clusters))
            .map(|((name, _), (b, a))| (name.clone(), procfs::delta(b, a)))
            .collect();
        let fetch_reads = after
            .reads
            .iter()
            .map(|(server, n)| (server.clone(), n - before.reads.get(server).copied().unwrap_or(0.0)))
            .collect();
        Window {
            cluster_cpu_s,
            fetch_reads,
            ..Window::default()
        }
    }
}

/// `pgbroker_fetch_reads_total` by its `server` label, from the text
/// exposition format.
pub fn fetch_reads(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(FETCH_READS)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once('}')?;
            let server = labels.split(',').find_map(|l| {
                let v = l.trim().strip_prefix("server=\"")?;
                v.strip_suffix('"')
            })?;
            Some((server.to_string(), value.trim().parse::<f64>().ok()?))
        })
        .collect()
}

/// The body of `GET path` from `host:port` over plain HTTP/1.0.
pub async fn get(addr: &str, path: &str) -> Result<String> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .with_context(|| format!("GET {addr}{path}: no answer within 5 s"))?
        .with_context(|| format!("GET {addr}{path}"))?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("GET {addr}{path}: not an HTTP answer");
    };
    if !head.lines().next().is_some_and(|status| status.contains(" 200")) {
        bail!("GET {addr}{path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// The percentage of fetches the standby served, of all fetches counted.
pub fn standby_share(primary: f64, standby: f64) -> f64 {
    let all = primary + standby;
    if all > 0.0 {
        100.0 * standby / all
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_reads_are_read_by_server() {
        let text = "# TYPE pgbroker_fetch_reads_total counter\n\
                    pgbroker_fetch_reads_total{server=\"primary\"} 12\n\
                    pgbroker_fetch_reads_total{server=\"127.0.0.1:5433/postgres\"} 30.5\n\
                    pgbroker_fetch_reads_total_other{server=\"x\"} 1\n\
                    pgbroker_replica_lag_seconds{replica=\"127.0.0.1:5433/postgres\"} 0\n";
        assert_eq!(
            fetch_reads(text),
            vec![
                ("primary".to_string(), 12.0),
                ("127.0.0.1:5433/postgres".to_string(), 30.5)
            ]
        );
    }
}
