//! The message browser: one page of a partition from an offset, from a
//! timestamp, or the newest page; or a search for a key from an offset
//! that reads the partition in pages of [`SCAN_PAGE`] records and stops
//! after `scan` records, answering where to go on. So no request holds
//! more than one page of a partition in memory. Keys and values are sent
//! as base64 (the page shows them as UTF-8, JSON or hex), values cut to
//! [`MAX_VALUE`] bytes.
//!
//! And producing a test message: UTF-8 key, value and headers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use pgbroker::auth::Permission;
use pgbroker::streams::{FetchLimits, OffsetSpec};
use pgbroker::{Bytes, Header, Record, StoredRecord, TopicName};
use serde::{Deserialize, Serialize};

use super::{ms, time_of_ms, JsonBody};
use crate::access::{Caller, Changer};
use crate::error::{json_response, ApiError, ApiResult};
use crate::State;

/// Most records one page returns.
pub(crate) const MAX_PAGE: usize = 200;
/// Records read at a time by a key search.
pub(crate) const SCAN_PAGE: usize = 500;
/// Most records a key search reads in one request.
pub(crate) const MAX_SCAN: i64 = 100_000;
/// Longest key or value sent, in bytes; the rest is cut.
pub(crate) const MAX_VALUE: usize = 64 << 10;
/// Bytes read from the partition per fetch.
const FETCH_BYTES: usize = 4 << 20;

/// Where to read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BrowseQuery {
    partition: Option<i32>,
    offset: Option<i64>,
    timestamp_ms: Option<i64>,
    key: Option<String>,
    limit: Option<usize>,
    scan: Option<i64>,
}

#[derive(Serialize)]
struct HeaderOut {
    key: String,
    value: Option<String>,
}

#[derive(Serialize)]
struct RecordOut {
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
    key: Option<String>,
    key_bytes: usize,
    value: Option<String>,
    value_bytes: usize,
    truncated: bool,
    headers: Vec<HeaderOut>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(&bytes[..bytes.len().min(MAX_VALUE)])
}

fn record_out(r: StoredRecord) -> RecordOut {
    let key_bytes = r.key.as_ref().map_or(0, Bytes::len);
    let value_bytes = r.value.as_ref().map_or(0, Bytes::len);
    RecordOut {
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: ms(r.timestamp),
        key: r.key.as_deref().map(b64),
        key_bytes,
        value: r.value.as_deref().map(b64),
        value_bytes,
        truncated: key_bytes > MAX_VALUE || value_bytes > MAX_VALUE,
        headers: r
            .headers
            .into_iter()
            .map(|h| HeaderOut {
                key: h.key,
                value: h.value.as_deref().map(b64),
            })
            .collect(),
    }
}

/// `GET /api/topics/{topic}/messages`.
pub(crate) async fn browse(
    AxState(state): AxState<Arc<State>>,
    caller: Caller,
    Path(raw): Path<String>,
    Query(q): Query<BrowseQuery>,
) -> ApiResult<Response> {
    let topic = TopicName::new(raw.as_str())?;
    caller.need_topic(Permission::Consume, topic.as_str())?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}, not {limit}"
        )));
    }
    if q.offset.is_some() && q.timestamp_ms.is_some() {
        return Err(ApiError::bad_request("give offset or timestamp_ms, not both"));
    }
    let info = state.broker.topics().info(&topic).await?;
    let key = q.key.as_deref().map(str::as_bytes);
    let partition = match (q.partition, key) {
        (Some(p), _) => p,
        (None, Some(k)) => {
            pgbroker::streams::partitioner::partition_for_key(k, usize::try_from(info.partitions).unwrap_or(1))
        }
        (None, None) => 0,
    };
    if !(0..info.partitions).contains(&partition) {
        return Err(ApiError::bad_request(format!(
            "partition {partition} is not between 0 and {}",
            info.partitions - 1
        )));
    }
    let streams = state.broker.streams();
    let (log_start, high_watermark) = streams.watermarks(&topic, partition).await?;
    let limit_i64 = i64::try_from(limit).unwrap_or(1);
    let start = match (q.timestamp_ms, q.offset) {
        (Some(t), _) => {
            streams
                .resolve_offset(&topic, partition, OffsetSpec::Timestamp(time_of_ms(t)?))
                .await?
        }
        (None, Some(o)) => o.clamp(log_start, high_watermark),
        (None, None) if key.is_some() => log_start,
        (None, None) => (high_watermark - limit_i64).max(log_start),
    };
    let scan = q.scan.unwrap_or(10_000);
    if !(1..=MAX_SCAN).contains(&scan) {
        return Err(ApiError::bad_request(format!(
            "scan must be 1 to {MAX_SCAN}, not {scan}"
        )));
    }
    let mut records = Vec::new();
    let mut next = start;
    let mut scanned: i64 = 0;
    while next < high_watermark && records.len() < limit {
        let want = match key {
            Some(_) => SCAN_PAGE.min(usize::try_from(scan - scanned).unwrap_or(0)),
            None => limit - records.len(),
        };
        if want == 0 {
            break;
        }
        let limits = FetchLimits {
            max_records: want,
            max_bytes: FETCH_BYTES,
            max_wait: Duration::ZERO,
        };
        let page = match streams.fetch(&topic, partition, next, limits).await {
            Ok(p) => p,
            // Retention moved the log start past us: go on from there.
            Err(pgbroker::Error::OffsetOutOfRange { .. }) => {
                let (s, _) = streams.watermarks(&topic, partition).await?;
                if s <= next {
                    break;
                }
                next = s;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if page.records.is_empty() {
            break;
        }
        for r in page.records {
            if records.len() >= limit {
                break;
            }
            next = r.offset + 1;
            scanned += 1;
            if key.is_none_or(|k| r.key.as_deref() == Some(k)) {
                records.push(record_out(r));
            }
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "topic": topic,
            "partition": partition,
            "partitions": info.partitions,
            "log_start": log_start,
            "high_watermark": high_watermark,
            "start": start,
            "next_offset": next,
            "scanned": scanned,
            "records": records,
        }),
    ))
}

/// A header of a test message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderIn {
    key: String,
    value: Option<String>,
}

/// A test message: UTF-8 text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Produce {
    partition: Option<i32>,
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    headers: Vec<HeaderIn>,
}

/// `POST /api/topics/{topic}/messages`: produces one record.
pub(crate) async fn produce(
    AxState(state): AxState<Arc<State>>,
    Changer(caller): Changer,
    Path(raw): Path<String>,
    JsonBody(p): JsonBody<Produce>,
) -> ApiResult<Response> {
    let topic = TopicName::new(raw.as_str())?;
    caller.need_topic(Permission::Produce, topic.as_str())?;
    if p.headers.len() > 100 {
        return Err(ApiError::bad_request("at most 100 headers"));
    }
    let record = Record {
        key: p.key.map(Bytes::from),
        value: p.value.map(Bytes::from),
        headers: p
            .headers
            .into_iter()
            .map(|h| Header {
                key: h.key,
                value: h.value.map(String::into_bytes),
            })
            .collect(),
        timestamp: None,
    };
    let positions = state
        .broker
        .streams()
        .produce(&topic, p.partition, std::slice::from_ref(&record))
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({ "positions": positions }),
    ))
}
