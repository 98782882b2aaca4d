//! The admin side of transactions (KIP-664): ListTransactions and
//! DescribeTransactions, for finding hanging transactions. Users who may
//! produce somewhere may use transactional ids, and so may see them.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_transactions_response::{self as describe, TopicData};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest, ListTransactionsResponse,
    ProducerId,
};
use kafka_protocol::ResponseError;
use pgbroker::txn::{TxnDescription, TxnState};

use super::sb;
use crate::api::txn::txn_error;
use crate::dispatch::ReqInfo;
use crate::errors::NONE;

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
