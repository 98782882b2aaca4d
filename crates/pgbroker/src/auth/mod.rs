//! Who may connect and what they may do: users with SCRAM credentials
//! (`users`) and the access rules granted to them (`acl`).

pub(crate) mod acl;
pub(crate) mod users;
