//! [`Runner`]: the thin I/O around the pure [`Engine`] for one site.
//!
//! Each [`tick`](Runner::tick): take the events observed since the last
//! one (action outcomes, and what the boot service saw through
//! [`EngineBootState`]), run one engine step, **commit its state changes
//! to the store**, then record each action (execution record, in
//! progress) and carry it out in the background — power and boot-device
//! operations through the host's [`PowerDriver`], jobs through the
//! [`JobRunner`]. Outcomes come back as events for the next tick. After a
//! crash, [`Runner::open`] reloads the state and re-issues the actions
//! whose outcome was never committed ([`Engine::resume`]).

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::mpsc;
use vaquero_lom::{BootDevice, BootOverride, PowerAction, PowerDriver};

use crate::boot_state::EngineBootState;
use crate::engine::{Engine, Step};
use crate::event::{Action, ActionKind, Event, EventKind, Outcome};
use crate::job::JobRunner;
use crate::persist::{PersistError, StateStore};
use crate::plan::Plan;
use crate::record::{RecordStatus, RecordStep, Records};
use crate::state::SiteState;
use crate::store::Store;

/// One site's engine, its store and the means to act.
pub struct Runner<S: Store + ?Sized + 'static> {
    engine: Engine,
    state: SiteState,
    states: StateStore<S>,
    records: Arc<Records<S>>,
    drivers: Arc<HashMap<String, Arc<dyn PowerDriver>>>,
    jobs: Arc<JobRunner>,
    boot: Arc<EngineBootState>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl<S: Store + ?Sized + 'static> std::fmt::Debug for Runner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("site", &self.state.site)
            .field("hosts", &self.state.hosts.len())
            .finish_non_exhaustive()
    }
}

impl<S: Store + ?Sized + 'static> Runner<S> {
    /// Loads the site's state from `store`, and re-issues what was issued
    /// and never answered. `drivers` maps host names to their (managed)
    /// power drivers.
    pub async fn open(
        engine: Engine,
        store: Arc<S>,
        drivers: HashMap<String, Arc<dyn PowerDriver>>,
        jobs: JobRunner,
        boot: Arc<EngineBootState>,
        now: Timestamp,
    ) -> Result<Self, PersistError> {
        let site = engine.model().site().id.clone();
        let states = StateStore::new(store.clone(), &site);
        let state = states.load().await?;
        boot.load(engine.model(), &state);
        let (tx, rx) = mpsc::unbounded_channel();
        let runner = Runner {
            records: Arc::new(Records::new(store, &site)),
            engine,
            state,
            states,
            drivers: Arc::new(drivers),
            jobs: Arc::new(jobs),
            boot,
            tx,
            rx,
        };
        for a in runner.engine.resume(&runner.state) {
            runner.carry_out(a, now).await?;
        }
        Ok(runner)
    }

    /// The state as last committed.
    pub fn state(&self) -> &SiteState {
        &self.state
    }

    /// The execution records.
    pub fn records(&self) -> &Records<S> {
        &self.records
    }

    async fn commit(&mut self, step: &Step) -> Result<(), PersistError> {
        self.states.commit(step).await?;
        self.state.apply(step);
        self.boot.update(self.engine.model(), &step.hosts);
        Ok(())
    }

    /// Starts `plan` (see [`Engine::start`]).
    pub async fn start(&mut self, plan: &Plan, now: Timestamp) -> Result<(), crate::RunnerError> {
        let step = self.engine.start(&self.state, plan, now)?;
        self.commit(&step).await?;
        Ok(())
    }

    /// Approves the waiting rollout `id`.
    pub async fn approve(&mut self, id: u64) -> Result<(), crate::RunnerError> {
        let step = self.engine.approve(&self.state, id)?;
        self.commit(&step).await?;
        Ok(())
    }

    /// One step: returns how many actions were started.
    pub async fn tick(&mut self, now: Timestamp) -> Result<usize, PersistError> {
        let mut events = self.boot.take_events();
        while let Ok(e) = self.rx.try_recv() {
            events.push(e);
        }
        let step = self.engine.step(&self.state, &events, now);
        // Write-ahead: the state that says what is being done is durable
        // before anything is done.
        self.commit(&step).await?;
        let n = step.actions.len();
        for a in step.actions {
            self.carry_out(a, now).await?;
        }
        Ok(n)
    }

    /// Records `a` and starts it in the background.
    async fn carry_out(&self, a: Action, now: Timestamp) -> Result<(), PersistError> {
        if let ActionKind::Notice(n) = &a.kind {
            tracing::info!(host = %a.host, rollout = ?a.rollout, notice = ?n, "host");
            metrics::counter!("engine_notices_total", "notice" => notice_name(n)).increment(1);
            return Ok(());
        }
        self.records.begin(&a, now).await?;
        metrics::counter!("engine_actions_total", "action" => a.kind.name()).increment(1);
        let drivers = self.drivers.clone();
        let jobs = self.jobs.clone();
        let records = self.records.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let started = Timestamp::now();
            let (outcome, steps) = perform(&a, &drivers, &jobs, started).await;
            let ended = Timestamp::now();
            if let Err(e) = records.finish(&a.host, a.seq, &outcome, steps, ended).await {
                tracing::warn!(host = %a.host, seq = a.seq, error = %e, "execution record not finished");
            }
            // The receiver lives as long as the runner.
            let _ = tx.send(Event {
                host: a.host,
                kind: EventKind::Result {
                    seq: a.seq,
                    outcome,
                },
            });
        });
        Ok(())
    }
}

