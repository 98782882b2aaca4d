//! `scale-connections`: N idle-ish Kafka client connections held open on
//! `pgbroker serve` (plain TCP: each sends ApiVersions and a Metadata
//! request for `bench`, then the same Metadata request every
//! [`IDLE_INTERVAL`], at phases spread over the interval) while one
//! librdkafka producer and one consumer run flat out on `bench` (4
//! partitions). Each point measures their write and read rates and
//! end-to-end p99, the broker's largest resident memory and its CPU, the
//! CPU of Postgres, and the most Postgres connections the broker held
//! (rows of `pg_stat_activity` with its own `application_name`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{cores, drop_schema, populate, schema_name, workload, Emit, ScaleArgs, ScalePoint};
use crate::kafka::{drive, Server, Target, Variant};
use crate::systems::Endpoints;

/// How often each idle connection sends its Metadata request.
pub const IDLE_INTERVAL: Duration = Duration::from_secs(5);

/// Connections opened at once.
const OPEN_AT_ONCE: usize = 100;

/// Sweeps the number of idle connections.
pub async fn connections(env: &Endpoints, args: &ScaleArgs, emit: &mut Emit<'_>) -> Result<()> {
    let url = env.database_url.as_str();
    let schema = schema_name("conn");
    let app = format!("pgbroker-scale-{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let server_url = format!("{url}{sep}application_name={app}");
    for &n in &args.connections {
        populate(url, &schema, &[("bench".to_string(), 4)]).await?;
        let mut p = ScalePoint::new("scale-connections", "connections", u64::from(n));
        let outcome = point(env, args, &server_url, &schema, &app, n, &mut p).await;
        drop_schema(url, &schema).await?;
        outcome.with_context(|| format!("scale-connections at {n}"))?;
        emit(p)?;
    }
    Ok(())
}

async fn point(
    env: &Endpoints,
    args: &ScaleArgs,
    server_url: &str,
    schema: &str,
    app: &str,
    n: u32,
    p: &mut ScalePoint,
) -> Result<()> {
    let serve = ["--max-connections".to_string(), "4096".to_string()];
    let server = Server::start_with(&env.pgbroker_bin, server_url, schema, false, &serve).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let outcome = async {
        let mut idle = Vec::new();
        let n = usize::try_from(n)?;
        for chunk_start in (0..n).step_by(OPEN_AT_ONCE) {
            let chunk: Vec<_> = (chunk_start..n.min(chunk_start + OPEN_AT_ONCE))
                .map(|i| {
                    let phase = IDLE_INTERVAL.mul_f64(i as f64 / n as f64);
                    open(&server.bootstrap, phase, stop.clone(), requests.clone())
                })
                .collect();
            for opened in join_all(chunk).await {
                idle.push(opened?);
            }
        }
        let peak = Arc::new(AtomicU64::new(0));
        let sampler = tokio::spawn(sample_pg_connections(
            env.database_url.clone(),
            app.to_string(),
            stop.clone(),
            peak.clone(),
        ));
        let target = Target {
            bootstrap: server.bootstrap.clone(),
            http: None,
            pids: vec![server.pid()?],
        };
        let before = requests.load(Ordering::Relaxed);
        let run = drive(&target, &workload(args, 4, 1, 1, None), Variant::Plain).await?;
        let f = &run.figures;
        p.set("write_per_s", f.write_msgs_per_s);
        p.set("read_per_s", f.read_msgs_per_s);
        p.set("e2e_p99_ms", f.e2e_p99_ms);
        p.set("broker_rss_mib", f.broker_rss_max_mib.unwrap_or(f64::NAN));
        p.set("broker_cores", cores(f.broker_cpu_s_per_million, f.write_msgs_per_s));
        p.set(
            "postgres_cores",
            cores(f.postgres_cpu_s_per_million, f.write_msgs_per_s),
        );
        stop.store(true, Ordering::Relaxed);
        sampler.await??;
        p.set("pg_connections", peak.load(Ordering::Relaxed) as f64);
        for task in join_all(idle).await {
            task??;
        }
        let done = requests.load(Ordering::Relaxed) - before;
        let window = args.warmup + args.duration;
        p.set("idle_requests_per_s", done as f64 / window.as_secs_f64().max(1.0));
        anyhow::Ok(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    server.stop().await?;
    outcome
}

/// The most rows of `pg_stat_activity` with `application_name` = `app`,
/// sampled every 500 ms until `stop`, into `peak`.
async fn sample_pg_connections(url: String, app: String, stop: Arc<AtomicBool>, peak: Arc<AtomicU64>) -> Result<()> {
    let client = crate::db::connect(&url).await?;
    while !stop.load(Ordering::Relaxed) {
        let row = client
            .query_one(
                "SELECT count(*)::bigint FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await?;
        let n: i64 = row.get(0);
        peak.fetch_max(u64::try_from(n)?, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Opens one idle connection (ApiVersions, then Metadata answered) and
/// returns its task, which sends Metadata every [`IDLE_INTERVAL`] after
/// `phase` until `stop`.
async fn open(
    bootstrap: &str,
    phase: Duration,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let mut conn = TcpStream::connect(bootstrap).await.context("connecting")?;
    call(&mut conn, &request(18, 0, 1, &[])).await?;
    call(&mut conn, &request(3, 1, 2, &metadata_body("bench"))).await?;
    Ok(tokio::spawn(async move {
        let mut next = tokio::time::Instant::now() + phase;
        let mut id = 3;
        while !stop.load(Ordering::Relaxed) {
            let now = tokio::time::Instant::now();
            if now >= next {
                call(&mut conn, &request(3, 1, id, &metadata_body("bench"))).await?;
                requests.fetch_add(1, Ordering::Relaxed);
                id += 1;
                next += IDLE_INTERVAL;
            }
            tokio::time::sleep_until(next.min(now + Duration::from_millis(500))).await;
        }
        Ok(())
    }))
}

/// A request frame: length, header v1 (key, version, correlation id,
/// client id), body.
fn request(key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let client = b"scale";
    let mut frame = Vec::with_capacity(16 + body.len());
    let len = 2 + 2 + 4 + 2 + client.len() + body.len();
    frame.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation.to_be_bytes());
    frame.extend_from_slice(&i16::try_from(client.len()).unwrap_or(i16::MAX).to_be_bytes());
    frame.extend_from_slice(client);
    frame.extend_from_slice(body);
    frame
}

/// Metadata v1's body asking for one topic.
fn metadata_body(topic: &str) -> Vec<u8> {
    let mut body = 1i32.to_be_bytes().to_vec();
    body.extend_from_slice(&i16::try_from(topic.len()).unwrap_or(i16::MAX).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body
}

/// Sends `frame` and reads the answer, checking its correlation id.
async fn call(conn: &mut TcpStream, frame: &[u8]) -> Result<()> {
    conn.write_all(frame).await.context("sending")?;
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).await.context("reading an answer")?;
    let mut body = vec![0u8; usize::try_from(u32::from_be_bytes(len))?];
    conn.read_exact(&mut body).await.context("reading an answer")?;
    if body.get(..4) != frame.get(8..12) {
        bail!("an answer to another request");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metadata_request_frame_is_length_header_and_topic() {
        let frame = request(3, 1, 7, &metadata_body("bench"));
        let expected: Vec<u8> = [
            &[0, 0, 0, 26][..],
            &[0, 3, 0, 1, 0, 0, 0, 7],
            &[0, 5],
            b"scale",
            &[0, 0, 0, 1, 0, 5],
            b"bench",
        ]
        .concat();
        assert_eq!(frame, expected);
    }
}
