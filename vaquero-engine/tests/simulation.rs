//! Deterministic fleet simulation on a virtual clock.
//!
//! A generated SoT (tests/fleet) of up to 10,000 hosts in four workflows
//! with dependencies is rolled out by the real engine, persisted through a
//! real store (memory or redb) before every action, against a simulated
//! world: BMCs that answer after random delays, fail transiently, lose
//! answers or do the operation and still report an error; machines that
//! netboot, fetch their script and config and report the checkpoint after
//! random delays, lose events, hang, or are broken for good; jobs that
//! fail. The engine is dropped at random points (before a commit, after a
//! commit, halfway through the actions) and rebuilt from the store.
//!
//! Some cases plan a second build while the first rollout runs (every
//! host provisioned again), then revert to the first build.
//!
//! Judged by the world's own bookkeeping, from the notices and actions the
//! fleet received (not the engine's phases, stats or policy code), after
//! every notice:
//! - in flight ≤ `max_concurrent`; hosts neither in flight nor down
//!   (failed, and not provisioned since) ≥ `min_standing`;
//! - a host starts only when each workflow in its `block_deps` has as many
//!   hosts up and running the rollout's build as that workflow's
//!   `min_standing` (all of them when unset);
//! - no host starts while its workflow has more than `max_fail` failures
//!   in the rollout, counted again after the whole step (a host started
//!   in the step that crossed the limit is caught);
//! - a provisioning begins at most once per host and rollout, crashes or
//!   not, and never on a machine that runs the rollout's build already (a
//!   revert leaves such hosts be); every power action falls within a
//!   provisioning, and its first one inside a reboot window (judged from
//!   the clock and the site's windows alone);
//! - `never_provision` hosts get no action; no action whose success was
//!   committed is asked for again.
//!
//! After every crash, the state reloaded from the store equals the state
//! committed before it. Every seed proves its faults happened: events
//! lost, BMC errors, hangs, job failures, window waits, crashes (where
//! injected), plans while a rollout ran, hosts a revert left be. From the
//! engine's stats only: a workflow past `max_fail` has nothing queued. At
//! the end every host is done, failed, halted or skipped.
//!
//! `VAQUERO_SIM_SEEDS=N` runs N seeds per case instead of the default.
#![allow(clippy::unwrap_used)]

mod fleet;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use vaquero_engine::{
    Action, ActionKind, Engine, EngineConfig, Event, EventKind, JobPhase, Notice, Outcome, Phase,
    PlanAction, SiteState, StateStore, Step, Store,
};
use vaquero_model::SiteModel;

const TICK: Duration = Duration::from_secs(60);
const WINDOWS: &[&str] = &["20:00-08:00"];

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.power_timeout = Duration::from_secs(180);
    c.action_tries = 5;
    c.retry_backoff = Duration::from_secs(30);
    c.netboot_timeout = Duration::from_secs(10 * 60);
    c.install_timeout = Duration::from_secs(45 * 60);
    c.boot_tries = 3;
    c.job_timeout = Duration::from_secs(300);
    c.job_grace = Duration::from_secs(60);
    c
}

/// Things the world does at a time.
#[derive(Debug, Clone)]
enum Item {
    /// An event reaches the engine.
    Deliver(Event),
    /// The machine starts a network boot.
    Boot(String),
}

#[derive(Debug, Default, Clone)]
struct Machine {
    netboot_next: bool,
    broken: bool,
    /// Between the notice that began a provisioning (started) and the one
    /// that ended it (done, failed, halted).
    provisioning: bool,
    /// Power-cycled in this provisioning.
    cycled: bool,
    /// The build (the install's kernel command line) the machine last
    /// finished provisioning with; `None` before, or once a provisioning
    /// began or failed.
    runs: Option<u32>,
}

