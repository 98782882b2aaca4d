//! Topic and broker configs: DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs, and the parsing of topic configs that
//! CreateTopics shares. Configs carry Kafka's names (`retention.ms`,
//! `cleanup.policy`, ...) and map onto the library's `TopicConfig`. A
//! resource whose configs are refused is left as it was.

use std::time::Duration;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::streams::{Cleanup, CleanupPolicy, TopicInfo};
use pgbroker::{TopicConfig, TopicName};

use super::sb;
use crate::dispatch::ReqInfo;
use crate::errors::data_code;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;

/// Config sources of DescribeConfigs.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_DYNAMIC_GROUP: i8 = 8;

/// Config types of DescribeConfigs (v3+).
const TYPE_BOOLEAN: i8 = 1;
pub(super) const TYPE_STRING: i8 = 2;
pub(super) const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

/// Operations of IncrementalAlterConfigs.
pub(super) const OP_SET: i8 = 0;
pub(super) const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Configs accepted and without effect here: Postgres owns durability,
/// and segments are counted in records.
const IGNORED: &[&str] = &[
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "segment.bytes",
    "segment.ms",
    "message.timestamp.type",
];

/// A refused config: the Kafka error code and a message.
pub(super) type Refusal = (i16, String);

pub(super) fn invalid_config(msg: String) -> Refusal {
    (ResponseError::InvalidConfig.code(), msg)
}

/// Applies one topic config entry, as Kafka names them, to `config`.
/// `None` (a DELETE, or a null value) resets it to the default.
pub(crate) fn apply_config(config: &mut TopicConfig, name: &str, value: Option<&str>) -> Result<(), Refusal> {
    let defaults = TopicConfig::default();
    let int = |v: &str| {
        v.trim()
            .parse::<i64>()
            .map_err(|_| invalid_config(format!("{name}: {v:?} is not an integer")))
    };
    match (name, value) {
        ("retention.ms", None) => config.retention = defaults.retention,
        ("retention.ms", Some(v)) => {
            let ms = int(v)?;
            config.retention = (ms >= 0).then(|| Duration::from_millis(ms.unsigned_abs()));
        }
        ("retention.bytes", None) => config.retention_bytes = defaults.retention_bytes,
        ("retention.bytes", Some(v)) => {
            let b = int(v)?;
            config.retention_bytes = (b >= 0).then_some(b);
        }
        ("max.message.bytes", None) => config.max_message_bytes = defaults.max_message_bytes,
        ("max.message.bytes", Some(v)) => {
            config.max_message_bytes =
                usize::try_from(int(v)?).map_err(|_| invalid_config(format!("{name}: must be positive")))?;
        }
        ("segment.records", None) => config.segment_records = defaults.segment_records,
        ("segment.records", Some(v)) => config.segment_records = int(v)?,
        ("cleanup.policy", None) => config.cleanup.policy = CleanupPolicy::default(),
        ("cleanup.policy", Some(v)) => {
            config.cleanup.policy = v
                .parse()
                .map_err(|_| invalid_config(format!("{name}: {v:?} is not delete, compact or compact,delete")))?;
        }
        ("min.compaction.lag.ms", v) => {
            config.cleanup.min_compaction_lag_ms = v.map_or(Ok(defaults.cleanup.min_compaction_lag_ms), int)?;
        }
        ("max.compaction.lag.ms", v) => {
            config.cleanup.max_compaction_lag_ms = v.map_or(Ok(defaults.cleanup.max_compaction_lag_ms), int)?;
        }
        ("delete.retention.ms", v) => {
            config.cleanup.delete_retention_ms = v.map_or(Ok(defaults.cleanup.delete_retention_ms), int)?;
        }
        ("min.cleanable.dirty.ratio", None) => {
            config.cleanup.min_cleanable_dirty_ratio = defaults.cleanup.min_cleanable_dirty_ratio;
        }
        ("min.cleanable.dirty.ratio", Some(v)) => {
            config.cleanup.min_cleanable_dirty_ratio = v
                .trim()
                .parse::<f64>()
                .map_err(|_| invalid_config(format!("{name}: {v:?} is not a number")))?;
        }
        (other, _) if IGNORED.contains(&other) => {}
        (other, _) => return Err(invalid_config(format!("config {other} is not supported"))),
    }
    Ok(())
}

