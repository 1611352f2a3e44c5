//! The deciding half: events in → engine step → commit → tasks out.
//!
//! A [`Decider`] owns one site's [`Engine`], its state in a [`Store`] and
//! its execution records. Each [`step`](Decider::step) runs the engine on
//! the events observed since the last one, **commits the state changes to
//! the store**, records each action (execution record, in progress) and
//! returns the [`Task`]s to carry out. Results come back through
//! [`finished`](Decider::finished), which finishes the record and gives
//! the event for the next step. After a crash, [`Decider::open`] reloads
//! the state and returns the tasks whose outcome was never committed
//! ([`Engine::resume`]).

use std::sync::Arc;

use jiff::Timestamp;
use vaquero_model::SiteModel;

use crate::Error;
use crate::act::{Task, TaskResult};
use crate::engine::Engine;
use crate::event::{Action, ActionKind, Event, Notice};
use crate::persist::{PersistFailure, StateStore};
use crate::plan::Plan;
use crate::record::Records;
use crate::state::{HostState, SiteState, Step};
use crate::store::{Store, TxnOp};

/// Follows the committed state: told the whole state when it is loaded
/// or a new model is served, then the hosts each committed step changed.
/// The boot service's view ([`EngineBootState`](crate::EngineBootState),
/// feature `standalone`) is one; `()` follows nothing.
pub trait Follower: Send + Sync {
    /// The whole state, under `model` (at start, after a new model).
    fn load(&self, model: &SiteModel, state: &SiteState);
    /// The hosts a committed step changed.
    fn update(&self, model: &SiteModel, changed: &[HostState]);
}

impl Follower for () {
    fn load(&self, _: &SiteModel, _: &SiteState) {}
    fn update(&self, _: &SiteModel, _: &[HostState]) {}
}

/// One site's engine, its state and records in a store.
pub struct Decider<S: Store + ?Sized + 'static> {
    engine: Engine,
    state: SiteState,
    states: StateStore<S>,
    records: Arc<Records<S>>,
    boot: Arc<dyn Follower>,
}

impl<S: Store + ?Sized + 'static> std::fmt::Debug for Decider<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decider")
            .field("site", &self.state.site)
            .field("hosts", &self.state.hosts.len())
            .finish_non_exhaustive()
    }
}

impl<S: Store + ?Sized + 'static> Decider<S> {
    /// Loads the site's state from `store`; returns the decider and the
    /// tasks that were issued and never answered (to be carried out
    /// again). `boot` follows every committed change (what each host
    /// boots).
    pub async fn open(
        engine: Engine,
        store: Arc<S>,
        boot: Arc<dyn Follower>,
        now: Timestamp,
    ) -> Result<(Self, Vec<Task>), PersistFailure> {
        let site = engine.model().site().id.clone();
        let states = StateStore::new(store.clone(), &site);
        let state = states.load().await?;
        boot.load(engine.model(), &state);
        let decider = Decider {
            records: Arc::new(Records::new(store, &site)),
            engine,
            state,
            states,
            boot,
        };
        let mut tasks = Vec::new();
        for a in decider.engine.resume(&decider.state) {
            tasks.extend(decider.issue(a, now).await?);
        }
        Ok((decider, tasks))
    }

    /// The state as last committed.
    pub fn state(&self) -> &SiteState {
        &self.state
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Serves a new model (a new SoT revision): the engine is replaced,
    /// the state kept, and the boot state reloaded from it. Plan and
    /// [`start`](Self::start) the change next.
    pub fn replace_engine(&mut self, engine: Engine) {
        self.engine = engine;
        self.boot.load(self.engine.model(), &self.state);
    }

    /// The execution records.
    pub fn records(&self) -> &Records<S> {
        &self.records
    }

    /// The site.
    pub fn site(&self) -> &str {
        &self.state.site
    }

    async fn commit(&mut self, step: &Step) -> Result<(), PersistFailure> {
        self.commit_with(step, Vec::new()).await
    }

    async fn commit_with(&mut self, step: &Step, with: Vec<TxnOp>) -> Result<(), PersistFailure> {
        self.states.commit_with(step, with).await?;
        self.state.apply(step);
        self.boot.update(self.engine.model(), &step.hosts);
        Ok(())
    }

    /// Starts `plan` (see [`Engine::start`]).
    pub async fn start(&mut self, plan: &Plan, now: Timestamp) -> Result<(), Error> {
        let step = self.engine.start(&self.state, plan, now)?;
        self.commit(&step).await?;
        Ok(())
    }

    /// An operator's reprovision of `hosts` (see [`Engine::reprovision`]):
    /// committed; returns the plan that lists them.
    pub async fn reprovision(
        &mut self,
        hosts: &[String],
        skip_windows: bool,
        now: Timestamp,
    ) -> Result<Plan, Error> {
        let (step, plan) = self
            .engine
            .reprovision(&self.state, hosts, skip_windows, now)?;
        self.commit(&step).await?;
        Ok(plan)
    }

    /// Approves the waiting rollout `id`.
    pub async fn approve(&mut self, id: u64) -> Result<(), Error> {
        let step = self.engine.approve(&self.state, id)?;
        self.commit(&step).await?;
        Ok(())
    }

    /// One engine step on `events`: commits its state with the writes of
    /// `with` in one transaction, records its actions, and returns the
    /// tasks to carry out and whether the step changed or did anything
    /// (events that change no host change nothing).
    pub async fn step(
        &mut self,
        events: &[Event],
        with: Vec<TxnOp>,
        now: Timestamp,
    ) -> Result<(Vec<Task>, bool), PersistFailure> {
        let started = std::time::Instant::now();
        let step = self.engine.step(&self.state, events, now);
        let changed = !step.is_empty();
        // Write-ahead: the state that says what is being done is durable
        // before anything is done.
        self.commit_with(&step, with).await?;
        metrics::histogram!("vaquero_engine_step_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let mut tasks = Vec::with_capacity(step.actions.len());
        for a in step.actions {
            tasks.extend(self.issue(a, now).await?);
        }
        Ok((tasks, changed))
    }

    /// Records `a` (notices are logged) and makes it a task.
    async fn issue(&self, a: Action, now: Timestamp) -> Result<Option<Task>, PersistFailure> {
        if let ActionKind::Notice(n) = &a.kind {
            tracing::info!(site = %self.state.site, host = %a.host, rollout = ?a.rollout, notice = ?n, "host");
            metrics::counter!("vaquero_engine_notices_total", "notice" => notice_name(n))
                .increment(1);
            return Ok(None);
        }
        self.records.begin(&a, now).await?;
        metrics::counter!("vaquero_engine_actions_total", "action" => a.kind.name()).increment(1);
        Ok(Some(Task {
            site: self.state.site.clone(),
            action: a,
        }))
    }

    /// Takes a task's result: finishes its execution record (a record
    /// already finished is kept as it is) and returns the engine event
    /// for the next step.
    pub async fn finished(&self, r: &TaskResult) -> Event {
        if let Err(e) = self
            .records
            .finish(&r.host, r.seq, &r.outcome, r.steps.clone(), r.ended)
            .await
        {
            tracing::warn!(host = %r.host, seq = r.seq, error = %e, "execution record not finished");
        }
        r.event()
    }
}

fn notice_name(n: &Notice) -> &'static str {
    match n {
        Notice::Started => "started",
        Notice::StageDone { .. } => "stage_done",
        Notice::Done => "done",
        Notice::Failed { .. } => "failed",
        Notice::Halted { .. } => "halted",
        Notice::Retry { .. } => "retry",
    }
}
