//! Access keys: the AWS Signature Version 4 credentials a user signs SQS
//! requests with.
//!
//! A key is an id (20 characters, `PGBK` then 16 upper-case letters and
//! digits) and a secret (40 letters and digits, about 238 random bits).
//! The secret is shown once, when the key is created. SigV4 signatures are
//! HMACs keyed by the secret itself, so the verifier must know it: the
//! secret is stored as it is, readable by whoever can read pgbroker's
//! tables, like every other row pgbroker keeps. A user may have several
//! keys (to rotate them); deleting the user deletes its keys.

use std::fmt;
use std::time::SystemTime;

use rand::distributions::{Alphanumeric, Distribution, Uniform};
use rand::Rng;
use serde::Serialize;

use crate::auth::users::validate_user_name;
use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::types::to_millis;

/// Prefix of every access key id pgbroker makes.
const KEY_ID_PREFIX: &str = "PGBK";
/// Random characters after the prefix.
const KEY_ID_RANDOM: usize = 16;
/// Characters of a secret.
const SECRET_CHARS: usize = 40;
/// Longest access key id accepted anywhere, in bytes.
pub const MAX_ACCESS_KEY_ID_BYTES: usize = 128;

/// A new access key, with its secret. Returned once, by
/// [`crate::auth::Auth::create_access_key`]; the secret is never listed again.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct AccessKey {
    /// The access key id (`aws_access_key_id`).
    pub access_key_id: String,
    /// The secret (`aws_secret_access_key`).
    pub secret_access_key: String,
    /// The user the key belongs to.
    pub user: String,
    /// When it was made, in ms since the epoch.
    pub created_at_ms: i64,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// An access key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessKeyInfo {
    /// The access key id.
    pub access_key_id: String,
    /// The user the key belongs to.
    pub user: String,
    /// When it was made, in ms since the epoch.
    pub created_at_ms: i64,
    /// When a request signed with it was last accepted, in ms since the
    /// epoch (kept to the minute), if ever.
    pub last_used_ms: Option<i64>,
}

/// The owner and secret of a key, as the SQS listener needs them to check
/// a signature.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKeySecret {
    /// The user the key belongs to.
    pub user: String,
    /// The secret.
    pub secret: String,
}

impl fmt::Debug for AccessKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeySecret")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Checks the form of an access key id: 1 to 128 upper-case ASCII letters
/// and digits. Keys pgbroker makes always pass.
pub fn validate_access_key_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ACCESS_KEY_ID_BYTES {
        return Err(Error::invalid(
            Invalid::AccessKeyId,
            format!("must be 1 to {MAX_ACCESS_KEY_ID_BYTES} characters"),
        ));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit())) {
        return Err(Error::invalid(
            Invalid::AccessKeyId,
            format!("{c:?} is not allowed; access key ids are upper-case letters and digits"),
        ));
    }
    Ok(())
}

fn new_key_id(rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let pick = Uniform::from(0..ALPHABET.len());
    let mut id = String::with_capacity(KEY_ID_PREFIX.len() + KEY_ID_RANDOM);
    id.push_str(KEY_ID_PREFIX);
    id.extend((0..KEY_ID_RANDOM).map(|_| char::from(ALPHABET[pick.sample(rng)])));
    id
}

fn new_secret(rng: &mut impl Rng) -> String {
    Alphanumeric
        .sample_iter(rng)
        .take(SECRET_CHARS)
        .map(char::from)
        .collect()
}

/// Makes a new access key for `user` ([`Error::UnknownUser`] when there
/// is no such user). The result holds the secret: it cannot be read
/// back later.
pub(crate) async fn create_access_key(broker: &Broker, user: &str) -> Result<AccessKey> {
    validate_user_name(user)?;
    let client = broker.client().await?;
    // A clash of two random 82-bit ids is not expected; retry anyway.
    for _ in 0..3 {
        let (id, secret) = {
            let mut rng = rand::thread_rng();
            (new_key_id(&mut rng), new_secret(&mut rng))
        };
        let row = client
            .query_one(&broker.inner.sql.auth.create_access_key, &[&user, &id, &secret])
            .await?;
        if !row.get::<_, bool>(0) {
            return Err(Error::UnknownUser(user.to_string()));
        }
        if let Some(created) = row.get::<_, Option<SystemTime>>(1) {
            return Ok(AccessKey {
                access_key_id: id,
                secret_access_key: secret,
                user: user.to_string(),
                created_at_ms: to_millis(created),
            });
        }
    }
    Err(Error::Busy("could not pick an unused access key id".to_string()))
}