/// Checks a whole topic config as the library would, mapping a refusal
/// to INVALID_CONFIG.
pub(crate) fn check_config(config: &TopicConfig) -> Result<(), Refusal> {
    let c: &Cleanup = &config.cleanup;
    c.validate().map_err(|e| invalid_config(e.to_string()))
}

/// One described config: name, value, whether it can change, its type.
pub(super) struct Entry {
    pub(super) name: &'static str,
    pub(super) value: String,
    pub(super) alterable: bool,
    pub(super) is_default: bool,
    pub(super) kind: i8,
}

fn topic_configs(info: &TopicInfo) -> Vec<Entry> {
    let d = TopicConfig::default();
    let c = &info.cleanup;
    let e = |name, value: String, alterable, is_default, kind| Entry {
        name,
        value,
        alterable,
        is_default,
        kind,
    };
    let ratio = c.min_cleanable_dirty_ratio;
    vec![
        e(
            "cleanup.policy",
            c.policy.to_string(),
            true,
            c.policy == d.cleanup.policy,
            TYPE_LIST,
        ),
        e(
            "retention.ms",
            info.retention_ms.unwrap_or(-1).to_string(),
            true,
            info.retention_ms.is_none(),
            TYPE_LONG,
        ),
        e(
            "retention.bytes",
            info.retention_bytes.unwrap_or(-1).to_string(),
            true,
            info.retention_bytes.is_none(),
            TYPE_LONG,
        ),
        e(
            "max.message.bytes",
            info.max_message_bytes.to_string(),
            true,
            info.max_message_bytes == d.max_message_bytes,
            TYPE_INT,
        ),
        e(
            "min.compaction.lag.ms",
            c.min_compaction_lag_ms.to_string(),
            true,
            c.min_compaction_lag_ms == d.cleanup.min_compaction_lag_ms,
            TYPE_LONG,
        ),
        e(
            "max.compaction.lag.ms",
            c.max_compaction_lag_ms.to_string(),
            true,
            c.max_compaction_lag_ms == d.cleanup.max_compaction_lag_ms,
            TYPE_LONG,
        ),
        e(
            "delete.retention.ms",
            c.delete_retention_ms.to_string(),
            true,
            c.delete_retention_ms == d.cleanup.delete_retention_ms,
            TYPE_LONG,
        ),
        e(
            "min.cleanable.dirty.ratio",
            ratio.to_string(),
            true,
            ratio == d.cleanup.min_cleanable_dirty_ratio,
            TYPE_DOUBLE,
        ),
        e(
            "segment.records",
            info.segment_records.to_string(),
            false,
            info.segment_records == d.segment_records,
            TYPE_LONG,
        ),
        e(
            "message.timestamp.type",
            "CreateTime".to_string(),
            false,
            true,
            TYPE_STRING,
        ),
        e("min.insync.replicas", "1".to_string(), false, true, TYPE_INT),
    ]
}

/// The refusal of an operation on a topic the user has no admin right on.
fn not_authorized(what: &str) -> Refusal {
    (
        ResponseError::TopicAuthorizationFailed.code(),
        format!("not authorized to {what}"),
    )
}

/// The topic a config request names, checked for the admin right.
fn admin_topic(info: &ReqInfo<'_>, name: &str, what: &str) -> Result<TopicName, Refusal> {
    let topic = TopicName::new(name).map_err(|e| (ResponseError::InvalidTopicException.code(), e.to_string()))?;
    if !info.access.topic(Permission::Admin, topic.as_str()) {
        return Err(not_authorized(what));
    }
    Ok(topic)
}