/// What identifies one logical step of a host (for "no acknowledged step
/// repeats").
type StepKey = (String, Option<u64>, usize, u64, &'static str, usize);

fn key_of(a: &Action) -> StepKey {
    let idx = match &a.kind {
        ActionKind::RunJob { index, .. } => *index,
        _ => 0,
    };
    (
        a.host.clone(),
        a.rollout,
        a.stage,
        a.attempt,
        a.kind.name(),
        idx,
    )
}

struct Sim {
    rng: fastrand::Rng,
    now: Timestamp,
    model: Arc<SiteModel>,
    engine: Engine,
    state: SiteState,
    store: StateStore<dyn Store>,
    world: BTreeMap<(i64, u64), Item>,
    order: u64,
    machines: HashMap<String, Machine>,
    acked: HashSet<StepKey>,
    issued: HashMap<(String, u64), StepKey>,
    never: HashSet<String>,
    tz: TimeZone,
    crash_rate: f64,
    crashes: usize,
    steps: usize,
    actions: usize,
    /// What the world did to the engine, counted so a seed proves its
    /// faults happened (an injection that silently broke fails the test).
    faults: Faults,
    /// The world's own count, per workflow, from the notices the fleet
    /// received (not from the engine's phases or stats): hosts started and
    /// not yet done, failed or halted, and hosts failed.
    active: HashMap<String, HashSet<String>>,
    failed: HashMap<String, HashSet<String>>,
    /// Hosts failed per workflow and rollout (the notice's rollout), for
    /// `max_fail`.
    failed_in: HashMap<(String, Option<u64>), HashSet<String>>,
    /// Per workflow, hosts up and running what the current rollout wants
    /// (never provisioned, or finished with its build), for `block_deps`.
    ready: HashMap<String, HashSet<String>>,
    /// Provisionings begun per host and rollout.
    provisions: HashMap<(String, Option<u64>), u32>,
    workflow_of: HashMap<String, String>,
    workflow_size: HashMap<String, usize>,
    /// The models of each build, the builds still to plan (after how many
    /// hosts finished in the current rollout), and each rollout's build.
    models: HashMap<u32, Arc<SiteModel>>,
    revisions: Vec<(usize, u32)>,
    builds: HashMap<u64, u32>,
    current: Option<u64>,
    done_now: usize,
    /// Hosts started in the step being executed (workflow, rollout, host).
    started_now: Vec<(String, Option<u64>, String)>,
}

#[derive(Debug, Default)]
struct Faults {
    /// Events the world lost on their way.
    lost: usize,
    /// BMC operations that failed (nothing done, or done and reported failed).
    bmc_errors: usize,
    /// Machines that hung in a boot.
    hangs: usize,
    /// Jobs that failed.
    job_failures: usize,
    /// Hosts the engine halted with their workflow (past `max_fail`).
    halts: usize,
    /// Ticks with the reboot windows closed while a host had not started.
    window_waits: usize,
    /// Crashes after which the store was reloaded and compared.
    reloads: usize,
    /// Plans started while a rollout was running (a new build, a revert).
    replans: usize,
    /// Hosts a revert found already running the build reverted to.
    left_by_revert: usize,
}

impl Sim {
    /// `builds` are the models of the rollouts: the first is planned at
    /// once, each next one once `after` hosts finished in the current one.
    fn new(
        builds: &[(usize, u32, Arc<SiteModel>)],
        store: Arc<dyn Store>,
        seed: u64,
        crash_rate: f64,
    ) -> Sim {
        let model = builds[0].2.clone();
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut machines = HashMap::new();
        let mut never = HashSet::new();
        for h in model.hosts() {
            machines.insert(
                h.name.clone(),
                Machine {
                    broken: rng.f64() < 0.003,
                    ..Machine::default()
                },
            );
            if h.never_provision {
                never.insert(h.name.clone());
            }
        }
        let mut workflow_of = HashMap::new();
        let mut workflow_size: HashMap<String, usize> = HashMap::new();
        for h in model.hosts() {
            workflow_of.insert(h.name.clone(), h.workflow.clone());
            *workflow_size.entry(h.workflow.clone()).or_default() += 1;
        }
        let site = model.site().clone();
        Sim {
            rng,
            now: "2026-11-20T12:00:00Z".parse().unwrap(),
            engine: Engine::new(model.clone(), config()).unwrap(),
            model,
            state: SiteState::new("sim"),
            store: StateStore::new(store, "sim"),
            world: BTreeMap::new(),
            order: 0,
            machines,
            acked: HashSet::new(),
            issued: HashMap::new(),
            never,
            tz: TimeZone::get(site.policy.timezone.as_deref().unwrap()).unwrap(),
            crash_rate,
            crashes: 0,
            steps: 0,
            actions: 0,
            faults: Faults::default(),
            active: HashMap::new(),
            failed: HashMap::new(),
            failed_in: HashMap::new(),
            ready: HashMap::new(),
            provisions: HashMap::new(),
            workflow_of,
            workflow_size,
            models: builds.iter().map(|(_, b, m)| (*b, m.clone())).collect(),
            revisions: builds.iter().map(|(after, b, _)| (*after, *b)).collect(),
            builds: HashMap::new(),
            current: None,
            done_now: 0,
            started_now: Vec::new(),
        }
    }

    /// Plans and starts the next build: the first rollout, or a new plan
    /// while one runs (the world keeps everything it knows).
    async fn replan(&mut self) {
        let (_, build) = self.revisions.remove(0);
        let old = (self.current.is_some()).then(|| self.model.clone());
        self.model = self.models[&build].clone();
        self.engine = Engine::new(self.model.clone(), config()).unwrap();
        let plan = self.engine.plan(old.as_deref(), &self.state);
        if old.is_some() {
            self.faults.replans += 1;
            self.faults.left_by_revert += plan
                .hosts
                .iter()
                .filter(|h| {
                    h.action == PlanAction::Unchanged
                        && self.machines[&h.name].runs == Some(build)
                        && self.state.hosts[&h.name].phase == Phase::Queued
                })
                .count();
        }
        let step = self.engine.start(&self.state, &plan, self.now).unwrap();
        if let Ok(t) = std::env::var("SIM_TRACE") {
            eprintln!(
                "{} REPLAN build {build}: {:?} {:?}",
                self.now,
                self.state.hosts.get(&t).map(|h| (h.phase, &h.version)),
                plan.host(&t)
            );
        }
        self.commit(&step).await;
        let id = step.rollout.as_ref().map(|r| r.id);
        self.builds.insert(id.unwrap(), build);
        self.current = id;
        self.done_now = 0;
        let hosts: Vec<String> = self.workflow_of.keys().cloned().collect();
        for h in &hosts {
            self.refresh(h);
        }
    }

    /// Whether the world sees `host` up and running what the current
    /// rollout wants.
    fn is_ready(&self, host: &str) -> bool {
        if self.never.contains(host) {
            return true;
        }
        let wid = &self.workflow_of[host];
        let build = self.build_of(self.current);
        !self.active.get(wid).is_some_and(|a| a.contains(host))
            && !self.failed.get(wid).is_some_and(|f| f.contains(host))
            && self.machines[host].runs.is_some()
            && self.machines[host].runs == build
    }

    fn refresh(&mut self, host: &str) {
        let now = self.is_ready(host);
        let ready = self
            .ready
            .entry(self.workflow_of[host].clone())
            .or_default();
        if now {
            ready.insert(host.to_owned());
        } else {
            ready.remove(host);
        }
    }

    /// The build rollout `rollout` provisions.
    fn build_of(&self, rollout: Option<u64>) -> Option<u32> {
        rollout.and_then(|r| self.builds.get(&r)).copied()
    }

    fn at(&mut self, after: Duration, item: Item) {
        let t = self.now.as_millisecond() + after.as_millis() as i64;
        self.order += 1;
        self.world.insert((t, self.order), item);
    }

    fn secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.u64(lo * 1000..=hi * 1000))
    }

    fn deliver(&mut self, after: Duration, host: &str, kind: EventKind, loss: f64) {
        if self.rng.f64() < loss {
            self.faults.lost += 1;
            return;
        }
        self.at(
            after,
            Item::Deliver(Event {
                host: host.to_owned(),
                kind,
            }),
        );
    }

    async fn commit(&mut self, step: &Step) {
        self.store.commit(step).await.unwrap();
        self.state.apply(step);
    }

    /// Crash: the engine and its memory are gone; rebuild from the store.
    async fn restart(&mut self) {
        self.crashes += 1;
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("{} CRASH", self.now);
        }
        self.engine = Engine::new(self.model.clone(), config()).unwrap();
        // What was committed before the crash is exactly what comes back.
        let committed = std::mem::take(&mut self.state);
        self.state = self.store.load().await.unwrap();
        assert!(
            self.state == committed,
            "the state reloaded after a crash differs from the committed one"
        );
        self.faults.reloads += 1;
        let actions = self.engine.resume(&self.state);
        for a in &actions {
            self.execute(a);
        }
    }

    /// Carries out one action in the world.
    fn execute(&mut self, a: &Action) {
        self.actions += 1;
        if std::env::var("SIM_TRACE").ok().as_deref() == Some(a.host.as_str()) {
            eprintln!("{} ACTION {:?} {:?}", self.now, a.seq, a.kind.name());
        }
        let host = a.host.clone();
        if self.never.contains(&host) {
            panic!("never_provision host {host} got {:?}", a.kind);
        }
        if let ActionKind::Notice(n) = &a.kind {
            if matches!(n, Notice::Halted { .. }) {
                self.faults.halts += 1;
            }
            self.account(&host, a.rollout, n);
            return;
        }
        let key = key_of(a);
        assert!(
            !self.acked.contains(&key),
            "acknowledged step repeated: {key:?}"
        );
        self.issued.insert((host.clone(), a.seq), key);
        let seq = a.seq;
        let r = self.rng.f64();
        match &a.kind {
            ActionKind::SetBootNetwork => {
                let d = self.secs(1, 10);
                if r < 0.02 {
                    self.faults.bmc_errors += 1;
                    self.deliver(d, &host, result(seq, Outcome::failed(true, "busy")), 0.0);
                } else {
                    self.machines.get_mut(&host).unwrap().netboot_next = true;
                    self.deliver(d, &host, result(seq, Outcome::ok()), 0.01);
                }
            }
            ActionKind::PowerCycle => {
                // Every power action falls in a provisioning; the first of
                // one only inside a reboot window (judged from the clock
                // and the site's windows alone).
                let m = self.machines.get_mut(&host).unwrap();
                assert!(m.provisioning, "{host} power-cycled outside a provisioning");
                if !m.cycled {
                    m.cycled = true;
                    m.runs = None;
                    assert!(
                        window_open(self.now, &self.tz),
                        "first power cycle of {host} outside the windows at {}",
                        self.now
                    );
                }
                let d = self.secs(2, 20);
                if r < 0.03 {
                    self.faults.bmc_errors += 1;
                    // Unreachable: nothing happened.
                    self.deliver(
                        d,
                        &host,
                        result(seq, Outcome::failed(true, "unreachable")),
                        0.0,
                    );
                    return;
                }
                // It happened, whatever the BMC answers.
                let m = self.machines.get_mut(&host).unwrap();
                if m.netboot_next {
                    m.netboot_next = false;
                    let b = self.secs(20, 90);
                    self.at(b, Item::Boot(host.clone()));
                }
                let outcome = if r < 0.04 {
                    self.faults.bmc_errors += 1;
                    Outcome::failed(true, "BMC does not know")
                } else {
                    Outcome::ok()
                };
                self.deliver(d, &host, result(seq, outcome), 0.01);
            }
            ActionKind::RunJob { phase, .. } => {
                let d = self.secs(1, 60);
                let (hard, soft) = match phase {
                    JobPhase::BeforeShutdown => (0.002, 0.02),
                    JobPhase::Validate => (0.005, 0.02),
                };
                let outcome = if r < hard {
                    Outcome::failed(false, "exit status 1")
                } else if r < hard + soft {
                    Outcome::failed(true, "timed out")
                } else {
                    Outcome::ok()
                };
                if !outcome.is_ok() {
                    self.faults.job_failures += 1;
                }
                self.deliver(d, &host, result(seq, outcome), 0.01);
            }
            ActionKind::Notice(_) => {}
        }
    }

    /// The world's bookkeeping of a notice, and the policies judged by it:
    /// in flight ≤ `max_concurrent`; hosts neither in flight nor failed ≥
    /// `min_standing`; a host starts only when each workflow it depends on
    /// has as many hosts up and running the rollout's build as it needs,
    /// and while its own workflow has no more than `max_fail` failures in
    /// the rollout (judged again once the whole step is done).
    fn account(&mut self, host: &str, rollout: Option<u64>, n: &Notice) {
        let wid = self.workflow_of[host].clone();
        let active = self.active.entry(wid.clone()).or_default();
        match n {
            Notice::Started => {
                active.insert(host.to_owned());
                // A provisioning begins: never twice for one rollout (a
                // crash in between or not), never of a machine that runs
                // the rollout's build already.
                let build = self.build_of(rollout);
                let m = self.machines.get_mut(host).unwrap();
                assert!(!m.provisioning, "{host} started while provisioning");
                assert!(
                    m.runs.is_none() || m.runs != build,
                    "{host} reprovisioned in rollout {rollout:?} with build {build:?}, which it runs already"
                );
                m.provisioning = true;
                m.cycled = false;
                let n = self
                    .provisions
                    .entry((host.to_owned(), rollout))
                    .or_insert(0);
                *n += 1;
                assert!(*n <= 1, "{host} started twice in rollout {rollout:?}");
                if let Some(f) = self.failed.get_mut(&wid) {
                    f.remove(host);
                }
                self.judge_start(host, &wid, rollout);
                self.started_now
                    .push((wid.clone(), rollout, host.to_owned()));
            }
            Notice::Done => {
                active.remove(host);
                let build = self.build_of(rollout);
                let m = self.machines.get_mut(host).unwrap();
                m.provisioning = false;
                m.runs = build;
                if rollout == self.current {
                    self.done_now += 1;
                }
            }
            Notice::Halted { .. } => {
                active.remove(host);
                self.machines.get_mut(host).unwrap().provisioning = false;
            }
            Notice::Failed { .. } => {
                active.remove(host);
                let m = self.machines.get_mut(host).unwrap();
                m.provisioning = false;
                m.runs = None;
                self.failed
                    .entry(wid.clone())
                    .or_default()
                    .insert(host.to_owned());
                self.failed_in
                    .entry((wid.clone(), rollout))
                    .or_default()
                    .insert(host.to_owned());
            }
            Notice::StageDone { .. } | Notice::Retry { .. } => {}
        }
        self.refresh(host);
        let policy = &self.model.data().workflows[&wid].policy;
        let total = self.workflow_size[&wid];
        let in_flight = self.active.get(&wid).map_or(0, HashSet::len);
        let failed = self.failed.get(&wid).map_or(0, HashSet::len);
        if let Some(limit) = policy.max_concurrent.limit(total) {
            assert!(
                in_flight <= limit,
                "{wid}: {in_flight} hosts in flight (as the fleet saw them) > {limit}"
            );
        }
        if let Some(m) = policy.min_standing {
            assert!(
                total - in_flight - failed >= m as usize,
                "{wid}: min_standing {m} broken: {in_flight} in flight and {failed} failed of {total}"
            );
        }
    }

    /// `block_deps` and `max_fail` at the start of `host`, from the world's
    /// counts and the workflow definitions.
    fn judge_start(&self, host: &str, wid: &str, rollout: Option<u64>) {
        let workflows = &self.model.data().workflows;
        let policy = &workflows[wid].policy;
        for d in &policy.block_deps {
            let total = self.workflow_size[d];
            let need = workflows[d]
                .policy
                .min_standing
                .map_or(total, |m| (m as usize).min(total));
            let ready = self.ready.get(d).map_or(0, HashSet::len);
            assert!(
                ready >= need,
                "{host} of {wid} started with {ready} of {d} up on the build (it needs {need})"
            );
        }
        self.judge_max_fail(host, wid, rollout);
    }

    fn judge_max_fail(&self, host: &str, wid: &str, rollout: Option<u64>) {
        let policy = &self.model.data().workflows[wid].policy;
        if let Some(max) = policy.max_fail {
            let failed = self
                .failed_in
                .get(&(wid.to_owned(), rollout))
                .map_or(0, HashSet::len);
            assert!(
                failed <= max as usize,
                "{host} of {wid} started in a step with {failed} failures in the rollout (max_fail {max})"
            );
        }
    }

    /// The machine netboots: it gets what the boot service serves now.
    fn boot(&mut self, host: &str) {
        self.deliver(Duration::ZERO, host, EventKind::Dhcp, 0.05);
        let Some(h) = self.state.hosts.get(host) else {
            return;
        };
        let model = self.model.clone();
        let boot = model
            .by_name(host)
            .and_then(|r| model.stage(r.host, h.stage));
        let vaquero_ipxe::Current::Stage { attempt, boot, .. } =
            vaquero_engine::boot_state::current(h, boot)
        else {
            return; // local disk
        };
        let has_config = model
            .data()
            .boots
            .get(&boot)
            .is_some_and(|b| b.unattended.is_some());
        let d = self.secs(2, 10);
        self.deliver(d, host, EventKind::Script { attempt }, 0.03);
        if has_config {
            let d = self.secs(30, 120);
            self.deliver(d, host, EventKind::Config { attempt }, 0.03);
        }
        let broken = self.machines[host].broken;
        if broken || self.rng.f64() < 0.02 {
            self.faults.hangs += 1;
            return; // hangs
        }
        let d = self.secs(5 * 60, 25 * 60);
        self.deliver(d, host, EventKind::Checkpoint { attempt }, 0.02);
    }

    /// After a step is committed and carried out: `max_fail` against the
    /// counts after the whole step (a host started in the step that
    /// crossed the limit is caught), and, from the engine's stats, a
    /// workflow past `max_fail` has nothing queued.
    fn check(&mut self) {
        for (wid, rollout, host) in std::mem::take(&mut self.started_now) {
            self.judge_max_fail(&host, &wid, rollout);
        }
        let wfs = &self.model.data().workflows;
        for (id, s) in &self.engine.stats(&self.state) {
            if let Some(max) = wfs[id].policy.max_fail
                && s.failed_now > max as usize
            {
                assert_eq!(s.queued, 0, "{id} past max_fail still has queued hosts");
            }
        }
    }

    fn busy(&self) -> bool {
        self.state.hosts.values().any(|h| !h.phase.settled())
    }

    async fn run(&mut self) {
        self.replan().await;
        let limit = self.now.as_millisecond() + 10 * 24 * 3600 * 1000;
        while self.busy() {
            assert!(
                self.now.as_millisecond() < limit,
                "not settled after 10 days"
            );
            self.now = self.now.checked_add(TICK).unwrap();
            if self.revisions.first().is_some_and(|r| self.done_now >= r.0) {
                self.replan().await;
            }
            let waiting = self.provisions.len() + self.never.len() < self.model.hosts().len();
            if waiting && !window_open(self.now, &self.tz) {
                self.faults.window_waits += 1;
            }
            let cut = self.now.as_millisecond();
            let mut events = Vec::new();
            while let Some(entry) = self.world.first_entry() {
                if entry.key().0 > cut {
                    break;
                }
                match entry.remove() {
                    Item::Deliver(e) => events.push(e),
                    Item::Boot(h) => self.boot(&h),
                }
            }
            // Results of actions whose success this step will commit: the
            // first outcome of the pending action counts (a repeated
            // action can answer twice).
            let mut acks: Vec<StepKey> = Vec::new();
            let mut consumed: HashSet<&str> = HashSet::new();
            for e in &events {
                let EventKind::Result { seq, outcome } = &e.kind else {
                    continue;
                };
                let pending = self
                    .state
                    .hosts
                    .get(&e.host)
                    .and_then(|h| h.pending.as_ref())
                    .is_some_and(|p| p.seq == *seq);
                if pending && consumed.insert(e.host.as_str()) && outcome.is_ok() {
                    acks.extend(self.issued.get(&(e.host.clone(), *seq)).cloned());
                }
            }
            if let Ok(t) = std::env::var("SIM_TRACE") {
                for e in events.iter().filter(|e| e.host == t) {
                    eprintln!(
                        "{} EVENT {:?} state {:?}",
                        self.now,
                        e.kind,
                        self.state
                            .hosts
                            .get(&t)
                            .map(|h| (h.phase, h.job, h.attempt, &h.pending))
                    );
                }
            }
            let step = self.engine.step(&self.state, &events, self.now);
            self.steps += 1;
            let crash = self.rng.f64() < self.crash_rate;
            let point = self.rng.u8(0..3);
            if crash && point == 0 {
                // Before the commit: the step and its events are lost.
                self.restart().await;
                continue;
            }
            self.commit(&step).await;
            self.acked.extend(acks);
            let upto = if crash {
                if point == 1 {
                    0
                } else {
                    self.rng.usize(0..=step.actions.len())
                }
            } else {
                step.actions.len()
            };
            for a in &step.actions[..upto] {
                self.execute(a);
            }
            if crash {
                // Notices are not replayed after a crash (they report, they
                // do nothing): the world still counts what the committed
                // step said of its hosts, or a host done just before the
                // crash would count as in flight for ever.
                for a in &step.actions[upto..] {
                    if let ActionKind::Notice(n) = &a.kind {
                        self.account(&a.host.clone(), a.rollout, n);
                    }
                }
            }
            self.check();
            if crash {
                self.restart().await;
            }
        }
        for h in self.state.hosts.values() {
            assert!(
                matches!(
                    h.phase,
                    Phase::Done | Phase::Failed | Phase::Halted | Phase::Skipped
                ),
                "{} ended {}",
                h.name,
                h.phase
            );
            if self.never.contains(&h.name) {
                assert_eq!(h.phase, Phase::Skipped);
            }
        }
    }
}

