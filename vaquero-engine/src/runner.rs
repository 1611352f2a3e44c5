//! [`Runner`]: one site's deciding and acting halves joined in-process.
//!
//! Each [`tick`](Runner::tick) takes the [`Observation`]s sent to
//! [`observer`](Runner::observer) since the last one and the results of
//! finished tasks, runs one [`Decider::step`] (engine step, commit, execution
//! records), and hands the tasks to the [`Actor`], which carries them out in
//! the background. After a crash, [`Runner::open`] reloads the state and
//! re-issues the tasks whose outcome was never committed.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::mpsc;
use vaquero_lom::PowerDriver;

use crate::act::{Actor, TaskResult};
use crate::decide::Decider;
use crate::decide::Follower;
use crate::engine::Engine;
use crate::job::JobRunner;
use crate::observe::Observation;
use crate::persist::PersistError;
use crate::plan::Plan;
use crate::record::Records;
use crate::state::SiteState;
use crate::store::Store;

/// One site's engine, its store and the means to act.
pub struct Runner<S: Store + ?Sized + 'static> {
    decider: Decider<S>,
    actor: Actor,
    results_tx: mpsc::UnboundedSender<TaskResult>,
    results: mpsc::UnboundedReceiver<TaskResult>,
    observe_tx: mpsc::UnboundedSender<Observation>,
    observations: mpsc::UnboundedReceiver<Observation>,
}

impl<S: Store + ?Sized + 'static> std::fmt::Debug for Runner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("decider", &self.decider)
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
        boot: Arc<dyn Follower>,
        now: Timestamp,
    ) -> Result<Self, PersistError> {
        let (decider, tasks) = Decider::open(engine, store, boot, now).await?;
        let (results_tx, results) = mpsc::unbounded_channel();
        let (observe_tx, observations) = mpsc::unbounded_channel();
        let runner = Runner {
            decider,
            actor: Actor::new(drivers, jobs),
            results_tx,
            results,
            observe_tx,
            observations,
        };
        for t in tasks {
            runner.actor.spawn(t, runner.results_tx.clone());
        }
        Ok(runner)
    }

    /// Where the site services send what they observe.
    pub fn observer(&self) -> mpsc::UnboundedSender<Observation> {
        self.observe_tx.clone()
    }

    /// The state as last committed.
    pub fn state(&self) -> &SiteState {
        self.decider.state()
    }

    /// The execution records.
    pub fn records(&self) -> &Records<S> {
        self.decider.records()
    }

    /// The deciding half.
    pub fn decider(&mut self) -> &mut Decider<S> {
        &mut self.decider
    }

    /// Starts `plan` (see [`Engine::start`]).
    pub async fn start(&mut self, plan: &Plan, now: Timestamp) -> Result<(), crate::RunnerError> {
        self.decider.start(plan, now).await
    }

    /// Approves the waiting rollout `id`.
    pub async fn approve(&mut self, id: u64) -> Result<(), crate::RunnerError> {
        self.decider.approve(id).await
    }

    /// One step: returns how many tasks were started.
    pub async fn tick(&mut self, now: Timestamp) -> Result<usize, PersistError> {
        let mut events = Vec::new();
        while let Ok(o) = self.observations.try_recv() {
            events.extend(o.event());
        }
        while let Ok(r) = self.results.try_recv() {
            events.push(self.decider.finished(&r).await);
        }
        let tasks = self.decider.step(&events, now).await?;
        let n = tasks.len();
        for t in tasks {
            self.actor.spawn(t, self.results_tx.clone());
        }
        Ok(n)
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
