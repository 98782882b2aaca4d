//! `scale-partitions` and `scale-topics`: a schema with one topic of N
//! partitions, or with N topics of four partitions, served by `pgbroker
//! serve`. Each point measures, on topic `bench`: produce and fetch
//! rates flat out (four producers, one group of two consumers), the
//! end-to-end p99 at a modest fixed rate (measured first, on the empty
//! topic), the median time of a Metadata request for all topics and for
//! `bench`, the schema's catalogue (rows of `pg_class` and bytes of its
//! relations) once the topics are created and its rows again after the
//! runs, and the time from starting `pgbroker serve` on that populated
//! schema to its first Metadata answer.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{
    catalogue, cores, drop_schema, metadata_ms, populate, schema_name, wait_for_metadata, workload, Emit, ScaleArgs,
    ScalePoint,
};
use crate::kafka::{drive, Server, Target, Variant};
use crate::systems::Endpoints;

/// Sweeps the partitions of one topic.
pub async fn partitions(env: &Endpoints, args: &ScaleArgs, emit: &mut Emit<'_>) -> Result<()> {
    for &n in &args.partitions {
        let topics = vec![("bench".to_string(), n)];
        let mut p = ScalePoint::new("scale-partitions", "partitions", u64::try_from(n)?);
        point(env, args, &topics, n, &mut p)
            .await
            .with_context(|| format!("scale-partitions at {n}"))?;
        emit(p)?;
    }
    Ok(())
}

/// Sweeps the number of topics of four partitions (`bench` is one of them).
pub async fn topics(env: &Endpoints, args: &ScaleArgs, emit: &mut Emit<'_>) -> Result<()> {
    for &n in &args.topics {
        let mut topics = vec![("bench".to_string(), 4)];
        topics.extend((1..n).map(|i| (format!("t{i:05}"), 4)));
        let mut p = ScalePoint::new("scale-topics", "topics", u64::from(n));
        point(env, args, &topics, 4, &mut p)
            .await
            .with_context(|| format!("scale-topics at {n}"))?;
        emit(p)?;
    }
    Ok(())
}

/// One point on a fresh schema with `topics`; `bench` has `partitions`.
async fn point(
    env: &Endpoints,
    args: &ScaleArgs,
    topics: &[(String, i32)],
    partitions: i32,
    p: &mut ScalePoint,
) -> Result<()> {
    let url = env.database_url.as_str();
    let schema = schema_name("part");
    let created = Instant::now();
    populate(url, &schema, topics).await?;
    p.set("create_s", created.elapsed().as_secs_f64());
    let (rows, bytes) = catalogue(url, &schema).await?;
    p.set("pg_class_rows", rows);
    p.set("catalogue_mib", bytes / 1_048_576.0);
    let outcome = measure(env, args, &schema, partitions, p).await;
    drop_schema(url, &schema).await?;
    outcome
}

async fn measure(env: &Endpoints, args: &ScaleArgs, schema: &str, partitions: i32, p: &mut ScalePoint) -> Result<()> {
    let url = env.database_url.as_str();
    let server = Server::start(&env.pgbroker_bin, url, schema, false).await?;
    let runs = async {
        let target = Target {
            bootstrap: server.bootstrap.clone(),
            http: None,
            pids: vec![server.pid()?],
        };
        // Paced first, on an empty topic: the flat-out run leaves records
        // behind that the group would read late.
        let paced = workload(args, partitions, 2, 2, Some(args.e2e_rate));
        let slow = drive(&target, &paced, Variant::Plain).await?;
        p.set("e2e_p99_ms", slow.figures.e2e_p99_ms);
        let flat = drive(&target, &workload(args, partitions, 4, 2, None), Variant::Plain).await?;
        let f = &flat.figures;
        p.set("write_per_s", f.write_msgs_per_s);
        p.set("read_per_s", f.read_msgs_per_s);
        p.set("broker_cores", cores(f.broker_cpu_s_per_million, f.write_msgs_per_s));
        p.set(
            "postgres_cores",
            cores(f.postgres_cpu_s_per_million, f.write_msgs_per_s),
        );
        p.set("metadata_all_ms", metadata_ms(&server.bootstrap, None, 20).await?);
        p.set(
            "metadata_one_ms",
            metadata_ms(&server.bootstrap, Some("bench"), 20).await?,
        );
        anyhow::Ok(())
    }
    .await;
    server.stop().await?;
    runs?;
    p.set("pg_class_rows_loaded", catalogue(url, schema).await?.0);
    let started = Instant::now();
    let server = Server::start(&env.pgbroker_bin, url, schema, false).await?;
    let answered = wait_for_metadata(&server.bootstrap, "bench", Duration::from_secs(120)).await;
    let startup = started.elapsed();
    server.stop().await?;
    answered?;
    p.set("startup_ms", startup.as_secs_f64() * 1e3);
    Ok(())
}
