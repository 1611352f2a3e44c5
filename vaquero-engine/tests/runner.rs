//! The runner end to end in real time: the control half joined in-process
//! to a site (`LocalSite`), a real redb store, fake BMCs (vaquero-lom's
//! FakeDriver) whose machines "boot" by sending the site link the
//! observations the boot service would, and real exec jobs; then a restart
//! from the same file.
#![allow(clippy::unwrap_used)]

mod machines;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use vaquero_engine::transport::LocalSite;
use vaquero_engine::{
    Actor, EngineBootState, EngineConfig, JobRunner, ObservationKind, Phase, RecordStatus,
    RedbStore, Runner,
};
use vaquero_ipxe::{BootState, Current};
use vaquero_lom::{FakeCall, FakeDriver, LomError, PowerDriver};
use vaquero_model::{SiteModel, Sot};

const HOSTS: usize = 4;

fn sot(dir: &Path, check: &Path) {
    let w = |p: &str, s: &str| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w(
        "os/linux.yml",
        "id: linux\nos_family: debian\nmajor_version: \"12\"\nboot:\n  kernel: \"{{ urls.assets }}/vmlinuz\"\n  initrd: [\"{{ urls.assets }}/initrd.img\"]\n",
    );
    w(
        "assets/untyped/install.sh",
        "#!/bin/sh\ncurl -X POST {{ urls.checkpoint }}\n",
    );
    w(
        "boot/install.yml",
        &format!(
            "id: install\noperating_system: linux\nunattended: {{type: untyped, use: install.sh}}\nvalidate:\n  - type: exec\n    command: [\"{}\", \"{{{{ host.name }}}}\"]\n    timeout: 10s\n",
            check.display()
        ),
    );
    w(
        "workflows/w.yml",
        "id: w\nstages: [{boot: install}]\npolicy: {max_concurrent: 2}\n",
    );
    w(
        "sites/s/env.yml",
        "id: s\nagents: [{id: a, asset_server: {url: \"http://127.0.0.1:8080\"}}]\nsubnets: [{id: p, cidr: 10.0.0.0/24, dns: [10.0.0.1]}]\npolicy: {force_provision: true, auto_apply: true}\n",
    );
    let mut hosts = String::new();
    for i in 0..HOSTS {
        hosts.push_str(&format!(
            "---\nname: h{i}\nworkflow: w\ninterfaces:\n  - {{type: physical, mac: \"52:54:00:00:00:{i:02x}\", subnet: p, ipv4: 10.0.0.{}}}\n",
            10 + i
        ));
    }
    w("sites/s/hosts.yml", &hosts);
}

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.power_timeout = Duration::from_secs(5);
    c.action_tries = 5;
    c.retry_backoff = Duration::from_millis(100);
    c.netboot_timeout = Duration::from_secs(10);
    c.install_timeout = Duration::from_secs(10);
    c.boot_tries = 3;
    c.job_timeout = Duration::from_secs(10);
    c.job_grace = Duration::from_secs(1);
    c
}

