//! The source article's work queue, driven with the same client library and
//! payloads as pgbroker so that only the design differs: one table (id,
//! payload, created_at) and an archive table. A worker, in one transaction,
//! selects the oldest row(s) FOR UPDATE SKIP LOCKED, deletes them, inserts
//! them into the archive and commits; with nothing to take it sleeps 0.1 to
//! 2 ms. Writers insert one row per statement (a multi-row insert when
//! sending batches).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use rand::Rng;
use tokio_postgres::Client;

use crate::db;
use crate::measure::{histogram, latency_micros, payload, produce_loop, record, stamped, Measured, Run, Stats};
use crate::procfs::BrokerProcess;
use crate::summary::Summary;
use crate::systems::Endpoints;
use crate::workload::QueueArgs;

/// Creates the article's queue tables in a schema of their own, runs the
/// workload and drops the schema.
pub async fn run(env: &Endpoints, args: &QueueArgs) -> Result<Summary> {
    let url = env.database_url.as_str();
    // Built from a number only: safe to place in SQL text.
    let schema = format!("article_queue_{}", std::process::id());
    let admin = db::connect(url).await?;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
             CREATE TABLE {schema}.queue (id bigserial PRIMARY KEY, payload bytea NOT NULL,
                                          created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE {schema}.archive (id bigint NOT NULL, payload bytea NOT NULL,
                                            created_at timestamptz NOT NULL,
                                            processed_at timestamptz NOT NULL DEFAULT now());"
        ))
        .await?;
    let mut run = Run::start();
    for _ in 0..args.workers {
        let client = db::connect(url).await?;
        let sc = schema.clone();
        let batch = i64::from(args.receive_batch);
        run.spawn(|s, st| work(client, sc, batch, s, st));
    }
    for id in 0..args.producers {
        let client = db::connect(url).await?;
        let sc = schema.clone();
        run.spawn(|s, st| write(client, sc, args.clone(), id, s, st));
    }
    let outcome = run.measure(args, "article", &BrokerProcess::InProcess).await;
    admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await?;
    outcome
}

async fn write(
    client: Client,
    schema: String,
    args: QueueArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let base = payload(args.message_size);
    let batch = usize::try_from(args.send_batch)?;
    let one = client
        .prepare(&format!("INSERT INTO {schema}.queue (payload) VALUES ($1)"))
        .await?;
    let many = client
        .prepare(&format!(
            "INSERT INTO {schema}.queue (payload) SELECT unnest($1::bytea[])"
        ))
        .await?;
    let (client, base, one, many) = (&client, &base, &one, &many);
    produce_loop(&args, id, stats, stop, |_, now| async move {
        if batch == 1 {
            client.execute(one, &[&stamped(base, now)]).await?;
        } else {
            let values: Vec<Vec<u8>> = (0..batch).map(|_| stamped(base, now)).collect();
            client.execute(many, &[&values]).await?;
        }
        Ok(())
    })
    .await
}

async fn work(
    mut client: Client,
    schema: String,
    batch: i64,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let mut latency = histogram()?;
    let take = client
        .prepare(&format!(
            "SELECT id, payload, created_at FROM {schema}.queue ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .await?;
    let delete = client
        .prepare(&format!("DELETE FROM {schema}.queue WHERE id = ANY($1)"))
        .await?;
    let archive = client
        .prepare(&format!(
            "INSERT INTO {schema}.archive (id, payload, created_at)
             SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::timestamptz[])"
        ))
        .await?;
    while !stop.load(Ordering::Relaxed) {
        let tx = client.transaction().await?;
        let rows = tx.query(&take, &[&batch]).await?;
        if rows.is_empty() {
            tx.commit().await?;
            let nap = rand::thread_rng().gen_range(100..=2000);
            tokio::time::sleep(Duration::from_micros(nap)).await;
            continue;
        }
        let now = SystemTime::now();
        let mut ids = Vec::with_capacity(rows.len());
        let mut payloads = Vec::with_capacity(rows.len());
        let mut created = Vec::with_capacity(rows.len());
        for row in &rows {
            let body: Vec<u8> = row.get(1);
            record(&stats, &mut latency, latency_micros(&body, now));
            ids.push(row.get::<_, i64>(0));
            payloads.push(body);
            created.push(row.get::<_, SystemTime>(2));
        }
        tx.execute(&delete, &[&ids]).await?;
        tx.execute(&archive, &[&ids, &payloads, &created]).await?;
        tx.commit().await?;
        stats.read.fetch_add(u64::try_from(rows.len())?, Ordering::Relaxed);
    }
    Ok(Measured::EndToEnd(latency))
}
