//! The host lifecycle, step by step, on the lab model.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use vaquero_engine::{
    Action, ActionKind, Approval, Engine, EngineConfig, Event, EventKind, JobPhase, Notice,
    Outcome, Phase, SiteState,
};
use vaquero_model::{SiteData, SiteModel, Sot};

fn lab(edit: impl FnOnce(&mut SiteData)) -> Arc<SiteModel> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
    let sot = Sot::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut data = sot.compile().unwrap().remove("lab").unwrap().into_data();
    edit(&mut data);
    Arc::new(SiteModel::from_data(data).unwrap())
}

struct H {
    engine: Engine,
    state: SiteState,
    now: Timestamp,
}

impl H {
    fn new(model: Arc<SiteModel>, now: &str) -> H {
        H {
            engine: Engine::new(model, EngineConfig::default()).unwrap(),
            state: SiteState::new("lab"),
            now: now.parse().unwrap(),
        }
    }

    fn start(&mut self) {
        let plan = vaquero_engine::plan(None, self.engine.model());
        let s = self.engine.start(&self.state, &plan, self.now).unwrap();
        self.state.apply(&s);
    }

    fn step(&mut self, events: &[Event]) -> Vec<Action> {
        let s = self.engine.step(&self.state, events, self.now);
        self.state.apply(&s);
        s.actions
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now.checked_add(d).unwrap();
    }

    fn host(&self, n: &str) -> &vaquero_engine::HostState {
        &self.state.hosts[n]
    }

    fn pending(&self, n: &str) -> u64 {
        self.host(n).pending.as_ref().unwrap().seq
    }

    fn ok(&mut self, n: &str) -> Vec<Action> {
        let seq = self.pending(n);
        self.step(&[ev(
            n,
            EventKind::Result {
                seq,
                outcome: Outcome::ok(),
            },
        )])
    }
}

fn ev(host: &str, kind: EventKind) -> Event {
    Event {
        host: host.to_owned(),
        kind,
    }
}

fn of<'a>(actions: &'a [Action], host: &str) -> Vec<&'a ActionKind> {
    actions
        .iter()
        .filter(|a| a.host == host)
        .map(|a| &a.kind)
        .collect()
}

/// Forced, auto-applied, no windows.
fn open_lab() -> Arc<SiteModel> {
    lab(|d| {
        d.site.policy.force_provision = true;
        d.site.policy.auto_apply = true;
        d.site.policy.windows.clear();
    })
}

#[test]
fn a_host_goes_through_every_phase_once() {
    let mut h = H::new(open_lab(), "2026-11-22T12:00:00Z");
    h.start();
    assert_eq!(h.host("storage-02").phase, Phase::Skipped);
    let a = h.step(&[]);
    // storage: max_concurrent 1 → storage-01 only; bastion (no policy).
    assert_eq!(
        of(&a, "storage-01"),
        vec![
            &ActionKind::Notice(Notice::Started),
            &ActionKind::SetBootNetwork
        ]
    );
    assert_eq!(h.host("storage-01").phase, Phase::SetBoot);
    assert_eq!(h.host("storage-01").attempt, 1);
    // k8s-worker: storage-02 (never_provision) counts as ready, and
    // max_concurrent 50 % of 3 → 2 start.
    let k8s_started = ["k8s-01", "k8s-02", "k8s-03"]
        .iter()
        .filter(|n| h.host(n).phase != Phase::Queued)
        .count();
    assert_eq!(k8s_started, 2);
    assert!(of(&a, "storage-02").is_empty());

    let a = h.ok("storage-01");
    assert_eq!(of(&a, "storage-01"), vec![&ActionKind::PowerCycle]);
    let a = h.ok("storage-01");
    assert!(of(&a, "storage-01").is_empty());
    assert_eq!(h.host("storage-01").phase, Phase::Netbooting);
    // The boot service serves stage 0 of attempt 1.
    assert_eq!(
        vaquero_engine::boot_state::current(h.host("storage-01"), Some("rocky-install")),
        vaquero_ipxe::Current::Stage {
            stage: 0,
            boot: "rocky-install".into(),
            attempt: 1
        }
    );
    h.step(&[ev("storage-01", EventKind::Dhcp)]);
    h.step(&[ev("storage-01", EventKind::Script { attempt: 1 })]);
    assert_eq!(h.host("storage-01").phase, Phase::Installing);
    h.step(&[ev("storage-01", EventKind::Config { attempt: 1 })]);
    assert_eq!(h.host("storage-01").phase, Phase::AwaitingCheckpoint);
    let a = h.step(&[ev("storage-01", EventKind::Checkpoint { attempt: 1 })]);
    let kinds = of(&a, "storage-01");
    let [
        ActionKind::RunJob {
            phase: JobPhase::Validate,
            boot,
            index: 0,
            job,
        },
    ] = kinds.as_slice()
    else {
        panic!("{kinds:?}")
    };
    assert_eq!(boot, "rocky-install");
    assert_eq!(
        job.job().command,
        vec!["systemctl", "is-system-running", "--wait"]
    );
    assert_eq!(job.target(), Some("10.99.0.21"));
    assert_eq!(job.timeout(), Duration::from_secs(600));
    let a = h.ok("storage-01");
    assert_eq!(
        of(&a, "storage-01"),
        vec![
            &ActionKind::Notice(Notice::StageDone {
                boot: "rocky-install".into()
            }),
            &ActionKind::Notice(Notice::Done)
        ]
    );
    let s = h.host("storage-01");
    assert_eq!(
        (s.phase, s.installed.as_deref()),
        (Phase::Done, Some("rocky-install"))
    );
    assert!(matches!(
        vaquero_engine::boot_state::current(s, Some("rocky-install")),
        vaquero_ipxe::Current::LocalDisk(_)
    ));
}

