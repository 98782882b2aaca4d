//! Transactions: InitProducerId with a transactional id,
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn. The
//! coordinator is the library's (`pgbroker::txn`); this module checks
//! rights, translates, and maps refusals to Kafka's codes.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse, ProducerId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::groups::OffsetCommit;
use pgbroker::txn::{GroupMember, TxnRefusal};
use pgbroker::{Error, TopicName};

use super::group_id;
use crate::auth::Session;
use crate::dispatch::ReqInfo;
use crate::errors::{group_error, NONE};
use crate::metrics;

/// Most transactional ids one connection remembers.
const SEEN_PER_CONNECTION: usize = 64;

/// The transactions a connection took part in: per transactional id, the
/// number of the transaction its last AddPartitionsToTxn or
/// AddOffsetsToTxn joined. An EndTxn on the same connection decides that
/// transaction or none: a commit sent for transaction `n`, delayed on a
/// connection the client gave up on while it retried elsewhere and began
/// transaction `n + 1`, is refused when it finally runs.
#[derive(Debug, Default)]
pub(crate) struct SeenTxns {
    seen: std::collections::HashMap<String, i64>,
}

impl SeenTxns {
    fn note(&mut self, id: &str, number: i64) {
        if self.seen.len() >= SEEN_PER_CONNECTION && !self.seen.contains_key(id) {
            self.seen.clear();
        }
        self.seen.insert(id.to_string(), number);
    }

    fn get(&self, id: &str) -> Option<i64> {
        self.seen.get(id).copied()
    }
}

/// The Kafka error of a coordinator refusal.
pub(crate) fn refusal_error(r: &TxnRefusal) -> ResponseError {
    match r {
        TxnRefusal::Fenced { .. } => ResponseError::ProducerFenced,
        TxnRefusal::EpochAhead { .. } => ResponseError::InvalidProducerEpoch,
        TxnRefusal::UnknownProducerId(_) => ResponseError::InvalidProducerIdMapping,
        TxnRefusal::InvalidTimeout { .. } => ResponseError::InvalidTransactionTimeout,
        _ => ResponseError::InvalidTxnState,
    }
}

/// The Kafka error of a library error from the coordinator: refusals by
/// their kind, an unreachable database as an unavailable coordinator
/// (retried by clients).
pub(crate) fn txn_error(e: &Error) -> ResponseError {
    match e {
        Error::Transaction { refusal, .. } => refusal_error(refusal),
        Error::Invalid {
            what: pgbroker::Invalid::TransactionalId,
            ..
        } => ResponseError::InvalidRequest,
        e => group_error(e),
    }
}

fn txn_code(api: &'static str, e: &Error) -> i16 {
    let code = txn_error(e).code();
    if e.is_retriable() {
        tracing::warn!(api, error = %e, "transaction request failed");
    }
    metrics::api_error(api, code);
    code
}

/// InitProducerId for a transactional producer.
pub(crate) async fn init_transactional(
    info: &ReqInfo<'_>,
    req: &InitProducerIdRequest,
    id: &str,
) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if !info.access.produces_anywhere() {
        resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return resp;
    }
    let current = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
    match info
        .ctx
        .broker
        .transactions()
        .init_producer(id, req.transaction_timeout_ms, current)
        .await
    {
        Ok((pid, epoch)) => {
            resp.producer_id = ProducerId(pid);
            resp.producer_epoch = epoch;
        }
        Err(e) => resp.error_code = txn_code("InitProducerId", &e),
    }
    resp
}

