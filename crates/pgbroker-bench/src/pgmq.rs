//! `pgmq`: pgmq's SQL functions on the same Postgres, installed without the
//! extension (the `pgmq` crate's embedded SQL) into the `pgmq` schema when
//! it is absent, and removed again afterwards. Producers call `pgmq.send`
//! (or `send_batch`); workers call `pgmq.read` with a visibility timeout,
//! then `pgmq.archive` what they read, and sleep 0.1 to 2 ms when it
//! returned nothing. Messages are JSON: the send time in microseconds and
//! padding to the message size.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::db;
use crate::measure::{epoch_micros, histogram, produce_loop, record, Measured, Run, Stats};
use crate::procfs::BrokerProcess;
use crate::summary::Summary;
use crate::systems::Endpoints;
use crate::workload::QueueArgs;

/// A JSON message of about `size` bytes carrying its send time.
fn message(size: u32, sent: SystemTime) -> Value {
    let pad = usize::try_from(size.saturating_sub(32)).unwrap_or(0);
    json!({ "sent_us": epoch_micros(sent), "pad": "x".repeat(pad) })
}

/// Runs the workload on a fresh queue, dropped afterwards with whatever
/// this run installed.
pub async fn run(env: &Endpoints, args: &QueueArgs) -> Result<Summary> {
    let url = env.database_url.as_str();
    let admin = db::connect(url).await?;
    let present: bool = admin
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgmq')", &[])
        .await?
        .get(0);
    if !present {
        // pgmq's own URL parsing insists on a password; sqlx's does not.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .context("connecting for pgmq")?;
        let installer = pgmq::PGMQueueExt::new_with_pool(pool.clone()).await;
        installer
            .install_sql_from_embedded()
            .await
            .context("installing pgmq's SQL")?;
        pool.close().await;
    }
    let name = format!("bench_{}", std::process::id());
    admin.execute("SELECT pgmq.create($1)", &[&name]).await?;
    let outcome = drive(url, &name, args).await;
    admin.execute("SELECT pgmq.drop_queue($1)", &[&name]).await?;
    if !present {
        admin.batch_execute("DROP SCHEMA pgmq CASCADE").await?;
    }
    outcome
}

async fn drive(url: &str, name: &str, args: &QueueArgs) -> Result<Summary> {
    let mut run = Run::start();
    for _ in 0..args.workers {
        let client = db::connect(url).await?;
        let batch = i32::try_from(args.receive_batch)?;
        run.spawn(|s, st| work(client, name.to_string(), batch, s, st));
    }
    for id in 0..args.producers {
        let client = db::connect(url).await?;
        let (a, n) = (args.clone(), name.to_string());
        run.spawn(|s, st| produce(client, n, a, id, s, st));
    }
    run.measure(args, "pgmq", &BrokerProcess::InProcess).await
}

async fn produce(
    client: Client,
    name: String,
    args: QueueArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let one = client.prepare("SELECT pgmq.send($1::text, $2::jsonb)").await?;
    let many = client.prepare("SELECT pgmq.send_batch($1::text, $2::jsonb[])").await?;
    let (client, one, many, name) = (&client, &one, &many, &name);
    produce_loop(&args, id, stats, stop, |_, now| async move {
        if args.send_batch == 1 {
            client.query(one, &[name, &message(args.message_size, now)]).await?;
        } else {
            let batch: Vec<Value> = (0..args.send_batch).map(|_| message(args.message_size, now)).collect();
            client.query(many, &[name, &batch]).await?;
        }
        Ok(())
    })
    .await
}

async fn work(client: Client, name: String, batch: i32, stats: Arc<Stats>, stop: Arc<AtomicBool>) -> Result<Measured> {
    let mut latency = histogram()?;
    let read = client
        .prepare("SELECT msg_id, message FROM pgmq.read($1::text, 30, $2::int)")
        .await?;
    let archive_one = client.prepare("SELECT pgmq.archive($1::text, $2::bigint)").await?;
    let archive_many = client.prepare("SELECT pgmq.archive($1::text, $2::bigint[])").await?;
    while !stop.load(Ordering::Relaxed) {
        let rows = client.query(&read, &[&name, &batch]).await?;
        if rows.is_empty() {
            let nap = 100 + epoch_micros(SystemTime::now()) % 1900;
            tokio::time::sleep(Duration::from_micros(nap)).await;
            continue;
        }
        let now = epoch_micros(SystemTime::now());
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let body: Value = row.get(1);
            let sent = body["sent_us"].as_u64().unwrap_or(now);
            record(&stats, &mut latency, now.saturating_sub(sent));
            ids.push(row.get::<_, i64>(0));
        }
        if let [id] = ids[..] {
            client.query(&archive_one, &[&name, &id]).await?;
        } else {
            client.query(&archive_many, &[&name, &ids]).await?;
        }
        stats.read.fetch_add(u64::try_from(ids.len())?, Ordering::Relaxed);
    }
    Ok(Measured::EndToEnd(latency))
}
