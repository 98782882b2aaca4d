//! ListOffsets, OffsetForLeaderEpoch, OffsetCommit and OffsetFetch.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::groups::OffsetCommit;
use pgbroker::streams::{FetchLimits, OffsetSpec};
use pgbroker::{Invalid, TopicName};

use super::{group_id, named_topic, sb};
use crate::dispatch::ReqInfo;
use crate::errors::{data_code, group_code, NONE};
use crate::server::Ctx;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub(crate) async fn list_offsets(info: &ReqInfo<'_>, req: ListOffsetsRequest) -> Option<ListOffsetsResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let mut resp = ListOffsetsResponse::default();
    for t in &req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        let topic = named_topic(info, Permission::Consume, &t.name.0);
        for p in &t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            if v >= 4 {
                pr.leader_epoch = 0;
            }
            match &topic {
                Ok(topic) => {
                    match resolve(ctx, topic, p.partition_index, p.timestamp, req.isolation_level == 1).await {
                        Ok((ts, off)) => {
                            pr.timestamp = ts;
                            pr.offset = off;
                        }
                        Err(e) => pr.error_code = data_code(&e),
                    }
                }
                Err(code) => pr.error_code = *code,
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    Some(resp)
}

/// `(timestamp, offset)` for a ListOffsets target: latest, earliest, or
/// the first record at or after a time (`(-1, -1)` when there is none, as
/// Kafka answers).
/// With `committed` (read_committed), latest is the last stable offset.
async fn resolve(
    ctx: &Ctx,
    topic: &TopicName,
    partition: i32,
    target: i64,
    committed: bool,
) -> pgbroker::Result<(i64, i64)> {
    match target {
        LATEST if committed => Ok((
            -1,
            ctx.broker.transactions().last_stable_offset(topic, partition).await?,
        )),
        LATEST => Ok((
            -1,
            ctx.broker
                .streams()
                .resolve_offset(topic, partition, OffsetSpec::Latest)
                .await?,
        )),
        EARLIEST => Ok((
            -1,
            ctx.broker
                .streams()
                .resolve_offset(topic, partition, OffsetSpec::Earliest)
                .await?,
        )),
        ts if ts >= 0 => {
            let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ts).unwrap_or(0));
            let off = ctx
                .broker
                .streams()
                .resolve_offset(topic, partition, OffsetSpec::Timestamp(at))
                .await?;
            let one = FetchLimits {
                max_records: 1,
                ..FetchLimits::default()
            };
            let found = ctx.broker.streams().fetch(topic, partition, off, one).await?;
            Ok(match found.records.first() {
                Some(r) => (pgbroker::streams::timestamp_ms(r), r.offset),
                None => (-1, -1),
            })
        }
        _ => Err(pgbroker::Error::invalid(
            Invalid::Timestamp,
            format!("{target} is not supported"),
        )),
    }
}

pub(crate) async fn offset_for_leader_epoch(
    info: &ReqInfo<'_>,
    req: OffsetForLeaderEpochRequest,
) -> Option<OffsetForLeaderEpochResponse> {
    let ctx = info.ctx;
    // Every partition has had one leader epoch, 0, for its whole life.
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in &req.topics {
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        let topic = named_topic(info, Permission::Consume, &t.topic.0);
        for p in &t.partitions {
            let mut e = EpochEndOffset::default();
            e.partition = p.partition;
            e.leader_epoch = -1;
            e.end_offset = -1;
            match &topic {
                Ok(topic) => match ctx
                    .broker
                    .streams()
                    .resolve_offset(topic, p.partition, OffsetSpec::Latest)
                    .await
                {
                    Ok(hw) => {
                        e.leader_epoch = 0;
                        e.end_offset = hw;
                    }
                    Err(err) => e.error_code = data_code(&err),
                },
                Err(code) => e.error_code = *code,
            }
            tr.partitions.push(e);
        }
        resp.topics.push(tr);
    }
    Some(resp)
}

