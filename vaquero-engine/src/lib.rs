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
pub mod command;
#[cfg(any(feature = "server", feature = "agent"))]
pub mod compose;
pub mod control;
pub mod decide;
pub mod engine;
pub mod error;
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
pub use agent::{CacheFailure, SpoolFailure};
pub use auth::AuthFailure;
#[cfg(feature = "server")]
pub use boot_state::EngineBootState;
pub use command::{Command, CommandFailure};
pub use control::Control;
pub use decide::{Decider, Follower};
pub use engine::{Engine, EngineConfig, EngineFailure};
pub use error::Error;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdStore};
pub use event::{Action, ActionKind, Event, EventKind, JobPhase, JobSpec, Notice, Outcome};
pub use job::{ExecJob, HttpJob, Job, JobFailure, JobRunner, SshJob};
#[cfg(feature = "etcd")]
pub use leader::{Election, LeaseClock, Term, TermState};
pub use migrate::MigrateFailure;
pub use observe::{Observation, ObservationKind};
pub use persist::{PersistFailure, StateStore};
#[cfg(any(feature = "server", feature = "agent"))]
pub use pki::PkiFailure;
pub use plan::{HostPlan, Plan, PlanAction, PlanSet, SitePlans, plan, plan_with_state};
pub use policy::{Decision, Policy, PolicyCtx, WorkflowStats};
pub use record::{Record, RecordStatus, RecordStep, Records, Retention};
pub use runner::Runner;
#[cfg(feature = "agent")]
pub use site::SiteFailure;
pub use state::{Approval, HostState, Pending, Phase, Requested, Rollout, SiteState, Step};
pub use store::{
    Compare, KeyValue, MemoryStore, RedbStore, Revision, Store, StoreFailure, TxnOp, TxnResult,
};

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Describes this crate's metrics to the process's `metrics` recorder
/// (the help text a Prometheus scrape shows), and registers those without
/// labels at zero so that they are scraped before their first event. Call
/// it once, after the recorder is installed. The repository's
/// `docs/metrics.md` lists every metric of Vaquero.
pub fn describe_metrics() {
    metrics::describe_gauge!(
        "vaquero_hosts",
        "Hosts by phase (idle, queued, waiting, draining, set_boot, power_cycle, netbooting, installing, awaiting_checkpoint, validating, done, failed, halted, skipped), every phase exported, zeros included."
    );
    metrics::describe_gauge!(
        "vaquero_rollout_hosts",
        "Rollout progress by workflow: hosts queued, in_flight, done and failed."
    );
    metrics::describe_histogram!(
        "vaquero_engine_step_duration_seconds",
        "Time one engine step took (decide and commit), in seconds."
    );
    metrics::describe_counter!(
        "vaquero_engine_actions_total",
        "Actions the engine issued, by action: set_boot_network, power_cycle, before_shutdown and validate (jobs), notice."
    );
    metrics::describe_counter!(
        "vaquero_engine_notices_total",
        "Host milestones, by notice: started, stage_done, done, failed, halted, retry."
    );
    metrics::describe_gauge!(
        "vaquero_sot_refused",
        "1 while the site's newest SoT revision is refused (invalid), the previous one serving; else 0."
    );
    metrics::describe_counter!(
        "vaquero_sot_fetches_total",
        "Fetches of a remote SoT, by outcome: ok, failed."
    );
    metrics::describe_counter!(
        "vaquero_webhook_deliveries_total",
        "GitHub webhook deliveries, by outcome: push, ignored, duplicate, refused."
    );
    metrics::describe_counter!(
        "vaquero_server_observations_total",
        "Observations received from agents (repeats excluded)."
    );
    metrics::describe_counter!(
        "vaquero_server_observations_repeated_total",
        "Observations agents sent again that were already taken (idempotent)."
    );
    metrics::describe_counter!(
        "vaquero_server_results_ignored_total",
        "Task results from agents that match no task out (late or repeated)."
    );
    metrics::describe_gauge!(
        "vaquero_server_leader",
        "1 while this replica leads, else 0."
    );
    metrics::describe_gauge!(
        "vaquero_server_fence",
        "The fencing number of the term this replica leads."
    );
    metrics::describe_counter!(
        "vaquero_server_leader_changes_total",
        "Terms this replica started leading."
    );
    metrics::describe_counter!(
        "vaquero_server_fenced_writes_total",
        "Writes refused because another replica leads now."
    );
    metrics::describe_histogram!(
        "vaquero_etcd_keepalive_duration_seconds",
        "Round trip of the leader's lease keepalive to etcd, in seconds."
    );
    metrics::describe_counter!(
        "vaquero_agent_server_errors_total",
        "Calls to the server that failed, by call (renew, model, work, results, observations)."
    );
    metrics::describe_gauge!(
        "vaquero_agent_spool_bytes",
        "Bytes of observations and results spooled on disk for the server."
    );
    metrics::describe_counter!(
        "vaquero_agent_spool_dropped_total",
        "Spooled observations dropped because the spool was full."
    );
}

/// The bucket boundaries (in seconds) of Vaquero's histograms, by metric
/// name, chosen for what each times: a Prometheus exporter given them
/// exports real histograms (aggregatable across instances) instead of
/// summaries.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    // A DHCP decision is microseconds; a slow one is a model swap.
    (
        "vaquero_dhcp_decision_duration_seconds",
        &[
            0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025,
        ],
    ),
    // Scripts and configs in milliseconds; kernels and initrds over a
    // slow link in tens of seconds.
    (
        "vaquero_http_request_duration_seconds",
        &[0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0],
    ),
    // One engine step, commit included: milliseconds at 10,000 hosts.
    (
        "vaquero_engine_step_duration_seconds",
        &[
            0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ],
    ),
    // A BMC answers in a second or so; Redfish tasks and retries take
    // minutes.
    (
        "vaquero_lom_operation_duration_seconds",
        &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
    ),
    // The leader's keepalive must come back well within the lease's TTL.
    (
        "vaquero_etcd_keepalive_duration_seconds",
        &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0],
    ),
];