/// The access keys of `user` ([`Error::UnknownUser`] when there is no
/// such user), oldest first, without their secrets.
pub(crate) async fn list_access_keys(broker: &Broker, user: &str) -> Result<Vec<AccessKeyInfo>> {
    validate_user_name(user)?;
    let client = broker.client().await?;
    if client
        .query_opt(&broker.inner.sql.auth.user_exists, &[&user])
        .await?
        .is_none()
    {
        return Err(Error::UnknownUser(user.to_string()));
    }
    let rows = client.query(&broker.inner.sql.auth.list_access_keys, &[&user]).await?;
    Ok(rows
        .iter()
        .map(|r| AccessKeyInfo {
            access_key_id: r.get(0),
            user: r.get(1),
            created_at_ms: to_millis(r.get::<_, SystemTime>(2)),
            last_used_ms: r.get::<_, Option<SystemTime>>(3).map(to_millis),
        })
        .collect())
}

/// Deletes an access key: requests signed with it are refused from now
/// on. Returns false when there is no such key.
pub(crate) async fn delete_access_key(broker: &Broker, key_id: &str) -> Result<bool> {
    validate_access_key_id(key_id)?;
    let client = broker.client().await?;
    let n = client
        .execute(&broker.inner.sql.auth.delete_access_key, &[&key_id])
        .await?;
    Ok(n > 0)
}

/// The owner and secret of an access key, or `None` when there is no
/// such key (including ids that no key could have).
pub(crate) async fn access_key_secret(broker: &Broker, key_id: &str) -> Result<Option<AccessKeySecret>> {
    if validate_access_key_id(key_id).is_err() {
        return Ok(None);
    }
    let client = broker.client().await?;
    let row = client
        .query_opt(&broker.inner.sql.auth.access_key_secret, &[&key_id])
        .await?;
    Ok(row.map(|r| AccessKeySecret {
        user: r.get(0),
        secret: r.get(1),
    }))
}

/// Records that a request signed with `key_id` was accepted. Writes at
/// most once a minute per key, so busy keys cost no extra writes.
pub(crate) async fn touch_access_key(broker: &Broker, key_id: &str) -> Result<()> {
    if validate_access_key_id(key_id).is_err() {
        return Ok(());
    }
    let client = broker.client().await?;
    client
        .execute(&broker.inner.sql.auth.touch_access_key, &[&key_id])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_their_form() {
        let mut rng = rand::thread_rng();
        let id = new_key_id(&mut rng);
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("PGBK"));
        assert!(validate_access_key_id(&id).is_ok(), "{id}");
        let secret = new_secret(&mut rng);
        assert_eq!(secret.len(), 40);
        assert!(secret.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(new_key_id(&mut rng), id);
        assert_ne!(new_secret(&mut rng), secret);
    }

    #[test]
    fn key_ids_are_checked() {
        for bad in ["", "pgbk1234", "AKIA 123", "AKIA'--", &"A".repeat(129)] {
            assert!(validate_access_key_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_access_key_id("AKIDEXAMPLE").is_ok());
    }

    #[test]
    fn debug_hides_secrets() {
        let key = AccessKey {
            access_key_id: "PGBKAAAA".to_string(),
            secret_access_key: "s3cr3t-value".to_string(),
            user: "alice".to_string(),
            created_at_ms: 0,
        };
        assert!(!format!("{key:?}").contains("s3cr3t"));
        let secret = AccessKeySecret {
            user: "alice".to_string(),
            secret: "s3cr3t-value".to_string(),
        };
        assert!(!format!("{secret:?}").contains("s3cr3t"));
    }
}
