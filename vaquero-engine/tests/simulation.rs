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
//! Judged by the world's own bookkeeping, from the notices the fleet
//! received (not the engine's phases or stats): in flight ≤
//! `max_concurrent`, and hosts neither in flight nor failed ≥
//! `min_standing`. After every crash, the state reloaded from the store
//! equals the state committed before it. Every seed proves its faults
//! happened: events lost, BMC errors, hangs, job failures, window waits,
//! crashes (where injected).
//!
//! Also checked after every step, from the engine's stats: in flight ≤
//! `max_concurrent`; `min_standing` held; no host starts before its dependencies are ready; no host starts
//! in a workflow past `max_fail`, and a halted workflow has nothing queued;
//! no first power-off outside the reboot windows; no host started twice
//! for one rollout; `never_provision` hosts never touched; no action whose
//! success was committed is asked for again. At the end every host is
//! done, failed, halted or skipped.
//!
//! `VAQUERO_SIM_SEEDS=N` runs N seeds per case instead of the default.
#![allow(clippy::unwrap_used)]

mod fleet;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use vaquero_engine::policy::dependency_need;
use vaquero_engine::{
    Action, ActionKind, Engine, EngineConfig, Event, EventKind, JobPhase, Notice, Outcome, Phase,
    SiteState, StateStore, Step, Store, WorkflowStats,
};
use vaquero_model::SiteModel;

const TICK: Duration = Duration::from_secs(60);
const WINDOWS: &[&str] = &["20:00-08:00"];

fn config() -> EngineConfig {
    EngineConfig {
        power_timeout: Duration::from_secs(180),
        action_tries: 5,
        retry_backoff: Duration::from_secs(30),
        netboot_timeout: Duration::from_secs(10 * 60),
        install_timeout: Duration::from_secs(45 * 60),
        boot_tries: 3,
        job_timeout: Duration::from_secs(300),
        job_grace: Duration::from_secs(60),
    }
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
    started: HashMap<(String, Option<u64>), u32>,
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
    /// Machines power-cycled, per rollout.
    cycled: HashSet<(String, Option<u64>)>,
    workflow_of: HashMap<String, String>,
    workflow_size: HashMap<String, usize>,
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
}

