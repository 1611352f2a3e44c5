//! User tokens: made once, stored only as a hash, checked in constant
//! time, revocable at once.
//!
//! A token reads `vqt_<id>_<secret>`: `id` (8 hex digits) finds its
//! record, `secret` (64 hex digits, 256 random bits) is never stored — only
//! its SHA-256 is, under `v1/tokens/<id>`. A 256-bit secret needs no slow
//! hash: it cannot be guessed, only stolen.

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything the user API offers.
    Admin,
    /// Reading only: no approval, reprovision, pause or token change.
    Read,
}

impl Role {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Read => "read",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "read" => Ok(Role::Read),
            other => Err(format!("unknown role `{other}` (admin, read)")),
        }
    }
}

/// A token as stored: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its id (the part of the token that finds this record).
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// What the operator wrote about it.
    #[serde(default)]
    pub note: String,
    /// When it was made.
    pub created: Timestamp,
    /// When it was revoked: refused from then on.
    pub revoked: Option<Timestamp>,
    /// The secret's SHA-256 (hex).
    pub hash: String,
}

/// Tokens could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The store.
    #[error("token store: {0}")]
    Store(#[from] StoreError),
    /// A stored record does not decode.
    #[error("token {0}: the stored record does not decode")]
    Corrupt(String),
    /// No token with that id.
    #[error("no token with id `{0}`")]
    NotFound(String),
    /// No randomness from the operating system.
    #[error("no randomness: {0}")]
    Random(String),
}

const PREFIX: &str = "v1/tokens/";

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The user tokens of a store.
#[derive(Clone)]
pub struct Tokens {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

impl Tokens {
    /// The tokens kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Tokens { store }
    }

    /// Makes a token of `role`: returns the token (shown once, never
    /// stored) and its record.
    pub async fn create(
        &self,
        role: Role,
        note: &str,
        now: Timestamp,
    ) -> Result<(String, TokenRecord), AuthError> {
        let mut bytes = [0u8; 36];
        getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
        let id = hex::encode(&bytes[..4]);
        let secret = hex::encode(&bytes[4..]);
        let rec = TokenRecord {
            id: id.clone(),
            role,
            note: note.to_owned(),
            created: now,
            revoked: None,
            hash: digest(&secret),
        };
        let value = serde_json::to_vec(&rec).map_err(|_| AuthError::Corrupt(id.clone()))?;
        self.store.put(&format!("{PREFIX}{id}"), value).await?;
        Ok((format!("vqt_{id}_{secret}"), rec))
    }

    /// Every token, by id.
    pub async fn list(&self) -> Result<Vec<TokenRecord>, AuthError> {
        self.store
            .list(PREFIX)
            .await?
            .into_iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value)
                    .map_err(|_| AuthError::Corrupt(kv.key.trim_start_matches(PREFIX).into()))
            })
            .collect()
    }

    /// Revokes token `id`: refused from now on (revoking twice keeps the
    /// first time).
    pub async fn revoke(&self, id: &str, now: Timestamp) -> Result<TokenRecord, AuthError> {
        let key = format!("{PREFIX}{id}");
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| AuthError::NotFound(id.to_owned()))?;
        let mut rec: TokenRecord =
            serde_json::from_slice(&kv.value).map_err(|_| AuthError::Corrupt(id.to_owned()))?;
        if rec.revoked.is_none() {
            rec.revoked = Some(now);
            let value = serde_json::to_vec(&rec).map_err(|_| AuthError::Corrupt(id.to_owned()))?;
            self.store.put(&key, value).await?;
        }
        Ok(rec)
    }

    /// The record of `token` when it is one of ours and not revoked. The
    /// secret's hash is compared in constant time.
    pub async fn verify(&self, token: &str) -> Result<Option<TokenRecord>, AuthError> {
        let Some((id, secret)) = token.strip_prefix("vqt_").and_then(|t| t.split_once('_')) else {
            return Ok(None);
        };
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(kv) = self.store.get(&format!("{PREFIX}{id}")).await? else {
            return Ok(None);
        };
        let rec: TokenRecord =
            serde_json::from_slice(&kv.value).map_err(|_| AuthError::Corrupt(id.to_owned()))?;
        use subtle::ConstantTimeEq;
        let same: bool = digest(secret).as_bytes().ct_eq(rec.hash.as_bytes()).into();
        Ok((same && rec.revoked.is_none()).then_some(rec))
    }
}