pub(crate) async fn offset_commit(info: &ReqInfo<'_>, req: OffsetCommitRequest) -> Option<OffsetCommitResponse> {
    let ctx = info.ctx;
    // Without the group right nothing is committed; partitions of topics
    // the user may not consume from, or that the library cannot take, are
    // answered one by one; the rest are committed together, fenced by
    // member and generation.
    if !info.access.group(Permission::Group, req.group_id.0.as_str()) {
        return Some(commit_answer(
            &req,
            &BTreeMap::new(),
            ResponseError::GroupAuthorizationFailed.code(),
        ));
    }
    let mut errors: BTreeMap<(String, i32), i16> = BTreeMap::new();
    let mut offsets = Vec::new();
    for t in &req.topics {
        let allowed = info.access.topic(Permission::Consume, t.name.0.as_str());
        let topic = TopicName::new(t.name.0.as_str());
        for p in &t.partitions {
            let key = (t.name.0.to_string(), p.partition_index);
            match &topic {
                _ if !allowed => {
                    errors.insert(key, ResponseError::TopicAuthorizationFailed.code());
                }
                Ok(topic)
                    if ctx
                        .broker
                        .topics()
                        .info(topic)
                        .await
                        .is_ok_and(|i| p.partition_index < i.partitions && p.partition_index >= 0) =>
                {
                    offsets.push(OffsetCommit {
                        topic: topic.clone(),
                        partition: p.partition_index,
                        offset: p.committed_offset.max(0),
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    });
                }
                _ => {
                    errors.insert(key, ResponseError::UnknownTopicOrPartition.code());
                }
            }
        }
    }
    let shared = match group_id(&req.group_id.0) {
        Err(_) => ResponseError::InvalidGroupId.code(),
        Ok(_) if offsets.is_empty() => NONE,
        Ok(group) => match ctx
            .broker
            .classic_groups()
            .commit(
                &group,
                req.member_id.as_str(),
                req.generation_id_or_member_epoch,
                &offsets,
            )
            .await
        {
            Ok(()) => NONE,
            Err(e) => group_code(&e),
        },
    };
    Some(commit_answer(&req, &errors, shared))
}

/// The OffsetCommit answer: each partition's own error, else `shared`.
fn commit_answer(
    req: &OffsetCommitRequest,
    errors: &BTreeMap<(String, i32), i16>,
    shared: i16,
) -> OffsetCommitResponse {
    let mut resp = OffsetCommitResponse::default();
    for t in &req.topics {
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = *errors
                .get(&(t.name.0.to_string(), p.partition_index))
                .unwrap_or(&shared);
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

pub(crate) async fn offset_fetch(info: &ReqInfo<'_>, req: OffsetFetchRequest) -> Option<OffsetFetchResponse> {
    if info.version < 8 {
        return Some(fetch_one(info, info.version, req, None).await);
    }
    // Version 8 asks for several groups at once (9: each with the member
    // asking); each is answered as version 7 would be.
    let mut resp = OffsetFetchResponse::default();
    for g in &req.groups {
        let mut one = OffsetFetchRequest::default();
        one.group_id = g.group_id.clone();
        one.require_stable = req.require_stable;
        one.topics = g.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut ft = OffsetFetchRequestTopic::default();
                    ft.name = t.name.clone();
                    ft.partition_indexes = t.partition_indexes.clone();
                    ft
                })
                .collect()
        });
        let member = (info.version >= 9).then(|| (g.member_id.as_ref().map_or("", |m| m.as_str()), g.member_epoch));
        let answer = fetch_one(info, 7, one, member).await;
        let mut rg = OffsetFetchResponseGroup::default();
        rg.group_id = g.group_id.clone();
        rg.error_code = answer.error_code;
        rg.topics = answer
            .topics
            .into_iter()
            .map(|t| {
                let mut rt = OffsetFetchResponseTopics::default();
                rt.name = t.name;
                rt.partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let mut rp = OffsetFetchResponsePartitions::default();
                        rp.partition_index = p.partition_index;
                        rp.committed_offset = p.committed_offset;
                        rp.committed_leader_epoch = p.committed_leader_epoch;
                        rp.metadata = p.metadata;
                        rp.error_code = p.error_code;
                        rp
                    })
                    .collect();
                rt
            })
            .collect();
        resp.groups.push(rg);
    }
    Some(resp)
}

