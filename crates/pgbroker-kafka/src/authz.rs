//! Authorization: what an authenticated connection may do, checked in
//! memory against the user's grants, loaded once when it logs in.
//!
//! ACLs are enforced only while authentication is required. Super users
//! (Kafka's `super.users`, [`crate::AuthConfig::super_users`]) may do
//! everything, as may every connection when authentication is off.

use std::sync::Arc;

use pgbroker::auth::{Permission, UserAcls};

/// What one connection may do.
#[derive(Debug, Clone)]
pub(crate) enum Access {
    /// Everything: authentication is off, or the user is a super user.
    All,
    /// What the user's grants allow; nothing before login.
    Granted(Arc<UserAcls>),
}

impl Access {
    /// Nothing at all: a connection that has not logged in yet.
    pub fn none() -> Access {
        Access::Granted(Arc::new(UserAcls::default()))
    }

    /// True when `permission` is granted on topic `topic`.
    pub fn topic(&self, permission: Permission, topic: &str) -> bool {
        match self {
            Access::All => true,
            Access::Granted(acls) => acls.allows_topic(permission, topic),
        }
    }

    /// True when the topic may be seen at all: some permission on it.
    pub fn sees_topic(&self, topic: &str) -> bool {
        match self {
            Access::All => true,
            Access::Granted(acls) => acls.any_on_topic(topic),
        }
    }

    /// True when `permission` is granted on group `group`.
    pub fn group(&self, permission: Permission, group: &str) -> bool {
        match self {
            Access::All => true,
            Access::Granted(acls) => acls.allows_group(permission, group),
        }
    }

    /// True when the group may be seen at all: some permission on it.
    pub fn sees_group(&self, group: &str) -> bool {
        match self {
            Access::All => true,
            Access::Granted(acls) => acls.any_on_group(group),
        }
    }

    /// True when the user may produce to some topic: what an idempotent
    /// producer id needs (Kafka: IDEMPOTENT_WRITE on the cluster, implied
    /// by WRITE on any topic).
    pub fn produces_anywhere(&self) -> bool {
        match self {
            Access::All => true,
            Access::Granted(acls) => acls.has(Permission::Produce),
        }
    }

    /// True for what Kafka guards with a cluster permission and pgbroker
    /// grants only to super users: the broker's own configuration.
    pub fn cluster(&self) -> bool {
        matches!(self, Access::All)
    }
}
