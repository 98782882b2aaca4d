//! Who may connect and what they may do: users with SCRAM credentials
//! (`users`) and the access rules granted to them (`acl`).

mod acl;
mod api;
mod users;

pub use acl::{Acl, AclResource, Permission, UserAcls};
pub use api::Auth;
pub use users::{
    validate_user_name, ScramCredentials, UserInfo, DEFAULT_SCRAM_ITERATIONS, MAX_SCRAM_ITERATIONS,
    MIN_SCRAM_ITERATIONS,
};
