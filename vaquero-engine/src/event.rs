//! What the engine observes ([`Event`]) and what it asks for ([`Action`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vaquero_model::types::JobType;

/// Something observed about a host, already matched to it by name (the
/// boot service and DHCP map MACs to hosts through the model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The host.
    pub host: String,
    /// What happened.
    pub kind: EventKind,
}

/// What was observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The host asked for a DHCP lease (a boot of some attempt started;
    /// DHCP does not know which).
    Dhcp,
    /// The host fetched a file over TFTP (its iPXE binary, say): like
    /// DHCP, a sign that it is netbooting, of no known attempt.
    Tftp,
    /// The host fetched its per-host iPXE script of `attempt`.
    Script {
        /// The boot attempt the script was rendered for.
        attempt: u64,
    },
    /// The installer fetched its unattended config of `attempt`.
    Config {
        /// The boot attempt.
        attempt: u64,
    },
    /// The installed OS reported completion of `attempt`.
    Checkpoint {
        /// The boot attempt.
        attempt: u64,
    },
    /// The outcome of the host's action `seq`.
    Result {
        /// The action's sequence number.
        seq: u64,
        /// How it went.
        outcome: Outcome,
    },
}

/// How an action went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// It worked.
    Ok {
        /// Captured output, if any.
        #[serde(default)]
        output: String,
    },
    /// It failed. `transient` failures (unreachable, busy, timed out, "I
    /// don't know") are retried; others are not.
    Failed {
        /// Whether trying again may work.
        transient: bool,
        /// What went wrong.
        message: String,
    },
}

impl Outcome {
    /// A success without output.
    pub fn ok() -> Self {
        Outcome::Ok {
            output: String::new(),
        }
    }

    /// A failure.
    pub fn failed(transient: bool, message: impl Into<String>) -> Self {
        Outcome::Failed {
            transient,
            message: message.into(),
        }
    }

    /// Whether it worked.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }
}

/// Which jobs of a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    /// Run before the host is shut down, in order, stopping at a failure.
    BeforeShutdown,
    /// Run after the checkpoint; all run, the stage fails if any failed.
    Validate,
}

/// A job rendered for one host, ready to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// How it runs.
    pub kind: JobType,
    /// `exec` / `ssh`: the program and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// `http`: the URL.
    #[serde(default)]
    pub url: Option<String>,
    /// `http`: the expected status (default 200).
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// How long one try may take.
    pub timeout: Duration,
    /// Extra tries after a failure.
    pub retries: u32,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `ssh`: where to connect (the host's primary address).
    #[serde(default)]
    pub target: Option<String>,
}

/// What the engine asks the outside world to do. Every action that has an
/// outcome names the host's sequence number `seq`; its outcome comes back
/// as [`EventKind::Result`] with that number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The host.
    pub host: String,
    /// The host's action sequence number (0 for notices).
    pub seq: u64,
    /// The rollout it belongs to.
    pub rollout: Option<u64>,
    /// The stage.
    pub stage: usize,
    /// The boot attempt.
    pub attempt: u64,
    /// What to do.
    pub kind: ActionKind,
}

/// The kinds of [`Action`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionKind {
    /// Run a job.
    RunJob {
        /// Which jobs.
        phase: JobPhase,
        /// The boot the jobs belong to.
        boot: String,
        /// Index of the job in that list.
        index: usize,
        /// The job.
        job: JobSpec,
    },
    /// Make the next boot a network boot (once).
    SetBootNetwork,
    /// Power-cycle the host (on if it is off).
    PowerCycle,
    /// Tell the world how the host is doing (no outcome).
    Notice(Notice),
}

impl ActionKind {
    /// A short name for logs and records.
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::RunJob {
                phase: JobPhase::BeforeShutdown,
                ..
            } => "before_shutdown",
            ActionKind::RunJob {
                phase: JobPhase::Validate,
                ..
            } => "validate",
            ActionKind::SetBootNetwork => "set_boot_network",
            ActionKind::PowerCycle => "power_cycle",
            ActionKind::Notice(_) => "notice",
        }
    }

    /// Whether an outcome is expected.
    pub fn has_outcome(&self) -> bool {
        !matches!(self, ActionKind::Notice(_))
    }
}

/// A change worth telling operators about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// The host left the queue: its reprovisioning started.
    Started,
    /// A stage finished.
    StageDone {
        /// The boot id of the stage.
        boot: String,
    },
    /// Every stage finished.
    Done,
    /// The host failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// The host was halted with its rollout.
    Halted {
        /// Why.
        reason: String,
    },
    /// A boot timed out or was lost; the stage is booted again.
    Retry {
        /// Why.
        reason: String,
    },
}
