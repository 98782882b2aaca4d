//! Who may connect and what they may do: users with SCRAM credentials
//! (`users`), their access keys for SigV4-signed requests (`access_keys`)
//! and the access rules granted to them (`acl`).

mod access_keys;
pub(crate) mod acl;
mod api;
pub(crate) mod statements;
mod users;

pub use access_keys::{validate_access_key_id, AccessKey, AccessKeyInfo, AccessKeySecret, MAX_ACCESS_KEY_ID_BYTES};
pub use acl::{Acl, AclResource, Permission, UserAcls};
pub use api::Auth;
pub use users::{
    validate_user_name, ScramCredentials, UserInfo, DEFAULT_SCRAM_ITERATIONS, MAX_SCRAM_ITERATIONS,
    MIN_SCRAM_ITERATIONS,
};
