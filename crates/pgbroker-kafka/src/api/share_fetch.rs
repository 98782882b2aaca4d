//! ShareFetch and ShareAcknowledge (KIP-932): the share session's epoch is
//! checked (see `share_sessions`), piggy-backed acknowledgements applied,
//! then records acquired from the session's partitions through the library
//! (`pgbroker::groups::share`), waiting up to `max_wait` for some, and
//! read with the stream fetch. The answer carries each partition's
//! records and the ranges acquired with their delivery counts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, LeaderIdAndEpoch, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::{
    ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse,
};
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::groups::share::{ack, AckBatch, Acquisition, ShareSettings};
use pgbroker::streams::{Isolation, ManyLimits, PartitionRead};
use pgbroker::{Error, GroupId, StoredRecord, TopicName};
use uuid::Uuid;

use super::{group_id, sb};
use crate::codec::encode_batch_spanning;
use crate::dispatch::ReqInfo;
use crate::errors::{data_code, group_code};
use crate::metrics;
use crate::share_sessions::{SessionError, SharePartition, CLOSE_EPOCH, OPEN_EPOCH};

/// Longest wait honoured, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);
/// Most records acquired by one request.
const MAX_RECORDS_CAP: i32 = 10_000;
/// How long a waiting fetch sleeps when records are held by others.
const RETRY: Duration = Duration::from_millis(100);
/// The longest single wait for producers before looking again (locks may
/// run out meanwhile).
const WAIT_SLICE: Duration = Duration::from_millis(500);
/// Most bytes read for one answer.
const READ_BYTES: usize = 256 << 20;

/// The parts of a request both APIs share: who asks and what they settle.
struct Caller {
    group: GroupId,
    member: String,
    acks: BTreeMap<SharePartition, Vec<AckBatch>>,
}

/// The request's group and member, checked; else the top-level error.
fn caller(
    info: &ReqInfo<'_>,
    group: Option<&kafka_protocol::messages::GroupId>,
    member: Option<&kafka_protocol::protocol::StrBytes>,
) -> Result<(GroupId, String), (i16, String)> {
    let Some(g) = group else {
        return Err((ResponseError::InvalidRequest.code(), "no group id".into()));
    };
    if !info.access.group(Permission::Group, g.0.as_str()) {
        return Err((
            ResponseError::GroupAuthorizationFailed.code(),
            "not authorized to use this group".into(),
        ));
    }
    let group = group_id(&g.0).map_err(|e| (group_code(&e), e.to_string()))?;
    let member = member.map(|m| m.to_string()).unwrap_or_default();
    if member.is_empty() {
        return Err((ResponseError::UnknownMemberId.code(), "no member id".into()));
    }
    Ok((group, member))
}

fn session_code(e: SessionError) -> (i16, String) {
    match e {
        SessionError::NotFound => (ResponseError::ShareSessionNotFound.code(), "no share session".into()),
        SessionError::InvalidEpoch => (
            ResponseError::InvalidShareSessionEpoch.code(),
            "unexpected share session epoch".into(),
        ),
        SessionError::LimitReached => (
            ResponseError::ShareSessionLimitReached.code(),
            "too many share sessions".into(),
        ),
    }
}

/// The code for a failed acknowledgement.
fn ack_code(e: &Error) -> i16 {
    match e {
        Error::InvalidRecordState { .. } => ResponseError::InvalidRecordState.code(),
        Error::Invalid { .. } => ResponseError::InvalidRequest.code(),
        e => data_code(e),
    }
}

/// Topic names for the ids, where they exist and the user may read them:
/// `Err` is the partition's code otherwise.
async fn names(info: &ReqInfo<'_>, ids: &BTreeSet<Uuid>) -> pgbroker::Result<BTreeMap<Uuid, Result<TopicName, i16>>> {
    let raw: Vec<[u8; 16]> = ids.iter().map(|u| *u.as_bytes()).collect();
    let found = info.ctx.broker.consumer_groups().topic_names(&raw).await?;
    Ok(ids
        .iter()
        .map(|id| {
            let name = match found.get(id.as_bytes()) {
                None => Err(ResponseError::UnknownTopicId.code()),
                Some(t) if !info.access.topic(Permission::Consume, t.as_str()) => {
                    Err(ResponseError::TopicAuthorizationFailed.code())
                }
                Some(t) => Ok(t.clone()),
            };
            (*id, name)
        })
        .collect())
}

