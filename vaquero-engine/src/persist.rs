//! The engine's state in a [`Store`]: write-ahead.
//!
//! A [`Step`] is committed (one transaction: changed hosts, removed hosts,
//! the rollout) *before* its actions are carried out. A host's pending
//! action is part of its state, so after a crash the state says which
//! actions were issued and never answered; [`Engine::resume`] asks for
//! them again, and nothing whose outcome was committed is asked twice.
//!
//! Keys (JSON values):
//! - `v1/sites/{site}/rollout`
//! - `v1/sites/{site}/hosts/{host}`
//!
//! [`Engine::resume`]: crate::Engine::resume

use std::sync::Arc;

use crate::state::Step;
use crate::state::{HostState, Rollout, SiteState};
use crate::store::{Revision, Store, StoreFailure, TxnOp, TxnResult};

/// Loading or saving the engine's state failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistFailure {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// A stored value does not decode.
    #[error("stored value at {key} does not decode: {error}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoding error.
        error: String,
    },
    /// A write conflicted (another writer; not with a single engine).
    #[error("conflicting write to the engine's state")]
    Conflict,
}

/// One site's engine state in a store.
#[derive(Debug, Clone)]
pub struct StateStore<S: ?Sized> {
    store: Arc<S>,
    site: String,
}

impl<S: Store + ?Sized> StateStore<S> {
    /// The state of `site` in `store`.
    pub fn new(store: Arc<S>, site: &str) -> Self {
        StateStore {
            store,
            site: site.to_owned(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    fn rollout_key(&self) -> String {
        format!("v1/sites/{}/rollout", self.site)
    }

    fn hosts_prefix(&self) -> String {
        format!("v1/sites/{}/hosts/", self.site)
    }

    /// Reads the whole state (empty when nothing is stored).
    pub async fn load(&self) -> Result<SiteState, PersistFailure> {
        let mut state = SiteState::new(&self.site);
        if let Some(kv) = self.store.get(&self.rollout_key()).await? {
            state.rollout = Some(decode::<Rollout>(&kv.key, &kv.value)?);
        }
        for kv in self.store.list(&self.hosts_prefix()).await? {
            let h: HostState = decode(&kv.key, &kv.value)?;
            state.hosts.insert(h.name.clone(), h);
        }
        Ok(state)
    }

    /// Commits the state changes of `step` in one transaction; `None` when
    /// it changes nothing.
    pub async fn commit(&self, step: &Step) -> Result<Option<Revision>, PersistFailure> {
        self.commit_with(step, Vec::new()).await
    }

    /// Commits the state changes of `step` and the writes of `with` in
    /// one transaction: what a step took in (its timeline entries, the
    /// numbers of the observations it took) is durable exactly when the
    /// state it led to is. `None` when there is nothing to write.
    pub async fn commit_with(
        &self,
        step: &Step,
        with: Vec<TxnOp>,
    ) -> Result<Option<Revision>, PersistFailure> {
        let mut ops = with;
        ops.reserve(step.hosts.len() + step.removed.len() + 1);
        if let Some(r) = &step.rollout {
            ops.push(TxnOp::Put(self.rollout_key(), encode(r)));
        }
        let prefix = self.hosts_prefix();
        for h in &step.hosts {
            ops.push(TxnOp::Put(format!("{prefix}{}", h.name), encode(h)));
        }
        for name in &step.removed {
            ops.push(TxnOp::Delete(format!("{prefix}{name}")));
        }
        if ops.is_empty() {
            return Ok(None);
        }
        match self.store.txn(Vec::new(), ops).await? {
            TxnResult::Committed(rev) => Ok(Some(rev)),
            TxnResult::Conflict => Err(PersistFailure::Conflict),
        }
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, PersistFailure> {
    serde_json::from_slice(bytes).map_err(|e| PersistFailure::Corrupt {
        key: key.to_owned(),
        error: e.to_string(),
    })
}
