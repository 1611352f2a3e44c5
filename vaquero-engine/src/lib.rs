//! Vaquero's control plane: the pure state engine (desired + observed +
//! `now` → actions), rollout policies, jobs, execution records, the `Store`
//! trait (memory, redb, etcd), leader election, and the server and agent
//! services.
//!
//! **Status:** in progress (issue 7). Built so far: [`store`] — the
//! `Store` trait with an in-memory and the embedded redb implementation.
//! Next: the host lifecycle state machine, the engine step, plans,
//! policies, jobs, execution records.

pub mod store;

pub use store::{
    Compare, KeyValue, MemoryStore, RedbStore, Revision, Store, StoreError, TxnOp, TxnResult,
};
