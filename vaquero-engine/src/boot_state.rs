//! [`EngineBootState`]: the boot service's view of the engine
//! ([`vaquero_ipxe::BootState`]).
//!
//! The runner calls [`EngineBootState::update`] after every committed step;
//! the boot service asks [`current`](BootState::current) per request (a
//! read lock and a map lookup) and reports checkpoints, which become
//! [`EventKind::Checkpoint`] events the runner takes with
//! [`EngineBootState::take_events`]. The boot service's other events
//! (script and config fetches) are pushed with [`EngineBootState::push`].

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};

use vaquero_ipxe::{BootState, Current};
use vaquero_model::SiteModel;

use crate::event::{Event, EventKind};
use crate::state::{HostState, SiteState};

/// What each host boots now, as the engine's state says.
#[derive(Debug, Default)]
pub struct EngineBootState {
    current: RwLock<HashMap<String, Current>>,
    checkpoints: Mutex<HashSet<(String, u64)>>,
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
        let map = state
            .hosts
            .values()
            .map(|h| (h.name.clone(), Self::current_of(model, h)))
            .collect();
        if let Ok(mut m) = self.current.write() {
            *m = map;
        }
    }

    /// Takes the hosts a committed step changed.
    pub fn update(&self, model: &SiteModel, changed: &[HostState]) {
        if changed.is_empty() {
            return;
        }
        if let Ok(mut m) = self.current.write() {
            for h in changed {
                m.insert(h.name.clone(), Self::current_of(model, h));
            }
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
        self.current
            .read()
            .ok()
            .and_then(|m| m.get(host).cloned())
            .unwrap_or_else(|| Current::LocalDisk("nothing scheduled".into()))
    }

    fn record_checkpoint(&self, host: &str, attempt: u64) -> bool {
        let first = self
            .checkpoints
            .lock()
            .is_ok_and(|mut s| s.insert((host.to_owned(), attempt)));
        if first {
            self.push(Event {
                host: host.to_owned(),
                kind: EventKind::Checkpoint { attempt },
            });
        }
        first
    }
}