/// What a machine sends as it boots: its script, config and checkpoint.
const BOOT: [(ObservationKind, &str); 3] = [
    (ObservationKind::Script, ""),
    (ObservationKind::Config, ""),
    (ObservationKind::Checkpoint, ""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_rolls_out_and_restarts_from_redb() {
    let dir = tempfile::tempdir().unwrap();
    let check = dir.path().join("check-node");
    let log = dir.path().join("checked");
    std::fs::write(
        &check,
        format!(
            "#!/bin/sh\necho \"$1\" >> {}\necho healthy\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    sot(&dir.path().join("sot"), &check);
    let sot = Sot::load_dir(&dir.path().join("sot")).unwrap_or_else(|e| panic!("{e}"));
    let model: Arc<SiteModel> = Arc::new(sot.compile().unwrap().remove("s").unwrap());

    let fakes: HashMap<String, FakeDriver> = (0..HOSTS)
        .map(|i| (format!("h{i}"), FakeDriver::new(format!("bmc-{i}"))))
        .collect();
    // A BMC that is busy once: retried.
    fakes["h1"].fail_next(LomError::Busy("another session".into()));
    let drivers = || -> HashMap<String, Arc<dyn PowerDriver>> {
        fakes
            .iter()
            .map(|(n, f)| (n.clone(), Arc::new(f.clone()) as Arc<dyn PowerDriver>))
            .collect()
    };
    let db = dir.path().join("state.redb");
    let boot = Arc::new(EngineBootState::new());
    // The runner over the store file, as after every (re)start.
    let open = || async {
        let store = Arc::new(RedbStore::open(&db).unwrap());
        let all = drivers();
        let link = LocalSite::new(
            Actor::new(all.clone(), JobRunner::new()),
            Box::new(move |_| all.clone()),
        );
        let mut r = Runner::open(
            store,
            model.clone(),
            config(),
            boot.clone(),
            "test".into(),
            link,
            Timestamp::now(),
        )
        .await
        .unwrap();
        // The first plan (auto_apply), or nothing new after a restart.
        r.adopt(None, None, Timestamp::now()).await.unwrap();
        r
    };
    let mut r = open().await;

    let mut seen = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut max_in_flight = 0;
    while r
        .control()
        .state()
        .hosts
        .values()
        .any(|h| !h.phase.settled())
    {
        assert!(
            Instant::now() < deadline,
            "not done in 60 s: {:?}",
            r.control().state().phase_counts()
        );
        r.tick(Timestamp::now()).await.unwrap();
        max_in_flight = max_in_flight.max(
            r.control()
                .state()
                .hosts
                .values()
                .filter(|h| h.phase.in_flight())
                .count(),
        );
        machines::boot(&fakes, &boot, &r.link().observer(), &mut seen, &BOOT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(max_in_flight <= 2, "max_concurrent 2, saw {max_in_flight}");
    for h in r.control().state().hosts.values() {
        assert_eq!(h.phase, Phase::Done, "{}: {:?}", h.name, h.reason);
        let recs = r
            .control()
            .decider()
            .records()
            .for_host(&h.name)
            .await
            .unwrap();
        let actions: Vec<&str> = recs.iter().map(|x| x.action.as_str()).collect();
        assert!(
            actions.ends_with(&["set_boot_network", "power_cycle", "validate"]),
            "{actions:?}"
        );
        assert!(recs.iter().all(|x| x.ended.is_some()));
        let v = recs.last().unwrap();
        assert_eq!(v.status, RecordStatus::Done);
        assert_eq!(v.steps[0].log, "ok: healthy");
        assert!(matches!(boot.current(&h.name), Current::LocalDisk(_)));
    }
    // h1's busy BMC: one failed record, then the retry.
    let h1 = r
        .control()
        .decider()
        .records()
        .for_host("h1")
        .await
        .unwrap();
    assert_eq!(h1[0].status, RecordStatus::Error);
    assert!(
        h1[0].steps[0].log.contains("another session"),
        "{:?}",
        h1[0]
    );
    let mut checked: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    checked.sort();
    assert_eq!(checked, vec!["h0", "h1", "h2", "h3"]);
    let rollout = r.control().state().rollout.clone().unwrap().id;
    assert_eq!(
        r.control()
            .decider()
            .records()
            .for_rollout(rollout)
            .await
            .unwrap()
            .len(),
        3 * HOSTS + 1
    );

    // Restart from the same file: the same state, nothing to do again.
    let before = r.control().state().clone();
    drop(r);
    let mut r = open().await;
    assert_eq!(r.control().state(), &before);
    assert_eq!(r.tick(Timestamp::now()).await.unwrap().0, 0);
    let cycles: usize = fakes
        .values()
        .map(|f| {
            f.calls()
                .iter()
                .filter(|c| matches!(c, FakeCall::Power(_)))
                .count()
        })
        .sum();
    assert_eq!(cycles, HOSTS, "one power cycle per host");
}

/// A task delivered twice (a server that did not hear the first answer
/// asks again) is carried out once; a finished one is answered from
/// memory; a late result does not overwrite a finished record.
#[tokio::test]
async fn tasks_and_results_are_idempotent() {
    use vaquero_engine::{Action, ActionKind, Actor, Outcome, Task};
    let fake = FakeDriver::new("bmc-0");
    let drivers: HashMap<String, Arc<dyn PowerDriver>> = HashMap::from([(
        "h0".to_owned(),
        Arc::new(fake.clone()) as Arc<dyn PowerDriver>,
    )]);
    let actor = Actor::new(drivers, JobRunner::new());
    let task = Task {
        site: "s".into(),
        action: Action {
            host: "h0".into(),
            seq: 7,
            rollout: Some(1),
            stage: 0,
            attempt: 1,
            kind: ActionKind::PowerCycle,
        },
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    actor.spawn(task.clone(), tx.clone());
    actor.spawn(task.clone(), tx.clone());
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(first.outcome.is_ok(), "{first:?}");
    actor.spawn(task.clone(), tx.clone());
    let again = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, first);
    assert!(rx.try_recv().is_err(), "one answer per delivery");
    let cycles = fake
        .calls()
        .iter()
        .filter(|c| matches!(c, FakeCall::Power(_)))
        .count();
    assert_eq!(cycles, 1, "{:?}", fake.calls());

    // Records: the first outcome wins.
    let store = Arc::new(vaquero_engine::MemoryStore::new());
    let records = vaquero_engine::Records::new(store, "s");
    records.begin(&task.action, Timestamp::now()).await.unwrap();
    records
        .finish("h0", 7, &Outcome::ok(), Vec::new(), Timestamp::now())
        .await
        .unwrap();
    records
        .finish(
            "h0",
            7,
            &Outcome::failed(false, "late"),
            Vec::new(),
            Timestamp::now(),
        )
        .await
        .unwrap();
    let r = records.for_host("h0").await.unwrap();
    assert_eq!(r[0].status, RecordStatus::Done);
}
