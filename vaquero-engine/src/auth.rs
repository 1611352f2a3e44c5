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

use crate::store::{Store, StoreFailure};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything the user API offers.
    Admin,
    /// Reading only: no approval, reprovision, pause or token change.
    Read,
    /// An agent's join token: used once, to enrol the agent of its site
    /// (no use on the user API).
    Agent,
}

impl Role {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Read => "read",
            Role::Agent => "agent",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "read" => Ok(Role::Read),
            "agent" => Ok(Role::Agent),
            other => Err(format!("unknown role `{other}` (admin, read, agent)")),
        }
    }
}

/// A token as stored: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
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
    /// A join token's site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// A join token's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// When a join token was used, and the fingerprint of the key it
    /// enrolled: the same key may enrol again (a lost answer), no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(value_type = Option<Vec<String>>))]
    pub used: Option<(Timestamp, String)>,
}

/// Tokens could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The store.
    #[error("token store: {0}")]
    Store(#[from] StoreFailure),
    /// A stored record does not decode.
    #[error("token {0}: the stored record does not decode")]
    Corrupt(String),
    /// No token with that id.
    #[error("no token with id `{0}`")]
    NotFound(String),
    /// No randomness from the operating system.
    #[error("no randomness: {0}")]
    Random(String),
    /// A join token that was used already, by another key.
    #[error("join token `{0}` was used already")]
    Used(String),
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
    ) -> Result<(String, TokenRecord), AuthFailure> {
        let mut bytes = [0u8; 36];
        getrandom::fill(&mut bytes).map_err(|e| AuthFailure::Random(e.to_string()))?;
        let id = hex::encode(&bytes[..4]);
        let secret = hex::encode(&bytes[4..]);
        let rec = TokenRecord {
            id: id.clone(),
            role,
            note: note.to_owned(),
            created: now,
            revoked: None,
            hash: digest(&secret),
            site: None,
            agent: None,
            used: None,
        };
        let value = serde_json::to_vec(&rec).map_err(|_| AuthFailure::Corrupt(id.clone()))?;
        self.store.put(&format!("{PREFIX}{id}"), value).await?;
        Ok((format!("vqt_{id}_{secret}"), rec))
    }

    /// Makes a join token for `agent` of `site` (see [`join_token`]):
    /// returns its `vqt_` part (shown once) and its record.
    pub async fn create_join(
        &self,
        site: &str,
        agent: &str,
        note: &str,
        now: Timestamp,
    ) -> Result<(String, TokenRecord), AuthFailure> {
        let (token, mut rec) = self.create(Role::Agent, note, now).await?;
        rec.site = Some(site.to_owned());
        rec.agent = Some(agent.to_owned());
        self.put(&rec).await?;
        Ok((token, rec))
    }

    async fn put(&self, rec: &TokenRecord) -> Result<(), AuthFailure> {
        let value = serde_json::to_vec(rec).map_err(|_| AuthFailure::Corrupt(rec.id.clone()))?;
        self.store
            .put(&format!("{PREFIX}{}", rec.id), value)
            .await?;
        Ok(())
    }

    /// Uses join token `token` to enrol the key of fingerprint `key`:
    /// the token's record, when it is a join token not revoked and not
    /// used by another key. Marked used before it returns.
    pub async fn redeem(
        &self,
        token: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<TokenRecord>, AuthFailure> {
        let Some(mut rec) = self.verify(token).await? else {
            return Ok(None);
        };
        if rec.role != Role::Agent {
            return Ok(None);
        }
        match &rec.used {
            Some((_, k)) if k == key => Ok(Some(rec)),
            Some(_) => Err(AuthFailure::Used(rec.id)),
            None => {
                rec.used = Some((now, key.to_owned()));
                self.put(&rec).await?;
                Ok(Some(rec))
            }
        }
    }

    /// Every token, by id.
    pub async fn list(&self) -> Result<Vec<TokenRecord>, AuthFailure> {
        self.store
            .list(PREFIX)
            .await?
            .into_iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value)
                    .map_err(|_| AuthFailure::Corrupt(kv.key.trim_start_matches(PREFIX).into()))
            })
            .collect()
    }

    /// Revokes token `id`: refused from now on (revoking twice keeps the
    /// first time).
    pub async fn revoke(&self, id: &str, now: Timestamp) -> Result<TokenRecord, AuthFailure> {
        let key = format!("{PREFIX}{id}");
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| AuthFailure::NotFound(id.to_owned()))?;
        let mut rec: TokenRecord =
            serde_json::from_slice(&kv.value).map_err(|_| AuthFailure::Corrupt(id.to_owned()))?;
        if rec.revoked.is_none() {
            rec.revoked = Some(now);
            self.put(&rec).await?;
        }
        Ok(rec)
    }

    /// The record of `token` when it is one of ours and not revoked. The
    /// secret's hash is compared in constant time.
    pub async fn verify(&self, token: &str) -> Result<Option<TokenRecord>, AuthFailure> {
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
            serde_json::from_slice(&kv.value).map_err(|_| AuthFailure::Corrupt(id.to_owned()))?;
        use subtle::ConstantTimeEq;
        let same: bool = digest(secret).as_bytes().ct_eq(rec.hash.as_bytes()).into();
        Ok((same && rec.revoked.is_none()).then_some(rec))
    }
}

