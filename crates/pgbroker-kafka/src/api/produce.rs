//! Produce: record batches decoded and bounded here, appended by the
//! library, one library call per partition, partitions in parallel.

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::streams::ProducerBatch;
use pgbroker::{Error, Record, TopicName};

use super::sb;
use crate::codec::{decode_batches, BatchLimits, DecodedBatch};
use crate::dispatch::ReqInfo;
use crate::errors::{batch_code, data_code, NONE};
use crate::metrics;
use crate::server::Ctx;

/// Most records accepted in one partition's data of one request.
const MAX_RECORDS_PER_PARTITION: usize = 1_000_000;
const INVALID_REQUIRED_ACKS: i16 = 21;

/// Result of one partition: error code, base offset, log start, message.
type PartitionOutcome = (i16, i64, Option<String>);

pub(crate) async fn produce(info: &ReqInfo<'_>, req: ProduceRequest) -> Option<ProduceResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let acks = req.acks;
    let txn_id = req
        .transactional_id
        .as_ref()
        .filter(|t| !t.is_empty())
        .map(|t| t.as_str());
    let refuse_all = if txn_id.is_some() && !info.access.produces_anywhere() {
        Some((
            ResponseError::TransactionalIdAuthorizationFailed.code(),
            "not authorized to use a transactional id",
        ))
    } else if !matches!(acks, -1..=1) {
        Some((INVALID_REQUIRED_ACKS, "acks must be -1, 0 or 1"))
    } else {
        None
    };
    let mut work = Vec::new();
    for topic in &req.topic_data {
        for p in &topic.partition_data {
            work.push((topic.name.0.clone(), p.index, p.records.clone()));
        }
    }
    let outcomes = join_all(work.iter().map(|(name, partition, records)| async move {
        if let Some((err, msg)) = refuse_all {
            return (err, -1, Some(msg.to_string()));
        }
        if !info.access.topic(Permission::Produce, name.as_str()) {
            return (
                ResponseError::TopicAuthorizationFailed.code(),
                -1,
                Some("not authorized to produce to this topic".to_string()),
            );
        }
        produce_partition(ctx, txn_id, name.as_str(), *partition, records.as_ref()).await
    }))
    .await;
    if acks == 0 {
        return None;
    }
    let mut resp = ProduceResponse::default();
    let mut outcomes = outcomes.into_iter();
    for topic in &req.topic_data {
        let mut t = TopicProduceResponse::default();
        t.name = topic.name.clone();
        for p in &topic.partition_data {
            let (err, base, msg) = outcomes
                .next()
                .unwrap_or((ResponseError::UnknownServerError.code(), -1, None));
            let mut pr = PartitionProduceResponse::default();
            pr.index = p.index;
            pr.error_code = err;
            pr.base_offset = base;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = -1;
            if v >= 8 {
                pr.error_message = msg.map(sb);
            }
            if err != NONE {
                metrics::api_error("Produce", err);
            }
            t.partition_responses.push(pr);
        }
        resp.responses.push(t);
    }
    Some(resp)
}

async fn produce_partition(
    ctx: &Ctx,
    txn_id: Option<&str>,
    name: &str,
    partition: i32,
    records: Option<&Bytes>,
) -> PartitionOutcome {
    let topic = match TopicName::new(name) {
        Ok(t) => t,
        Err(e) => return (ResponseError::InvalidTopicException.code(), -1, Some(e.to_string())),
    };
    let Some(raw) = records else {
        return (ResponseError::CorruptMessage.code(), -1, Some("no records".to_string()));
    };
    let limits = BatchLimits {
        max_decompressed: ctx.config.max_decompressed_bytes,
        max_records: MAX_RECORDS_PER_PARTITION,
    };
    let batches = match decode_batches(raw, limits) {
        Ok(b) => b,
        Err(e) => return (batch_code(&e), -1, Some(e.to_string())),
    };
    // Transactional batches come with the request's transactional id, and
    // only they do.
    if batches
        .iter()
        .any(|b| b.transactional != txn_id.is_some() || (b.transactional && b.producer_id < 0))
    {
        return (
            ResponseError::InvalidTxnState.code(),
            -1,
            Some("transactional batches need the request's transactional id and a producer id".to_string()),
        );
    }
    let bytes: usize = batches.iter().flat_map(|b| &b.records).map(Record::size).sum();
    let count: usize = batches.iter().map(|b| b.records.len()).sum();
    let result = if let Some(id) = txn_id {
        append_transactional(ctx, id, &topic, partition, batches).await
    } else if batches.iter().any(|b| b.producer_id >= 0) {
        append_idempotent(ctx, &topic, partition, batches).await
    } else {
        let records: Vec<Record> = batches.into_iter().flat_map(|b| b.records).collect();
        ctx.broker
            .streams()
            .produce(&topic, Some(partition), &records)
            .await
            .map(|pos| pos.first().map_or(-1, |p| p.offset))
    };
    match result {
        Ok(base) => {
            metrics::produced(name, count, bytes);
            (NONE, base, None)
        }
        Err(Error::OutOfOrderSequence { producer_id, last, got })
            if ctx.sequence_gaps.in_grace(
                producer_id,
                (topic.as_str(), partition),
                last,
                got,
                ctx.config.sequence_gap_grace,
            ) =>
        {
            let why = format!(
                "producer {producer_id}: the batches before sequence {got} (after {last}) have not arrived yet; \
                 nothing was written, send again"
            );
            (ResponseError::NotEnoughReplicas.code(), -1, Some(why))
        }
        Err(e) => {
            if e.is_retriable() {
                tracing::warn!(topic = %topic, partition, error = %e, "produce failed");
            }
            (data_code(&e), -1, Some(e.to_string()))
        }
    }
}

/// Batches of idempotent producers go one at a time through the sequence
/// check; the answer's base offset is the first batch's.
async fn append_idempotent(
    ctx: &Ctx,
    topic: &TopicName,
    partition: i32,
    batches: Vec<DecodedBatch>,
) -> pgbroker::Result<i64> {
    let mut first = None;
    for b in batches {
        let base = if b.producer_id >= 0 {
            let batch = ProducerBatch {
                producer_id: b.producer_id,
                epoch: b.producer_epoch,
                base_sequence: b.base_sequence,
            };
            ctx.broker
                .streams()
                .produce_idempotent(topic, partition, &b.records, batch)
                .await?
                .base_offset
        } else {
            let pos = ctx.broker.streams().produce(topic, Some(partition), &b.records).await?;
            pos.first().map_or(-1, |p| p.offset)
        };
        first.get_or_insert(base);
    }
    Ok(first.unwrap_or(-1))
}

/// Batches of a transactional producer go one at a time through the
/// coordinator's checks (epoch, ongoing transaction, partition added) and
/// the sequence check.
async fn append_transactional(
    ctx: &Ctx,
    txn_id: &str,
    topic: &TopicName,
    partition: i32,
    batches: Vec<DecodedBatch>,
) -> pgbroker::Result<i64> {
    let mut first = None;
    for b in batches {
        let batch = ProducerBatch {
            producer_id: b.producer_id,
            epoch: b.producer_epoch,
            base_sequence: b.base_sequence,
        };
        let base = ctx
            .broker
            .transactions()
            .produce(txn_id, topic, partition, &b.records, batch)
            .await?
            .base_offset;
        first.get_or_insert(base);
    }
    Ok(first.unwrap_or(-1))
}