pub(crate) async fn add_partitions_to_txn(
    info: &ReqInfo<'_>,
    req: AddPartitionsToTxnRequest,
    session: &mut Session,
) -> Option<AddPartitionsToTxnResponse> {
    let ctx = info.ctx;
    let id = req.v3_and_below_transactional_id.as_str();
    // Every partition is checked first; when any fails, none is added and
    // the others are answered OPERATION_NOT_ATTEMPTED, as Kafka does.
    let mut checked: Vec<(String, i32, Result<TopicName, i16>)> = Vec::new();
    for t in &req.v3_and_below_topics {
        for &p in &t.partitions {
            let r = if !info.access.topic(Permission::Produce, t.name.0.as_str()) {
                Err(ResponseError::TopicAuthorizationFailed.code())
            } else {
                match TopicName::new(t.name.0.as_str()) {
                    Ok(name) => match ctx.broker.topics().has_partition(&name, p).await {
                        Ok(true) => Ok(name),
                        Ok(false) | Err(Error::UnknownTopic(_)) => Err(ResponseError::UnknownTopicOrPartition.code()),
                        Err(e) => Err(txn_error(&e).code()),
                    },
                    Err(_) => Err(ResponseError::UnknownTopicOrPartition.code()),
                }
            };
            checked.push((t.name.0.to_string(), p, r));
        }
    }
    let failed = checked.iter().any(|(_, _, r)| r.is_err());
    let shared = if failed {
        ResponseError::OperationNotAttempted.code()
    } else if !info.access.produces_anywhere() {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else {
        let parts: Vec<(TopicName, i32)> = checked
            .iter()
            .filter_map(|(_, p, r)| r.as_ref().ok().map(|t| (t.clone(), *p)))
            .collect();
        match ctx
            .broker
            .transactions()
            .add_partitions(
                id,
                req.v3_and_below_producer_id.0,
                req.v3_and_below_producer_epoch,
                &parts,
            )
            .await
        {
            Ok(number) => {
                session.txns.note(id, number);
                NONE
            }
            Err(e) => txn_code("AddPartitionsToTxn", &e),
        }
    };
    let mut resp = AddPartitionsToTxnResponse::default();
    for t in &req.v3_and_below_topics {
        let mut tr = AddPartitionsToTxnTopicResult::default();
        tr.name = t.name.clone();
        for &p in &t.partitions {
            let mut pr = AddPartitionsToTxnPartitionResult::default();
            pr.partition_index = p;
            pr.partition_error_code = checked
                .iter()
                .find(|(n, q, _)| n == t.name.0.as_str() && *q == p)
                .and_then(|(_, _, r)| r.as_ref().err().copied())
                .unwrap_or(shared);
            tr.results_by_partition.push(pr);
        }
        resp.results_by_topic_v3_and_below.push(tr);
    }
    Some(resp)
}

pub(crate) async fn add_offsets_to_txn(
    info: &ReqInfo<'_>,
    req: AddOffsetsToTxnRequest,
    session: &mut Session,
) -> Option<AddOffsetsToTxnResponse> {
    let mut resp = AddOffsetsToTxnResponse::default();
    resp.error_code = match group_id(&req.group_id.0) {
        Err(_) => ResponseError::InvalidGroupId.code(),
        Ok(g) if !info.access.group(Permission::Group, g.as_str()) => ResponseError::GroupAuthorizationFailed.code(),
        Ok(_) if !info.access.produces_anywhere() => ResponseError::TransactionalIdAuthorizationFailed.code(),
        Ok(g) => match info
            .ctx
            .broker
            .transactions()
            .add_group(req.transactional_id.as_str(), req.producer_id.0, req.producer_epoch, &g)
            .await
        {
            Ok(number) => {
                session.txns.note(req.transactional_id.as_str(), number);
                NONE
            }
            Err(e) => txn_code("AddOffsetsToTxn", &e),
        },
    };
    Some(resp)
}

pub(crate) async fn txn_offset_commit(
    info: &ReqInfo<'_>,
    req: TxnOffsetCommitRequest,
) -> Option<TxnOffsetCommitResponse> {
    let ctx = info.ctx;
    let mut errors: Vec<((String, i32), i16)> = Vec::new();
    let mut offsets = Vec::new();
    for t in &req.topics {
        let allowed = info.access.topic(Permission::Consume, t.name.0.as_str());
        let topic = TopicName::new(t.name.0.as_str());
        for p in &t.partitions {
            let key = (t.name.0.to_string(), p.partition_index);
            match &topic {
                _ if !allowed => errors.push((key, ResponseError::TopicAuthorizationFailed.code())),
                Ok(topic)
                    if ctx
                        .broker
                        .topics()
                        .has_partition(topic, p.partition_index)
                        .await
                        .unwrap_or(false) =>
                {
                    offsets.push(OffsetCommit {
                        topic: topic.clone(),
                        partition: p.partition_index,
                        offset: p.committed_offset.max(0),
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    });
                }
                _ => errors.push((key, ResponseError::UnknownTopicOrPartition.code())),
            }
        }
    }
    let shared = match group_id(&req.group_id.0) {
        Err(_) => ResponseError::InvalidGroupId.code(),
        Ok(g) if !info.access.group(Permission::Group, g.as_str()) => ResponseError::GroupAuthorizationFailed.code(),
        Ok(_) if offsets.is_empty() => NONE,
        Ok(g) => {
            let member = (info.version >= 3).then(|| GroupMember {
                member_id: req.member_id.to_string(),
                generation: req.generation_id,
            });
            match ctx
                .broker
                .transactions()
                .commit_offsets(
                    req.transactional_id.as_str(),
                    req.producer_id.0,
                    req.producer_epoch,
                    &g,
                    member.as_ref(),
                    &offsets,
                )
                .await
            {
                Ok(()) => NONE,
                Err(e) => txn_code("TxnOffsetCommit", &e),
            }
        }
    };
    let mut resp = TxnOffsetCommitResponse::default();
    for t in &req.topics {
        let mut tr = TxnOffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let mut pr = TxnOffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = errors
                .iter()
                .find(|((n, q), _)| n == t.name.0.as_str() && *q == p.partition_index)
                .map_or(shared, |(_, c)| *c);
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    Some(resp)
}

pub(crate) async fn end_txn(info: &ReqInfo<'_>, req: EndTxnRequest, session: &mut Session) -> Option<EndTxnResponse> {
    let mut resp = EndTxnResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    resp.error_code = if !info.access.produces_anywhere() {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else {
        match info
            .ctx
            .broker
            .transactions()
            .end(
                req.transactional_id.as_str(),
                req.producer_id.0,
                req.producer_epoch,
                req.committed,
                session.txns.get(req.transactional_id.as_str()),
            )
            .await
        {
            Ok(()) => NONE,
            Err(e) => txn_code("EndTxn", &e),
        }
    };
    Some(resp)
}
