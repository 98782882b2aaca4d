//! The ceiling: the fastest way this Postgres takes the same bytes
//! durably, with nothing pgbroker adds. Each producer sends its batch with
//! binary COPY into one bare table (no index, no offsets, no consumers) and
//! commits. Reads are not measured: there is no consumer design to compare.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use crate::db;
use crate::measure::{payload, produce_loop, Measured, Run, Stats};
use crate::procfs::BrokerProcess;
use crate::summary::Summary;
use crate::systems::Endpoints;
use crate::workload::PubsubArgs;

/// Creates the bare table in a schema of its own, runs the writers and
/// drops the schema.
pub async fn run(env: &Endpoints, args: &PubsubArgs) -> Result<Summary> {
    let url = env.database_url.as_str();
    // Built from a number only: safe to place in SQL text.
    let schema = format!("ceiling_bench_{}", std::process::id());
    let admin = db::connect(url).await?;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
             CREATE TABLE {schema}.log (payload bytea NOT NULL, created_at timestamptz NOT NULL);"
        ))
        .await?;
    let mut run = Run::start();
    for id in 0..args.producers {
        let client = db::connect(url).await?;
        let sc = schema.clone();
        run.spawn(|s, st| write(client, sc, args.clone(), id, s, st));
    }
    let outcome = run.measure(args, "ceiling", &BrokerProcess::InProcess).await;
    admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await?;
    outcome
}

async fn write(
    client: tokio_postgres::Client,
    schema: String,
    args: PubsubArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let value = payload(args.message_size);
    let copy = format!("COPY {schema}.log (payload, created_at) FROM STDIN (FORMAT binary)");
    let client = &client;
    produce_loop(&args, id, stats, stop, |_, now| {
        let (copy, value) = (copy.as_str(), &value);
        async move {
            let sink = client.copy_in(copy).await?;
            let writer = BinaryCopyInWriter::new(sink, &[Type::BYTEA, Type::TIMESTAMPTZ]);
            pin_mut!(writer);
            for _ in 0..args.write_batch {
                writer.as_mut().write(&[value, &now]).await?;
            }
            writer.finish().await?;
            Ok(())
        }
    })
    .await
}