/// Applies the acknowledgements, returning each partition's code.
async fn settle(
    info: &ReqInfo<'_>,
    c: &Caller,
    names: &BTreeMap<Uuid, Result<TopicName, i16>>,
    settings: &ShareSettings,
) -> BTreeMap<SharePartition, i16> {
    let mut codes = BTreeMap::new();
    for ((id, partition), batches) in &c.acks {
        let code = match names.get(id) {
            Some(Ok(topic)) => match info
                .ctx
                .broker
                .share_groups()
                .acknowledge(&c.group, &c.member, topic, *partition, batches, settings)
                .await
            {
                Ok(()) => 0,
                Err(e) => {
                    tracing::debug!(group = c.group.as_str(), member = c.member, error = %e, "acknowledgement refused");
                    ack_code(&e)
                }
            },
            Some(Err(code)) => *code,
            None => ResponseError::UnknownTopicId.code(),
        };
        codes.insert((*id, *partition), code);
    }
    codes
}

fn batches_of(
    b: &[kafka_protocol::messages::share_fetch_request::AcknowledgementBatch],
) -> impl Iterator<Item = AckBatch> + '_ {
    b.iter().map(|a| AckBatch {
        first: a.first_offset,
        last: a.last_offset,
        types: a.acknowledge_types.clone(),
    })
}

fn partition_data(info: &ReqInfo<'_>, partition: i32) -> PartitionData {
    let mut pd = PartitionData::default();
    pd.partition_index = partition;
    let mut leader = LeaderIdAndEpoch::default();
    leader.leader_id = info.ctx.node_id;
    leader.leader_epoch = 0;
    pd.current_leader = leader;
    pd.records = Some(Bytes::new());
    pd
}

/// Acquires from the session's partitions until something is acquired or
/// the wait is over. Per partition: what it got, or its error code.
async fn acquire(
    info: &ReqInfo<'_>,
    c: &Caller,
    parts: &[(SharePartition, TopicName)],
    max_records: i64,
    max_wait: Duration,
    settings: &ShareSettings,
) -> BTreeMap<SharePartition, Result<Acquisition, i16>> {
    let share = info.ctx.broker.share_groups();
    let deadline = Instant::now() + max_wait;
    // Start at a different partition each time so that members share
    // every partition, not only the first.
    let first = if parts.is_empty() {
        0
    } else {
        rand::random::<usize>() % parts.len()
    };
    let mut retried = false;
    loop {
        let mut out = BTreeMap::new();
        let mut budget = max_records;
        let mut waits = Vec::new();
        for i in 0..parts.len() {
            let (sp, topic) = &parts[(first + i) % parts.len()];
            if budget <= 0 {
                break;
            }
            match share.acquire(&c.group, &c.member, topic, sp.1, budget, settings).await {
                Ok(a) => {
                    budget -= a.count();
                    if let Some(at) = a.caught_up_at {
                        waits.push(PartitionRead {
                            topic: topic.clone(),
                            partition: sp.1,
                            offset: at,
                            max_bytes: 1,
                        });
                    }
                    if !a.ranges.is_empty() {
                        out.insert(*sp, Ok(a));
                    }
                }
                Err(e) => {
                    out.insert(*sp, Err(data_code(&e)));
                }
            }
        }
        let now = Instant::now();
        if !out.is_empty() || now >= deadline || max_records <= 0 {
            return out;
        }
        let left = deadline - now;
        if !waits.is_empty() && waits.len() == parts.len() {
            let limits = ManyLimits {
                min_bytes: 1,
                max_bytes: 1,
                max_records: 1,
                max_wait: left.min(WAIT_SLICE),
                isolation: Isolation::ReadUncommitted,
            };
            info.ctx.broker.streams().fetch_many(&waits, limits).await;
        } else if retried {
            // Records are there but held (or the window is full): answer
            // now, so that the client's next request brings the
            // acknowledgements that free them, instead of holding them
            // for the whole wait.
            return out;
        } else {
            retried = true;
            tokio::time::sleep(left.min(RETRY)).await;
        }
    }
}

