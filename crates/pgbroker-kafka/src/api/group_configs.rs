//! Group configs (resource type 32 of DescribeConfigs and
//! IncrementalAlterConfigs), as Kafka 4 clients set them: the share group
//! settings and the consumer group session settings, validated and stored
//! by the library (`pgbroker::groups::share::config`).

use kafka_protocol::ResponseError;
use pgbroker::auth::Permission;
use pgbroker::groups::share::config::{check, check_name};
use pgbroker::{Error, GroupId};

use super::configs::{invalid_config, Entry, Refusal, OP_DELETE, OP_SET, TYPE_INT, TYPE_STRING};
use crate::dispatch::ReqInfo;
use crate::errors::group_code;

/// The group a config request names, checked for the group right.
fn group(info: &ReqInfo<'_>, name: &str) -> Result<GroupId, Refusal> {
    if !info.access.group(Permission::Group, name) {
        return Err((
            ResponseError::GroupAuthorizationFailed.code(),
            "not authorized to configure this group".to_string(),
        ));
    }
    GroupId::new(name).map_err(|e| (ResponseError::InvalidGroupId.code(), e.to_string()))
}

fn refusal(e: &Error) -> Refusal {
    match e {
        Error::Invalid { .. } => invalid_config(e.to_string()),
        e => (group_code(e), e.to_string()),
    }
}

/// Every setting of a group with its value.
pub(super) async fn describe(info: &ReqInfo<'_>, name: &str) -> Result<Vec<Entry>, Refusal> {
    let g = group(info, name)?;
    let entries = info
        .ctx
        .broker
        .share_groups()
        .configs(&g)
        .await
        .map_err(|e| refusal(&e))?;
    Ok(entries
        .into_iter()
        .map(|c| Entry {
            name: c.name,
            kind: if c.name.ends_with(".ms") || c.name.ends_with(".limit") {
                TYPE_INT
            } else {
                TYPE_STRING
            },
            value: c.value,
            alterable: true,
            is_default: c.is_default,
        })
        .collect())
}

/// Sets (SET) or resets (DELETE) settings of a group, all or none.
pub(super) async fn alter(
    info: &ReqInfo<'_>,
    name: &str,
    changes: &[(i8, &str, Option<&str>)],
    validate_only: bool,
) -> Result<(), Refusal> {
    let g = group(info, name)?;
    let mut out = Vec::with_capacity(changes.len());
    for (op, key, value) in changes {
        match (*op, value) {
            (OP_SET, Some(v)) => {
                check(key, v).map_err(|e| refusal(&e))?;
                out.push((key.to_string(), Some(v.to_string())));
            }
            (OP_SET, None) | (OP_DELETE, _) => {
                check_name(key).map_err(|e| refusal(&e))?;
                out.push((key.to_string(), None));
            }
            (op, _) => return Err(invalid_config(format!("{key} takes SET or DELETE, not operation {op}"))),
        }
    }
    if validate_only {
        return Ok(());
    }
    info.ctx
        .broker
        .share_groups()
        .alter_configs(&g, &out)
        .await
        .map_err(|e| refusal(&e))
}
