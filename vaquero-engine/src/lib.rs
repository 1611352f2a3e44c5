//! Vaquero's control plane: the pure state engine (desired + observed +
//! `now` → actions), rollout policies, plans, jobs, execution records and
//! the `Store` trait (memory, redb; etcd comes with the HA work).
//!
//! - [`Engine`]: the pure engine of one site and one model. [`Engine::start`]
//!   turns a [`Plan`] into a rollout (approved at once with the site's
//!   `auto_apply`, otherwise by [`Engine::approve`]); [`Engine::step`]
//!   takes the stored [`SiteState`], observed [`Event`]s and `now`, and
//!   returns a [`Step`]: the [`Action`]s to carry out and the state changes
//!   to persist first; [`Engine::resume`] re-asks, after a restart, for
//!   the actions whose outcome never arrived.
//! - [`state`]: the host lifecycle ([`Phase`]) and what is stored.
//! - [`policy`]: the [`Policy`] trait and the built-in policies.
//! - [`plan`](mod@plan): plans (what a model change does to each host, in which
//!   batches) in text and JSON.
//! - [`persist`]: the state in a [`Store`], write-ahead.
//! - [`job`]: the [`Job`] trait, exec/http/ssh jobs and the retrying
//!   [`JobRunner`].
//! - [`record`]: execution records, per host and per rollout, pruned by
//!   age.
//! - [`store`]: the `Store` trait, [`MemoryStore`], [`RedbStore`].
//!
//! - [`observe`]: [`Observation`], what the site services (DHCP, TFTP, the
//!   boot service, checkpoints) saw of a host; the one place that turns
//!   observations into engine events.
//! - [`control`]: [`Control`], one site's control half: models in,
//!   plans, the approval gate, operators' commands, the deciding half;
//!   everything it relies on kept in the store.
//! - [`decide`]: [`Decider`], the deciding half: events in, engine step,
//!   commit, execution records, [`Task`]s out; a [`Follower`] is told of
//!   every committed change.
//! - [`act`]: [`Actor`], the acting half: tasks in, `vaquero-lom` drivers
//!   and jobs, [`TaskResult`]s out (idempotent per task).
//! - [`transport`]: [`SiteLink`](transport::SiteLink), what joins the
//!   control half to a site (tasks and models out, observations and
//!   results in), and [`LocalSite`](transport::LocalSite), the in-process
//!   join.
//! - [`auth`]: user tokens with a role, stored hashed, revocable
//!   ([`Tokens`](auth::Tokens)).
//! - [`agent`]: the agent's disk: the last good model
//!   ([`ModelCache`](agent::ModelCache)) and the observation spool
//!   ([`Spool`](agent::Spool)); with `agent`, the agent itself.
//! - [`runner`]: [`Runner`], a control half and its site link: the one
//!   copy of the step loop.
//!
//! Behind features, the network side:
//!
//! - `server`:
//!   - `api`: the user API (`/v1`, `/live`, `/ready`, `/metrics`);
//!   - `server`: `vaquero server`, every site's control half joined to
//!     its agents over HTTPS (`SiteHub`: leases, the boot table, results
//!     and observations taken once each);
//!   - `boot_state`: `EngineBootState`, the boot table the engine's state
//!     gives (`vaquero_ipxe::BootState`), a [`Follower`];
//!   - `webhook`: GitHub push deliveries, checked and de-duplicated.
//! - `agent`:
//!   - `site`: `SiteServices`, DHCP, TFTP and the HTTP boot service of one
//!     agent, their events turned into observations;
//!   - `agent::run`: `vaquero agent`, one site's services and acting half
//!     driven by a server, booting machines from its cache when the
//!     server is away.
//! - either: `agent::wire`, the protocol between them; `pki`, the CA,
//!   server and agent certificates (`vaquero certs init`, enrolment);
//!   `compose`, what the compositions share (the data directory, the SoT
//!   source, the error they stop with).
//! - `standalone`: `vaquero standalone`, both halves joined in one
//!   process.
//!
//! # Features
//!
//! - `server`: the control plane, with axum, rustls, rcgen and the boot
//!   table's types from `vaquero-ipxe`.
//! - `agent`: a site's half, with `vaquero-dhcp`, `vaquero-tftp` and
//!   `vaquero-ipxe`.
//! - `standalone` (default): `server` and `agent`.
//!
//! Without them, the pure engine, policies, plans, stores, jobs and the
//! in-process runner build on their own
//! (`cargo build -p vaquero-engine --no-default-features`).

pub mod act;
pub mod agent;
#[cfg(feature = "server")]
pub mod api;
pub mod auth;
#[cfg(feature = "agent")]
pub mod boot_files;
#[cfg(feature = "server")]
pub mod boot_state;
#[cfg(any(feature = "server", feature = "agent"))]
pub mod compose;
pub mod control;
pub mod decide;
pub mod engine;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod event;
pub mod job;
#[cfg(feature = "etcd")]
pub mod leader;
pub mod migrate;
pub mod observe;
pub mod persist;
#[cfg(any(feature = "server", feature = "agent"))]
pub mod pki;
pub mod plan;
pub mod policy;
pub mod record;
pub mod runner;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "agent")]
pub mod site;
#[cfg(feature = "standalone")]
pub mod standalone;
pub mod state;
pub mod store;
pub mod transport;
#[cfg(feature = "server")]
pub mod webhook;

/// Re-exported: [`Store`] and [`Job`] are async traits; implement them
/// with this macro.
pub use async_trait::async_trait;
/// Re-exported: every clock the engine takes (`now`) is a
/// `jiff::Timestamp`.
pub use jiff;

pub use act::{Actor, Task, TaskResult};
#[cfg(feature = "server")]
pub use boot_state::EngineBootState;
pub use control::{Command, CommandError, Control, ControlError};
pub use decide::{Decider, Follower};
pub use engine::{Engine, EngineConfig, EngineError, Step};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdStore};
pub use event::{Action, ActionKind, Event, EventKind, JobPhase, JobSpec, Notice, Outcome};
pub use job::{ExecJob, HttpJob, Job, JobError, JobRunner, SshJob};
#[cfg(feature = "etcd")]
pub use leader::{Election, LeaseClock, Term, TermState};
pub use observe::{Observation, ObservationKind};
pub use persist::{PersistError, StateStore};
pub use plan::{HostPlan, Plan, PlanAction, PlanSet, SitePlans, plan, plan_with_state};
pub use policy::{Decision, Policy, PolicyCtx, WorkflowStats};
pub use record::{Record, RecordStatus, RecordStep, Records, Retention};
pub use runner::{Runner, RunnerError};
pub use state::{Approval, HostState, Pending, Phase, Requested, Rollout, SiteState};
pub use store::{
    Compare, KeyValue, MemoryStore, RedbStore, Revision, Store, StoreError, TxnOp, TxnResult,
};

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
