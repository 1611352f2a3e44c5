//! The control half's approval gate, as an operator relies on it.
//!
//! Random sequences of SoT revisions (auto-applied or waiting for
//! approval, new hosts forced or not), approvals, reprovisions (with and
//! without `--now`), pauses, resumes and restarts (the control half
//! dropped and opened again from its store), against a world that answers
//! every task and netboots every host the engine power-cycled.
//!
//! Judged from the operator's side, from what the test itself did and the
//! plan texts it was shown, never from the engine's policy code:
//! - no task names a host unless an approved plan (auto-applied, or
//!   approved by the test) or an explicit reprovision named it, and that
//!   host has not settled since (a finished host needs a new approval);
//! - a plan that waits for approval keeps waiting, with its id, until the
//!   test approves it or a newer revision supersedes it;
//! - while paused, no queued host starts;
//! - plans, the pause flag and the refused revision survive a restart.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;
use vaquero_engine::control::{Command, Control, PlanStatus};
use vaquero_engine::transport::Inbound;
use vaquero_engine::{
    Approval, EngineConfig, MemoryStore, Observation, ObservationKind, Outcome, Phase, Task,
    TaskResult,
};
use vaquero_model::types::CmdlineValue;
use vaquero_model::{SiteModel, Sot};

/// The lab, without reboot windows, in build `build` (each build renders
/// another kernel command line for every OS: every host is reprovisioned).
fn lab(build: u8, auto: bool, force: bool) -> Arc<SiteModel> {
    static SOT: OnceLock<vaquero_model::SiteData> = OnceLock::new();
    let base = SOT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
        let sot = Sot::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        sot.compile().unwrap().remove("lab").unwrap().into_data()
    });
    let mut d = base.clone();
    d.site.policy.windows.clear();
    d.site.policy.auto_apply = auto;
    d.site.policy.force_provision = force;
    for os in d.os.values_mut() {
        os.cmdline.push(BTreeMap::from([(
            "vaquero.build".to_owned(),
            CmdlineValue::One(build.to_string()),
        )]));
    }
    Arc::new(SiteModel::from_data(d).unwrap())
}

/// The control half over `store`, serving `model`, without a follower.
async fn open<S: vaquero_engine::Store + 'static>(
    store: Arc<S>,
    model: Arc<SiteModel>,
    now: Timestamp,
) -> (Control<S>, Vec<Task>) {
    Control::open(
        store,
        model,
        EngineConfig::default(),
        Arc::new(()),
        "test".into(),
        now,
    )
    .await
    .unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Revision { build: u8, auto: bool, force: bool },
    Approve,
    Reprovision { hosts: Vec<usize>, now: bool },
    Pause,
    Resume,
    Restart,
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..3, any::<bool>(), any::<bool>())
            .prop_map(|(build, auto, force)| Op::Revision { build, auto, force }),
        2 => Just(Op::Approve),
        2 => (proptest::collection::vec(0usize..16, 1..3), any::<bool>())
            .prop_map(|(hosts, now)| Op::Reprovision { hosts, now }),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::Restart),
        8 => Just(Op::Tick),
    ]
}

