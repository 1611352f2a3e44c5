//! What the engine stores: one [`HostState`] per host and the site's
//! current [`Rollout`], and the [`Step`] that changes them. Everything here
//! is plain data (serde), persisted
//! through a [`Store`](crate::Store) before the engine acts on it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::event::Action;

/// Where a host is in its lifecycle.
///
/// ```text
/// idle ─▶ queued ─▶ draining ─▶ set_boot ─▶ power_cycle ─▶ netbooting
///                      ▲                                       │ script
///                      │ next stage                            ▼
///            done ◀── validating ◀── awaiting_checkpoint ◀── installing
/// ```
/// plus `waiting` (a new host provisioned when it netboots by itself),
/// `failed`, `halted` (its rollout stopped before it started) and
/// `skipped` (`never_provision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing to do: the host runs what it has.
    Idle,
    /// In a rollout, waiting for the policies to let it start.
    Queued,
    /// A new host not rebooted by Vaquero (`force_provision` off): its
    /// first stage is served when it netboots on its own.
    Waiting,
    /// Running the `before_shutdown` jobs of the boot it is leaving.
    Draining,
    /// Setting the next boot to the network.
    SetBoot,
    /// Power-cycling it.
    PowerCycle,
    /// Waiting for it to fetch its script (DHCP, iPXE).
    Netbooting,
    /// It fetched its script; waiting for the installer's config.
    Installing,
    /// The installer has its config; waiting for the checkpoint.
    AwaitingCheckpoint,
    /// Running the `validate` jobs of the stage.
    Validating,
    /// Every stage done for its rollout.
    Done,
    /// A step failed for good (see the reason).
    Failed,
    /// Its rollout halted before it started; it runs what it had.
    Halted,
    /// Never touched (`never_provision`).
    Skipped,
}

impl Phase {
    /// Every phase, in the order of a host's way through a rollout.
    pub const ALL: [Phase; 14] = [
        Phase::Idle,
        Phase::Queued,
        Phase::Waiting,
        Phase::Draining,
        Phase::SetBoot,
        Phase::PowerCycle,
        Phase::Netbooting,
        Phase::Installing,
        Phase::AwaitingCheckpoint,
        Phase::Validating,
        Phase::Done,
        Phase::Failed,
        Phase::Halted,
        Phase::Skipped,
    ];

    /// Whether the host is taken out of service by a rollout (counts
    /// against `max_concurrent` and `min_standing`).
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            Phase::Draining
                | Phase::SetBoot
                | Phase::PowerCycle
                | Phase::Netbooting
                | Phase::Installing
                | Phase::AwaitingCheckpoint
                | Phase::Validating
        )
    }

    /// Whether the host has nothing more to do for its rollout.
    pub fn settled(self) -> bool {
        matches!(
            self,
            Phase::Idle | Phase::Done | Phase::Failed | Phase::Halted | Phase::Skipped
        )
    }

    /// Whether the host is netbooting a stage (the boot service serves it
    /// that stage's script).
    pub fn booting(self) -> bool {
        matches!(
            self,
            Phase::Waiting
                | Phase::PowerCycle
                | Phase::Netbooting
                | Phase::Installing
                | Phase::AwaitingCheckpoint
        )
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Queued => "queued",
            Phase::Waiting => "waiting",
            Phase::Draining => "draining",
            Phase::SetBoot => "set_boot",
            Phase::PowerCycle => "power_cycle",
            Phase::Netbooting => "netbooting",
            Phase::Installing => "installing",
            Phase::AwaitingCheckpoint => "awaiting_checkpoint",
            Phase::Validating => "validating",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Halted => "halted",
            Phase::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The action a host is waiting on: recorded (write-ahead) before the
/// action is carried out, cleared when its outcome arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Pending {
    /// The action's sequence number for this host.
    pub seq: u64,
    /// When it was issued.
    pub issued: Timestamp,
    /// When its outcome counts as lost (and the action is tried again).
    pub deadline: Timestamp,
}

