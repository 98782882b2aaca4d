//! The source article's pub/sub design, driven with the same client library
//! and payloads as pgbroker so that only the design differs: one table per
//! partition, a counter row per partition that producers increment by the
//! batch size, and per group one fixed reader per partition that claims a
//! range by advancing its offset row, reads it and commits. Readers poll
//! and sleep 0.1 to 2 ms when there is nothing new, as the article did.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use rand::Rng;
use tokio_postgres::Client;

use crate::db;
use crate::measure::{histogram, payload, produce_loop, record, Measured, Run, Stats};
use crate::procfs::BrokerProcess;
use crate::summary::Summary;
use crate::systems::Endpoints;
use crate::workload::PubsubArgs;

/// Creates the article's tables in a schema of their own, runs the
/// workload and drops the schema.
pub async fn run(env: &Endpoints, args: &PubsubArgs) -> Result<Summary> {
    let url = env.database_url.as_str();
    // Built from a number only: safe to place in SQL text.
    let schema = format!("article_bench_{}", std::process::id());
    let admin = db::connect(url).await?;
    let mut ddl = format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.counters (partition int PRIMARY KEY, next_offset bigint NOT NULL);
         CREATE TABLE {schema}.consumer_offsets (group_id text, partition int, next_offset bigint NOT NULL,
                                                 PRIMARY KEY (group_id, partition));"
    );
    for p in 0..args.partitions {
        ddl.push_str(&format!(
            "CREATE TABLE {schema}.log_{p} (\"offset\" bigint PRIMARY KEY, payload bytea NOT NULL,
                                            created_at timestamptz NOT NULL);
             INSERT INTO {schema}.counters VALUES ({p}, 0);"
        ));
    }
    admin.batch_execute(&ddl).await?;
    let mut run = Run::start();
    for g in 0..args.groups {
        for r in 0..args.consumers_per_group {
            let mine: Vec<i32> = (0..args.partitions)
                .filter(|p| u32::try_from(*p).is_ok_and(|p| p % args.consumers_per_group == r))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let client = db::connect(url).await?;
            for p in &mine {
                client
                    .execute(
                        &format!("INSERT INTO {schema}.consumer_offsets VALUES ($1, $2, 0)"),
                        &[&format!("g{g}"), p],
                    )
                    .await?;
            }
            let sc = schema.clone();
            let batch = i64::from(args.read_batch);
            run.spawn(|s, st| read(client, sc, format!("g{g}"), mine, batch, s, st));
        }
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
    args: PubsubArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let values = vec![payload(args.message_size); usize::try_from(args.write_batch)?];
    let n = i64::from(args.write_batch);
    let bump = format!(
        "UPDATE {schema}.counters SET next_offset = next_offset + $2 WHERE partition = $1 RETURNING next_offset - $2"
    );
    let client = &client;
    produce_loop(&args, id, stats, stop, |partition, now| {
        let insert = format!(
            "INSERT INTO {schema}.log_{partition} (\"offset\", payload, created_at)
             SELECT $1 + t.ord - 1, t.v, $3 FROM unnest($2::bytea[]) WITH ORDINALITY AS t(v, ord)"
        );
        let (bump, values) = (&bump, &values);
        async move {
            client.batch_execute("BEGIN").await?;
            let row = client.query_one(bump.as_str(), &[&partition, &n]).await?;
            let base: i64 = row.get(0);
            client.execute(insert.as_str(), &[&base, values, &now]).await?;
            client.batch_execute("COMMIT").await?;
            Ok(())
        }
    })
    .await
}

async fn read(
    mut client: Client,
    schema: String,
    group: String,
    partitions: Vec<i32>,
    batch: i64,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let mut latency = histogram()?;
    let claim =
        format!("SELECT next_offset FROM {schema}.consumer_offsets WHERE group_id = $1 AND partition = $2 FOR UPDATE");
    let high = format!("SELECT next_offset FROM {schema}.counters WHERE partition = $1");
    let advance =
        format!("UPDATE {schema}.consumer_offsets SET next_offset = $3 WHERE group_id = $1 AND partition = $2");
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0;
        for p in &partitions {
            let fetch =
                format!("SELECT payload, created_at FROM {schema}.log_{p} WHERE \"offset\" >= $1 AND \"offset\" < $2");
            let tx = client.transaction().await?;
            let pos: i64 = tx.query_one(claim.as_str(), &[&group, p]).await?.get(0);
            let hw: i64 = tx.query_one(high.as_str(), &[p]).await?.get(0);
            let end = hw.min(pos + batch);
            if end > pos {
                tx.execute(advance.as_str(), &[&group, p, &end]).await?;
                let rows = tx.query(fetch.as_str(), &[&pos, &end]).await?;
                let now = SystemTime::now();
                for row in &rows {
                    let created: SystemTime = row.get(1);
                    let lat = now.duration_since(created).unwrap_or_default();
                    record(&stats, &mut latency, u64::try_from(lat.as_micros())?);
                }
                got += rows.len();
                stats.read.fetch_add(u64::try_from(rows.len())?, Ordering::Relaxed);
            }
            tx.commit().await?;
        }
        if got == 0 {
            let nap = rand::thread_rng().gen_range(100..=2000);
            tokio::time::sleep(Duration::from_micros(nap)).await;
        }
    }
    Ok(Measured::EndToEnd(latency))
}
