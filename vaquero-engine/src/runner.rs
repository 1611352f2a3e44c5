//! [`Runner`]: one site's control half joined to the site through a
//! [`SiteLink`] — the one copy of the step loop, for standalone (an
//! in-process [`LocalSite`](crate::transport::LocalSite)) and for a
//! server (a link to a remote agent).
//!
//! Each [`tick`](Runner::tick) takes what the site observed and the
//! results of finished tasks, runs one [`Control::step`] (engine step,
//! commit, execution records), and hands the tasks to the site. A new
//! model is planned with [`adopt`](Runner::adopt) and sent to the site.
//! After a crash, [`Runner::open`] reloads the state and sends again the
//! tasks whose outcome was never committed.

use std::sync::Arc;

use jiff::Timestamp;
use vaquero_model::{SiteModel, SotFiles};

use crate::Error;
use crate::command::{Command, CommandFailure};
use crate::control::Control;
use crate::decide::Follower;
use crate::engine::EngineConfig;
use crate::store::Store;
use crate::transport::SiteLink;

/// One site's control half and its link to the site.
pub struct Runner<S: Store + ?Sized + 'static, L: SiteLink> {
    control: Control<S>,
    link: L,
}

impl<S: Store + ?Sized + 'static, L: SiteLink> std::fmt::Debug for Runner<S, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

impl<S: Store + ?Sized + 'static, L: SiteLink> Runner<S, L> {
    /// Loads the site's state from `store` serving `model` (call
    /// [`adopt`](Self::adopt) next), and sends the site again what was
    /// issued and never answered.
    pub async fn open(
        store: Arc<S>,
        model: Arc<SiteModel>,
        config: EngineConfig,
        follower: Arc<dyn Follower>,
        source: String,
        mut link: L,
        now: Timestamp,
    ) -> Result<Self, Error> {
        let (control, resumed) = Control::open(store, model, config, follower, source, now).await?;
        link.send_tasks(resumed);
        Ok(Runner { control, link })
    }

    /// The control half.
    pub fn control(&self) -> &Control<S> {
        &self.control
    }

    /// Adds `policies` to the built-in ones ([`Control::add_policies`]).
    pub fn add_policies(
        &mut self,
        policies: impl IntoIterator<Item = Arc<dyn crate::policy::Policy>>,
    ) -> Result<(), Error> {
        self.control.add_policies(policies)
    }

    /// The link to the site.
    pub fn link(&self) -> &L {
        &self.link
    }

    /// The link to the site, to change it.
    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    /// Plans and starts `model` (see [`Control::adopt`]); the site serves
    /// it when it is new.
    pub async fn adopt(
        &mut self,
        model: Option<Arc<SiteModel>>,
        files: Option<&SotFiles>,
        now: Timestamp,
    ) -> Result<(), Error> {
        if let Some(m) = self.control.adopt(model, files, now).await? {
            self.link.send_model(m);
        }
        Ok(())
    }

    /// A revision that does not validate (see [`Control::refuse`]).
    pub async fn refuse(&mut self, revision: String, errors: Vec<String>, now: Timestamp) {
        self.control.refuse(revision, errors, now).await;
    }

    /// Forgets the refused revision unless it is `head` (see
    /// [`Control::refused_unless`]).
    pub async fn refused_unless(&mut self, head: &str) {
        self.control.refused_unless(head).await;
    }

    /// Carries out an operator's command.
    pub async fn command(
        &mut self,
        cmd: Command,
        now: Timestamp,
    ) -> Result<String, CommandFailure> {
        self.control.command(cmd, now).await
    }

    /// One step on what the site sent since the last: returns how many
    /// tasks went out, and whether anything changed.
    pub async fn tick(&mut self, now: Timestamp) -> Result<(usize, bool), Error> {
        let held = self.control.hold(self.link.hold(now));
        let inbound = self.link.drain();
        let (tasks, changed) = self.control.step(inbound, now).await?;
        self.link.committed();
        let n = tasks.len();
        self.link.send_tasks(tasks);
        Ok((n, changed || held))
    }
}
