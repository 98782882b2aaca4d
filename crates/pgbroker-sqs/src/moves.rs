//! Message move tasks (SQS's dead-letter redrive) on top of
//! [`pgbroker::queues::Queues::redrive`]: a task moves the dead letters of
//! the source, to the queue each came from or to the destination. Without
//! `MaxNumberOfMessagesPerSecond` it moves them all in one transaction;
//! with it, it moves at most that many, oldest first, in each second (one
//! transaction per second), and a cancel stops it between two of them.
//! Tasks are remembered by the server process that ran them.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use crate::actions::{name_from, Ctx};
use crate::error::{SqsError, SqsResult};
use crate::protocol::{self, Input};

/// Most tasks remembered.
const KEEP: usize = 1000;

/// One move task.
#[derive(Debug, Clone)]
pub(crate) struct MoveTask {
    handle: String,
    source_arn: String,
    destination_arn: Option<String>,
    rate: Option<i64>,
    status: &'static str,
    moved: u64,
    to_move: i64,
    failure: Option<String>,
    started_ms: i64,
}

/// The tasks this process ran, oldest first.
#[derive(Debug, Default)]
pub(crate) struct MoveTasks(Vec<MoveTask>);

fn lock(tasks: &Mutex<MoveTasks>) -> std::sync::MutexGuard<'_, MoveTasks> {
    tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) async fn start(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let source_arn = input.str("SourceArn")?.to_string();
    let missing = || SqsError::not_found("The resource that you specified for the SourceArn parameter doesn't exist.");
    let source = name_from(&protocol::queue_name_of(&source_arn).map_err(|_| missing())?).map_err(|_| missing())?;
    let destination_arn = input.opt_str("DestinationArn")?.map(str::to_string);
    let destination = match &destination_arn {
        Some(arn) => Some(name_from(&protocol::queue_name_of(arn)?)?),
        None => None,
    };
    let rate = input.int_in("MaxNumberOfMessagesPerSecond", 1, 500)?;
    let queues = ctx.broker().queues().list().await?;
    if !queues.iter().any(|q| q.name == source) {
        return Err(missing());
    }
    if !queues.iter().any(|q| q.dead_letter.as_ref() == Some(&source)) {
        return Err(SqsError::invalid_parameter(
            "Source queue must be configured as a Dead Letter Queue.",
        ));
    }
    if let Some(d) = &destination {
        ctx.broker().queues().info(d).await?;
    }
    let stats = ctx.broker().queues().stats(&source).await?;
    let handle = {
        let mut tasks = lock(&ctx.shared.moves);
        if tasks
            .0
            .iter()
            .any(|t| t.source_arn == source_arn && matches!(t.status, "RUNNING" | "CANCELLING"))
        {
            return Err(SqsError::unsupported(
                "A message move task is already running for this source.",
            ));
        }
        let b: [u8; 16] = rand::random();
        let handle = hex::encode(b);
        tasks.0.push(MoveTask {
            handle: handle.clone(),
            source_arn,
            destination_arn,
            rate,
            status: "RUNNING",
            moved: 0,
            to_move: stats.ready + stats.delayed + stats.in_flight,
            failure: None,
            started_ms: pgbroker::to_millis(SystemTime::now()),
        });
        let excess = tasks.0.len().saturating_sub(KEEP);
        tasks.0.drain(..excess);
        handle
    };
    let broker = ctx.broker().clone();
    let moves: Arc<Mutex<MoveTasks>> = ctx.shared.moves.clone();
    let h = handle.clone();
    let rate = rate.and_then(|r| u64::try_from(r).ok());
    tokio::spawn(async move {
        // False when the task is no longer remembered (and so stops).
        let task = |f: &mut dyn FnMut(&mut MoveTask)| match lock(&moves).0.iter_mut().find(|t| t.handle == h) {
            Some(t) => {
                f(t);
                true
            }
            None => false,
        };
        let Some(rate) = rate else {
            let result = broker.queues().redrive(&source, destination.as_ref()).await;
            task(&mut |t| finish(t, result.as_ref().map(|n| *n)));
            return;
        };
        let start = tokio::time::Instant::now();
        for second in 1u32.. {
            let mut stop = false;
            let known = task(&mut |t| {
                if t.status == "CANCELLING" {
                    t.status = "CANCELLED";
                    stop = true;
                }
            });
            if stop || !known {
                return;
            }
            let result = broker.queues().redrive_some(&source, destination.as_ref(), rate).await;
            let known = task(&mut |t| match &result {
                // A full step: there may be more.
                Ok(n) if *n == rate => t.moved += n,
                Ok(n) => {
                    let total = t.moved + n;
                    finish(t, Ok(total));
                    stop = true;
                }
                Err(e) => {
                    finish(t, Err(e));
                    stop = true;
                }
            });
            if stop || !known {
                return;
            }
            tokio::time::sleep_until(start + std::time::Duration::from_secs(u64::from(second))).await;
        }
    });
    Ok(json!({ "TaskHandle": handle }))
}

