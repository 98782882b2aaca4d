//! Errors as the SDKs expect them: HTTP 400 (or 403, 413, 500), a JSON body
//! `{"__type": "com.amazonaws.sqs#<Shape>", "message": ...}` and the
//! `x-amzn-query-error: <query code>;Sender` header from which botocore
//! and the Rust SDK pick the error's code and type.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answer of the SQS API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsError {
    /// The error shape's name, e.g. `QueueDoesNotExist`.
    pub shape: &'static str,
    /// The code of the query protocol, e.g.
    /// `AWS.SimpleQueueService.NonExistentQueue`.
    pub query_code: &'static str,
    /// HTTP status.
    pub status: u16,
    /// Human-readable explanation.
    pub message: String,
}

/// The API's result type.
pub type SqsResult<T> = Result<T, SqsError>;

macro_rules! errors {
    ($($(#[$doc:meta])* $fn:ident => $shape:literal, $code:literal, $status:literal;)*) => {
        impl SqsError {
            $(
                $(#[$doc])*
                pub fn $fn(message: impl Into<String>) -> SqsError {
                    SqsError { shape: $shape, query_code: $code, status: $status, message: message.into() }
                }
            )*
        }
    };
}

errors! {
    /// The queue does not exist.
    no_queue => "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", 400;
    /// A queue of this name exists with other attributes.
    queue_exists => "QueueNameExists", "QueueAlreadyExists", 400;
    /// A parameter's value is not acceptable.
    invalid_parameter => "InvalidParameterValue", "InvalidParameterValue", 400;
    /// A required parameter is missing.
    missing_parameter => "MissingParameter", "MissingParameter", 400;
    /// An unknown queue attribute name.
    invalid_attribute_name => "InvalidAttributeName", "InvalidAttributeName", 400;
    /// A queue attribute's value is not acceptable.
    invalid_attribute_value => "InvalidAttributeValue", "InvalidAttributeValue", 400;
    /// A message body with characters SQS does not allow.
    invalid_message_contents => "InvalidMessageContents", "InvalidMessageContents", 400;
    /// A receipt handle that is not one.
    invalid_receipt => "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", 400;
    /// The message is not in flight under this receipt handle.
    not_inflight => "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight", 400;
    /// A batch without entries.
    empty_batch => "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", 400;
    /// A batch of more than 10 entries.
    too_many_entries => "TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", 400;
    /// Two batch entries with one id.
    ids_not_distinct => "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", 400;
    /// A batch entry id SQS would refuse.
    invalid_entry_id => "InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId", 400;
    /// A batch whose messages together are too large.
    batch_too_long => "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", 400;
    /// An operation this server does not implement for the queue.
    unsupported => "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", 400;
    /// A move task that does not exist.
    not_found => "ResourceNotFoundException", "ResourceNotFoundException", 400;
    /// An action that SQS does not have.
    unknown_operation => "UnknownOperationException", "InvalidAction", 400;
    /// A body that is not a JSON object of the action's shape.
    serialization => "SerializationException", "SerializationException", 400;
    /// A body over the size limit.
    too_large => "RequestEntityTooLarge", "RequestEntityTooLarge", 413;
    /// Anything else; the request may or may not have taken effect.
    internal => "InternalFailure", "InternalFailure", 500;
}

impl SqsError {
    /// The JSON body of the answer.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "__type": format!("com.amazonaws.sqs#{}", self.shape),
            "message": self.message,
        })
    }
}

impl From<pgbroker::Error> for SqsError {
    fn from(e: pgbroker::Error) -> Self {
        use pgbroker::Error as E;
        match &e {
            E::UnknownQueue(_) => SqsError::no_queue("The specified queue does not exist."),
            E::QueueExists(_) => SqsError::queue_exists(e.to_string()),
            E::QueueInUse { .. } => SqsError::invalid_parameter(e.to_string()),
            E::MessageTooLarge { .. } => SqsError::invalid_parameter(e.to_string()),
            E::StaleReceipt { .. } => SqsError::not_inflight(e.to_string()),
            E::Invalid { .. } => SqsError::invalid_parameter(e.to_string()),
            _ => {
                tracing::warn!(error = %e, "sqs request failed");
                SqsError::internal(e.to_string())
            }
        }
    }
}

impl IntoResponse for SqsError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = (status, crate::server::json_body(&self.body())).into_response();
        let fault = if self.status >= 500 { "Receiver" } else { "Sender" };
        if let Ok(v) = HeaderValue::from_str(&format!("{};{fault}", self.query_code)) {
            response.headers_mut().insert("x-amzn-query-error", v);
        }
        response
    }
}

impl From<crate::auth::SqsAuthError> for SqsError {
    fn from(e: crate::auth::SqsAuthError) -> Self {
        if let crate::auth::SqsAuthError::Internal(inner) = &e {
            tracing::warn!(error = %inner, "could not check a request's credentials");
        }
        SqsError {
            shape: e.code(),
            query_code: e.code(),
            status: e.status(),
            message: e.to_string(),
        }
    }
}