pub(crate) async fn describe_configs(
    info: &ReqInfo<'_>,
    req: DescribeConfigsRequest,
) -> Option<DescribeConfigsResponse> {
    let (ctx, v) = (info.ctx, info.version);
    let mut resp = DescribeConfigsResponse::default();
    for res in &req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let entries: Result<Vec<Entry>, Refusal> = match res.resource_type {
            RESOURCE_TOPIC => {
                match admin_topic(info, res.resource_name.as_str(), "describe this topic's configuration") {
                    Ok(name) => match ctx.broker.topics().info(&name).await {
                        Ok(info) => Ok(topic_configs(&info)),
                        Err(e) => Err((data_code(&e), e.to_string())),
                    },
                    Err(refusal) => Err(refusal),
                }
            }
            RESOURCE_GROUP => super::group_configs::describe(info, res.resource_name.as_str()).await,
            RESOURCE_BROKER if !info.access.cluster() => Err((
                ResponseError::ClusterAuthorizationFailed.code(),
                "only super users may describe the broker's configuration".to_string(),
            )),
            RESOURCE_BROKER => {
                let fixed = |name, value: String, kind| Entry {
                    name,
                    value,
                    alterable: false,
                    is_default: false,
                    kind,
                };
                Ok(vec![
                    fixed(
                        "auto.create.topics.enable",
                        ctx.config.auto_create_topics.to_string(),
                        TYPE_BOOLEAN,
                    ),
                    fixed("num.partitions", ctx.config.default_partitions.to_string(), TYPE_INT),
                    fixed(
                        "socket.request.max.bytes",
                        ctx.config.max_frame_bytes.to_string(),
                        TYPE_INT,
                    ),
                ])
            }
            other => Err((
                ResponseError::InvalidRequest.code(),
                format!("resource type {other} is not supported"),
            )),
        };
        match entries {
            Ok(entries) => {
                let wanted = res.configuration_keys.as_ref();
                r.configs = entries
                    .into_iter()
                    .filter(|e| wanted.is_none_or(|w| w.is_empty() || w.iter().any(|x| x.as_str() == e.name)))
                    .map(|e| {
                        let mut c = DescribeConfigsResourceResult::default();
                        c.name = sb(e.name);
                        c.value = Some(sb(e.value));
                        c.read_only = !e.alterable;
                        c.config_source = if e.is_default || !e.alterable {
                            SOURCE_DEFAULT
                        } else if res.resource_type == RESOURCE_GROUP {
                            SOURCE_DYNAMIC_GROUP
                        } else {
                            SOURCE_DYNAMIC_TOPIC
                        };
                        if v >= 3 {
                            c.config_type = e.kind;
                        }
                        c
                    })
                    .collect();
            }
            Err((err, msg)) => {
                r.error_code = err;
                r.error_message = Some(sb(msg));
            }
        }
        resp.results.push(r);
    }
    Some(resp)
}

/// Validates and, unless `validate_only`, stores a topic's new config.
async fn store(info: &ReqInfo<'_>, name: &TopicName, config: &TopicConfig, validate_only: bool) -> Result<(), Refusal> {
    check_config(config)?;
    if validate_only {
        return Ok(());
    }
    info.ctx
        .broker
        .topics()
        .alter(name, config)
        .await
        .map(drop)
        .map_err(|e| match e {
            pgbroker::Error::Invalid { .. } => invalid_config(e.to_string()),
            e => (data_code(&e), e.to_string()),
        })
}

/// The broker's configs cannot change through the protocol.
fn broker_refusal(resource_type: i8) -> Refusal {
    if resource_type == RESOURCE_BROKER {
        (
            ResponseError::InvalidRequest.code(),
            "broker configs are set on the command line".to_string(),
        )
    } else {
        (
            ResponseError::InvalidRequest.code(),
            format!("resource type {resource_type} is not supported"),
        )
    }
}