/// One host as the engine keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct HostState {
    /// The host's name.
    pub name: String,
    /// Its workflow (from the model the state was last planned with).
    pub workflow: String,
    /// Where it is.
    pub phase: Phase,
    /// When it entered `phase` (or when the current step last started).
    pub since: Timestamp,
    /// Index of the current stage of its workflow.
    pub stage: usize,
    /// The boot attempt: raised for every boot the engine causes; events
    /// and checkpoint tokens of older attempts are stale.
    pub attempt: u64,
    /// The rollout the host is (or was last) provisioned for.
    pub rollout: Option<u64>,
    /// The step's tries so far (bounded by the engine's config).
    pub tries: u32,
    /// Boots of the current stage so far.
    pub boots: u32,
    /// Index of the job running in `draining` / `validating`.
    pub job: usize,
    /// `validate` jobs of this stage that failed so far.
    pub job_failures: u32,
    /// Sequence number of this host's last action.
    pub seq: u64,
    /// The action the host waits on.
    pub pending: Option<Pending>,
    /// The boot id the host runs now (its last finished stage), if known.
    pub installed: Option<String>,
    /// The model version the host runs: the one it last finished its
    /// workflow under (`None` when unknown, or once a provisioning
    /// failed). A later rollout to that same version (a revert) leaves the
    /// host be.
    #[serde(default)]
    pub version: Option<String>,
    /// Whether the host is down: its last provisioning failed and none has
    /// finished since (queued again, it still counts as down).
    #[serde(default)]
    pub down: bool,
    /// Why it is failed, halted, skipped or waiting.
    pub reason: Option<String>,
    /// An operator asked for this host to be reprovisioned (`vaquero
    /// reprovision`): queued, it may start without the approval of the
    /// site's rollout, under its workflow's policies. Cleared when the
    /// provisioning ends (done, failed or halted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<Requested>,
}

/// An operator's request to reprovision one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Requested {
    /// When it was asked for.
    pub at: Timestamp,
    /// Whether the site's reboot windows are skipped (`--now`).
    pub skip_windows: bool,
}

impl HostState {
    /// A host never provisioned by Vaquero.
    pub fn new(name: &str, workflow: &str, now: Timestamp) -> Self {
        HostState {
            name: name.to_owned(),
            workflow: workflow.to_owned(),
            phase: Phase::Idle,
            since: now,
            stage: 0,
            attempt: 0,
            rollout: None,
            tries: 0,
            boots: 0,
            job: 0,
            job_failures: 0,
            seq: 0,
            pending: None,
            installed: None,
            version: None,
            down: false,
            reason: None,
            requested: None,
        }
    }
}

/// Whether a rollout may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// Waiting for an operator's approval.
    Pending,
    /// Approved by an operator.
    Approved,
    /// Applied without approval (`auto_apply`).
    Auto,
}

/// A plan being carried out: model `from` → `to` of one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Rollout {
    /// Its id (raised for every new plan of the site).
    pub id: u64,
    /// The model version rolled from (`None`: first rollout).
    pub from: Option<String>,
    /// The model version rolled to.
    pub to: String,
    /// The SoT revision of `to`, when known.
    pub revision: Option<String>,
    /// When it was created.
    pub created: Timestamp,
    /// Whether it may proceed.
    pub approval: Approval,
}

impl Rollout {
    /// Whether hosts may start.
    pub fn approved(&self) -> bool {
        self.approval != Approval::Pending
    }
}

/// Everything the engine keeps for one site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteState {
    /// The site id.
    pub site: String,
    /// The current rollout, if any.
    pub rollout: Option<Rollout>,
    /// Hosts by name.
    pub hosts: BTreeMap<String, HostState>,
}

impl SiteState {
    /// An empty state for `site`.
    pub fn new(site: &str) -> Self {
        SiteState {
            site: site.to_owned(),
            rollout: None,
            hosts: BTreeMap::new(),
        }
    }

    /// Applies the changes of a step.
    pub fn apply(&mut self, step: &Step) {
        if let Some(r) = &step.rollout {
            self.rollout = Some(r.clone());
        }
        for h in &step.hosts {
            self.hosts.insert(h.name.clone(), h.clone());
        }
        for name in &step.removed {
            self.hosts.remove(name);
        }
    }

    /// Hosts in each phase.
    pub fn phase_counts(&self) -> std::collections::BTreeMap<Phase, usize> {
        let mut out = std::collections::BTreeMap::new();
        for h in self.hosts.values() {
            *out.entry(h.phase).or_insert(0) += 1;
        }
        out
    }
}

impl PartialOrd for Phase {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Phase {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}
/// What one step decided: actions to carry out, and the state changes to
/// persist *before* carrying them out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// Hosts whose state changed (whole new states).
    pub hosts: Vec<HostState>,
    /// Hosts to forget (removed from the SoT).
    pub removed: Vec<String>,
    /// The rollout, when it changed.
    pub rollout: Option<Rollout>,
    /// Events that matched no host or were stale.
    pub ignored: usize,
}

impl Step {
    /// Whether the step changes nothing and does nothing.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
            && self.hosts.is_empty()
            && self.removed.is_empty()
            && self.rollout.is_none()
    }
}
