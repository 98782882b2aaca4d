//! Users of the Kafka listener and their SCRAM-SHA-256 credentials
//! (RFC 5802, RFC 7677).
//!
//! Only salted credentials are stored: the salt, the iteration count,
//! `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`, with
//! `SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)`.
//! They are enough to check a SCRAM proof and, by deriving them again from
//! a password, a PLAIN login; the password itself is never kept. Passwords
//! are used as their UTF-8 bytes, without SASLprep, as Kafka does.

use std::fmt;
use std::time::SystemTime;

use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::broker::Broker;
use crate::error::{Error, Invalid, Result};
use crate::types::to_millis;

/// Fewest PBKDF2 iterations a credential may use (RFC 7677's minimum).
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;
/// Most PBKDF2 iterations a credential may use (Kafka's limit for
/// SCRAM-SHA-256): a PLAIN login derives the key on the server.
pub const MAX_SCRAM_ITERATIONS: u32 = 16384;
/// Iterations used when none are given.
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;
/// Longest user name, in bytes.
pub const MAX_USER_NAME_BYTES: usize = 255;
/// Longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Bytes of salt generated for a new credential.
const SALT_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Checks a user name: 1 to 255 bytes, no control characters, and neither
/// `,` nor `=`, which SCRAM would have to escape.
pub fn validate_user_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_USER_NAME_BYTES {
        return Err(Error::invalid(
            Invalid::UserName,
            format!("must be 1 to {MAX_USER_NAME_BYTES} bytes"),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || *c == ',' || *c == '=') {
        return Err(Error::invalid(
            Invalid::UserName,
            format!("{c:?} is not allowed (control characters, ',' and '=' are refused)"),
        ));
    }
    Ok(())
}

fn validate_password(password: &str) -> Result<()> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(
            Invalid::Password,
            format!("must be 1 to {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn validate_iterations(iterations: u32) -> Result<()> {
    if !(MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS).contains(&iterations) {
        return Err(Error::invalid(
            Invalid::IterationCount,
            format!("{iterations} is not between {MIN_SCRAM_ITERATIONS} and {MAX_SCRAM_ITERATIONS}"),
        ));
    }
    Ok(())
}

/// `HMAC-SHA-256(key, data)`.
fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; the error cannot happen.
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A user's SCRAM-SHA-256 credentials, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The PBKDF2 salt.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`: checks a client's proof.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`: signs the server's answer.
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredentials {
    /// Credentials for `password` with a new random salt. The password must
    /// be 1 to 1024 bytes and `iterations` between
    /// [`MIN_SCRAM_ITERATIONS`] and [`MAX_SCRAM_ITERATIONS`].
    pub fn from_password(password: &str, iterations: u32) -> Result<ScramCredentials> {
        validate_password(password)?;
        validate_iterations(iterations)?;
        let mut salt = vec![0u8; SALT_BYTES];
        rand::thread_rng().fill_bytes(&mut salt);
        Ok(ScramCredentials::derive(password.as_bytes(), &salt, iterations))
    }

    /// Derives the credentials of `password` with the given salt and
    /// iteration count; no checks.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> ScramCredentials {
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// True when `password` is the password these credentials were made
    /// from (a PLAIN login): derives StoredKey with the stored salt and
    /// iterations and compares it in constant time.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let derived = ScramCredentials::derive(password, &self.salt, self.iterations);
        bool::from(derived.stored_key.ct_eq(&self.stored_key))
    }

    /// True when `client_proof` proves knowledge of the password for this
    /// `auth_message` (RFC 5802 §3): `ClientKey = ClientProof XOR
    /// HMAC(StoredKey, AuthMessage)` must hash to StoredKey. Compared in
    /// constant time.
    pub fn verify_client_proof(&self, auth_message: &[u8], client_proof: &[u8]) -> bool {
        let signature = hmac(&self.stored_key, auth_message);
        let mut client_key = [0u8; 32];
        for (i, k) in client_key.iter_mut().enumerate() {
            *k = signature[i] ^ client_proof.get(i).copied().unwrap_or(0);
        }
        let matches = sha256(&client_key).ct_eq(&self.stored_key);
        bool::from(matches) && client_proof.len() == 32
    }

    /// `HMAC(ServerKey, AuthMessage)`: proves to the client that the server
    /// knows its credentials.
    pub fn server_signature(&self, auth_message: &[u8]) -> [u8; 32] {
        hmac(&self.server_key, auth_message)
    }
}

/// A user as listed: never any credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// PBKDF2 iterations of the stored credentials.
    pub iterations: u32,
    /// When the user was added, in ms since the epoch.
    pub created_at_ms: i64,
    /// When the credentials were last set, in ms since the epoch.
    pub updated_at_ms: i64,
}

