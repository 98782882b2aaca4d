//! Every operation on users and their access rules, in one place. Each
//! method is documented here and delegates to the file that implements
//! it.

use super::access_keys::{AccessKey, AccessKeyInfo, AccessKeySecret};
use super::acl::{Acl, UserAcls};
use super::users::{ScramCredentials, UserInfo};
use crate::broker::Broker;
use crate::error::Result;

/// The user and ACL operations of a [`Broker`]; see [`Broker::auth`].
#[derive(Debug, Clone, Copy)]
pub struct Auth<'a> {
    broker: &'a Broker,
}

impl Broker {
    /// Users, their SCRAM credentials and their ACLs.
    pub fn auth(&self) -> Auth<'_> {
        Auth { broker: self }
    }
}

impl Auth<'_> {
    /// Grants `acl`. Returns true when it is new, false when it was
    /// already granted; [`Error::UnknownUser`](crate::Error::UnknownUser)(crate::Error::UnknownUser) when the user does not exist.
    pub async fn grant(self, acl: &Acl) -> Result<bool> {
        super::acl::grant(self.broker, acl).await
    }

    /// Revokes `acl`: [`Error::UnknownUser`](crate::Error::UnknownUser)(crate::Error::UnknownUser) when the user does not exist,
    /// [`Error::UnknownAcl`](crate::Error::UnknownAcl) when it was not granted.
    pub async fn revoke(self, acl: &Acl) -> Result<()> {
        super::acl::revoke(self.broker, acl).await
    }

    /// Every grant, or those of one user ([`Error::UnknownUser`](crate::Error::UnknownUser)(crate::Error::UnknownUser) when the
    /// user does not exist), by user, resource and permission.
    pub async fn list_acls(self, user: Option<&str>) -> Result<Vec<Acl>> {
        super::acl::list_acls(self.broker, user).await
    }

    /// The rights of `user`, to check requests against in memory. A user
    /// without grants (or without an account) has none.
    pub async fn user_acls(self, user: &str) -> Result<UserAcls> {
        super::acl::user_acls(self.broker, user).await
    }

    /// Adds a user with SCRAM-SHA-256 credentials derived from `password`,
    /// or replaces an existing user's credentials. Returns true when the
    /// user is new. The password is not stored.
    pub async fn add_user(self, name: &str, password: &str, iterations: u32) -> Result<bool> {
        super::users::add_user(self.broker, name, password, iterations).await
    }

    /// Removes a user; [`Error::UnknownUser`](crate::Error::UnknownUser)(crate::Error::UnknownUser) when there is none.
    pub async fn remove_user(self, name: &str) -> Result<()> {
        super::users::remove_user(self.broker, name).await
    }

    /// Every user, by name.
    pub async fn list_users(self) -> Result<Vec<UserInfo>> {
        super::users::list_users(self.broker).await
    }

    /// The stored credentials of `name`, or `None` when there is no such
    /// user (including names that no user could have).
    pub async fn scram_credentials(self, name: &str) -> Result<Option<ScramCredentials>> {
        super::users::scram_credentials(self.broker, name).await
    }

    /// Makes a new access key for `user` ([`Error::UnknownUser`](crate::Error::UnknownUser) when there
    /// is no such user). The result holds the secret: it cannot be read
    /// back later.
    pub async fn create_access_key(self, user: &str) -> Result<AccessKey> {
        super::access_keys::create_access_key(self.broker, user).await
    }

    /// The access keys of `user` ([`Error::UnknownUser`](crate::Error::UnknownUser) when there is no
    /// such user), oldest first, without their secrets.
    pub async fn list_access_keys(self, user: &str) -> Result<Vec<AccessKeyInfo>> {
        super::access_keys::list_access_keys(self.broker, user).await
    }

    /// Deletes an access key: requests signed with it are refused from now
    /// on. Returns false when there is no such key.
    pub async fn delete_access_key(self, key_id: &str) -> Result<bool> {
        super::access_keys::delete_access_key(self.broker, key_id).await
    }

    /// The owner and secret of an access key, or `None` when there is no
    /// such key (including ids that no key could have).
    pub async fn access_key_secret(self, key_id: &str) -> Result<Option<AccessKeySecret>> {
        super::access_keys::access_key_secret(self.broker, key_id).await
    }

    /// Records that a request signed with `key_id` was accepted. Writes at
    /// most once a minute per key, so busy keys cost no extra writes.
    pub async fn touch_access_key(self, key_id: &str) -> Result<()> {
        super::access_keys::touch_access_key(self.broker, key_id).await
    }
}
