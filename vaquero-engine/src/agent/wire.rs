//! The agent protocol: what a `vaquero agent` and its server say to each
//! other over HTTPS (mTLS after enrolment). The agent always dials out;
//! the server answers long-polls.
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | GET | `/v1/agent/ca` | → the CA certificate (PEM), pinned by its fingerprint |
//! | POST | `/v1/agent/enrol` | [`EnrolRequest`] → [`Enrolled`] (join token, no client certificate) |
//! | POST | `/v1/agent/renew` | [`RenewRequest`] → [`Enrolled`] |
//! | GET | `/v1/agent/model?wait=S` | `If-None-Match: "<version>"` → [`ModelDoc`], or 304 when unchanged after `S` seconds |
//! | POST | `/v1/agent/work` | [`WorkRequest`] → [`Work`] (boot table changes and leased tasks; long-poll) |
//! | POST | `/v1/agent/results` | [`ResultsBody`] → [`ResultsAck`] |
//! | POST | `/v1/agent/observations` | [`ObservationBatch`] → [`ObservationAck`] |
//!
//! Every call but `ca` and `enrol` needs the agent's client certificate;
//! its site and agent come from the certificate, never from the body.

use serde::{Deserialize, Serialize};
use vaquero_model::SiteModel;

use crate::act::{Task, TaskResult};
use crate::agent::Spooled;

/// The protocol's version: a server takes agents of its major version
/// and of this minor or one below (upgrade servers first, then agents).
pub const PROTOCOL: (u32, u32) = (1, 0);

/// The header an agent sends its protocol version in (`1.0`).
pub const VERSION_HEADER: &str = "x-vaquero-agent-protocol";

/// Whether a server speaking [`PROTOCOL`] takes an agent speaking `v`
/// (`MAJOR.MINOR`): the same major, and the same minor or the one
/// before.
pub fn compatible(v: &str) -> bool {
    let Some((major, minor)) = v.split_once('.') else {
        return false;
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return false;
    };
    major == PROTOCOL.0 && minor + 1 >= PROTOCOL.1 && minor <= PROTOCOL.1
}

/// An agent's first call: its join token's id and secret and a CSR.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolRequest {
    /// `vqt_<id>_<secret>` of the join token.
    pub token: String,
    /// A PKCS#10 certificate signing request (PEM) for the agent's key.
    pub csr: String,
}

/// A renewal, over mTLS with the certificate that is about to expire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    /// A new CSR (PEM).
    pub csr: String,
}

/// The agent's certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    /// The certificate (PEM), its SANs naming the site and the agent.
    pub cert: String,
    /// The CA's certificate (PEM).
    pub ca: String,
    /// The site.
    pub site: String,
    /// The agent.
    pub agent: String,
}

/// The site's compiled model at one version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelDoc {
    /// The model's version (its ETag).
    pub version: String,
    /// The model.
    pub model: std::sync::Arc<SiteModel>,
}

/// One long-poll for work.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkRequest {
    /// The version of the boot table the agent has (0: none).
    pub boot: u64,
    /// The boot table's epoch the agent's version counts in (a restarted
    /// server starts a new one; the agent then gets the whole table).
    #[serde(default)]
    pub epoch: String,
    /// Tasks the agent is carrying out: their leases are renewed.
    #[serde(default)]
    pub running: Vec<TaskKey>,
    /// How long to wait for something new, in seconds (at most 30).
    #[serde(default)]
    pub wait: u64,
}

/// A task's idempotency key: its host and number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskKey {
    /// The host.
    pub host: String,
    /// The action's number on that host.
    pub seq: u64,
}

impl TaskKey {
    /// The key of `task`.
    pub fn of(task: &Task) -> TaskKey {
        TaskKey {
            host: task.action.host.clone(),
            seq: task.action.seq,
        }
    }

    /// The key of the task `result` answers.
    pub fn of_result(result: &TaskResult) -> TaskKey {
        TaskKey {
            host: result.host.clone(),
            seq: result.seq,
        }
    }
}

/// A task leased to an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    /// The task.
    pub task: Task,
    /// When the lease ends by the server's clock: an agent whose clock
    /// is past it (beyond [`CLOCK_SKEW`]) refuses the task, and the
    /// server leases it again. A running task's lease is renewed by each
    /// work poll that names it.
    pub expires: jiff::Timestamp,
    /// The leader's fencing number: an agent refuses a task with a lower
    /// one than it has seen.
    pub fencing: u64,
}

/// How far apart the server's and an agent's clocks may be.
pub const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(30);

/// What a host boots now, as of a boot-table version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootEntry {
    /// The host.
    pub host: String,
    /// What it boots.
    pub current: vaquero_ipxe::Current,
}

/// The answer to a [`WorkRequest`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Work {
    /// The boot table's version after these changes.
    pub boot: u64,
    /// The epoch `boot` counts in.
    pub epoch: String,
    /// `true`: `changes` is the whole table (hosts not in it boot from
    /// disk); `false`: only what changed since the agent's version.
    pub full: bool,
    /// Boot-table entries.
    pub changes: Vec<BootEntry>,
    /// Tasks to carry out.
    pub tasks: Vec<Lease>,
}

/// Results of tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultsBody {
    /// The results.
    pub results: Vec<TaskResult>,
}

/// What became of each result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultsAck {
    /// Taken: the engine has it, committed.
    pub taken: Vec<TaskKey>,
    /// Ignored: the task had an outcome already, or is not the server's
    /// (a late or repeated result); the agent forgets them too.
    pub ignored: Vec<TaskKey>,
}

/// A batch of spooled observations, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObservationBatch {
    /// The spool's id (a new spool numbers from 1 again).
    pub spool: String,
    /// The observations with their spool numbers.
    pub items: Vec<Spooled>,
}

/// The highest spool number the server has, committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObservationAck {
    /// Every observation up to this number is committed.
    pub acked: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_minor_behind_is_compatible() {
        assert!(compatible(&format!("{}.{}", PROTOCOL.0, PROTOCOL.1)));
        assert!(!compatible(&format!("{}.{}", PROTOCOL.0 + 1, PROTOCOL.1)));
        assert!(!compatible(&format!("{}.{}", PROTOCOL.0, PROTOCOL.1 + 1)));
        assert!(!compatible("1"));
        assert!(!compatible("x.y"));
        if PROTOCOL.1 > 0 {
            assert!(compatible(&format!("{}.{}", PROTOCOL.0, PROTOCOL.1 - 1)));
        }
        if PROTOCOL.1 > 1 {
            assert!(!compatible(&format!("{}.{}", PROTOCOL.0, PROTOCOL.1 - 2)));
        }
    }
}