#[test]
fn stale_events_are_ignored() {
    let mut h = H::new(open_lab(), "2026-11-22T12:00:00Z");
    h.start();
    h.step(&[]);
    let seq = h.pending("storage-01");
    let before = h.host("storage-01").clone();
    let s = h.engine.step(
        &h.state,
        &[
            ev(
                "storage-01",
                EventKind::Result {
                    seq: seq + 7,
                    outcome: Outcome::ok(),
                },
            ),
            ev("storage-01", EventKind::Script { attempt: 0 }),
            ev("storage-01", EventKind::Checkpoint { attempt: 5 }),
            ev("nobody", EventKind::Dhcp),
        ],
        h.now,
    );
    assert_eq!(s.ignored, 4);
    h.state.apply(&s);
    assert_eq!(h.host("storage-01"), &before);
}

#[test]
fn lost_boots_are_retried_then_fail() {
    let mut h = H::new(open_lab(), "2026-11-22T12:00:00Z");
    h.start();
    h.step(&[]);
    h.ok("storage-01");
    h.ok("storage-01");
    for attempt in 1..=3u64 {
        assert_eq!(h.host("storage-01").phase, Phase::Netbooting);
        assert_eq!(h.host("storage-01").attempt, attempt);
        h.advance(Duration::from_secs(15 * 60));
        let a = h.step(&[]);
        if attempt < 3 {
            let kinds = of(&a, "storage-01");
            assert!(
                matches!(
                    kinds.as_slice(),
                    [
                        ActionKind::Notice(Notice::Retry { .. }),
                        ActionKind::SetBootNetwork
                    ]
                ),
                "{kinds:?}"
            );
            h.ok("storage-01");
            h.ok("storage-01");
            // The old attempt's script is stale now.
            h.step(&[ev("storage-01", EventKind::Script { attempt })]);
        }
    }
    let s = h.host("storage-01");
    assert_eq!(s.phase, Phase::Failed);
    assert!(
        s.reason.as_deref().unwrap().contains("after 3 boots"),
        "{:?}",
        s.reason
    );
}

#[test]
fn transient_power_failures_are_retried_after_a_backoff_and_bounded() {
    let mut h = H::new(open_lab(), "2026-11-22T12:00:00Z");
    h.start();
    h.step(&[]);
    h.ok("storage-01");
    for i in 1..=5 {
        let seq = h.pending("storage-01");
        let a = h.step(&[ev(
            "storage-01",
            EventKind::Result {
                seq,
                outcome: Outcome::failed(true, "busy"),
            },
        )]);
        if i == 5 {
            assert!(matches!(
                of(&a, "storage-01")[..],
                [ActionKind::Notice(Notice::Failed { .. })]
            ));
            break;
        }
        assert!(of(&a, "storage-01").is_empty());
        // Not before the backoff.
        h.advance(Duration::from_secs(10));
        assert!(of(&h.step(&[]), "storage-01").is_empty());
        h.advance(Duration::from_secs(20));
        assert_eq!(
            of(&h.step(&[]), "storage-01"),
            vec![&ActionKind::PowerCycle]
        );
    }
    let s = h.host("storage-01");
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.reason.as_deref(), Some("power_cycle failed: busy"));

    // A power operation that never answers counts as lost and is retried.
    let mut h = H::new(open_lab(), "2026-11-22T12:00:00Z");
    h.start();
    h.step(&[]);
    let first = h.pending("storage-01");
    h.advance(Duration::from_secs(301));
    h.step(&[]);
    h.advance(Duration::from_secs(30));
    let a = h.step(&[]);
    assert_eq!(of(&a, "storage-01"), vec![&ActionKind::SetBootNetwork]);
    assert!(h.pending("storage-01") > first);
}

