//! Who may connect and what they may do: users with SCRAM credentials
//! (`users`), their access keys for SigV4-signed requests (`access_keys`)
//! and the access rules granted to them (`acl`).

pub(crate) mod access_keys;
pub(crate) mod acl;
pub(crate) mod statements;
pub(crate) mod users;