/// Reads the acquired records and encodes them, one batch per acquired
/// range. Records the read did not reach (a byte limit) are released.
async fn read(
    info: &ReqInfo<'_>,
    c: &Caller,
    got: &BTreeMap<SharePartition, (TopicName, Acquisition)>,
    settings: &ShareSettings,
) -> BTreeMap<SharePartition, Result<(Vec<u8>, Vec<AcquiredRecords>), i16>> {
    let mut reads = Vec::new();
    let mut span = 1;
    for (sp, (topic, a)) in got {
        let (Some(lo), Some(hi)) = (a.ranges.first(), a.ranges.last()) else {
            continue;
        };
        span = span.max(usize::try_from(hi.last - lo.first + 1).unwrap_or(1));
        reads.push(PartitionRead {
            topic: topic.clone(),
            partition: sp.1,
            offset: lo.first,
            max_bytes: READ_BYTES,
        });
    }
    let limits = ManyLimits {
        min_bytes: 0,
        max_bytes: READ_BYTES,
        max_records: span,
        max_wait: Duration::ZERO,
        isolation: Isolation::ReadUncommitted,
    };
    let results = info.ctx.broker.streams().fetch_many(&reads, limits).await;
    let mut out = BTreeMap::new();
    for ((sp, (topic, a)), result) in got.iter().filter(|(_, (_, a))| !a.ranges.is_empty()).zip(results) {
        let (records, covered) = match &result {
            Ok(r) => {
                let markers: BTreeSet<i64> = r.producers.iter().filter(|p| p.control).map(|p| p.offset).collect();
                let kept: Vec<StoredRecord> = r
                    .records
                    .iter()
                    .filter(|rec| !markers.contains(&rec.offset))
                    .cloned()
                    .collect();
                (kept, r.next_offset)
            }
            Err(_) => (Vec::new(), i64::MIN),
        };
        let mut buf = Vec::new();
        let mut acquired = Vec::new();
        let mut unread = Vec::new();
        for range in &a.ranges {
            if range.first >= covered {
                unread.push((range.first, range.last));
                continue;
            }
            let last = range.last.min(covered - 1);
            if last < range.last {
                unread.push((last + 1, range.last));
            }
            let lo = records.partition_point(|r| r.offset < range.first);
            let hi = records.partition_point(|r| r.offset <= last);
            encode_batch_spanning(&mut buf, &records[lo..hi], range.first, last + 1);
            let mut ar = AcquiredRecords::default();
            ar.first_offset = range.first;
            ar.last_offset = last;
            ar.delivery_count = range.delivery_count;
            acquired.push(ar);
        }
        if !unread.is_empty() {
            let batches: Vec<AckBatch> = unread
                .iter()
                .map(|(first, last)| AckBatch {
                    first: *first,
                    last: *last,
                    types: vec![ack::RELEASE],
                })
                .collect();
            let released = info
                .ctx
                .broker
                .share_groups()
                .acknowledge(&c.group, &c.member, topic, sp.1, &batches, settings)
                .await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "could not put back records a share fetch did not read");
            }
        }
        match result {
            Err(e) => {
                out.insert(*sp, Err(data_code(&e)));
            }
            Ok(_) => {
                metrics::fetched(topic.as_str(), records.len(), buf.len());
                out.insert(*sp, Ok((buf, acquired)));
            }
        }
    }
    out
}

