//! `sqs`: pgbroker's SQS-compatible API, driven by the harness's own
//! client of the AWS JSON 1.0 protocol ([`crate::sqs_http`]) over one
//! keep-alive connection per producer and worker. The harness starts
//! `pgbroker serve --sqs-listen 127.0.0.1:PORT --sqs-allow-anonymous` on a
//! fresh schema (unsigned requests, accepted on loopback only) and creates
//! a standard queue with CreateQueue. Producers call SendMessage, or
//! SendMessageBatch with a send batch above 1; workers call ReceiveMessage
//! (MaxNumberOfMessages the receive batch, WaitTimeSeconds the long poll,
//! 1 s by default), then DeleteMessage or DeleteMessageBatch. Batches hold
//! at most 10 messages, as in SQS. CPU and memory are those of the
//! `pgbroker serve` process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::db;
use crate::kafka::Server;
use crate::measure::{epoch_micros, histogram, or_stop, produce_loop, record, Measured, Run, Stats};
use crate::procfs::BrokerProcess;
use crate::sqs_http::{check_batch, received, sent_us, stamped_text, SqsClient};
use crate::summary::Summary;
use crate::systems::Endpoints;
use crate::workload::QueueArgs;

/// Most messages of one SQS batch.
const MAX_BATCH: u32 = 10;

/// Runs the workload through `pgbroker serve` on a fresh schema, dropped
/// afterwards.
pub async fn run(env: &Endpoints, args: &QueueArgs) -> Result<Summary> {
    ensure!(
        args.send_batch <= MAX_BATCH && args.receive_batch <= MAX_BATCH,
        "SQS batches hold at most {MAX_BATCH} messages"
    );
    let (url, bin) = (env.database_url.as_str(), env.pgbroker_bin.as_path());
    // Built from a number only: safe to place in SQL text.
    let schema = format!("bench_sqs_{}", std::process::id());
    let admin = db::connect(url).await?;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    let outcome = async {
        let server = Server::start(bin, url, &schema, true).await?;
        let outcome = async {
            let addr = server.sqs.clone().context("no SQS listener")?;
            let mut client = SqsClient::connect(&addr).await?;
            let created = client.call("CreateQueue", &json!({ "QueueName": "bench" })).await?;
            let queue_url = created["QueueUrl"].as_str().context("CreateQueue without QueueUrl")?;
            drive(&server, &addr, queue_url, args).await
        }
        .await;
        server.stop().await?;
        outcome
    }
    .await;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    outcome
}

async fn drive(server: &Server, addr: &str, queue_url: &str, args: &QueueArgs) -> Result<Summary> {
    let mut run = Run::start();
    for _ in 0..args.workers {
        let client = SqsClient::connect(addr).await?;
        let (u, a) = (queue_url.to_string(), args.clone());
        run.spawn(|s, st| work(client, u, a, s, st));
    }
    for id in 0..args.producers {
        let client = Mutex::new(SqsClient::connect(addr).await?);
        let (u, a) = (queue_url.to_string(), args.clone());
        run.spawn(|s, st| produce(client, u, a, id, s, st));
    }
    let process = BrokerProcess::Pid(server.pid()?);
    run.measure(args, "sqs", &process).await
}

async fn produce(
    client: Mutex<SqsClient>,
    queue_url: String,
    args: QueueArgs,
    id: u32,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let (client, queue_url) = (&client, &queue_url);
    let (batch, size) = (args.send_batch, args.message_size);
    produce_loop(&args, id, stats, stop, |_, now| async move {
        let body = stamped_text(epoch_micros(now), size);
        let mut client = client.lock().await;
        if batch == 1 {
            client
                .call("SendMessage", &json!({ "QueueUrl": queue_url, "MessageBody": body }))
                .await?;
        } else {
            let entries: Vec<Value> = (0..batch)
                .map(|i| json!({ "Id": i.to_string(), "MessageBody": body }))
                .collect();
            let sent = client
                .call(
                    "SendMessageBatch",
                    &json!({ "QueueUrl": queue_url, "Entries": entries }),
                )
                .await?;
            check_batch("SendMessageBatch", &sent)?;
        }
        Ok(())
    })
    .await
}

async fn work(
    mut client: SqsClient,
    queue_url: String,
    args: QueueArgs,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<Measured> {
    let mut latency = histogram()?;
    let receive = json!({
        "QueueUrl": queue_url,
        "MaxNumberOfMessages": args.receive_batch,
        "WaitTimeSeconds": args.long_poll_s.unwrap_or(1),
    });
    while !stop.load(Ordering::Relaxed) {
        let Some(answer) = or_stop(client.call("ReceiveMessage", &receive), &stop).await else {
            break;
        };
        let got = received(&answer?)?;
        if got.is_empty() {
            continue;
        }
        let now = epoch_micros(SystemTime::now());
        for (_, body) in &got {
            record(&stats, &mut latency, now.saturating_sub(sent_us(body).unwrap_or(now)));
        }
        if let [(receipt, _)] = &got[..] {
            client
                .call(
                    "DeleteMessage",
                    &json!({ "QueueUrl": queue_url, "ReceiptHandle": receipt }),
                )
                .await?;
        } else {
            let entries: Vec<Value> = got
                .iter()
                .enumerate()
                .map(|(i, (receipt, _))| json!({ "Id": i.to_string(), "ReceiptHandle": receipt }))
                .collect();
            let deleted = client
                .call(
                    "DeleteMessageBatch",
                    &json!({ "QueueUrl": queue_url, "Entries": entries }),
                )
                .await?;
            check_batch("DeleteMessageBatch", &deleted)?;
        }
        stats.read.fetch_add(u64::try_from(got.len())?, Ordering::Relaxed);
    }
    Ok(Measured::EndToEnd(latency))
}