/// A join token as an agent is given it:
/// `vqj1.<id>.<secret>.<CA fingerprint hex>.<server URL>`: all the agent
/// needs to find the server, trust it and enrol once.
pub fn join_token(token: &str, ca_fingerprint: &str, server: &str) -> String {
    let (id, secret) = token
        .strip_prefix("vqt_")
        .and_then(|t| t.split_once('_'))
        .unwrap_or(("", ""));
    let fp = ca_fingerprint
        .strip_prefix("sha256:")
        .unwrap_or(ca_fingerprint);
    format!("vqj1.{id}.{secret}.{fp}.{server}")
}

/// A join token read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The `vqt_` token sent to enrol.
    pub token: String,
    /// The CA's fingerprint (`sha256:HEX`).
    pub ca_fingerprint: String,
    /// The server's URL.
    pub server: String,
}

/// Reads a join token ([`join_token`]).
pub fn parse_join(text: &str) -> Option<Join> {
    let mut parts = text.trim().splitn(5, '.');
    if parts.next()? != "vqj1" {
        return None;
    }
    let (id, secret, fp, server) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(id, 8) || !hex(secret, 64) || !hex(fp, 64) || !server.starts_with("https://") {
        return None;
    }
    Some(Join {
        token: format!("vqt_{id}_{secret}"),
        ca_fingerprint: format!("sha256:{fp}"),
        server: server.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_join_token_reads_back() {
        let t = format!("vqt_0123abcd_{}", "e".repeat(64));
        let fp = format!("sha256:{}", "f".repeat(64));
        let j = join_token(&t, &fp, "https://vaquero.example:9443");
        let back = parse_join(&j).unwrap();
        assert_eq!(back.token, t);
        assert_eq!(back.ca_fingerprint, fp);
        assert_eq!(back.server, "https://vaquero.example:9443");
        assert_eq!(parse_join("vqj1.x.y.z.https://a"), None);
        assert_eq!(parse_join(&j.replace("https", "http")), None);
    }

    #[tokio::test]
    async fn a_join_token_enrols_one_key_only() {
        let tokens = Tokens::new(Arc::new(crate::store::MemoryStore::new()));
        let now = Timestamp::now();
        let (t, _) = tokens.create_join("dc1", "a1", "", now).await.unwrap();
        let rec = tokens.redeem(&t, "k1", now).await.unwrap().unwrap();
        assert_eq!(rec.site.as_deref(), Some("dc1"));
        // The same key again (its answer was lost): the same enrolment.
        assert!(tokens.redeem(&t, "k1", now).await.unwrap().is_some());
        // Another key: refused.
        assert!(matches!(
            tokens.redeem(&t, "k2", now).await,
            Err(AuthFailure::Used(_))
        ));
        // A user token is no join token.
        let (admin, _) = tokens.create(Role::Admin, "", now).await.unwrap();
        assert!(tokens.redeem(&admin, "k1", now).await.unwrap().is_none());
        // Revoked: refused at once.
        tokens.revoke(&rec.id, now).await.unwrap();
        assert!(tokens.redeem(&t, "k1", now).await.unwrap().is_none());
    }
}
