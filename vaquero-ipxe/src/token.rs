//! Checkpoint tokens: the installed OS proves which host and which boot
//! attempt it is by the URL it was given. A token names the host, the boot
//! and the attempt, and when it expires, signed with HMAC-SHA256 under a
//! key from the agent's configuration — it cannot be guessed, altered, or
//! moved to another host or attempt, and an old one stops working.
//!
//! Format (URL-safe, no padding): `base64url(host \0 boot \0 attempt \0
//! expires) "." base64url(hmac)`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The host's name.
    pub host: String,
    /// The boot (stage) it was minted for.
    pub boot: String,
    /// The boot attempt.
    pub attempt: u64,
    /// Unix seconds after which it is refused.
    pub expires: u64,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFailure {
    /// Not a token at all.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match: forged or altered.
    #[error("bad signature")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
}

/// Signs and checks tokens with one key.
#[derive(Clone)]
pub struct TokenKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from secret bytes (at least 16 recommended; read it from a
    /// file or the environment, never from the SoT).
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        TokenKey { key: key.into() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// A token for `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        let payload = format!(
            "{}\0{}\0{}\0{}",
            claims.host, claims.boot, claims.attempt, claims.expires
        );
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let sig = mac.finalize().into_bytes();
        format!("{}.{}", B64.encode(payload), B64.encode(sig))
    }

    /// The claims of a genuine, unexpired token (`now` in Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenFailure> {
        let (payload, sig) = token.split_once('.').ok_or(TokenFailure::Malformed)?;
        let payload = B64.decode(payload).map_err(|_| TokenFailure::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenFailure::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        // Constant-time comparison.
        mac.verify_slice(&sig)
            .map_err(|_| TokenFailure::BadSignature)?;
        let text = String::from_utf8(payload).map_err(|_| TokenFailure::Malformed)?;
        let parts: Vec<&str> = text.split('\0').collect();
        let [host, boot, attempt, expires] = parts[..] else {
            return Err(TokenFailure::Malformed);
        };
        let claims = Claims {
            host: host.to_owned(),
            boot: boot.to_owned(),
            attempt: attempt.parse().map_err(|_| TokenFailure::Malformed)?,
            expires: expires.parse().map_err(|_| TokenFailure::Malformed)?,
        };
        if now > claims.expires {
            return Err(TokenFailure::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims() -> Claims {
        Claims {
            host: "k8s-01".into(),
            boot: "burnin".into(),
            attempt: 3,
            expires: 1_000,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let k = TokenKey::new(*b"0123456789abcdef");
        let t = k.mint(&claims());
        assert!(!t.contains(['/', '+', '=', '?', '&']), "URL-safe: {t}");
        assert_eq!(k.verify(&t, 999), Ok(claims()));
        assert_eq!(k.verify(&t, 1_001), Err(TokenFailure::Expired));
        // Another key, an altered payload, garbage.
        assert_eq!(
            TokenKey::new(*b"another key 1234").verify(&t, 0),
            Err(TokenFailure::BadSignature)
        );
        let mut other = claims();
        other.host = "k8s-02".into();
        let forged = format!(
            "{}.{}",
            k.mint(&other).split('.').next().unwrap(),
            t.split('.').nth(1).unwrap()
        );
        assert_eq!(k.verify(&forged, 0), Err(TokenFailure::BadSignature));
        assert_eq!(k.verify("nope", 0), Err(TokenFailure::Malformed));
        assert_eq!(k.verify("a.b.c", 0), Err(TokenFailure::Malformed));
    }
}