#[test]
fn no_power_off_outside_the_reboot_windows() {
    // The lab: 22:00-06:00 Europe/Berlin.
    let model = lab(|d| {
        d.site.policy.force_provision = true;
        d.site.policy.auto_apply = true;
    });
    let mut h = H::new(model, "2026-11-22T12:00:00Z");
    h.start();
    h.step(&[]);
    let a = h.ok("storage-01");
    assert!(of(&a, "storage-01").is_empty());
    let s = h.host("storage-01");
    assert_eq!(s.phase, Phase::PowerCycle);
    assert!(
        s.reason.as_deref().unwrap().starts_with("windows: outside"),
        "{:?}",
        s.reason
    );
    // 21:30 UTC is 22:30 in Berlin.
    h.now = "2026-11-22T21:30:00Z".parse().unwrap();
    let a = h.step(&[]);
    assert_eq!(of(&a, "storage-01"), vec![&ActionKind::PowerCycle]);
}

#[test]
fn nothing_starts_before_approval() {
    let model = lab(|d| {
        d.site.policy.force_provision = true;
        d.site.policy.windows.clear();
    });
    let mut h = H::new(model, "2026-11-22T12:00:00Z");
    h.start();
    let r = h.state.rollout.clone().unwrap();
    assert_eq!(r.approval, Approval::Pending);
    assert!(h.step(&[]).is_empty());
    assert_eq!(h.host("storage-01").phase, Phase::Queued);
    assert!(h.engine.approve(&h.state, r.id + 1).is_err());
    let s = h.engine.approve(&h.state, r.id).unwrap();
    h.state.apply(&s);
    assert!(!of(&h.step(&[]), "storage-01").is_empty());
}

#[test]
fn before_shutdown_jobs_of_the_boot_being_left_run_first_and_stop_at_a_failure() {
    let mut h = H::new(open_lab(), "2026-11-22T12:00:00Z");
    h.start();
    // k8s-01 runs Flatcar (the last stage of its workflow) already.
    for n in ["k8s-01", "k8s-02", "k8s-03"] {
        h.state.hosts.get_mut(n).unwrap().installed = Some("flatcar-install".into());
    }
    let a = h.step(&[]);
    let kinds = of(&a, "k8s-01");
    let [
        ActionKind::Notice(Notice::Started),
        ActionKind::RunJob {
            phase: JobPhase::BeforeShutdown,
            job,
            ..
        },
    ] = kinds.as_slice()
    else {
        panic!("{kinds:?}")
    };
    assert_eq!(job.job().command[..3], ["kubectl", "drain", "k8s-01"]);
    assert_eq!(h.host("k8s-01").phase, Phase::Draining);
    let seq = h.pending("k8s-01");
    let a = h.step(&[ev(
        "k8s-01",
        EventKind::Result {
            seq,
            outcome: Outcome::failed(false, "exit status 1: node not found"),
        },
    )]);
    assert!(
        of(&a, "k8s-01")
            .iter()
            .any(|k| matches!(k, ActionKind::Notice(Notice::Failed { .. })))
    );
    let s = h.host("k8s-01");
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(
        s.reason.as_deref(),
        Some("before_shutdown job 0 failed: exit status 1: node not found")
    );
    // k8s-02 drains, then boots.
    let a = h.ok("k8s-02");
    assert_eq!(of(&a, "k8s-02"), vec![&ActionKind::SetBootNetwork]);
}