/// Whether a reboot window is open at `now`, worked out from `WINDOWS` and
/// the site's time zone here, not by the engine's `Windows`: a window
/// `HH:MM-HH:MM` holds its start minute and not its end minute, and runs
/// past midnight when it ends before it starts.
fn window_open(now: Timestamp, tz: &TimeZone) -> bool {
    let local = now.to_zoned(tz.clone());
    let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
    let at = |hm: &str| {
        let (h, m) = hm.split_once(':').unwrap();
        h.parse::<i32>().unwrap() * 60 + m.parse::<i32>().unwrap()
    };
    WINDOWS.iter().any(|w| {
        let (a, b) = w.split_once('-').unwrap();
        let (start, end) = (at(a), at(b));
        if start <= end {
            start <= minute && minute < end
        } else {
            minute >= start || minute < end
        }
    })
}

fn result(seq: u64, outcome: Outcome) -> EventKind {
    EventKind::Result { seq, outcome }
}

fn seeds(default: u64) -> u64 {
    std::env::var("VAQUERO_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn fleet_model(n: usize, build: u32) -> Arc<SiteModel> {
    let dir = tempfile::tempdir().unwrap();
    fleet::write(dir.path(), n, build, WINDOWS);
    Arc::new(fleet::model(dir.path()))
}

/// One rollout of build 1.
fn one_build(n: usize) -> Vec<(usize, u32, Arc<SiteModel>)> {
    vec![(0, 1, fleet_model(n, 1))]
}

/// Build 1; once a third of the hosts finished, build 2 (every host
/// provisioned again); once a tenth finished that, a revert to build 1
/// (hosts still queued for build 2 run build 1 already).
fn three_builds(n: usize) -> Vec<(usize, u32, Arc<SiteModel>)> {
    let one = fleet_model(n, 1);
    vec![
        (0, 1, one.clone()),
        (n / 3, 2, fleet_model(n, 2)),
        (n / 10, 1, one),
    ]
}

async fn simulate(
    builds: &[(usize, u32, Arc<SiteModel>)],
    store: Arc<dyn Store>,
    seed: u64,
    crash_rate: f64,
) {
    let mut sim = Sim::new(builds, store, seed, crash_rate);
    sim.run().await;
    let counts = sim.state.phase_counts();
    eprintln!(
        "seed {seed}: {} hosts, {} steps, {} actions, {} crashes, ended at {}: {counts:?}; {:?}",
        sim.model.hosts().len(),
        sim.steps,
        sim.actions,
        sim.crashes,
        sim.now,
        sim.faults
    );
    assert!(counts.get(&Phase::Done).copied().unwrap_or(0) > 0);
    // The faults this seed was to inject did happen.
    let f = &sim.faults;
    assert!(f.lost > 0, "no event was lost: {f:?}");
    assert!(f.bmc_errors > 0, "no BMC error: {f:?}");
    assert!(f.hangs > 0, "no machine hung: {f:?}");
    assert!(f.job_failures > 0, "no job failed: {f:?}");
    assert!(f.window_waits > 0, "no host waited for a window: {f:?}");
    if crash_rate > 0.0 {
        assert!(
            sim.crashes > 0 && f.reloads == sim.crashes,
            "no crash: {f:?}"
        );
    }
    assert_eq!(
        f.replans,
        builds.len() - 1,
        "plans while a rollout ran: {f:?}"
    );
    if builds.len() > 2 {
        assert!(
            f.left_by_revert > 0,
            "the revert found no host on its build: {f:?}"
        );
    }
}

#[tokio::test]
async fn ten_thousand_hosts_roll_out_under_the_policies() {
    let builds = one_build(10_000);
    for seed in 0..seeds(2) {
        simulate(
            &builds,
            Arc::new(vaquero_engine::MemoryStore::new()),
            seed,
            0.0,
        )
        .await;
    }
}

#[tokio::test]
async fn ten_thousand_hosts_with_crashes() {
    let builds = one_build(10_000);
    for seed in 100..100 + seeds(2) {
        simulate(
            &builds,
            Arc::new(vaquero_engine::MemoryStore::new()),
            seed,
            0.02,
        )
        .await;
    }
}

#[tokio::test]
async fn many_seeds_with_crashes_a_new_build_and_a_revert() {
    let builds = three_builds(600);
    for seed in 1000..1000 + seeds(16) {
        simulate(
            &builds,
            Arc::new(vaquero_engine::MemoryStore::new()),
            seed,
            0.05,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_a_new_build_and_a_revert_with_the_redb_store() {
    let builds = three_builds(300);
    for seed in 2000..2000 + seeds(2) {
        let dir = tempfile::tempdir().unwrap();
        let store = vaquero_engine::RedbStore::open(&dir.path().join("state.redb")).unwrap();
        simulate(&builds, Arc::new(store), seed, 0.05).await;
    }
}
