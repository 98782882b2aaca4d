//! The actions, each mapped onto pgbroker's queue operations.

mod messages;
mod queues;
mod receive;

use std::sync::Arc;

use pgbroker::QueueName;
use serde_json::Value;

use crate::auth::Principal;
use crate::error::{SqsError, SqsResult};
use crate::protocol::{self, Input};
use crate::queue_attrs::Queue;
use crate::server::Shared;

/// One request's context.
pub(crate) struct Ctx<'a> {
    pub shared: &'a Shared,
    /// The `Host` the client addressed, for queue URLs.
    pub host: String,
    /// Who sent the request.
    pub caller: Principal,
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

    /// A queue's settings for the message actions: at most
    /// [`crate::queue_cache::TTL`] old.
    pub async fn settings(&self, name: &QueueName) -> SqsResult<Arc<Queue>> {
        self.shared.queues.get(self.broker(), name).await
    }

    /// Forgets what the cache holds of a queue this request changed.
    pub fn changed(&self, name: &QueueName) {
        self.shared.queues.forget(name);
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

/// Runs one action.
pub(crate) async fn dispatch(ctx: &Ctx<'_>, action: &'static str, input: &Input<'_>) -> SqsResult<Value> {
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