#[test]
fn resume_asks_again_for_what_was_never_answered() {
    let mut h = H::new(open_lab(), "2026-11-22T12:00:00Z");
    h.start();
    h.step(&[]);
    h.ok("storage-01");
    let seq = h.pending("storage-01");
    // A new engine over the same state (as after a restart).
    let engine = Engine::new(h.engine.model().clone(), EngineConfig::default()).unwrap();
    let again = engine.resume(&h.state);
    let a = again.iter().find(|a| a.host == "storage-01").unwrap();
    assert_eq!((a.seq, &a.kind), (seq, &ActionKind::PowerCycle));
    // Settled hosts ask for nothing.
    assert!(again.iter().all(|a| h.host(&a.host).pending.is_some()));
}

#[test]
fn max_fail_halts_the_hosts_not_started() {
    let model = lab(|d| {
        d.site.policy.force_provision = true;
        d.site.policy.auto_apply = true;
        d.site.policy.windows.clear();
        let w = d.workflows.get_mut("k8s-worker").unwrap();
        w.policy.max_fail = Some(0);
        w.policy.max_concurrent = vaquero_model::Concurrency::Count(1);
        w.policy.min_standing = None;
    });
    let mut h = H::new(model, "2026-11-22T12:00:00Z");
    h.start();
    h.step(&[]);
    let first = ["k8s-01", "k8s-02", "k8s-03"]
        .into_iter()
        .find(|n| h.host(n).phase == Phase::SetBoot)
        .unwrap();
    let seq = h.pending(first);
    let a = h.step(&[ev(
        first,
        EventKind::Result {
            seq,
            outcome: Outcome::failed(false, "BMC refused"),
        },
    )]);
    let halted: Vec<_> = a
        .iter()
        .filter(|a| matches!(a.kind, ActionKind::Notice(Notice::Halted { .. })))
        .map(|a| a.host.as_str())
        .collect();
    assert_eq!(halted.len(), 2);
    for n in halted {
        let s = h.host(n);
        assert_eq!(s.phase, Phase::Halted);
        assert!(
            s.reason
                .as_deref()
                .unwrap()
                .starts_with("max_fail: 1 failures")
        );
    }
}

#[test]
fn the_boot_service_sees_the_engine_state() {
    use vaquero_ipxe::{BootState, Current};
    let mut h = H::new(open_lab(), "2026-11-22T12:00:00Z");
    h.start();
    let bs = vaquero_engine::EngineBootState::new();
    let model = h.engine.model().clone();
    bs.load(&model, &h.state);
    assert!(matches!(bs.current("storage-01"), Current::LocalDisk(_)));
    assert_eq!(
        bs.current("storage-02"),
        Current::LocalDisk("never_provision".into())
    );
    let s = h.engine.step(&h.state, &[], h.now);
    h.state.apply(&s);
    bs.update(&model, &s.hosts);
    h.ok("storage-01");
    let s = h.engine.step(
        &h.state,
        &[ev(
            "storage-01",
            EventKind::Result {
                seq: h.pending("storage-01"),
                outcome: Outcome::ok(),
            },
        )],
        h.now,
    );
    h.state.apply(&s);
    bs.update(&model, &s.hosts);
    assert_eq!(
        bs.current("storage-01"),
        Current::Stage {
            stage: 0,
            boot: "rocky-install".into(),
            attempt: 1
        }
    );
    // A checkpoint is recorded once by the boot state, and reaches the
    // engine as an observation.
    assert!(bs.record_checkpoint("storage-01", 1));
    assert!(!bs.record_checkpoint("storage-01", 1));
    let seen = vaquero_engine::Observation {
        at: h.now,
        host: "storage-01".into(),
        attempt: Some(1),
        kind: vaquero_engine::ObservationKind::Checkpoint,
        ok: true,
        detail: String::new(),
    };
    let events: Vec<Event> = seen.event().into_iter().collect();
    assert_eq!(
        events,
        vec![ev("storage-01", EventKind::Checkpoint { attempt: 1 })]
    );
    h.step(&events);
    assert_eq!(h.host("storage-01").phase, Phase::Validating);
}

