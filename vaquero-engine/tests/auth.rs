//! User tokens in a real store (redb): only hashes kept, wrong and revoked
//! tokens refused, the role kept.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use jiff::Timestamp;
use vaquero_engine::RedbStore;
use vaquero_engine::auth::{AuthFailure, Role, Tokens};

#[tokio::test]
async fn tokens_are_kept_hashed_checked_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.redb");
    let now = Timestamp::now();
    let tokens = Tokens::new(Arc::new(RedbStore::open(&db).unwrap()));
    let (admin, a) = tokens.create(Role::Admin, "ops", now).await.unwrap();
    let (read, r) = tokens.create(Role::Read, "", now).await.unwrap();
    assert_ne!(a.id, r.id);
    assert_eq!(
        tokens.verify(&admin).await.unwrap().unwrap().role,
        Role::Admin
    );
    assert_eq!(
        tokens.verify(&read).await.unwrap().unwrap().role,
        Role::Read
    );
    // Wrong secrets, foreign shapes: refused, no error.
    let mut wrong = admin.clone();
    wrong.pop();
    wrong.push(if admin.ends_with('0') { '1' } else { '0' });
    for t in [
        wrong.as_str(),
        "",
        "vqt_",
        "vqt_zz_00",
        "Bearer x",
        &admin[..admin.len() - 1],
    ] {
        assert!(tokens.verify(t).await.unwrap().is_none(), "{t}");
    }
    let other = format!("vqt_{}_{}", r.id, &admin[admin.len() - 64..]);
    assert!(
        tokens.verify(&other).await.unwrap().is_none(),
        "another token's secret"
    );
    drop(tokens);
    // What is stored holds no secret.
    let bytes = std::fs::read(&db).unwrap();
    let secret = &admin.as_bytes()[admin.len() - 64..];
    assert!(
        !bytes.windows(64).any(|w| w == secret),
        "a secret was stored"
    );

    // Reopened: still there; a revoked token is refused at once.
    let tokens = Tokens::new(Arc::new(RedbStore::open(&db).unwrap()));
    let list = tokens.list().await.unwrap();
    assert_eq!(list.len(), 2);
    let rec = tokens.revoke(&r.id, now).await.unwrap();
    assert!(rec.revoked.is_some());
    assert!(tokens.verify(&read).await.unwrap().is_none());
    assert!(tokens.verify(&admin).await.unwrap().is_some());
    assert!(matches!(
        tokens.revoke("0badc0de", now).await,
        Err(AuthFailure::NotFound(_))
    ));
}