pub(crate) async fn share_fetch(info: &ReqInfo<'_>, req: ShareFetchRequest) -> Option<ShareFetchResponse> {
    let mut resp = ShareFetchResponse::default();
    let fail = |mut resp: ShareFetchResponse, (code, message): (i16, String)| {
        resp.error_code = code;
        resp.error_message = Some(sb(message));
        metrics::api_error("ShareFetch", code);
        Some(resp)
    };
    let (group, member) = match caller(info, req.group_id.as_ref(), req.member_id.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail(resp, e),
    };
    let epoch = req.share_session_epoch;
    let mut c = Caller {
        group,
        member,
        acks: BTreeMap::new(),
    };
    let mut added = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            added.push((t.topic_id, p.partition_index));
            if !p.acknowledgement_batches.is_empty() {
                c.acks
                    .entry((t.topic_id, p.partition_index))
                    .or_default()
                    .extend(batches_of(&p.acknowledgement_batches));
            }
        }
    }
    let forgotten: Vec<SharePartition> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
        .collect();
    let share = info.ctx.broker.share_groups();
    if epoch == OPEN_EPOCH {
        if !c.acks.is_empty() {
            let e = (
                ResponseError::InvalidRequest.code(),
                "acknowledgements cannot open a share session".to_string(),
            );
            return fail(resp, e);
        }
        match share.is_member(&c.group, &c.member).await {
            Ok(true) => {}
            Ok(false) => {
                let e = (
                    ResponseError::UnknownMemberId.code(),
                    "not a member of the share group".into(),
                );
                return fail(resp, e);
            }
            Err(e) => return fail(resp, (group_code(&e), e.to_string())),
        }
    }
    let settings = match share.settings(&c.group).await {
        Ok(s) => s,
        Err(e) => return fail(resp, (group_code(&e), e.to_string())),
    };
    let session = match info
        .ctx
        .share_sessions
        .update(c.group.as_str(), &c.member, epoch, &added, &forgotten)
    {
        Ok(s) => s,
        Err(e) => return fail(resp, session_code(e)),
    };
    let ids: BTreeSet<Uuid> = session
        .iter()
        .map(|(t, _)| *t)
        .chain(c.acks.keys().map(|(t, _)| *t))
        .collect();
    let names = match names(info, &ids).await {
        Ok(n) => n,
        Err(e) => return fail(resp, (data_code(&e), e.to_string())),
    };
    resp.acquisition_lock_timeout_ms = settings.lock_ms();
    let mut parts: BTreeMap<SharePartition, PartitionData> = BTreeMap::new();
    for sp in added.iter().chain(c.acks.keys()) {
        parts.entry(*sp).or_insert_with(|| partition_data(info, sp.1));
    }
    for (sp, code) in settle(info, &c, &names, &settings).await {
        if let Some(pd) = parts.get_mut(&sp) {
            pd.acknowledge_error_code = code;
        }
    }
    if epoch == CLOSE_EPOCH {
        if let Err(e) = share.release_member(&c.group, &c.member).await {
            tracing::warn!(error = %e, "could not put back a closed share session's records");
        }
    } else {
        let mut readable = Vec::new();
        for sp in &session {
            match names.get(&sp.0) {
                Some(Ok(t)) => readable.push((*sp, t.clone())),
                Some(Err(code)) => {
                    parts
                        .entry(*sp)
                        .or_insert_with(|| partition_data(info, sp.1))
                        .error_code = *code
                }
                None => {}
            }
        }
        let max_records = i64::from(req.max_records.clamp(0, MAX_RECORDS_CAP));
        let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
        let acquired = acquire(info, &c, &readable, max_records, wait, &settings).await;
        let topic_of: BTreeMap<SharePartition, TopicName> = readable.into_iter().collect();
        let mut got = BTreeMap::new();
        for (sp, a) in acquired {
            match a {
                Ok(a) => {
                    if let Some(t) = topic_of.get(&sp) {
                        got.insert(sp, (t.clone(), a));
                    }
                }
                Err(code) => parts.entry(sp).or_insert_with(|| partition_data(info, sp.1)).error_code = code,
            }
        }
        for (sp, r) in read(info, &c, &got, &settings).await {
            let pd = parts.entry(sp).or_insert_with(|| partition_data(info, sp.1));
            match r {
                Ok((buf, acquired)) => {
                    pd.records = Some(Bytes::from(buf));
                    pd.acquired_records = acquired;
                }
                Err(code) => pd.error_code = code,
            }
        }
    }
    let mut by_topic: BTreeMap<Uuid, Vec<PartitionData>> = BTreeMap::new();
    for ((topic, _), pd) in parts {
        by_topic.entry(topic).or_default().push(pd);
    }
    resp.responses = by_topic
        .into_iter()
        .map(|(topic_id, partitions)| {
            let mut t = ShareFetchableTopicResponse::default();
            t.topic_id = topic_id;
            t.partitions = partitions;
            t
        })
        .collect();
    Some(resp)
}