/// Without force_provision a new host is not power-cycled: it waits until
/// it netboots by itself (DHCP or TFTP seen), then goes through stage 0.
#[test]
fn a_new_host_waits_for_its_own_netboot() {
    let model = lab(|d| {
        d.site.policy.force_provision = false;
        d.site.policy.auto_apply = true;
        d.site.policy.windows.clear();
    });
    let mut h = H::new(model, "2026-11-22T12:00:00Z");
    h.start();
    let a = h.step(&[]);
    assert!(
        !a.iter()
            .any(|a| matches!(a.kind, ActionKind::PowerCycle | ActionKind::SetBootNetwork)),
        "{a:?}"
    );
    assert_eq!(h.host("bastion-01").phase, Phase::Waiting);
    // A TFTP fetch (its iPXE binary) is the first sign of its own boot.
    h.step(&[ev("bastion-01", EventKind::Tftp)]);
    assert_eq!(h.host("bastion-01").phase, Phase::Netbooting);
    assert_eq!(h.host("bastion-01").boots, 1);
    // DHCP of a host already netbooting teaches nothing.
    h.step(&[ev("bastion-01", EventKind::Dhcp)]);
    assert_eq!(h.host("bastion-01").phase, Phase::Netbooting);
    assert_eq!(h.host("storage-01").phase, Phase::Waiting);
    h.step(&[ev("storage-01", EventKind::Dhcp)]);
    assert_eq!(h.host("storage-01").phase, Phase::Netbooting);
}

#[test]
fn a_revert_leaves_hosts_that_run_the_reverted_to_version() {
    use vaquero_engine::{HostState, PlanAction};
    let a = open_lab();
    let b = lab(|d| {
        d.site.policy.force_provision = true;
        d.site.policy.auto_apply = true;
        d.site.policy.windows.clear();
        let os = d.os.get_mut("flatcar-stable").unwrap();
        os.cmdline.push(
            [(
                "build".to_owned(),
                vaquero_model::CmdlineValue::One("2".to_owned()),
            )]
            .into_iter()
            .collect(),
        );
    });
    assert_ne!(a.version(), b.version());
    let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    let mut state = SiteState::new("lab");
    let mut host = |name: &str, phase: Phase, version: Option<&str>| {
        let workflow = name.split('-').next().unwrap().replace("k8s", "k8s-worker");
        let mut h = HostState::new(name, &workflow, now);
        h.phase = phase;
        h.rollout = Some(2);
        h.version = version.map(str::to_owned);
        state.hosts.insert(name.to_owned(), h);
    };
    // Finished under A, then queued by the rollout to B, which is reverted.
    host("k8s-01", Phase::Queued, Some(a.version()));
    // Finished under A, halted (before it started) in the rollout to B.
    host("k8s-02", Phase::Halted, Some(a.version()));
    // Finished under B: the revert is a change for it.
    host("k8s-03", Phase::Done, Some(b.version()));
    // Finished under A, failed in the rollout to B: it is down.
    host("bastion-01", Phase::Failed, Some(a.version()));
    let engine = Engine::new(a.clone(), EngineConfig::default()).unwrap();
    let plan = engine.plan(Some(&b), &state);
    let action = |n: &str| plan.host(n).unwrap().action;
    assert_eq!(action("k8s-01"), PlanAction::Unchanged);
    assert_eq!(action("k8s-02"), PlanAction::Unchanged);
    assert_eq!(action("k8s-03"), PlanAction::Reprovision);
    assert_eq!(action("bastion-01"), PlanAction::Reprovision);
    assert!(
        plan.host("k8s-01").unwrap().reasons[0].starts_with("already runs this version"),
        "{:?}",
        plan.host("k8s-01")
    );
    let step = engine.start(&state, &plan, now).unwrap();
    state.apply(&step);
    assert_eq!(state.hosts["k8s-01"].phase, Phase::Done);
    assert_eq!(state.hosts["k8s-02"].phase, Phase::Done);
    assert_eq!(state.hosts["k8s-03"].phase, Phase::Queued);
    assert_eq!(state.hosts["bastion-01"].phase, Phase::Queued);
}

