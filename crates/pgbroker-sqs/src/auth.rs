//! Who sent an SQS request, and what it may do.
//!
//! Requests are signed with AWS Signature Version 4 ([`crate::sigv4`])
//! using an access key that belongs to a pgbroker user
//! (`pgbroker user key create`). The user's rights are its ACLs, the same
//! grants the Kafka listener enforces, with queues as resources:
//!
//! | right      | actions |
//! |------------|---------|
//! | `produce`  | SendMessage, SendMessageBatch |
//! | `consume`  | ReceiveMessage, DeleteMessage(Batch), ChangeMessageVisibility(Batch) |
//! | `admin`    | CreateQueue, DeleteQueue, PurgeQueue, SetQueueAttributes, TagQueue, UntagQueue, StartMessageMoveTask, CancelMessageMoveTask |
//! | any right  | GetQueueUrl, GetQueueAttributes, ListQueueTags, ListDeadLetterSourceQueues, ListMessageMoveTasks |
//!
//! ListQueues is open to every user and lists only the queues it has a
//! right on. Users named as super users may do everything. Anonymous
//! requests (no `Authorization` header) are served only when the listener
//! allows them, and may then do everything; a request that is signed is
//! always verified, allowed anonymous access or not.

use std::time::SystemTime;

use axum::http::request::Parts;
use pgbroker::{Broker, Permission, UserAcls};

use crate::sigv4::{self, Request};

/// Why a request was not authenticated or not authorized. Each maps onto
/// the error SQS itself returns ([`SqsAuthError::code`],
/// [`SqsAuthError::status`]).
#[derive(Debug, thiserror::Error)]
pub enum SqsAuthError {
    /// No `Authorization` header, and anonymous access is off.
    #[error("the request is not signed; sign it with an access key made by `pgbroker user key create`")]
    MissingAuthenticationToken,
    /// The `Authorization` header or `X-Amz-Date` is malformed or missing.
    #[error("the request signature is malformed: {0}")]
    IncompleteSignature(String),
    /// The access key id is not known.
    #[error("the access key id in the request is not known")]
    InvalidClientTokenId,
    /// The signature is wrong, or its scope does not fit.
    #[error("{0}")]
    SignatureDoesNotMatch(String),
    /// `X-Amz-Date` is more than 15 minutes away from the server's clock
    /// (a replay, or a client with a wrong clock).
    #[error("Signature expired: signed at {signed}, server time {now}; requests must be signed within 15 minutes of the server's clock")]
    SignatureExpired {
        /// The request's `X-Amz-Date`.
        signed: String,
        /// The server's time, in the same form.
        now: String,
    },
    /// The user has no right to do this on this queue.
    #[error("access to queue {queue:?} is denied for {action}")]
    AccessDenied {
        /// The action asked for.
        action: String,
        /// The queue.
        queue: String,
    },
    /// The credentials could not be read.
    #[error("could not check the request's credentials: {0}")]
    Internal(#[from] pgbroker::Error),
}

impl SqsAuthError {
    /// The SQS error code: `MissingAuthenticationToken`,
    /// `IncompleteSignature`, `InvalidClientTokenId`,
    /// `SignatureDoesNotMatch` (also for an expired signature, as SQS
    /// answers), `AccessDenied` or `InternalFailure`.
    pub fn code(&self) -> &'static str {
        match self {
            SqsAuthError::MissingAuthenticationToken => "MissingAuthenticationToken",
            SqsAuthError::IncompleteSignature(_) => "IncompleteSignature",
            SqsAuthError::InvalidClientTokenId => "InvalidClientTokenId",
            SqsAuthError::SignatureDoesNotMatch(_) | SqsAuthError::SignatureExpired { .. } => "SignatureDoesNotMatch",
            SqsAuthError::AccessDenied { .. } => "AccessDenied",
            SqsAuthError::Internal(_) => "InternalFailure",
        }
    }

