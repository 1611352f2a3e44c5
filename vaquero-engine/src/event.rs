//! What the engine observes ([`Event`]) and what it asks for ([`Action`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vaquero_model::types::{Job, JobType};

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

/// A job ready to run for one host: the boot's declared [`Job`] with its
/// command, URL and environment rendered for the host, its timeout and
/// retries resolved (the job's own or the defaults), and where an `ssh`
/// job connects. The model renders a job, the engine resolves it into
/// this, a [`crate::JobRunner`] runs it: one shape throughout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "JobWire", from = "JobWire")]
pub struct JobSpec {
    job: Job,
    timeout: Duration,
    target: Option<String>,
}

impl JobSpec {
    /// `job` (rendered) resolved to run: its own `timeout` or else
    /// `default_timeout` becomes [`JobSpec::timeout`] (and leaves the
    /// job), no `retries` means none; an `ssh` job connects to `target`.
    pub fn new(mut job: Job, default_timeout: Duration, target: Option<String>) -> Self {
        let timeout = job
            .timeout
            .take()
            .map_or(default_timeout, |t| Duration::from_secs(t.as_secs()));
        job.retries = Some(job.retries.unwrap_or(0));
        JobSpec {
            job,
            timeout,
            target,
        }
    }

    /// The job: how it runs, its command, URL, expected status and
    /// environment.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// How long one try may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Extra tries after a failure.
    pub fn retries(&self) -> u32 {
        self.job.retries.unwrap_or(0)
    }

    /// `ssh`: where to connect (the host's primary address).
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }
}

/// A [`JobSpec`] as tasks carry it to agents: the form of agent protocol
/// 1.x, which servers and agents of neighbouring versions share.
#[derive(Serialize, Deserialize)]
struct JobWire {
    kind: JobType,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    expect_status: Option<u16>,
    timeout: Duration,
    retries: u32,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    target: Option<String>,
}

impl From<JobSpec> for JobWire {
    fn from(s: JobSpec) -> Self {
        let retries = s.retries();
        JobWire {
            kind: s.job.kind,
            command: s.job.command,
            url: s.job.url,
            expect_status: s.job.expect_status,
            timeout: s.timeout,
            retries,
            env: s.job.env,
            target: s.target,
        }
    }
}

impl From<JobWire> for JobSpec {
    fn from(w: JobWire) -> Self {
        let job = Job {
            kind: w.kind,
            command: w.command,
            url: w.url,
            expect_status: w.expect_status,
            timeout: None,
            retries: Some(w.retries),
            env: w.env,
        };
        JobSpec::new(job, w.timeout, w.target)
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn declared() -> Job {
        serde_json::from_value(serde_json::json!({
            "type": "ssh",
            "command": ["check-node", "k8s-01"],
            "timeout": "2m",
            "env": {"K": "v"},
        }))
        .unwrap()
    }

    /// Tasks reach agents of the neighbouring protocol version: a job's
    /// wire form stays the one of protocol 1.0, and reads back the same.
    #[test]
    fn job_spec_keeps_the_protocol_form() {
        let spec = JobSpec::new(
            declared(),
            Duration::from_secs(600),
            Some("10.0.0.5".into()),
        );
        assert_eq!(spec.timeout(), Duration::from_secs(120));
        assert_eq!(spec.retries(), 0);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "ssh",
                "command": ["check-node", "k8s-01"],
                "url": null,
                "expect_status": null,
                "timeout": {"secs": 120, "nanos": 0},
                "retries": 0,
                "env": {"K": "v"},
                "target": "10.0.0.5",
            })
        );
        assert_eq!(serde_json::from_value::<JobSpec>(json).unwrap(), spec);
    }

    /// Without a timeout of its own a job gets the default, to the
    /// millisecond.
    #[test]
    fn job_spec_takes_the_default_timeout() {
        let mut j = declared();
        j.timeout = None;
        j.retries = Some(3);
        let spec = JobSpec::new(j, Duration::from_millis(300), None);
        assert_eq!(spec.timeout(), Duration::from_millis(300));
        assert_eq!(spec.retries(), 3);
        assert_eq!(spec.job().timeout, None);
        let back: JobSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }
}