#[test]
fn a_failed_host_queued_again_counts_as_down_and_starts_first() {
    use vaquero_engine::HostState;
    let model = lab(|d| {
        d.site.policy.force_provision = true;
        d.site.policy.auto_apply = true;
        d.site.policy.windows.clear();
        let w = d.workflows.get_mut("k8s-worker").unwrap();
        w.policy.min_standing = Some(2);
    });
    let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
    let mut state = SiteState::new("lab");
    for (name, phase) in [
        ("k8s-01", Phase::Done),
        ("k8s-02", Phase::Done),
        ("k8s-03", Phase::Failed),
    ] {
        let mut h = HostState::new(name, "k8s-worker", now);
        h.phase = phase;
        h.down = phase == Phase::Failed;
        h.rollout = Some(1);
        state.hosts.insert(name.to_owned(), h);
    }
    let engine = Engine::new(model.clone(), EngineConfig::default()).unwrap();
    let mut old = model.data().clone();
    old.site.name = Some("before".into());
    let old = SiteModel::from_data(old).unwrap();
    let mut plan = engine.plan(Some(&old), &state);
    // Every k8s worker again (as a change of its OS would).
    plan.hosts
        .iter_mut()
        .filter(|h| h.name.starts_with("k8s-"))
        .for_each(|h| h.action = vaquero_engine::PlanAction::Reprovision);
    let step = engine.start(&state, &plan, now).unwrap();
    state.apply(&step);
    let stats = engine.stats(&state);
    // Down, queued or not: 2 of 3 up.
    assert_eq!(stats["k8s-worker"].failed, 1);
    assert_eq!(stats["k8s-worker"].standing(), 2);
    let step = engine.step(&state, &[], now);
    state.apply(&step);
    // The down host starts (it lowers nothing), though it sorts last;
    // the two up hosts wait for min_standing.
    assert!(
        state.hosts["k8s-03"].phase.in_flight(),
        "{}",
        state.hosts["k8s-03"].phase
    );
    assert_eq!(state.hosts["k8s-01"].phase, Phase::Queued);
    assert_eq!(state.hosts["k8s-02"].phase, Phase::Queued);
    let why = state.hosts["k8s-01"].reason.as_deref().unwrap_or_default();
    assert!(why.starts_with("min_standing"), "{why}");
}

#[test]
fn a_reprovision_starts_the_named_hosts_alone_and_a_waiting_plan_keeps_waiting() {
    // Rollout 1 waits for approval; force_provision queues every host.
    let model = lab(|d| {
        d.site.policy.force_provision = true;
        d.site.policy.windows.clear();
    });
    let mut h = H::new(model, "2026-11-22T12:00:00Z");
    h.start();
    let waiting = h.state.rollout.clone().unwrap();
    assert_eq!(waiting.approval, Approval::Pending);
    assert!(h.step(&[]).is_empty());

    let (s, plan) = h
        .engine
        .reprovision(&h.state, &["storage-01".into()], false, h.now)
        .unwrap();
    h.state.apply(&s);
    // The plan lists exactly the host named, as reprovisioned.
    assert_eq!(plan.hosts.len(), 1, "{plan}");
    assert_eq!(plan.hosts[0].name, "storage-01");
    assert_eq!(
        plan.hosts[0].action,
        vaquero_engine::PlanAction::Reprovision
    );
    assert_eq!(plan.summary.reprovision, 1);
    assert!(plan.requested);
    let text = plan.to_string();
    assert!(text.contains("1 to reprovision"), "{text}");
    assert!(!text.contains("k8s-"), "{text}");

    // Only storage-01 is acted on; the rollout is the same, still waiting.
    let a = h.step(&[]);
    assert!(!a.is_empty());
    assert!(a.iter().all(|a| a.host == "storage-01"), "{a:?}");
    assert_eq!(h.state.rollout.as_ref(), Some(&waiting));
    for k in ["k8s-01", "k8s-02", "k8s-03"] {
        assert_eq!(h.host(k).phase, Phase::Queued, "{k}");
    }
    // Approving later still works, and starts the others.
    let s = h.engine.approve(&h.state, waiting.id).unwrap();
    h.state.apply(&s);
    let a = h.step(&[]);
    assert!(a.iter().any(|a| a.host.starts_with("k8s-")), "{a:?}");

    // Unknown hosts are named; never_provision hosts are refused.
    let e = h
        .engine
        .reprovision(&h.state, &["nope".into()], false, h.now)
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn a_reprovision_waits_for_the_reboot_windows_unless_now() {
    // The lab: 22:00-06:00 Europe/Berlin; 12:00 UTC is outside.
    let model = lab(|d| d.site.policy.auto_apply = true);
    for (skip, cycles) in [(false, false), (true, true)] {
        let mut h = H::new(model.clone(), "2026-11-22T12:00:00Z");
        // New hosts, not forced: they wait to netboot by themselves.
        h.start();
        let (s, _) = h
            .engine
            .reprovision(&h.state, &["storage-01".into()], skip, h.now)
            .unwrap();
        h.state.apply(&s);
        h.step(&[]);
        let a = h.ok("storage-01");
        assert_eq!(
            of(&a, "storage-01").contains(&&ActionKind::PowerCycle),
            cycles,
            "skip_windows {skip}: {a:?}"
        );
    }
}