/// Hosts a plan entry names to be started: reprovisioned, or new and
/// forced.
fn named(entry: &vaquero_engine::control::PlanEntry) -> BTreeSet<String> {
    let force = entry.plan["sites"][0]["force_provision"].as_bool() == Some(true);
    entry.plan["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["action"] == "reprovision" || (h["action"] == "new" && force))
        .map(|h| h["name"].as_str().unwrap().to_owned())
        .collect()
}

struct World {
    store: Arc<MemoryStore>,
    control: Control<MemoryStore>,
    model: Arc<SiteModel>,
    now: Timestamp,
    outstanding: Vec<Task>,
    /// Hosts an approved plan named, until they settle.
    by_plan: BTreeSet<String>,
    /// Hosts a reprovision named, until they settle.
    by_request: BTreeSet<String>,
    /// The waiting plan's rollout and the hosts it names.
    waiting: Option<(u64, BTreeSet<String>)>,
    paused: bool,
}

impl World {
    async fn open(store: Arc<MemoryStore>, model: Arc<SiteModel>, now: Timestamp) -> World {
        let (control, resumed) = open(store.clone(), model.clone(), now).await;
        let mut w = World {
            store,
            control,
            model,
            now,
            outstanding: Vec::new(),
            by_plan: BTreeSet::new(),
            by_request: BTreeSet::new(),
            waiting: None,
            paused: false,
        };
        w.judge(&resumed);
        w.outstanding = resumed;
        w
    }

    fn judge(&self, tasks: &[Task]) {
        for t in tasks {
            let h = &t.action.host;
            assert!(
                self.by_plan.contains(h) || self.by_request.contains(h),
                "{} sent to {h}, which no approved plan nor reprovision named \
                 (approved: {:?}, requested: {:?}, waiting: {:?})",
                t.action.kind.name(),
                self.by_plan,
                self.by_request,
                self.waiting
            );
        }
    }

    /// Settled hosts need a new approval or request.
    fn forget_settled(&mut self) {
        for (name, h) in &self.control.state().hosts {
            if h.phase.settled() || h.phase == Phase::Waiting {
                self.by_plan.remove(name);
                self.by_request.remove(name);
            }
        }
    }

    fn in_flight(&self) -> BTreeSet<String> {
        self.control
            .state()
            .hosts
            .values()
            .filter(|h| h.phase.in_flight())
            .map(|h| h.name.clone())
            .collect()
    }

    /// The waiting rollout, as the engine keeps it, is the one the test
    /// was shown, unchanged.
    fn check_waiting(&self) {
        let r = self.control.state().rollout.as_ref();
        match &self.waiting {
            Some((id, _)) => {
                let r = r.unwrap();
                assert_eq!(r.id, *id, "the waiting plan lost its id");
                assert_eq!(r.approval, Approval::Pending, "approved by no one");
            }
            None => assert!(r.is_none_or(|r| r.approval != Approval::Pending)),
        }
    }

    async fn apply(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Revision { build, auto, force } => {
                let model = lab(build, auto, force);
                if model.version() == self.model.version() {
                    return;
                }
                self.control
                    .adopt(Some(model.clone()), None, now)
                    .await
                    .unwrap();
                self.model = model;
                let entry = self.control.plans().last().unwrap().clone();
                let rollout = self.control.state().rollout.clone().unwrap();
                assert_eq!(entry.rollout, rollout.id);
                // Hosts in flight go on; a plan's queued hosts wait for it.
                self.by_plan = self.in_flight();
                if rollout.approval == Approval::Pending {
                    assert_eq!(entry.status, PlanStatus::Pending);
                    self.waiting = Some((rollout.id, named(&entry)));
                } else {
                    self.by_plan.extend(named(&entry));
                    self.waiting = None;
                }
            }
            Op::Approve => {
                let r = self.control.command(Command::Approve(None), now).await;
                match self.waiting.take() {
                    Some((id, hosts)) => {
                        assert_eq!(r, Ok(format!("rollout {id} approved")));
                        self.by_plan.extend(hosts);
                    }
                    None => assert!(r.is_err(), "{r:?}"),
                }
            }
            Op::Reprovision { hosts, now: skip } => {
                let all = self.model.hosts();
                let names: Vec<String> = hosts
                    .iter()
                    .map(|i| {
                        all.get(*i)
                            .map_or_else(|| format!("missing-{i}"), |h| h.name.clone())
                    })
                    .collect();
                let plans = self.control.plans().len();
                let r = self
                    .control
                    .command(
                        Command::Reprovision {
                            hosts: names.clone(),
                            now: skip,
                        },
                        now,
                    )
                    .await;
                if r.is_err() {
                    assert_eq!(
                        self.control.plans().len(),
                        plans,
                        "a refused command made a plan"
                    );
                    return;
                }
                let entry = self.control.plans().last().unwrap();
                let listed: BTreeSet<String> = entry.plan["hosts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| h["name"].as_str().unwrap().to_owned())
                    .collect();
                let asked: BTreeSet<String> = names.into_iter().collect();
                assert_eq!(listed, asked, "the plan lists exactly the hosts named");
                assert!(!entry.text.contains("waits for approval"), "{}", entry.text);
                for h in entry.plan["hosts"].as_array().unwrap() {
                    if h["action"] == "reprovision" {
                        self.by_request
                            .insert(h["name"].as_str().unwrap().to_owned());
                    }
                }
            }
            Op::Pause | Op::Resume => {
                let pause = matches!(op, Op::Pause);
                let c = if pause {
                    Command::Pause
                } else {
                    Command::Resume
                };
                self.control.command(c, now).await.unwrap();
                self.paused = pause;
            }
            Op::Restart => {
                let plans = self.control.plans().to_vec();
                let state = self.control.state().clone();
                // Tasks out are lost with the process; the state says
                // which to ask again.
                self.outstanding.clear();
                let (control, resumed) = open(self.store.clone(), self.model.clone(), now).await;
                self.control = control;
                self.control.adopt(None, None, now).await.unwrap();
                assert_eq!(self.control.plans(), &plans[..], "plans lost on restart");
                assert_eq!(self.control.paused(), self.paused, "pause lost on restart");
                assert_eq!(self.control.state(), &state, "state lost on restart");
                self.judge(&resumed);
                self.outstanding = resumed;
            }
            Op::Tick => self.tick().await,
        }
        self.check_waiting();
        self.forget_settled();
    }

    /// A minute: every task out answers ok; every host booting an attempt
    /// fetches its script and config and calls its checkpoint.
    async fn tick(&mut self) {
        self.now = self.now.checked_add(Duration::from_secs(60)).unwrap();
        let results: Vec<TaskResult> = self
            .outstanding
            .drain(..)
            .map(|t| TaskResult {
                site: t.site.clone(),
                host: t.action.host.clone(),
                seq: t.action.seq,
                outcome: Outcome::ok(),
                steps: Vec::new(),
                ended: self.now,
            })
            .collect();
        let mut observations = Vec::new();
        for h in self.control.state().hosts.values() {
            let kind = match h.phase {
                Phase::Netbooting => ObservationKind::Script,
                Phase::Installing => ObservationKind::Config,
                Phase::AwaitingCheckpoint => ObservationKind::Checkpoint,
                _ => continue,
            };
            observations.push(Observation {
                at: self.now,
                host: h.name.clone(),
                attempt: Some(h.attempt),
                kind,
                ok: true,
                detail: String::new(),
            });
        }
        let queued: BTreeSet<String> = self
            .control
            .state()
            .hosts
            .values()
            .filter(|h| h.phase == Phase::Queued)
            .map(|h| h.name.clone())
            .collect();
        let (tasks, _) = self
            .control
            .step(inbound(observations, results), self.now)
            .await
            .unwrap();
        self.judge(&tasks);
        if self.paused {
            for n in &queued {
                let p = self.control.state().hosts[n].phase;
                assert!(!p.in_flight(), "{n} started while paused ({p})");
            }
        }
        self.outstanding.extend(tasks);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_host_is_acted_on_without_an_approved_plan_or_a_reprovision(
        first in (0u8..3, any::<bool>(), any::<bool>()),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
            let model = lab(first.0, first.1, first.2);
            let mut w = World::open(Arc::new(MemoryStore::new()), lab(9, true, false), now).await;
            // The first revision, as any other.
            w.apply(Op::Revision { build: first.0, auto: first.1, force: first.2 }).await;
            assert_eq!(w.model.version(), model.version());
            for op in ops {
                w.apply(op).await;
            }
        });
    }
}

