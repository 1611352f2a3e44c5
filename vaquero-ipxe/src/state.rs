//! What each host should boot now — the engine's answer, behind a trait so
//! the boot service can be used without it. [`MemoryBootState`] is the
//! in-memory implementation for tests, labs and tools.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

/// A host's current step, as the boot service needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Current {
    /// Boot this stage of the host's workflow.
    Stage {
        /// Index of the stage in the workflow (0-based).
        stage: usize,
        /// The boot id of that stage.
        boot: String,
        /// The boot attempt; events and checkpoint tokens carry it.
        attempt: u64,
    },
    /// Nothing to do: boot from the local disk. The reason is shown on the
    /// machine's console (workflow finished, `never_provision`, not
    /// scheduled, …).
    LocalDisk(String),
}

/// The source of truth for "what should this host boot now". The engine
/// implements it from its stored state; calls must be cheap (they are made
/// per HTTP request).
pub trait BootState: Send + Sync + 'static {
    /// The current step of `host`.
    fn current(&self, host: &str) -> Current;

    /// Records that `host` reached the checkpoint of `attempt`. Returns
    /// `true` the first time, `false` when it was already recorded (the
    /// installer retried): the caller reports it once.
    fn record_checkpoint(&self, host: &str, attempt: u64) -> bool;

    /// Undoes [`record_checkpoint`](Self::record_checkpoint): the event
    /// of the checkpoint was not kept, so the installer's retry must be
    /// recorded as new.
    fn forget_checkpoint(&self, host: &str, attempt: u64);
}

/// In-memory [`BootState`]: hosts are told what to boot by [`set`], and
/// boot from disk otherwise.
///
/// [`set`]: MemoryBootState::set
#[derive(Debug, Default)]
pub struct MemoryBootState {
    current: RwLock<HashMap<String, Current>>,
    checkpoints: RwLock<HashSet<(String, u64)>>,
}

impl MemoryBootState {
    /// Every host boots from disk until told otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets what `host` boots now.
    pub fn set(&self, host: &str, current: Current) {
        if let Ok(mut m) = self.current.write() {
            m.insert(host.to_owned(), current);
        }
    }

    /// Whether `host` reached the checkpoint of `attempt`.
    pub fn checkpointed(&self, host: &str, attempt: u64) -> bool {
        self.checkpoints
            .read()
            .is_ok_and(|s| s.contains(&(host.to_owned(), attempt)))
    }
}

impl BootState for MemoryBootState {
    fn current(&self, host: &str) -> Current {
        self.current
            .read()
            .ok()
            .and_then(|m| m.get(host).cloned())
            .unwrap_or_else(|| Current::LocalDisk("nothing scheduled".into()))
    }

    fn record_checkpoint(&self, host: &str, attempt: u64) -> bool {
        self.checkpoints
            .write()
            .is_ok_and(|mut s| s.insert((host.to_owned(), attempt)))
    }

    fn forget_checkpoint(&self, host: &str, attempt: u64) {
        if let Ok(mut s) = self.checkpoints.write() {
            s.remove(&(host.to_owned(), attempt));
        }
    }
}