pub(crate) async fn share_acknowledge(
    info: &ReqInfo<'_>,
    req: ShareAcknowledgeRequest,
) -> Option<ShareAcknowledgeResponse> {
    use kafka_protocol::messages::share_acknowledge_response::{
        LeaderIdAndEpoch as AckLeader, PartitionData as AckPartition, ShareAcknowledgeTopicResponse,
    };
    let mut resp = ShareAcknowledgeResponse::default();
    let fail = |mut resp: ShareAcknowledgeResponse, (code, message): (i16, String)| {
        resp.error_code = code;
        resp.error_message = Some(sb(message));
        metrics::api_error("ShareAcknowledge", code);
        Some(resp)
    };
    let (group, member) = match caller(info, req.group_id.as_ref(), req.member_id.as_ref()) {
        Ok(c) => c,
        Err(e) => return fail(resp, e),
    };
    let mut c = Caller {
        group,
        member,
        acks: BTreeMap::new(),
    };
    for t in &req.topics {
        for p in &t.partitions {
            c.acks
                .entry((t.topic_id, p.partition_index))
                .or_default()
                .extend(p.acknowledgement_batches.iter().map(|a| AckBatch {
                    first: a.first_offset,
                    last: a.last_offset,
                    types: a.acknowledge_types.clone(),
                }));
        }
    }
    let epoch = req.share_session_epoch;
    if let Err(e) = info.ctx.share_sessions.acknowledge(c.group.as_str(), &c.member, epoch) {
        return fail(resp, session_code(e));
    }
    let share = info.ctx.broker.share_groups();
    let settings = match share.settings(&c.group).await {
        Ok(s) => s,
        Err(e) => return fail(resp, (group_code(&e), e.to_string())),
    };
    let ids: BTreeSet<Uuid> = c.acks.keys().map(|(t, _)| *t).collect();
    let names = match names(info, &ids).await {
        Ok(n) => n,
        Err(e) => return fail(resp, (data_code(&e), e.to_string())),
    };
    let codes = settle(info, &c, &names, &settings).await;
    if epoch == CLOSE_EPOCH {
        if let Err(e) = share.release_member(&c.group, &c.member).await {
            tracing::warn!(error = %e, "could not put back a closed share session's records");
        }
    }
    let mut by_topic: BTreeMap<Uuid, Vec<AckPartition>> = BTreeMap::new();
    for ((topic, partition), code) in codes {
        let mut pd = AckPartition::default();
        pd.partition_index = partition;
        pd.error_code = code;
        let mut leader = AckLeader::default();
        leader.leader_id = info.ctx.node_id;
        pd.current_leader = leader;
        by_topic.entry(topic).or_default().push(pd);
    }
    resp.responses = by_topic
        .into_iter()
        .map(|(topic_id, partitions)| {
            let mut t = ShareAcknowledgeTopicResponse::default();
            t.topic_id = topic_id;
            t.partitions = partitions;
            t
        })
        .collect();
    Some(resp)
}