/// The case an operator met: rollout 1 waits for approval (new hosts
/// forced), and `reprovision storage-01` power-cycled k8s-01..03 too.
#[tokio::test]
async fn a_reprovision_while_a_plan_waits_starts_only_the_host_named() {
    let store = Arc::new(MemoryStore::new());
    let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    let model = lab(0, false, true);
    let (mut c, _) = open(store.clone(), model.clone(), now).await;
    c.adopt(None, None, now).await.unwrap();
    let waiting = c.state().rollout.clone().unwrap();
    assert_eq!(waiting.approval, Approval::Pending);
    let msg = c
        .command(
            Command::Reprovision {
                hosts: vec!["storage-01".into()],
                now: false,
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(msg, "reprovisioning storage-01");
    let entry = c.plans().last().unwrap();
    assert!(entry.text.contains("1 to reprovision"), "{}", entry.text);
    assert!(!entry.text.contains("k8s-"), "{}", entry.text);
    let (tasks, _) = c.step(Inbound::default(), now).await.unwrap();
    assert!(!tasks.is_empty());
    for t in &tasks {
        assert_eq!(t.action.host, "storage-01", "{}", t.action.kind.name());
    }
    assert_eq!(c.state().rollout.as_ref(), Some(&waiting));
    assert_eq!(c.plans()[0].status, PlanStatus::Pending);
    // An unknown host is not found; nothing changes.
    let e = c
        .command(
            Command::Reprovision {
                hosts: vec!["nope".into()],
                now: false,
            },
            now,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, vaquero_engine::CommandFailure::NotFound(_)),
        "{e:?}"
    );
    // The waiting plan, its text included, survives a restart; approving
    // it then works.
    drop(c);
    let (mut c, _) = open(store, model, now).await;
    c.adopt(None, None, now).await.unwrap();
    assert_eq!(c.plans()[0].status, PlanStatus::Pending);
    assert!(
        c.plans()[0].text.contains("k8s-01"),
        "{}",
        c.plans()[0].text
    );
    c.command(Command::Approve(Some(waiting.id)), now)
        .await
        .unwrap();
    let (tasks, _) = c.step(Inbound::default(), now).await.unwrap();
    assert!(tasks.iter().any(|t| t.action.host.starts_with("k8s-")));
}

/// Host timelines live in the store: after a restart each host's timeline
/// is what it was, still bounded, and numbering goes on.
#[tokio::test]
async fn timelines_survive_a_restart_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.redb");
    let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    let model = lab(0, true, false);
    let open = || async {
        let store = Arc::new(vaquero_engine::RedbStore::open(&db).unwrap());
        open(store, model.clone(), now).await.0
    };
    let o = |host: &str, i: u32| Observation {
        at: now,
        host: host.into(),
        attempt: None,
        kind: ObservationKind::Dhcp,
        ok: true,
        detail: format!("request {i}"),
    };
    let mut c = open().await;
    c.step(
        inbound((0..3).map(|i| o("storage-01", i)).collect(), Vec::new()),
        now,
    )
    .await
    .unwrap();
    for chunk in 0..6 {
        let batch = (chunk * 100..chunk * 100 + 100)
            .map(|i| o("k8s-01", i))
            .collect();
        c.step(inbound(batch, Vec::new()), now).await.unwrap();
    }
    let before =
        |c: &Control<vaquero_engine::RedbStore>, h: &str| c.timelines().lock().unwrap().of(h);
    let storage = before(&c, "storage-01");
    let k8s = before(&c, "k8s-01");
    assert_eq!(storage.len(), 3);
    assert_eq!(k8s.len(), 512, "bounded");
    assert_eq!(k8s.last().unwrap().detail, "request 599");
    drop(c);
    let mut c = open().await;
    assert_eq!(before(&c, "storage-01"), storage);
    assert_eq!(before(&c, "k8s-01"), k8s);
    c.step(inbound(vec![o("k8s-01", 600)], Vec::new()), now)
        .await
        .unwrap();
    let k8s = before(&c, "k8s-01");
    assert_eq!(k8s.len(), 512);
    assert_eq!(k8s[0].detail, "request 89");
    assert_eq!(k8s.last().unwrap().detail, "request 600");
    drop(c);
    let c = open().await;
    assert_eq!(
        before(&c, "k8s-01"),
        k8s,
        "the pushed-out entry left the store too"
    );
}

/// A refused revision is kept across a restart while it is the newest,
/// and forgotten once the SoT's head is another (valid) revision.
#[tokio::test]
async fn a_refused_revision_is_kept_until_superseded() {
    let store = Arc::new(MemoryStore::new());
    let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    let model = lab(0, true, false);
    let (mut c, _) = open(store.clone(), model.clone(), now).await;
    c.refuse("bad".into(), vec!["env.yml:1:1: x: wrong".into()], now)
        .await;
    drop(c);
    let (mut c, _) = open(store.clone(), model.clone(), now).await;
    assert_eq!(c.refused().unwrap().errors, vec!["env.yml:1:1: x: wrong"]);
    c.refused_unless("bad").await;
    assert!(c.refused().is_some(), "still the newest");
    c.refused_unless("good").await;
    assert!(c.refused().is_none());
    drop(c);
    let (c, _) = open(store, model, now).await;
    assert!(c.refused().is_none(), "forgotten in the store too");
}

/// What a site sent: `observations` and `results`, nothing to write.
fn inbound(observations: Vec<Observation>, results: Vec<TaskResult>) -> Inbound {
    Inbound {
        observations,
        results,
        writes: Vec::new(),
    }
}