/// OffsetFetch of one group, answered as version `v` (at most 7); with
/// `member` (version 9), fenced by the member's epoch.
async fn fetch_one(
    info: &ReqInfo<'_>,
    v: i16,
    req: OffsetFetchRequest,
    member: Option<(&str, i32)>,
) -> OffsetFetchResponse {
    let ctx = info.ctx;
    let mut resp = OffsetFetchResponse::default();
    let group = match group_id(&req.group_id.0) {
        Ok(g) => g,
        Err(_) => {
            if v >= 2 {
                resp.error_code = ResponseError::InvalidGroupId.code();
            }
            return resp;
        }
    };
    if !info.access.group(Permission::Group, group.as_str()) {
        if v >= 2 {
            resp.error_code = ResponseError::GroupAuthorizationFailed.code();
        }
        for t in req.topics.iter().flatten() {
            let mut tr = OffsetFetchResponseTopic::default();
            tr.name = t.name.clone();
            for &p in &t.partition_indexes {
                let mut pr = OffsetFetchResponsePartition::default();
                pr.partition_index = p;
                pr.committed_offset = -1;
                pr.error_code = ResponseError::GroupAuthorizationFailed.code();
                tr.partitions.push(pr);
            }
            resp.topics.push(tr);
        }
        return resp;
    }
    if let Some((member_id, epoch)) = member {
        if let Err(e) = ctx.broker.consumer_groups().check_fetch(&group, member_id, epoch).await {
            resp.error_code = group_code(&e);
            return resp;
        }
    }
    let committed = match ctx.broker.groups().all_offsets(&group).await {
        Ok(c) => c,
        Err(e) => {
            if v >= 2 {
                resp.error_code = group_code(&e);
            }
            return resp;
        }
    };
    // With RequireStable, partitions with an offset pending in an open
    // transaction answer UNSTABLE_OFFSET_COMMIT; clients retry.
    let unstable: Vec<(String, i32)> = if v >= 7 && req.require_stable {
        match ctx.broker.transactions().pending_offsets(&group).await {
            Ok(p) => p.into_iter().map(|(t, p)| (t.to_string(), p)).collect(),
            Err(e) => {
                resp.error_code = group_code(&e);
                return resp;
            }
        }
    } else {
        Vec::new()
    };
    let by_tp: BTreeMap<(String, i32), (i64, Option<String>)> = committed
        .into_iter()
        .filter(|(t, _)| info.access.sees_topic(t.as_str()))
        .map(|(t, c)| ((t.to_string(), c.partition), (c.offset, c.metadata)))
        .collect();
    let entry = |partition: i32, found: Option<&(i64, Option<String>)>| {
        let mut p = OffsetFetchResponsePartition::default();
        p.partition_index = partition;
        p.committed_leader_epoch = -1;
        match found {
            Some((off, meta)) => {
                p.committed_offset = *off;
                p.metadata = Some(sb(meta.clone().unwrap_or_default()));
            }
            None => {
                p.committed_offset = -1;
                p.metadata = Some(sb(""));
            }
        }
        p
    };
    match &req.topics {
        Some(topics) => {
            for t in topics {
                let mut tr = OffsetFetchResponseTopic::default();
                tr.name = t.name.clone();
                let seen = info.access.sees_topic(t.name.0.as_str());
                for &p in &t.partition_indexes {
                    let key = (t.name.0.to_string(), p);
                    let mut pr = entry(p, by_tp.get(&key));
                    if !seen {
                        pr.error_code = ResponseError::TopicAuthorizationFailed.code();
                    } else if unstable.contains(&key) {
                        pr.committed_offset = -1;
                        pr.error_code = ResponseError::UnstableOffsetCommit.code();
                    }
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
        }
        None => {
            let mut current: Option<OffsetFetchResponseTopic> = None;
            for ((topic, p), found) in &by_tp {
                if current.as_ref().is_none_or(|c| c.name.0.as_str() != topic) {
                    resp.topics.extend(current.take());
                    let mut tr = OffsetFetchResponseTopic::default();
                    tr.name = sb(topic.clone()).into();
                    current = Some(tr);
                }
                if let Some(c) = current.as_mut() {
                    let mut pr = entry(*p, Some(found));
                    if unstable.iter().any(|(t, q)| t == topic && q == p) {
                        pr.committed_offset = -1;
                        pr.error_code = ResponseError::UnstableOffsetCommit.code();
                    }
                    c.partitions.push(pr);
                }
            }
            resp.topics.extend(current);
        }
    }
    resp
}
