//! bench/engine: a plan over 100,000 hosts, and one engine step with
//! 10,000 hosts in flight and 10,000 new events (targets: < 1 s, < 50 ms).
//!
//! `cargo bench -p vaquero-engine --bench engine`; `VAQUERO_BENCH_HOSTS`
//! changes the plan's fleet size (the smoke run in scripts/test uses a
//! small one).
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/fleet/mod.rs"]
mod fleet;

use std::sync::{Arc, OnceLock};

use jiff::Timestamp;
use vaquero_engine::{Engine, EngineConfig, Event, EventKind, Phase, SiteState};
use vaquero_model::SiteModel;

// As in the `vaquero` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn hosts() -> usize {
    std::env::var("VAQUERO_BENCH_HOSTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

/// Two revisions of the fleet: the install's command line changes, so
/// every host using `install` is reprovisioned.
fn models() -> &'static (SiteModel, SiteModel) {
    static M: OnceLock<(SiteModel, SiteModel)> = OnceLock::new();
    M.get_or_init(|| {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        fleet::write(a.path(), hosts(), 1, &[]);
        fleet::write(b.path(), hosts(), 2, &[]);
        (fleet::model(a.path()), fleet::model(b.path()))
    })
}

#[divan::bench(sample_count = 5)]
fn plan_change(bencher: divan::Bencher<'_, '_>) {
    let (old, new) = models();
    bencher.bench(|| {
        let p = vaquero_engine::plan(Some(old), new);
        assert!(p.summary.rebooted > 0);
        p
    });
}

/// The model diff alone (part of the plan).
#[divan::bench(sample_count = 5)]
fn diff_only(bencher: divan::Bencher<'_, '_>) {
    let (old, new) = models();
    bencher.bench(|| vaquero_model::diff(old, new));
}

/// 20,000 hosts, 10,000 of them installing, and 10,000 events: half
/// checkpoints (→ validate jobs rendered and issued), half config fetches.
fn step_input() -> &'static (Engine, SiteState, Vec<Event>, Timestamp) {
    static S: OnceLock<(Engine, SiteState, Vec<Event>, Timestamp)> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        fleet::write(dir.path(), 20_000, 1, &[]);
        let model = Arc::new(fleet::model(dir.path()));
        let engine = Engine::new(model.clone(), EngineConfig::default()).unwrap();
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let plan = vaquero_engine::plan(None, &model);
        let mut state = SiteState::new("sim");
        state.apply(&engine.start(&state, &plan, now).unwrap());
        let mut events = Vec::new();
        let mut in_flight = 0;
        for h in state.hosts.values_mut() {
            if h.phase != Phase::Queued || in_flight == 10_000 {
                continue;
            }
            in_flight += 1;
            h.phase = Phase::Installing;
            h.attempt = 1;
            h.boots = 1;
            let kind = if in_flight % 2 == 0 {
                EventKind::Checkpoint { attempt: 1 }
            } else {
                EventKind::Config { attempt: 1 }
            };
            events.push(Event {
                host: h.name.clone(),
                kind,
            });
        }
        assert_eq!(events.len(), 10_000);
        (engine, state, events, now)
    })
}

#[divan::bench(sample_count = 20)]
fn step_10k_in_flight_10k_events(bencher: divan::Bencher<'_, '_>) {
    let (engine, state, events, now) = step_input();
    bencher.bench(|| {
        let s = engine.step(state, events, *now);
        assert!(s.actions.len() >= 5_000);
        s
    });
}

/// Ingest: 10,000 observations of a 20,000-host site (10,000 installing)
/// turned into committed engine state — mapped to events, one engine step,
/// the step committed to a redb file — as standalone's loop does each
/// tick. Observations per second = 10,000 / the time (target ≥ 50,000/s).
#[divan::bench(sample_count = 10)]
fn ingest_10k_observations_committed_to_redb(bencher: divan::Bencher<'_, '_>) {
    let (engine, state, events, now) = step_input();
    let observations: Vec<vaquero_engine::Observation> = events
        .iter()
        .map(|e| {
            let (kind, attempt) = match e.kind {
                EventKind::Checkpoint { attempt } => {
                    (vaquero_engine::ObservationKind::Checkpoint, attempt)
                }
                EventKind::Config { attempt } => (vaquero_engine::ObservationKind::Config, attempt),
                _ => unreachable!(),
            };
            vaquero_engine::Observation {
                at: *now,
                host: e.host.clone(),
                attempt: Some(attempt),
                kind,
                ok: true,
                detail: "install".into(),
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(vaquero_engine::RedbStore::open(&dir.path().join("state.redb")).unwrap());
    let states = vaquero_engine::StateStore::new(store, "sim");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    bencher.bench_local(|| {
        let events: Vec<Event> = observations.iter().filter_map(|o| o.event()).collect();
        let s = engine.step(state, &events, *now);
        rt.block_on(states.commit(&s)).unwrap();
        assert!(s.hosts.len() >= 10_000);
    });
}

fn main() {
    divan::main();
}