impl Broker {
    /// Adds a user with SCRAM-SHA-256 credentials derived from `password`,
    /// or replaces an existing user's credentials. Returns true when the
    /// user is new. The password is not stored.
    pub async fn add_user(&self, name: &str, password: &str, iterations: u32) -> Result<bool> {
        validate_user_name(name)?;
        let creds = ScramCredentials::from_password(password, iterations)?;
        let iterations =
            i32::try_from(creds.iterations).map_err(|_| Error::invalid(Invalid::IterationCount, "too large"))?;
        let client = self.client().await?;
        let row = client
            .query_one(
                &self.inner.sql.auth.add_user,
                &[
                    &name,
                    &creds.salt,
                    &iterations,
                    &&creds.stored_key[..],
                    &&creds.server_key[..],
                ],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Removes a user; [`Error::UnknownUser`] when there is none.
    pub async fn remove_user(&self, name: &str) -> Result<()> {
        let client = self.client().await?;
        let n = client.execute(&self.inner.sql.auth.remove_user, &[&name]).await?;
        if n == 0 {
            return Err(Error::UnknownUser(name.to_string()));
        }
        Ok(())
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        let client = self.client().await?;
        let rows = client.query(&self.inner.sql.auth.list_users, &[]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let created: SystemTime = r.get(2);
                let updated: SystemTime = r.get(3);
                UserInfo {
                    name: r.get(0),
                    iterations: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
                    created_at_ms: to_millis(created),
                    updated_at_ms: to_millis(updated),
                }
            })
            .collect())
    }

    /// The stored credentials of `name`, or `None` when there is no such
    /// user (including names that no user could have).
    pub async fn scram_credentials(&self, name: &str) -> Result<Option<ScramCredentials>> {
        if validate_user_name(name).is_err() {
            return Ok(None);
        }
        let client = self.client().await?;
        let row = client
            .query_opt(&self.inner.sql.auth.scram_credentials, &[&name])
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let key = |i: usize| -> Option<[u8; 32]> { row.get::<_, Vec<u8>>(i).try_into().ok() };
        let (Some(stored_key), Some(server_key), Ok(iterations)) =
            (key(2), key(3), u32::try_from(row.get::<_, i32>(1)))
        else {
            return Ok(None);
        };
        Ok(Some(ScramCredentials {
            salt: row.get(0),
            iterations,
            stored_key,
            server_key,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_example() {
        // RFC 7677 §3: user "user", password "pencil".
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let creds = ScramCredentials::derive(b"pencil", &salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = b64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .expect("proof");
        assert!(creds.verify_client_proof(auth_message.as_bytes(), &proof));
        assert_eq!(
            b64.encode(creds.server_signature(auth_message.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let mut bad = proof.clone();
        bad[0] ^= 1;
        assert!(!creds.verify_client_proof(auth_message.as_bytes(), &bad));
        assert!(!creds.verify_client_proof(auth_message.as_bytes(), &proof[..31]));
        assert!(creds.verify_password(b"pencil"));
        assert!(!creds.verify_password(b"pencil "));
    }

    #[test]
    fn names_and_limits() {
        assert!(validate_user_name("alice").is_ok());
        assert!(validate_user_name("svc.orders-1@example").is_ok());
        for bad in ["", "a,b", "a=b", "tab\there", &"x".repeat(256)] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
        assert!(ScramCredentials::from_password("pw", 4095).is_err());
        assert!(ScramCredentials::from_password("pw", MAX_SCRAM_ITERATIONS + 1).is_err());
        assert!(ScramCredentials::from_password("", 4096).is_err());
        let a = ScramCredentials::from_password("pw", 4096).expect("creds");
        let b = ScramCredentials::from_password("pw", 4096).expect("creds");
        assert_ne!(a.salt, b.salt, "each credential gets its own salt");
        assert!(a.verify_password(b"pw") && !a.verify_password(b"pw2"));
        assert!(!format!("{a:?}").contains("stored_key"));
    }
}