impl Sim {
    fn new(model: Arc<SiteModel>, store: Arc<dyn Store>, seed: u64, crash_rate: f64) -> Sim {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut machines = HashMap::new();
        let mut never = HashSet::new();
        for h in model.hosts() {
            machines.insert(
                h.name.clone(),
                Machine {
                    netboot_next: false,
                    broken: rng.f64() < 0.003,
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
            started: HashMap::new(),
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
            cycled: HashSet::new(),
            workflow_of,
            workflow_size,
        }
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
            self.account(&host, n);
            if *n == Notice::Started {
                let c = self.started.entry((host.clone(), a.rollout)).or_insert(0);
                *c += 1;
                assert!(*c <= 1, "{host} started twice in rollout {:?}", a.rollout);
            }
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
                // Judged from the clock and the site's windows alone: the
                // first power cycle the machine gets in a rollout.
                let first = self.cycled.insert((host.clone(), a.rollout));
                if a.stage == 0 && first && !window_open(self.now, &self.tz) {
                    panic!(
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
    /// in flight ≤ `max_concurrent`, and hosts neither in flight nor
    /// failed ≥ `min_standing`.
    fn account(&mut self, host: &str, n: &Notice) {
        let wid = self.workflow_of[host].clone();
        let active = self.active.entry(wid.clone()).or_default();
        match n {
            Notice::Started => {
                active.insert(host.to_owned());
            }
            Notice::Done | Notice::Halted { .. } => {
                active.remove(host);
            }
            Notice::Failed { .. } => {
                active.remove(host);
                self.failed
                    .entry(wid.clone())
                    .or_default()
                    .insert(host.to_owned());
            }
            Notice::StageDone { .. } | Notice::Retry { .. } => {}
        }
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

    fn check(&self, before_stats: &HashMap<String, WorkflowStats>, step: &Step) {
        let wfs = &self.model.data().workflows;
        let stats = self.engine.stats(&self.state);
        for (id, s) in &stats {
            let wf = &wfs[id];
            if let Some(limit) = wf.policy.max_concurrent.limit(s.total) {
                assert!(
                    s.in_flight <= limit,
                    "{id}: {} in flight > {limit}",
                    s.in_flight
                );
            }
            if let Some(m) = wf.policy.min_standing {
                assert!(
                    s.total - s.in_flight >= m as usize,
                    "{id}: min_standing {m} broken ({} of {} in flight)",
                    s.in_flight,
                    s.total
                );
            }
            if let Some(max) = wf.policy.max_fail
                && s.failed_now > max as usize
            {
                assert_eq!(s.queued, 0, "{id} past max_fail still has queued hosts");
            }
        }
        for a in &step.actions {
            if a.kind != ActionKind::Notice(Notice::Started) {
                continue;
            }
            let wid = &self.state.hosts[&a.host].workflow;
            let wf = &wfs[wid];
            for d in &wf.policy.block_deps {
                let ds = stats.get(d).cloned().unwrap_or_default();
                let need = dependency_need(&wfs[d], &ds);
                assert!(
                    ds.ready >= need,
                    "{} of {wid} started before {d} was ready",
                    a.host
                );
            }
            if let (Some(max), Some(s)) = (wf.policy.max_fail, before_stats.get(wid)) {
                assert!(
                    s.failed_now <= max as usize,
                    "{} of {wid} started past max_fail",
                    a.host
                );
            }
        }
    }

    fn busy(&self) -> bool {
        self.state.hosts.values().any(|h| !h.phase.settled())
    }

    async fn run(&mut self) {
        let plan = vaquero_engine::plan(None, &self.model);
        let step = self.engine.start(&self.state, &plan, self.now).unwrap();
        self.commit(&step).await;
        let limit = self.now.as_millisecond() + 10 * 24 * 3600 * 1000;
        while self.busy() {
            assert!(
                self.now.as_millisecond() < limit,
                "not settled after 10 days"
            );
            self.now = self.now.checked_add(TICK).unwrap();
            let waiting = self.started.len() + self.never.len() < self.model.hosts().len();
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
            let before = self.engine.stats(&self.state);
            self.commit(&step).await;
            self.acked.extend(acks);
            self.check(&before, &step);
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
                        self.account(&a.host.clone(), n);
                    }
                }
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

fn fleet_model(n: usize) -> Arc<SiteModel> {
    let dir = tempfile::tempdir().unwrap();
    fleet::write(dir.path(), n, 1, WINDOWS);
    Arc::new(fleet::model(dir.path()))
}

async fn simulate(model: &Arc<SiteModel>, store: Arc<dyn Store>, seed: u64, crash_rate: f64) {
    let mut sim = Sim::new(model.clone(), store, seed, crash_rate);
    sim.run().await;
    let counts = sim.state.phase_counts();
    eprintln!(
        "seed {seed}: {} hosts, {} steps, {} actions, {} crashes, ended at {}: {counts:?}; {:?}",
        model.hosts().len(),
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
}

#[tokio::test]
async fn ten_thousand_hosts_roll_out_under_the_policies() {
    let model = fleet_model(10_000);
    for seed in 0..seeds(2) {
        simulate(
            &model,
            Arc::new(vaquero_engine::MemoryStore::new()),
            seed,
            0.0,
        )
        .await;
    }
}

#[tokio::test]
async fn ten_thousand_hosts_with_crashes() {
    let model = fleet_model(10_000);
    for seed in 100..100 + seeds(2) {
        simulate(
            &model,
            Arc::new(vaquero_engine::MemoryStore::new()),
            seed,
            0.02,
        )
        .await;
    }
}

#[tokio::test]
async fn many_seeds_with_crashes() {
    let model = fleet_model(600);
    for seed in 1000..1000 + seeds(16) {
        simulate(
            &model,
            Arc::new(vaquero_engine::MemoryStore::new()),
            seed,
            0.05,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_with_the_redb_store() {
    let model = fleet_model(300);
    for seed in 2000..2000 + seeds(2) {
        let dir = tempfile::tempdir().unwrap();
        let store = vaquero_engine::RedbStore::open(&dir.path().join("state.redb")).unwrap();
        simulate(&model, Arc::new(store), seed, 0.05).await;
    }
}
