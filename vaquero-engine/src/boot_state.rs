//! [`EngineBootState`]: the boot service's view of the engine
//! ([`vaquero_ipxe::BootState`]).
//!
//! The runner calls [`EngineBootState::update`] after every committed step;
//! the boot service asks [`current`](BootState::current) per request (a
//! read lock and a map lookup) and reports checkpoints, which become
//! [`EventKind::Checkpoint`] events the runner takes with
//! [`EngineBootState::take_events`]. The boot service's other events
//! (script and config fetches) are pushed with [`EngineBootState::push`].

use std::sync::Mutex;

use vaquero_ipxe::{BootState, Current, MemoryBootState};
use vaquero_model::SiteModel;

use crate::event::{Event, EventKind};
use crate::state::{HostState, SiteState};

/// What each host boots now, as the engine's state says.
#[derive(Debug, Default)]
pub struct EngineBootState {
    /// What each host boots and which checkpoints were reported.
    inner: MemoryBootState,
    events: Mutex<Vec<Event>>,
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
        h.current(boot)
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

    /// Adds an observed event (script or config fetched, DHCP).
    pub fn push(&self, e: Event) {
        if let Ok(mut v) = self.events.lock() {
            v.push(e);
        }
    }

    /// The events observed since the last call.
    pub fn take_events(&self) -> Vec<Event> {
        self.events
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

impl BootState for EngineBootState {
    fn current(&self, host: &str) -> Current {
        self.inner.current(host)
    }

    fn record_checkpoint(&self, host: &str, attempt: u64) -> bool {
        let first = self.inner.record_checkpoint(host, attempt);
        if first {
            self.push(Event {
                host: host.to_owned(),
                kind: EventKind::Checkpoint { attempt },
            });
        }
        first
    }
}