/// Marks a task ended: completed with `moved` in all, or failed.
fn finish(t: &mut MoveTask, result: Result<u64, &pgbroker::Error>) {
    match result {
        Ok(n) => {
            t.status = "COMPLETED";
            t.moved = n;
        }
        Err(e) => {
            t.status = "FAILED";
            t.failure = Some(e.to_string());
        }
    }
}

pub(crate) async fn list(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let source_arn = input.str("SourceArn")?;
    let max = input.int_in("MaxResults", 1, 10)?.unwrap_or(1);
    let source = name_from(&protocol::queue_name_of(source_arn)?)?;
    ctx.broker().queues().info(&source).await.map_err(|_| {
        SqsError::not_found("The resource that you specified for the SourceArn parameter doesn't exist.")
    })?;
    let tasks = lock(&ctx.shared.moves);
    let results: Vec<Value> = tasks
        .0
        .iter()
        .rev()
        .filter(|t| t.source_arn == source_arn)
        .take(usize::try_from(max).unwrap_or(1))
        .map(|t| {
            let mut m = Map::new();
            if t.status == "RUNNING" {
                m.insert("TaskHandle".into(), json!(t.handle));
            }
            m.insert("Status".into(), json!(t.status));
            m.insert("SourceArn".into(), json!(t.source_arn));
            if let Some(d) = &t.destination_arn {
                m.insert("DestinationArn".into(), json!(d));
            }
            if let Some(r) = t.rate {
                m.insert("MaxNumberOfMessagesPerSecond".into(), json!(r));
            }
            m.insert("ApproximateNumberOfMessagesMoved".into(), json!(t.moved));
            m.insert("ApproximateNumberOfMessagesToMove".into(), json!(t.to_move));
            if let Some(f) = &t.failure {
                m.insert("FailureReason".into(), json!(f));
            }
            m.insert("StartedTimestamp".into(), json!(t.started_ms));
            Value::Object(m)
        })
        .collect();
    Ok(json!({ "Results": results }))
}

pub(crate) async fn cancel(ctx: &Ctx<'_>, input: &Input<'_>) -> SqsResult<Value> {
    let handle = input.str("TaskHandle")?;
    let mut tasks = lock(&ctx.shared.moves);
    // A paced task stops before its next step; one without a rate is one
    // transaction, which a cancel cannot stop.
    match tasks.0.iter_mut().find(|t| t.handle == handle && t.status == "RUNNING") {
        Some(t) => {
            ctx.caller
                .check("CancelMessageMoveTask", &protocol::queue_name_of(&t.source_arn)?)?;
            if t.rate.is_some() {
                t.status = "CANCELLING";
            }
            Ok(json!({ "ApproximateNumberOfMessagesMoved": t.moved }))
        }
        None => Err(SqsError::not_found("Task does not exist or is not running.")),
    }
}