/// AlterConfigs: each topic's alterable configs are replaced as a whole;
/// those not given return to their defaults, as in Kafka.
pub(crate) async fn alter_configs(info: &ReqInfo<'_>, req: AlterConfigsRequest) -> Option<AlterConfigsResponse> {
    let ctx = info.ctx;
    let mut resp = AlterConfigsResponse::default();
    for res in &req.resources {
        let outcome: Result<(), Refusal> = async {
            if res.resource_type != RESOURCE_TOPIC {
                return Err(broker_refusal(res.resource_type));
            }
            let name = admin_topic(info, res.resource_name.as_str(), "alter this topic's configuration")?;
            let current = ctx
                .broker
                .topics()
                .info(&name)
                .await
                .map_err(|e| (data_code(&e), e.to_string()))?;
            let defaults = TopicConfig::default();
            let mut config = TopicConfig {
                partitions: current.partitions,
                segment_records: current.segment_records,
                ..defaults
            };
            for c in &res.configs {
                if c.name.as_str() == "segment.records" {
                    return Err(invalid_config("segment.records cannot change".to_string()));
                }
                apply_config(&mut config, c.name.as_str(), c.value.as_deref())?;
            }
            store(info, &name, &config, req.validate_only).await
        }
        .await;
        let mut r = AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        if let Err((code, msg)) = outcome {
            r.error_code = code;
            r.error_message = Some(sb(msg));
            crate::metrics::api_error("AlterConfigs", code);
        }
        resp.responses.push(r);
    }
    Some(resp)
}

/// IncrementalAlterConfigs: SET, DELETE (back to the default), and APPEND
/// and SUBTRACT on the one list config, `cleanup.policy`.
pub(crate) async fn incremental_alter_configs(
    info: &ReqInfo<'_>,
    req: IncrementalAlterConfigsRequest,
) -> Option<IncrementalAlterConfigsResponse> {
    let ctx = info.ctx;
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in &req.resources {
        let outcome: Result<(), Refusal> = async {
            if res.resource_type == RESOURCE_GROUP {
                let changes: Vec<(i8, &str, Option<&str>)> = res
                    .configs
                    .iter()
                    .map(|c| (c.config_operation, c.name.as_str(), c.value.as_deref()))
                    .collect();
                return super::group_configs::alter(info, res.resource_name.as_str(), &changes, req.validate_only)
                    .await;
            }
            if res.resource_type != RESOURCE_TOPIC {
                return Err(broker_refusal(res.resource_type));
            }
            let name = admin_topic(info, res.resource_name.as_str(), "alter this topic's configuration")?;
            let mut config = ctx
                .broker
                .topics()
                .info(&name)
                .await
                .map_err(|e| (data_code(&e), e.to_string()))?
                .config();
            for c in &res.configs {
                let key = c.name.as_str();
                if key == "segment.records" {
                    return Err(invalid_config("segment.records cannot change".to_string()));
                }
                let value = c.value.as_deref();
                match c.config_operation {
                    OP_SET => apply_config(&mut config, key, value)?,
                    OP_DELETE => apply_config(&mut config, key, None)?,
                    op @ (OP_APPEND | OP_SUBTRACT) if key == "cleanup.policy" => {
                        let items = |s: &str| -> Vec<String> {
                            s.split(',')
                                .map(|i| i.trim().to_string())
                                .filter(|i| !i.is_empty())
                                .collect()
                        };
                        let mut list = items(config.cleanup.policy.as_str());
                        for item in items(value.unwrap_or("")) {
                            if op == OP_APPEND && !list.contains(&item) {
                                list.push(item);
                            } else if op == OP_SUBTRACT {
                                list.retain(|i| *i != item);
                            }
                        }
                        if list.is_empty() {
                            return Err(invalid_config("cleanup.policy cannot be empty".to_string()));
                        }
                        apply_config(&mut config, key, Some(&list.join(",")))?;
                    }
                    OP_APPEND | OP_SUBTRACT => {
                        return Err(invalid_config(format!("{key} is not a list: it takes SET or DELETE")));
                    }
                    op => return Err(invalid_config(format!("unknown config operation {op}"))),
                }
            }
            store(info, &name, &config, req.validate_only).await
        }
        .await;
        let mut r = IncrementalResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        if let Err((code, msg)) = outcome {
            r.error_code = code;
            r.error_message = Some(sb(msg));
            crate::metrics::api_error("IncrementalAlterConfigs", code);
        }
        resp.responses.push(r);
    }
    Some(resp)
}
