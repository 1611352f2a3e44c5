//! Leader election and fencing on a real 3-member etcd cluster (Debian's
//! etcd-server on loopback), one cluster for the whole binary.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)]

use vaquero_test_support as support;

use std::time::{Duration, Instant};

use vaquero_engine::{Election, EtcdConfig, EtcdStore, Store, StoreFailure, Term, TermState};

const TTL: Duration = Duration::from_secs(2);

async fn within<T>(limit: Duration, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

/// Two replicas: one leads, the other waits; the leader's fenced writes
/// land. Its lease revoked from outside (as when it expires while the
/// leader is paused): its next write is refused as fenced, it learns its
/// term is over within the TTL, and the other replica leads with a higher
/// fencing number. One etcd member lost: the term goes on. Quorum lost:
/// the term ends within the TTL; once quorum is back, a replica leads
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_fenced_writes_and_failover_on_a_real_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = support::EtcdCluster::start(dir.path(), 3);
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.prefix = "/ha/".into();
    let store = EtcdStore::connect(&config).await.unwrap();

    let a = Election::new(&config, "https://a.example:9443", TTL)
        .await
        .unwrap();
    let b = Election::new(&config, "https://b.example:9443", TTL)
        .await
        .unwrap();
    let mut term_a = within(Duration::from_secs(20), "a leads", a.lead()).await;
    assert_eq!(
        a.leader().await.unwrap().as_deref(),
        Some("https://a.example:9443")
    );
    let waiting = tokio::spawn(async move {
        let t = b.lead().await;
        (b, t)
    });

    // The leader keeps its lease for several TTLs; the other waits.
    let fenced_a = term_a.store(&store);
    for i in 0..6 {
        fenced_a
            .put(&format!("hosts/h{i}"), b"a".to_vec())
            .await
            .unwrap();
        tokio::time::sleep(TTL / 2).await;
    }
    assert!(!term_a.is_lost(), "the leader lost a lease it kept alive");
    assert!(!waiting.is_finished(), "two replicas lead at once");

    // The lease revoked behind the leader's back.
    let admin = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    admin.lease_client().revoke(term_a.lease()).await.unwrap();
    let e = fenced_a.put("hosts/late", b"a".to_vec()).await.unwrap_err();
    assert!(matches!(e, StoreFailure::Fenced(_)), "{e}");
    assert_eq!(store.get("hosts/late").await.unwrap(), None);
    within(
        TTL + Duration::from_secs(1),
        "a sees its term end",
        term_a.lost(),
    )
    .await;
    let (b, mut term_b) = within(Duration::from_secs(10), "b leads", waiting)
        .await
        .unwrap();
    assert!(term_b.fence() > term_a.fence());
    assert_eq!(
        b.leader().await.unwrap().as_deref(),
        Some("https://b.example:9443")
    );
    let fenced_b = term_b.store(&store);
    fenced_b.put("hosts/h0", b"b".to_vec()).await.unwrap();
    // The old term's writes stay refused.
    assert!(matches!(
        fenced_a.put("hosts/h0", b"a".to_vec()).await,
        Err(StoreFailure::Fenced(_))
    ));
    assert_eq!(store.get("hosts/h0").await.unwrap().unwrap().value, b"b");

    // One member of three lost (perhaps etcd's leader): the term may be
    // suspended while etcd elects, never lost, and it is active again.
    cluster.kill(0);
    let started = Instant::now();
    while started.elapsed() < 3 * TTL {
        if let Err(e) = fenced_b.put("hosts/h1", b"b".to_vec()).await {
            assert!(matches!(e, StoreFailure::Unavailable(_)), "{e}");
        }
        tokio::time::sleep(TTL / 4).await;
    }
    let state = within(
        Duration::from_secs(10),
        "b's term settles",
        term_b.settled(),
    )
    .await;
    assert_eq!(
        state,
        TermState::Active,
        "one etcd member lost ended the term"
    );
    fenced_b.put("hosts/h1", b"b".to_vec()).await.unwrap();
    assert_eq!(
        b.leader().await.unwrap().as_deref(),
        Some("https://b.example:9443")
    );

    // Quorum lost: the leader stops acting within the TTL (and a margin
    // for the keep-alive in flight), and nothing more is written.
    cluster.kill(1);
    let lost_at = Instant::now();
    within(
        TTL + Duration::from_secs(2),
        "b stops acting",
        term_b.inactive(),
    )
    .await;
    eprintln!("term suspended {:?} after quorum loss", lost_at.elapsed());
    assert!(fenced_b.put("hosts/h1", b"x".to_vec()).await.is_err());

    // Quorum back: the lease lived through it (etcd cannot expire a lease
    // without a leader), so the same term is active again: no other
    // replica could lead meanwhile.
    cluster.restart(0);
    cluster.restart(1);
    cluster.wait_healthy(Duration::from_secs(60));
    let state = within(Duration::from_secs(30), "b acts again", term_b.settled()).await;
    assert_eq!(state, TermState::Active);
    fenced_b.put("hosts/h1", b"again".to_vec()).await.unwrap();
    let fence = term_b.fence();
    term_b.resign().await;
    assert_eq!(b.leader().await.unwrap(), None);

    // A new term after resigning has a higher fencing number.
    let term: Term = within(Duration::from_secs(20), "b leads again", b.lead()).await;
    assert!(term.fence() > fence);
    term.resign().await;
}
