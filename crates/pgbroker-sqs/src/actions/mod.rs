//! The actions, each mapped onto pgbroker's queue operations.

mod messages;
mod queues;
mod receive;

use pgbroker::QueueName;
use serde_json::Value;

use crate::auth::Principal;
use crate::error::{SqsError, SqsResult};
use crate::protocol::{self, Input};
use crate::server::Shared;

/// One request's context.
pub(crate) struct Ctx<'a> {
    pub shared: &'a Shared,
    /// The `Host` the client addressed, for queue URLs.
    pub host: String,
    /// Who sent the request, and what it may do.
    pub principal: Principal,
}

impl Ctx<'_> {
    pub fn broker(&self) -> &pgbroker::Broker {
        &self.shared.broker
    }

    /// The URL of a queue: its last path segment is the name.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}/{name}", self.host, self.shared.config.account_id)
    }

    /// The ARN of a queue.
    pub fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:sqs:{}:{}:{name}",
            self.shared.config.region, self.shared.config.account_id
        )
    }

    /// Checks that the sender may run `action` on the queue `name`.
    pub fn allow(&self, action: &str, name: &str) -> SqsResult<()> {
        self.principal.check(action, name).map_err(SqsError::from)
    }

    /// The queue a request's `QueueUrl` names.
    pub fn queue(&self, input: &Input<'_>) -> SqsResult<QueueName> {
        name_from(&protocol::queue_name_of(input.str("QueueUrl")?)?)
    }
}

/// A pgbroker queue name from a name SQS accepts.
pub(crate) fn name_from(name: &str) -> SqsResult<QueueName> {
    protocol::check_queue_name(name)?;
    QueueName::new(name).map_err(|e| SqsError::invalid_parameter(e.to_string()))
}

/// The queue an action acts on, for the permission check: named by
/// `QueueUrl`, `QueueName` or (move tasks) `SourceArn`.
fn target_queue(input: &Input<'_>) -> SqsResult<Option<String>> {
    if let Some(url) = input.opt_str("QueueUrl")? {
        return protocol::queue_name_of(url).map(Some);
    }
    if let Some(name) = input.opt_str("QueueName")? {
        return Ok(Some(name.to_string()));
    }
    match input.opt_str("SourceArn")? {
        Some(arn) => protocol::queue_name_of(arn).map(Some),
        None => Ok(None),
    }
}

/// Runs one action, once the sender is allowed to.
pub(crate) async fn dispatch(ctx: &Ctx<'_>, action: &'static str, input: &Input<'_>) -> SqsResult<Value> {
    if let Some(queue) = target_queue(input)? {
        ctx.allow(action, &queue)?;
    }
    match action {
        "CreateQueue" => queues::create(ctx, input).await,
        "GetQueueUrl" => queues::get_url(ctx, input).await,
        "ListQueues" => queues::list(ctx, input).await,
        "DeleteQueue" => queues::delete(ctx, input).await,
        "GetQueueAttributes" => queues::get_attributes(ctx, input).await,
        "SetQueueAttributes" => queues::set_attributes(ctx, input).await,
        "PurgeQueue" => queues::purge(ctx, input).await,
        "ListDeadLetterSourceQueues" => queues::dead_letter_sources(ctx, input).await,
        "TagQueue" | "UntagQueue" | "ListQueueTags" => queues::tags(ctx, action, input).await,
        "SendMessage" => messages::send(ctx, input).await,
        "SendMessageBatch" => messages::send_batch(ctx, input).await,
        "ReceiveMessage" => receive::receive(ctx, input).await,
        "DeleteMessage" => messages::delete(ctx, input).await,
        "DeleteMessageBatch" => messages::delete_batch(ctx, input).await,
        "ChangeMessageVisibility" => messages::change_visibility(ctx, input).await,
        "ChangeMessageVisibilityBatch" => messages::change_visibility_batch(ctx, input).await,
        "StartMessageMoveTask" => crate::moves::start(ctx, input).await,
        "ListMessageMoveTasks" => crate::moves::list(ctx, input).await,
        "CancelMessageMoveTask" => crate::moves::cancel(ctx, input).await,
        other => Err(SqsError::unknown_operation(format!("unknown operation {other:?}"))),
    }
}
