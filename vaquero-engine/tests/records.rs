//! Execution records in the memory and redb stores.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use jiff::Timestamp;
use vaquero_engine::{
    Action, ActionKind, JobPhase, JobSpec, MemoryStore, Notice, Outcome, RecordStatus, RecordStep,
    Records, RedbStore, Store,
};
use vaquero_model::types::{Job, JobType};

fn action(host: &str, seq: u64, rollout: u64, kind: ActionKind) -> Action {
    Action {
        host: host.into(),
        seq,
        rollout: Some(rollout),
        stage: 0,
        attempt: 1,
        kind,
    }
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn contract(store: Arc<dyn Store>) {
    let r = Records::new(store, "lab");
    let job = JobSpec::new(
        Job {
            kind: JobType::Exec,
            command: vec!["check-node".into(), "k8s-01".into()],
            url: None,
            expect_status: None,
            timeout: None,
            retries: Some(1),
            env: Default::default(),
        },
        std::time::Duration::from_secs(60),
        None,
    );
    let a1 = action("k8s-01", 1, 1, ActionKind::PowerCycle);
    let a2 = action(
        "k8s-01",
        2,
        1,
        ActionKind::RunJob {
            phase: JobPhase::Validate,
            boot: "flatcar-install".into(),
            index: 0,
            job,
        },
    );
    let a3 = action("k8s-02", 1, 2, ActionKind::SetBootNetwork);
    assert!(
        r.begin(
            &action("k8s-01", 0, 1, ActionKind::Notice(Notice::Started)),
            t("2026-11-01T00:00:00Z")
        )
        .await
        .unwrap()
        .is_none()
    );
    let rec = r
        .begin(&a1, t("2026-11-01T00:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rec.id.as_str(), rec.status),
        ("k8s-01/1", RecordStatus::InProgress)
    );
    r.begin(&a2, t("2026-11-01T00:10:00Z")).await.unwrap();
    r.begin(&a3, t("2026-11-20T00:00:00Z")).await.unwrap();

    let done = r
        .finish(
            "k8s-01",
            1,
            &Outcome::ok(),
            Vec::new(),
            t("2026-11-01T00:00:05Z"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, RecordStatus::Done);
    assert_eq!(done.steps.len(), 1);
    let steps = vec![
        RecordStep {
            name: "try 1".into(),
            started: t("2026-11-01T00:10:00Z"),
            ended: Some(t("2026-11-01T00:10:30Z")),
            status: RecordStatus::Error,
            log: "exit code 1: kubelet not ready".into(),
        },
        RecordStep {
            name: "try 2".into(),
            started: t("2026-11-01T00:10:35Z"),
            ended: Some(t("2026-11-01T00:11:00Z")),
            status: RecordStatus::Error,
            log: "exit code 1: kubelet not ready".into(),
        },
    ];
    r.finish(
        "k8s-01",
        2,
        &Outcome::failed(false, "exit code 1: kubelet not ready"),
        steps.clone(),
        t("2026-11-01T00:11:00Z"),
    )
    .await
    .unwrap();
    assert!(
        r.finish(
            "nobody",
            9,
            &Outcome::ok(),
            Vec::new(),
            t("2026-11-01T00:00:00Z")
        )
        .await
        .unwrap()
        .is_none()
    );

    let host = r.for_host("k8s-01").await.unwrap();
    assert_eq!(host.len(), 2);
    assert_eq!(host[1].status, RecordStatus::Error);
    assert_eq!(host[1].steps, steps);
    assert_eq!(host[1].action, "validate");
    assert!(
        host[1].detail.contains("check-node k8s-01"),
        "{}",
        host[1].detail
    );
    let ro1: Vec<String> = r
        .for_rollout(1)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(ro1, vec!["k8s-01/1", "k8s-01/2"]);
    assert_eq!(
        r.for_rollout(2).await.unwrap()[0].status,
        RecordStatus::InProgress
    );

    // Pruned by age: finished before the cutoff; in-progress records stay.
    assert_eq!(r.prune(t("2026-11-10T00:00:00Z")).await.unwrap(), 2);
    assert!(r.for_host("k8s-01").await.unwrap().is_empty());
    assert!(r.for_rollout(1).await.unwrap().is_empty());
    assert_eq!(r.for_host("k8s-02").await.unwrap().len(), 1);
    assert_eq!(r.prune(t("2030-01-01T00:00:00Z")).await.unwrap(), 0);
}

#[tokio::test]
async fn records_in_memory() {
    contract(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_redb() {
    let dir = tempfile::tempdir().unwrap();
    contract(Arc::new(
        RedbStore::open(&dir.path().join("r.redb")).unwrap(),
    ))
    .await;
}

/// Retention: records older than the age limit go, and so do a host's
/// attempts beyond the newest N; records in progress stay, and the
/// rollout index goes with its records.
#[tokio::test]
async fn retention_prunes_by_age_and_by_attempts_per_host() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
    let r = Records::new(store, "lab");
    let day = |d: i64| t("2026-11-01T00:00:00Z") + jiff::SignedDuration::from_hours(24 * d);
    // h1: attempts 1..=5, one record each, a day apart, all finished.
    for a in 1..=5u64 {
        let mut x = action("h1", a, 1, ActionKind::PowerCycle);
        x.attempt = a;
        r.begin(&x, day(a as i64)).await.unwrap();
        r.finish("h1", a, &Outcome::ok(), Vec::new(), day(a as i64))
            .await
            .unwrap();
    }
    // h2: one old finished record, one old record still in progress.
    r.begin(&action("h2", 1, 1, ActionKind::PowerCycle), day(0))
        .await
        .unwrap();
    r.finish("h2", 1, &Outcome::ok(), Vec::new(), day(0))
        .await
        .unwrap();
    let mut open = action("h2", 2, 1, ActionKind::PowerCycle);
    open.attempt = 2;
    r.begin(&open, day(0)).await.unwrap();

    // Keep 3 attempts per host, 30 days: h1 loses attempts 1 and 2.
    let keep = vaquero_engine::Retention::new(std::time::Duration::from_secs(30 * 86400), 3);
    assert_eq!(r.prune_retained(&keep, day(6)).await.unwrap(), 2);
    let h1: Vec<u64> = r
        .for_host("h1")
        .await
        .unwrap()
        .iter()
        .map(|x| x.attempt)
        .collect();
    assert_eq!(h1, vec![3, 4, 5]);
    assert_eq!(r.for_host("h2").await.unwrap().len(), 2);
    // 40 days on, 30 kept: every finished record goes, not the open one.
    assert_eq!(r.prune_retained(&keep, day(40)).await.unwrap(), 4);
    assert!(r.for_host("h1").await.unwrap().is_empty());
    let h2 = r.for_host("h2").await.unwrap();
    assert_eq!(h2.len(), 1);
    assert_eq!(h2[0].status, RecordStatus::InProgress);
    // The rollout index holds only what is left.
    assert_eq!(r.for_rollout(1).await.unwrap().len(), 1);
}
