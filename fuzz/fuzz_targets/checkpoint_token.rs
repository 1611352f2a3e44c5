//! Any string presented as a checkpoint token is its claims or a typed
//! refusal, never a panic. Claims minted with a key verify to themselves
//! with that key until they expire; with another key, after expiry or
//! with any byte of the token changed, they are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaquero_ipxe::{Claims, TokenFailure, TokenKey};

const KEY: &[u8; 16] = b"fuzz key 0123456";

fuzz_target!(|data: &[u8]| {
    let key = TokenKey::new(*KEY);
    let _ = key.verify(&String::from_utf8_lossy(data), 0);

    // Claims from the input: attempt and expiry (8 bytes each), then host
    // and boot separated by `/` (names never hold a NUL: the payload's
    // separator).
    let (Some(attempt), Some(expires)) = (data.get(..8), data.get(8..16)) else {
        return;
    };
    let attempt = u64::from_le_bytes(attempt.try_into().unwrap_or_default());
    let expires = u64::from_le_bytes(expires.try_into().unwrap_or_default());
    let names = String::from_utf8_lossy(&data[16..]).replace('\0', "");
    let (host, boot) = names.split_once('/').unwrap_or((&names, ""));
    let claims = Claims {
        host: host.to_owned(),
        boot: boot.to_owned(),
        attempt,
        expires,
    };
    let token = key.mint(&claims);
    assert_eq!(key.verify(&token, expires), Ok(claims.clone()));
    assert_eq!(key.verify(&token, expires / 2), Ok(claims));
    if let Some(later) = expires.checked_add(1) {
        assert_eq!(key.verify(&token, later), Err(TokenFailure::Expired));
    }
    assert!(
        TokenKey::new(*b"another key 6543")
            .verify(&token, 0)
            .is_err()
    );
    // One byte changed anywhere: refused (malformed or a bad signature).
    let mut altered = token.clone().into_bytes();
    let at = usize::from(data[0]) % altered.len();
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    if let Ok(altered) = String::from_utf8(altered) {
        assert!(key.verify(&altered, 0).is_err(), "{altered} accepted");
    }
});
