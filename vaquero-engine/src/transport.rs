//! What joins the control half to a site: tasks and models out,
//! observations and task results in.
//!
//! [`SiteLink`] is the control half's side of the join. [`LocalSite`]
//! joins in-process (standalone, tests): tasks go straight to an
//! [`Actor`], observations come through a channel. A link over HTTPS to a
//! remote agent implements the same trait, so [`Runner`](crate::Runner)
//! holds the one copy of the step loop for both.
//!
//! Every task and result is idempotent ([`Task::key`]): a link may
//! deliver a task twice, or a result twice, and nothing is done twice.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use vaquero_lom::PowerDriver;
use vaquero_model::SiteModel;

use crate::act::{Actor, Task, TaskResult};
use crate::observe::{Kept, Observation, Observed};

/// What a site sent since it was last asked.
#[derive(Debug, Default)]
pub struct Inbound {
    /// What the site services saw, oldest first.
    pub observations: Vec<Observation>,
    /// Results of tasks.
    pub results: Vec<TaskResult>,
    /// Store writes that record what was taken (a remote site's spool
    /// numbers), committed in one transaction with the step that takes
    /// it: after a crash, what was taken is either kept with its mark or
    /// sent again.
    pub writes: Vec<crate::store::TxnOp>,
}

/// The control half's side of the join to one site.
pub trait SiteLink: Send {
    /// Hands `tasks` to the site, to be carried out once each.
    fn send_tasks(&mut self, tasks: Vec<Task>);
    /// The site serves `model` from now on (and powers its hosts through
    /// that model's BMCs).
    fn send_model(&mut self, model: Arc<SiteModel>);
    /// What arrived since the last call, without waiting.
    fn drain(&mut self) -> Inbound;
    /// What the last [`drain`](Self::drain) gave is committed to the
    /// store: a link may acknowledge it to the site now.
    fn committed(&mut self) {}
    /// Why no new host may start at the site now (it has not been heard
    /// from), or `None`.
    fn hold(&self, now: jiff::Timestamp) -> Option<String> {
        let _ = now;
        None
    }
}

/// Makes the power drivers of a model's hosts.
pub type DriverFactory =
    Box<dyn Fn(&SiteModel) -> HashMap<String, Arc<dyn PowerDriver>> + Send + Sync>;

/// Told of each model the site serves from now on.
pub type ModelHook = Box<dyn FnMut(&Arc<SiteModel>) + Send>;

/// A site in the same process: an [`Actor`] carries out the tasks, the
/// site services send observations to [`observer`](Self::observer).
pub struct LocalSite {
    actor: Actor,
    drivers: DriverFactory,
    hooks: Vec<ModelHook>,
    results_tx: mpsc::UnboundedSender<TaskResult>,
    results: mpsc::UnboundedReceiver<TaskResult>,
    observe_tx: mpsc::UnboundedSender<Observed>,
    observations: mpsc::UnboundedReceiver<Observed>,
    /// Told when what the last drain gave is committed.
    unkept: Vec<Kept>,
}

impl std::fmt::Debug for LocalSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSite").finish_non_exhaustive()
    }
}

impl LocalSite {
    /// A site whose `actor` carries out the tasks; `drivers` makes the
    /// power drivers of each new model's hosts.
    pub fn new(actor: Actor, drivers: DriverFactory) -> Self {
        let (results_tx, results) = mpsc::unbounded_channel();
        let (observe_tx, observations) = mpsc::unbounded_channel();
        LocalSite {
            actor,
            drivers,
            hooks: Vec::new(),
            results_tx,
            results,
            observe_tx,
            observations,
            unkept: Vec::new(),
        }
    }

    /// Calls `hook` with each new model (the site services swap to it).
    pub fn on_model(mut self, hook: impl FnMut(&Arc<SiteModel>) + Send + 'static) -> Self {
        self.hooks.push(Box::new(hook));
        self
    }

    /// Where the site services send what they observe.
    pub fn observer(&self) -> mpsc::UnboundedSender<Observed> {
        self.observe_tx.clone()
    }
}

impl SiteLink for LocalSite {
    fn send_tasks(&mut self, tasks: Vec<Task>) {
        for t in tasks {
            self.actor.spawn(t, self.results_tx.clone());
        }
    }

    fn send_model(&mut self, model: Arc<SiteModel>) {
        self.actor.replace_drivers((self.drivers)(&model));
        for h in &mut self.hooks {
            h(&model);
        }
    }

    fn drain(&mut self) -> Inbound {
        let mut inbound = Inbound::default();
        // Not told by now: the step that took them failed.
        self.unkept.clear();
        while let Ok((o, kept)) = self.observations.try_recv() {
            inbound.observations.push(o);
            self.unkept.extend(kept);
        }
        while let Ok(r) = self.results.try_recv() {
            inbound.results.push(r);
        }
        inbound
    }

    fn committed(&mut self) {
        for k in self.unkept.drain(..) {
            k.done();
        }
    }
}
