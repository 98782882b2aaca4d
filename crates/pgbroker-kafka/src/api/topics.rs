//! Topic administration (CreateTopics, DeleteTopics, CreatePartitions,
//! DeleteRecords) and InitProducerId. Configs are in [`super::configs`].

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse, InitProducerIdRequest, InitProducerIdResponse,
    ProducerId,
};
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::{Error, TopicConfig, TopicName};

use super::configs::{apply_config, check_config};
use super::{named_topic, sb};
use crate::dispatch::ReqInfo;
use crate::errors::data_code;

pub(crate) async fn create_topics(info: &ReqInfo<'_>, req: CreateTopicsRequest) -> Option<CreateTopicsResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let mut resp = CreateTopicsResponse::default();
    for t in &req.topics {
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        let mut config = TopicConfig {
            partitions: if t.num_partitions == -1 {
                ctx.config.default_partitions
            } else {
                t.num_partitions
            },
            ..TopicConfig::default()
        };
        let mut refused: Option<(i16, String)> = None;
        if !matches!(t.replication_factor, -1 | 1) {
            refused = Some((
                ResponseError::InvalidReplicationFactor.code(),
                "replication is Postgres's own; the replication factor must be 1 or -1".to_string(),
            ));
        } else if !t.assignments.is_empty() {
            refused = Some((
                ResponseError::InvalidRequest.code(),
                "manual replica assignment is not supported".to_string(),
            ));
        }
        for c in &t.configs {
            if refused.is_none() {
                refused = apply_config(&mut config, c.name.as_str(), c.value.as_deref()).err();
            }
        }
        if refused.is_none() {
            refused = check_config(&config).err();
        }
        let allowed = info.access.topic(Permission::Admin, t.name.0.as_str());
        let outcome = match (refused, TopicName::new(t.name.0.as_str())) {
            (_, Ok(_)) if !allowed => Err(not_authorized("create this topic")),
            (Some(r), _) => Err(r),
            (None, Err(e)) => Err((ResponseError::InvalidTopicException.code(), e.to_string())),
            (None, Ok(_)) if config.partitions < 1 => Err((
                ResponseError::InvalidPartitions.code(),
                format!("{} partitions", config.partitions),
            )),
            (None, Ok(name)) if req.validate_only => match ctx.broker.topics().info(&name).await {
                Ok(_) => Err((
                    ResponseError::TopicAlreadyExists.code(),
                    format!("topic {name} already exists"),
                )),
                Err(_) => Ok(config.partitions),
            },
            (None, Ok(name)) => match ctx.broker.topics().create(&name, &config).await {
                Ok(info) => Ok(info.partitions),
                Err(e @ Error::Invalid { .. }) => Err((ResponseError::InvalidRequest.code(), e.to_string())),
                Err(e) => Err((data_code(&e), e.to_string())),
            },
        };
        match outcome {
            Ok(partitions) if v >= 5 => {
                r.num_partitions = partitions;
                r.replication_factor = 1;
            }
            Ok(_) => {}
            Err((err, msg)) => {
                r.error_code = err;
                r.error_message = Some(sb(msg));
            }
        }
        resp.topics.push(r);
    }
    Some(resp)
}

pub(crate) async fn delete_topics(info: &ReqInfo<'_>, req: DeleteTopicsRequest) -> Option<DeleteTopicsResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let names: Vec<String> = if v >= 6 {
        req.topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect()
    } else {
        req.topic_names.iter().map(|n| n.0.to_string()).collect()
    };
    let mut resp = DeleteTopicsResponse::default();
    for n in names {
        let mut r = DeletableTopicResult::default();
        r.name = Some(sb(n.clone()).into());
        let result = match TopicName::new(n) {
            Ok(name) if !info.access.topic(Permission::Admin, name.as_str()) => {
                Err(not_authorized("delete this topic"))
            }
            Ok(name) => ctx
                .broker
                .topics()
                .delete(&name)
                .await
                .map_err(|e| (data_code(&e), e.to_string())),
            Err(e) => Err((data_code(&e), e.to_string())),
        };
        if let Err((err, msg)) = result {
            r.error_code = err;
            if v >= 5 {
                r.error_message = Some(sb(msg));
            }
        }
        resp.responses.push(r);
    }
    Some(resp)
}

pub(crate) async fn create_partitions(
    info: &ReqInfo<'_>,
    req: CreatePartitionsRequest,
) -> Option<CreatePartitionsResponse> {
    let ctx = info.ctx;
    let mut resp = CreatePartitionsResponse::default();
    for t in &req.topics {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        let result: Result<(), (i16, String)> = async {
            let name = TopicName::new(t.name.0.as_str())
                .map_err(|e| (ResponseError::InvalidTopicException.code(), e.to_string()))?;
            if !info.access.topic(Permission::Admin, name.as_str()) {
                return Err(not_authorized("add partitions to this topic"));
            }
            let info = ctx
                .broker
                .topics()
                .info(&name)
                .await
                .map_err(|e| (data_code(&e), e.to_string()))?;
            if t.count <= info.partitions {
                return Err((
                    ResponseError::InvalidPartitions.code(),
                    format!("topic has {} partitions; the count can only grow", info.partitions),
                ));
            }
            if req.validate_only {
                return Ok(());
            }
            ctx.broker
                .topics()
                .add_partitions(&name, t.count - info.partitions)
                .await
                .map(|_| ())
                .map_err(|e| (ResponseError::InvalidPartitions.code(), e.to_string()))
        }
        .await;
        if let Err((err, msg)) = result {
            r.error_code = err;
            r.error_message = Some(sb(msg));
        }
        resp.results.push(r);
    }
    Some(resp)
}

pub(crate) async fn delete_records(info: &ReqInfo<'_>, req: DeleteRecordsRequest) -> Option<DeleteRecordsResponse> {
    let ctx = info.ctx;
    let mut resp = DeleteRecordsResponse::default();
    for t in &req.topics {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        let name = named_topic(info, Permission::Admin, &t.name.0);
        for p in &t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.low_watermark = -1;
            let before = (p.offset >= 0).then_some(p.offset);
            match &name {
                Ok(name) => match ctx
                    .broker
                    .streams()
                    .delete_records(name, p.partition_index, before)
                    .await
                {
                    Ok(start) => pr.low_watermark = start,
                    Err(e) => pr.error_code = data_code(&e),
                },
                Err(code) => pr.error_code = *code,
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    Some(resp)
}

/// The refusal of an operation on a topic the user has no admin right on.
fn not_authorized(what: &str) -> (i16, String) {
    (
        ResponseError::TopicAuthorizationFailed.code(),
        format!("not authorized to {what}"),
    )
}

pub(crate) async fn init_producer_id(info: &ReqInfo<'_>, req: InitProducerIdRequest) -> Option<InitProducerIdResponse> {
    let ctx = info.ctx;
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if let Some(id) = req.transactional_id.as_ref().filter(|t| !t.is_empty()) {
        return Some(super::txn::init_transactional(info, &req, id.as_str()).await);
    }
    // An idempotent producer id: for users that may produce somewhere.
    if !info.access.produces_anywhere() {
        resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
        return Some(resp);
    }
    // A producer that presents its id asks for a new epoch of it.
    if req.producer_id.0 >= 0 && (0..i16::MAX).contains(&req.producer_epoch) {
        resp.producer_id = req.producer_id;
        resp.producer_epoch = req.producer_epoch + 1;
        return Some(resp);
    }
    match ctx.broker.streams().init_producer_id().await {
        Ok((id, epoch)) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = epoch;
        }
        Err(e) => resp.error_code = data_code(&e),
    }
    Some(resp)
}
