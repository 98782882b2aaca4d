//! The admin side of transactions (KIP-664): ListTransactions,
//! DescribeTransactions and DescribeProducers, for finding hanging
//! transactions. Users who may produce somewhere may use transactional
//! ids, and so may see them; a partition's producers are shown to users
//! who may read the topic, as Kafka does.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_producers_response::{self as producers, PartitionResponse, TopicResponse};
use kafka_protocol::messages::describe_transactions_response::{self as describe, TopicData};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId,
};
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::txn::{TxnDescription, TxnState};

use super::{named_topic, sb};
use crate::api::txn::txn_error;
use crate::dispatch::ReqInfo;
use crate::errors::{data_code, NONE};

/// The states Kafka names; pgbroker's coordinator uses the first four
/// (a decision is one SQL transaction, so nothing is ever `Prepare*`).
const KAFKA_STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "CompleteCommit",
    "CompleteAbort",
    "PrepareCommit",
    "PrepareAbort",
    "PrepareEpochFence",
    "Dead",
];

fn now_ms() -> i64 {
    pgbroker::to_millis(std::time::SystemTime::now())
}

pub(crate) async fn list_transactions(
    info: &ReqInfo<'_>,
    req: ListTransactionsRequest,
) -> Option<ListTransactionsResponse> {
    let mut resp = ListTransactionsResponse::default();
    if !info.access.produces_anywhere() {
        resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return Some(resp);
    }
    resp.unknown_state_filters = req
        .state_filters
        .iter()
        .filter(|s| !KAFKA_STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let all = match info.ctx.broker.transactions().list().await {
        Ok(all) => all,
        Err(e) => {
            resp.error_code = txn_error(&e).code();
            return Some(resp);
        }
    };
    let now = now_ms();
    for d in all {
        let state = d.state.as_str();
        if !req.state_filters.is_empty() && !req.state_filters.iter().any(|s| s.as_str() == state) {
            continue;
        }
        if !req.producer_id_filters.is_empty() && !req.producer_id_filters.contains(&ProducerId(d.producer_id)) {
            continue;
        }
        // Version 1: only transactions running longer than this.
        if info.version >= 1 && req.duration_filter >= 0 {
            let running = d.started_at.map(|t| now - pgbroker::to_millis(t));
            if running.is_none_or(|ms| ms <= req.duration_filter) {
                continue;
            }
        }
        let mut t = list_transactions_response::TransactionState::default();
        t.transactional_id = sb(d.transactional_id).into();
        t.producer_id = ProducerId(d.producer_id);
        t.transaction_state = sb(state);
        resp.transaction_states.push(t);
    }
    resp.error_code = NONE;
    Some(resp)
}

fn described(d: &TxnDescription) -> describe::TransactionState {
    let mut t = describe::TransactionState::default();
    t.transactional_id = sb(d.transactional_id.clone()).into();
    t.transaction_state = sb(d.state.as_str());
    t.transaction_timeout_ms = d.timeout_ms;
    t.transaction_start_time_ms = match d.state {
        TxnState::Ongoing => d.started_at.map_or(-1, pgbroker::to_millis),
        _ => -1,
    };
    t.producer_id = ProducerId(d.producer_id);
    t.producer_epoch = d.epoch;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, p) in &d.partitions {
        by_topic.entry(topic.as_str()).or_default().push(*p);
    }
    t.topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            let mut td = TopicData::default();
            td.topic = sb(name).into();
            td.partitions = partitions;
            td
        })
        .collect();
    t
}

pub(crate) async fn describe_transactions(
    info: &ReqInfo<'_>,
    req: DescribeTransactionsRequest,
) -> Option<DescribeTransactionsResponse> {
    let mut resp = DescribeTransactionsResponse::default();
    for id in &req.transactional_ids {
        let mut t = describe::TransactionState::default();
        t.transactional_id = id.clone();
        t.transaction_state = sb("");
        t.producer_id = ProducerId(-1);
        t.producer_epoch = -1;
        t.transaction_start_time_ms = -1;
        if !info.access.produces_anywhere() {
            t.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        } else {
            match info.ctx.broker.transactions().describe(id.as_str()).await {
                Ok(Some(d)) => t = described(&d),
                Ok(None) => t.error_code = ResponseError::TransactionalIdNotFound.code(),
                Err(e) => t.error_code = txn_error(&e).code(),
            }
        }
        resp.transaction_states.push(t);
    }
    Some(resp)
}

pub(crate) async fn describe_producers(
    info: &ReqInfo<'_>,
    req: DescribeProducersRequest,
) -> Option<DescribeProducersResponse> {
    let mut resp = DescribeProducersResponse::default();
    for t in &req.topics {
        let name = named_topic(info, Permission::Consume, &t.name);
        let mut tr = TopicResponse::default();
        tr.name = t.name.clone();
        for &p in &t.partition_indexes {
            let mut pr = PartitionResponse::default();
            pr.partition_index = p;
            let found = match &name {
                Ok(topic) => info
                    .ctx
                    .broker
                    .transactions()
                    .producers(topic, p)
                    .await
                    .map_err(|e| data_code(&e)),
                Err(code) => Err(*code),
            };
            match found {
                Ok(all) => pr.active_producers = all.iter().map(producer_state).collect(),
                Err(code) => pr.error_code = code,
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    Some(resp)
}

fn producer_state(s: &pgbroker::txn::ProducerState) -> producers::ProducerState {
    let mut out = producers::ProducerState::default();
    out.producer_id = ProducerId(s.producer_id);
    out.producer_epoch = i32::from(s.epoch);
    out.last_sequence = s.last_sequence;
    out.last_timestamp = pgbroker::to_millis(s.last_write);
    // pgbroker has one coordinator, Postgres; it has no epochs.
    out.coordinator_epoch = -1;
    out.current_txn_start_offset = s.txn_start_offset.unwrap_or(-1);
    out
}