fn notice_name(n: &crate::event::Notice) -> &'static str {
    use crate::event::Notice;
    match n {
        Notice::Started => "started",
        Notice::StageDone { .. } => "stage_done",
        Notice::Done => "done",
        Notice::Failed { .. } => "failed",
        Notice::Halted { .. } => "halted",
        Notice::Retry { .. } => "retry",
    }
}

async fn perform(
    a: &Action,
    drivers: &HashMap<String, Arc<dyn PowerDriver>>,
    jobs: &JobRunner,
    started: Timestamp,
) -> (Outcome, Vec<RecordStep>) {
    let power = |r: Result<(), vaquero_lom::LomError>| match r {
        Ok(()) => Outcome::ok(),
        Err(e) => Outcome::failed(e.is_transient(), e.to_string()),
    };
    match &a.kind {
        ActionKind::SetBootNetwork | ActionKind::PowerCycle => {
            let Some(d) = drivers.get(&a.host) else {
                return (
                    Outcome::failed(false, format!("{} has no BMC driver", a.host)),
                    Vec::new(),
                );
            };
            let o = if a.kind == ActionKind::SetBootNetwork {
                power(d.set_boot_device(BootOverride::once(BootDevice::Pxe)).await)
            } else {
                power(d.power(PowerAction::Cycle).await)
            };
            (o, Vec::new())
        }
        ActionKind::RunJob { job, .. } => {
            let (o, tries) = jobs.run(job).await;
            let ended = Timestamp::now();
            let steps = tries
                .into_iter()
                .map(|t| RecordStep {
                    name: format!("try {}", t.number),
                    started,
                    ended: Some(ended),
                    status: if t.result == "ok" {
                        RecordStatus::Done
                    } else {
                        RecordStatus::Error
                    },
                    log: if t.output.is_empty() {
                        t.result
                    } else {
                        format!("{}: {}", t.result, t.output)
                    },
                })
                .collect();
            (o, steps)
        }
        ActionKind::Notice(_) => (Outcome::ok(), Vec::new()),
    }
}

/// A runner operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The engine refused.
    #[error(transparent)]
    Engine(#[from] crate::EngineError),
    /// The store failed.
    #[error(transparent)]
    Persist(#[from] PersistError),
}
