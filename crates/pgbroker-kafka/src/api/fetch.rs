//! Fetch: every asked partition read through the library in one call,
//! which long-polls across all of them for `min_bytes` up to `max_wait`.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::streams::{FetchResult, Isolation, ManyLimits, PartitionRead, RecordProducer};
use pgbroker::{StoredRecord, TopicName};

use crate::codec::{encode_batch_of, encode_batch_spanning, BatchProducer};
use crate::dispatch::ReqInfo;
use crate::errors::data_code;
use crate::metrics;

/// Most records returned per partition by one fetch.
const MAX_RECORDS_PER_PARTITION: usize = 10_000;
/// Longest wait honoured, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

pub(crate) async fn fetch(info: &ReqInfo<'_>, req: FetchRequest) -> Option<FetchResponse> {
    let (ctx, v) = (info.ctx, info.version);
    // Partitions in request order; names that fail validation or that the
    // user may not consume from are answered without a read.
    let mut reads = Vec::new();
    let mut slots: Vec<(usize, i32, i64, Result<usize, i16>)> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let name = if info.access.topic(Permission::Consume, t.topic.0.as_str()) {
            TopicName::new(t.topic.0.as_str()).map_err(|_| ResponseError::UnknownTopicOrPartition.code())
        } else {
            Err(ResponseError::TopicAuthorizationFailed.code())
        };
        for p in &t.partitions {
            let slot = name.as_ref().map_err(|e| *e).map(|n| {
                reads.push(PartitionRead {
                    topic: n.clone(),
                    partition: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0).max(1),
                });
                reads.len() - 1
            });
            slots.push((ti, p.partition, p.fetch_offset, slot));
        }
    }
    let limits = ManyLimits {
        min_bytes: usize::try_from(req.min_bytes).unwrap_or(0),
        max_bytes: usize::try_from(req.max_bytes).unwrap_or(usize::MAX).max(1),
        max_records: MAX_RECORDS_PER_PARTITION,
        max_wait: Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP),
        isolation: if req.isolation_level == 1 {
            Isolation::ReadCommitted
        } else {
            Isolation::ReadUncommitted
        },
    };
    let committed = limits.isolation == Isolation::ReadCommitted;
    let results = ctx.broker.streams().fetch_many(&reads, limits).await;
    let mut resp = FetchResponse::default();
    resp.responses = req
        .topics
        .iter()
        .map(|t| {
            let mut r = FetchableTopicResponse::default();
            r.topic = t.topic.clone();
            r
        })
        .collect();
    for (ti, partition, asked, slot) in slots {
        let mut pd = PartitionData::default();
        pd.partition_index = partition;
        pd.high_watermark = -1;
        pd.last_stable_offset = -1;
        pd.log_start_offset = -1;
        pd.preferred_read_replica = BrokerId(-1);
        match slot.and_then(|i| results.get(i).ok_or(ResponseError::UnknownServerError.code())) {
            Err(err) => {
                pd.error_code = err;
                metrics::api_error("Fetch", err);
            }
            Ok(Ok(r)) => {
                pd.high_watermark = r.high_watermark;
                pd.last_stable_offset = r.last_stable_offset;
                if v >= 5 {
                    pd.log_start_offset = r.log_start_offset;
                }
                // Only read_committed fetches hear of aborted
                // transactions (a read_uncommitted client told of them
                // would drop records it asked to see).
                if committed {
                    pd.aborted_transactions = Some(
                        r.aborted
                            .iter()
                            .map(|a| {
                                let mut t = AbortedTransaction::default();
                                t.producer_id = kafka_protocol::messages::ProducerId(a.producer_id);
                                t.first_offset = a.first_offset;
                                t
                            })
                            .collect(),
                    );
                }
                // One batch from the first record (or the asked offset)
                // through the end of the range read, so that records
                // compaction removed after the last one are stepped over.
                let from = r.records.first().map_or(asked, |rec| rec.offset);
                if r.next_offset > from {
                    let mut buf = Vec::new();
                    if r.producers.is_empty() {
                        encode_batch_spanning(&mut buf, &r.records, from, r.next_offset);
                    } else {
                        encode_runs(&mut buf, r);
                        let end = r.records.last().map_or(from, |rec| rec.offset + 1);
                        encode_batch_spanning(&mut buf, &[], end, r.next_offset);
                    }
                    metrics::fetched(req.topics[ti].topic.0.as_str(), r.records.len(), buf.len());
                    pd.records = Some(Bytes::from(buf));
                } else {
                    pd.records = Some(Bytes::new());
                }
            }
            Ok(Err(e)) => {
                pd.error_code = data_code(e);
                if let pgbroker::Error::OffsetOutOfRange {
                    log_start,
                    high_watermark,
                    ..
                } = e
                {
                    pd.high_watermark = *high_watermark;
                    if v >= 5 {
                        pd.log_start_offset = *log_start;
                    }
                }
                metrics::api_error("Fetch", pd.error_code);
            }
        }
        if let Some(t) = resp.responses.get_mut(ti) {
            t.partitions.push(pd);
        }
    }
    Some(resp)
}

/// Encodes a read with records of transactions as batches: one per run of
/// plain records or of one producer's records, and one per marker, each
/// with the producer fields and attribute bits clients skip by.
fn encode_runs(buf: &mut Vec<u8>, r: &FetchResult) {
    let mut tags = r.producers.iter().peekable();
    let mut tag_of = |rec: &StoredRecord| {
        while tags.peek().is_some_and(|t: &&RecordProducer| t.offset < rec.offset) {
            tags.next();
        }
        tags.peek().filter(|t| t.offset == rec.offset).map(|t| BatchProducer {
            producer_id: t.producer_id,
            epoch: t.epoch,
            control: t.control,
        })
    };
    let mut start = 0;
    let mut current: Option<BatchProducer> = None;
    for (i, rec) in r.records.iter().enumerate() {
        let tag = tag_of(rec);
        if i > start && (tag != current || tag.is_some_and(|t| t.control)) {
            encode_batch_of(buf, &r.records[start..i], current);
            start = i;
        }
        current = tag;
    }
    encode_batch_of(buf, &r.records[start..], current);
}
