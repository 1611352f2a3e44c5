//! Vaquero's control plane: the pure state engine (desired + observed +
//! `now` → actions), rollout policies, plans, jobs, execution records and
//! the `Store` trait (memory, redb; etcd comes with the HA work).
//!
//! **Status:** in progress (issue 7).

pub mod engine;
pub mod event;
pub mod persist;
pub mod plan;
pub mod policy;
pub mod state;
pub mod store;

pub use engine::{Engine, EngineConfig, EngineError, Step};
pub use event::{Action, ActionKind, Event, EventKind, JobPhase, JobSpec, Notice, Outcome};
pub use persist::{PersistError, StateStore};
pub use plan::{HostPlan, Plan, PlanAction, PlanSet, plan, plan_with_state};
pub use policy::{Decision, Policy, PolicyCtx, WorkflowStats};
pub use state::{Approval, HostState, Pending, Phase, Rollout, SiteState};
pub use store::{
    Compare, KeyValue, MemoryStore, RedbStore, Revision, Store, StoreError, TxnOp, TxnResult,
};
