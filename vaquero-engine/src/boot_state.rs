//! [`EngineBootState`]: the boot service's view of the engine
//! ([`vaquero_ipxe::BootState`]).
//!
//! The deciding half calls [`EngineBootState::update`] after every
//! committed step; the boot service asks [`current`](BootState::current)
//! per request (a read lock and a map lookup). What the boot service sees —
//! checkpoints included — reaches the engine as observations
//! ([`crate::Observation`]), not through this type.

use vaquero_ipxe::{BootState, Current, MemoryBootState};
use vaquero_model::SiteModel;

use crate::state::{HostState, Phase, SiteState};

/// What each host boots now, as the engine's state says.
#[derive(Debug, Default)]
pub struct EngineBootState {
    /// What each host boots and which checkpoints were reported.
    inner: MemoryBootState,
}

/// What the boot service should serve a host now, given the boot id of its
/// current stage.
pub fn current(h: &HostState, boot: Option<&str>) -> Current {
    match (h.phase.booting(), boot) {
        (true, Some(boot)) => Current::Stage {
            stage: h.stage,
            boot: boot.to_owned(),
            attempt: h.attempt,
        },
        _ => Current::LocalDisk(match h.phase {
            Phase::Done => "workflow finished".into(),
            Phase::Skipped => "never_provision".into(),
            Phase::Failed => "provisioning failed".into(),
            Phase::Halted => "rollout halted".into(),
            Phase::Idle => "nothing scheduled".into(),
            p => format!("not netbooting ({p})"),
        }),
    }
}

impl EngineBootState {
    /// Every host boots from disk until [`update`](Self::update)d.
    pub fn new() -> Self {
        Self::default()
    }

    fn current_of(model: &SiteModel, h: &HostState) -> Current {
        let boot = model
            .by_name(&h.name)
            .and_then(|r| model.stage(r.host, h.stage));
        current(h, boot)
    }

    /// Takes the whole state (at start, after a restart).
    pub fn load(&self, model: &SiteModel, state: &SiteState) {
        for h in state.hosts.values() {
            self.inner.set(&h.name, Self::current_of(model, h));
        }
    }

    /// Takes the hosts a committed step changed.
    pub fn update(&self, model: &SiteModel, changed: &[HostState]) {
        for h in changed {
            self.inner.set(&h.name, Self::current_of(model, h));
        }
    }
}

impl crate::decide::Follower for EngineBootState {
    fn load(&self, model: &SiteModel, state: &SiteState) {
        EngineBootState::load(self, model, state);
    }
    fn update(&self, model: &SiteModel, changed: &[HostState]) {
        EngineBootState::update(self, model, changed);
    }
}

impl BootState for EngineBootState {
    fn current(&self, host: &str) -> Current {
        self.inner.current(host)
    }

    fn record_checkpoint(&self, host: &str, attempt: u64) -> bool {
        self.inner.record_checkpoint(host, attempt)
    }

    fn forget_checkpoint(&self, host: &str, attempt: u64) {
        self.inner.forget_checkpoint(host, attempt);
    }
}