    /// The HTTP status: 400 for `IncompleteSignature`, 500 for
    /// `InternalFailure`, 403 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            SqsAuthError::IncompleteSignature(_) => 400,
            SqsAuthError::Internal(_) => 500,
            _ => 403,
        }
    }

    /// True when the client is at fault (`Sender`), false for
    /// `InternalFailure` (`Receiver`).
    pub fn is_sender_fault(&self) -> bool {
        !matches!(self, SqsAuthError::Internal(_))
    }
}

/// How the listener authenticates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Serve requests without an `Authorization` header, with every right.
    pub allow_anonymous: bool,
    /// Users that may do everything, whatever their ACLs.
    pub super_users: Vec<String>,
}

/// The right an action needs on its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// `produce`: send.
    Produce,
    /// `consume`: receive, delete, change visibility.
    Consume,
    /// `admin`: create, delete, purge, change attributes, move messages.
    Admin,
    /// Any right on the queue: look it up or read its attributes.
    Describe,
}

/// The right `action` (the `X-Amz-Target` suffix, e.g. `SendMessage`)
/// needs on its queue; `None` for ListQueues, which needs none and is
/// filtered with [`Principal::may_see`], and for unknown actions.
pub fn required(action: &str) -> Option<Required> {
    Some(match action {
        "SendMessage" | "SendMessageBatch" => Required::Produce,
        "ReceiveMessage"
        | "DeleteMessage"
        | "DeleteMessageBatch"
        | "ChangeMessageVisibility"
        | "ChangeMessageVisibilityBatch" => Required::Consume,
        "CreateQueue"
        | "DeleteQueue"
        | "PurgeQueue"
        | "SetQueueAttributes"
        | "TagQueue"
        | "UntagQueue"
        | "AddPermission"
        | "RemovePermission"
        | "StartMessageMoveTask"
        | "CancelMessageMoveTask" => Required::Admin,
        "GetQueueUrl"
        | "GetQueueAttributes"
        | "ListQueueTags"
        | "ListDeadLetterSourceQueues"
        | "ListMessageMoveTasks" => Required::Describe,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    All,
    Acls(UserAcls),
}

/// The sender of a request and its rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    user: Option<String>,
    access: Access,
}

impl Principal {
    /// An anonymous sender, allowed everything (only when the listener
    /// allows anonymous access).
    pub fn anonymous() -> Principal {
        Principal {
            user: None,
            access: Access::All,
        }
    }

    /// A user with these rights.
    pub fn user_with(user: &str, acls: UserAcls) -> Principal {
        Principal {
            user: Some(user.to_string()),
            access: Access::Acls(acls),
        }
    }

    /// A user allowed everything.
    pub fn super_user(user: &str) -> Principal {
        Principal {
            user: Some(user.to_string()),
            access: Access::All,
        }
    }

    /// The authenticated user; `None` when anonymous.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// True when the sender has the right `need` on `queue`.
    pub fn allows(&self, need: Required, queue: &str) -> bool {
        let acls = match &self.access {
            Access::All => return true,
            Access::Acls(acls) => acls,
        };
        match need {
            Required::Produce => acls.allows_queue(Permission::Produce, queue),
            Required::Consume => acls.allows_queue(Permission::Consume, queue),
            Required::Admin => acls.allows_queue(Permission::Admin, queue),
            Required::Describe => acls.any_on_queue(queue),
        }
    }

    /// True when the sender has any right on `queue`: ListQueues shows
    /// only such queues.
    pub fn may_see(&self, queue: &str) -> bool {
        self.allows(Required::Describe, queue)
    }

    /// Checks that `action` on `queue` is allowed:
    /// [`SqsAuthError::AccessDenied`] otherwise, whether the queue exists
    /// or not. Actions that name no right (ListQueues, unknown ones) pass.
    pub fn check(&self, action: &str, queue: &str) -> Result<(), SqsAuthError> {
        match required(action) {
            Some(need) if !self.allows(need, queue) => Err(SqsAuthError::AccessDenied {
                action: action.to_string(),
                queue: queue.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// Authenticates a request: verifies its signature against the secret of
/// the access key it names and loads the key's user's rights. `body` must
/// be the bytes received, before any parsing; `now` is the server's clock.
/// A request without an `Authorization` header is anonymous when
/// `config.allow_anonymous`, refused otherwise.
pub async fn authenticate(
    broker: &Broker,
    config: &AuthConfig,
    parts: &Parts,
    body: &[u8],
    now: SystemTime,
) -> Result<Principal, SqsAuthError> {
    let req = Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body,
    };
    let Some(signed) = sigv4::parse(&req, now)? else {
        if config.allow_anonymous {
            return Ok(Principal::anonymous());
        }
        return Err(SqsAuthError::MissingAuthenticationToken);
    };
    let key = broker
        .access_key_secret(&signed.access_key_id)
        .await?
        .ok_or(SqsAuthError::InvalidClientTokenId)?;
    sigv4::verify(&req, &signed, &key.secret)?;
    if let Err(e) = broker.touch_access_key(&signed.access_key_id).await {
        tracing::warn!(error = %e, "could not record the use of an access key");
    }
    if config.super_users.contains(&key.user) {
        return Ok(Principal::super_user(&key.user));
    }
    let acls = broker.user_acls(&key.user).await?;
    Ok(Principal::user_with(&key.user, acls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbroker::{Acl, AclResource};

    #[test]
    fn rights_follow_the_acls() {
        let acls = UserAcls::from_acls([
            Acl::new("u", Permission::Produce, AclResource::queue("jobs").expect("q")).expect("acl"),
            Acl::new("u", Permission::Consume, AclResource::queue_prefix("work-").expect("p")).expect("acl"),
        ]);
        let p = Principal::user_with("u", acls);
        assert_eq!(p.user(), Some("u"));
        assert!(p.check("SendMessage", "jobs").is_ok());
        assert!(p.check("GetQueueUrl", "jobs").is_ok());
        let denied = p.check("ReceiveMessage", "jobs").expect_err("no consume on jobs");
        assert_eq!((denied.code(), denied.status()), ("AccessDenied", 403));
        assert!(p.check("DeleteMessageBatch", "work-1").is_ok());
        assert!(p.check("SendMessage", "work-1").is_err());
        assert!(p.check("PurgeQueue", "work-1").is_err());
        assert!(p.check("GetQueueAttributes", "other").is_err());
        assert!(p.may_see("work-9") && !p.may_see("other"));
        assert!(p.check("ListQueues", "").is_ok());
        let all = Principal::anonymous();
        assert!(all.user().is_none() && all.check("DeleteQueue", "jobs").is_ok());
        assert!(Principal::super_user("root").check("DeleteQueue", "x").is_ok());
    }

    #[test]
    fn every_action_has_a_right() {
        for action in [
            "SendMessage",
            "SendMessageBatch",
            "ReceiveMessage",
            "DeleteMessage",
            "DeleteMessageBatch",
            "ChangeMessageVisibility",
            "ChangeMessageVisibilityBatch",
            "CreateQueue",
            "DeleteQueue",
            "PurgeQueue",
            "SetQueueAttributes",
            "GetQueueUrl",
            "GetQueueAttributes",
        ] {
            assert!(required(action).is_some(), "{action}");
        }
        assert_eq!(required("ListQueues"), None);
        assert_eq!(required("NoSuchAction"), None);
    }

    #[test]
    fn error_codes_are_those_of_sqs() {
        let cases = [
            (
                SqsAuthError::MissingAuthenticationToken,
                "MissingAuthenticationToken",
                403,
            ),
            (
                SqsAuthError::IncompleteSignature("x".into()),
                "IncompleteSignature",
                400,
            ),
            (SqsAuthError::InvalidClientTokenId, "InvalidClientTokenId", 403),
            (
                SqsAuthError::SignatureDoesNotMatch("x".into()),
                "SignatureDoesNotMatch",
                403,
            ),
            (
                SqsAuthError::SignatureExpired {
                    signed: "a".into(),
                    now: "b".into(),
                },
                "SignatureDoesNotMatch",
                403,
            ),
        ];
        for (e, code, status) in cases {
            assert_eq!((e.code(), e.status()), (code, status), "{e}");
            assert!(e.is_sender_fault());
        }
    }
}
