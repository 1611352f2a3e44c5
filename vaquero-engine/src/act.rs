//! The acting half: [`Task`]s in, [`TaskResult`]s out.
//!
//! An [`Actor`] carries out what the deciding half ([`crate::Decider`])
//! asks for — power and boot-device operations through each host's
//! [`PowerDriver`], jobs through the [`JobRunner`] — and reports how each
//! went. In `vaquero standalone` tasks and results cross an in-process
//! queue; between a server and its agents they cross HTTPS, as the same
//! types.
//!
//! Tasks are idempotent: a task the actor is carrying out is not started
//! again when it is delivered twice, and a task it finished is answered
//! with the result it already has (a server that did not hear the first
//! answer asks again; the machine is not power-cycled twice).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use vaquero_lom::{BootDevice, BootOverride, PowerAction, PowerDriver};

use crate::event::{Action, ActionKind, Event, EventKind, Outcome};
use crate::job::JobRunner;

/// Where a record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// Issued, no outcome yet.
    InProgress,
    /// It worked.
    Done,
    /// It failed.
    Error,
}

/// One step of a record (a try of a job, a BMC operation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct RecordStep {
    /// What it was.
    pub name: String,
    /// When it started.
    pub started: Timestamp,
    /// When it ended.
    pub ended: Option<Timestamp>,
    /// How it went.
    pub status: RecordStatus,
    /// Its captured output or error.
    pub log: String,
}

/// An action handed to the acting half.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The site the host belongs to.
    pub site: String,
    /// What to do.
    pub action: Action,
}

impl Task {
    /// The task's identity: host and sequence number (unique per site).
    pub fn key(&self) -> (&str, u64) {
        (&self.action.host, self.action.seq)
    }
}

/// How a task went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The site.
    pub site: String,
    /// The host.
    pub host: String,
    /// The action's sequence number.
    pub seq: u64,
    /// How it went.
    pub outcome: Outcome,
    /// Its steps (one per try of a job), for the execution record.
    pub steps: Vec<RecordStep>,
    /// When it ended.
    pub ended: Timestamp,
}

impl TaskResult {
    /// The engine event of this result.
    pub fn event(&self) -> Event {
        Event {
            host: self.host.clone(),
            kind: EventKind::Result {
                seq: self.seq,
                outcome: self.outcome.clone(),
            },
        }
    }
}

/// What the actor knows of a task it was given.
#[derive(Debug, Clone)]
enum Known {
    Running,
    Done(TaskResult),
}

/// Carries out tasks: the hosts' power drivers (managed: see
/// `vaquero_lom::Lom`) and the job runner.
#[derive(Clone)]
pub struct Actor {
    drivers: Arc<HashMap<String, Arc<dyn PowerDriver>>>,
    jobs: Arc<JobRunner>,
    known: Arc<Mutex<HashMap<(String, u64), Known>>>,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("drivers", &self.drivers.len())
            .finish_non_exhaustive()
    }
}

/// How many finished tasks an actor remembers for repeated deliveries.
const REMEMBERED: usize = 65_536;

impl Actor {
    /// An actor with `drivers` by host name, and `jobs`.
    pub fn new(drivers: HashMap<String, Arc<dyn PowerDriver>>, jobs: JobRunner) -> Self {
        Actor {
            drivers: Arc::new(drivers),
            jobs: Arc::new(jobs),
            known: Arc::default(),
        }
    }

    /// Uses `drivers` for tasks started from now on (a new model): tasks in
    /// flight finish with the drivers they started with, and what the
    /// actor remembers of earlier tasks is kept. Build both maps with one
    /// `vaquero_lom::Lom`, so that a BMC still gets one operation at a time.
    pub fn replace_drivers(&mut self, drivers: HashMap<String, Arc<dyn PowerDriver>>) {
        self.drivers = Arc::new(drivers);
    }

    /// Starts `task` in the background; its result goes to `results`. A
    /// task already running is not started again; a finished one is
    /// answered with its result.
    pub fn spawn(&self, task: Task, results: mpsc::UnboundedSender<TaskResult>) {
        let key = (task.action.host.clone(), task.action.seq);
        {
            let Ok(mut known) = self.known.lock() else {
                return;
            };
            match known.get(&key) {
                Some(Known::Running) => return,
                Some(Known::Done(r)) => {
                    let _ = results.send(r.clone());
                    return;
                }
                None => {}
            }
            if known.len() >= REMEMBERED {
                known.retain(|_, k| matches!(k, Known::Running));
            }
            known.insert(key.clone(), Known::Running);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let r = this.perform(&task).await;
            if let Ok(mut known) = this.known.lock() {
                known.insert(key, Known::Done(r.clone()));
            }
            // The receiver may be gone at shutdown: the result is then
            // asked for again after the restart (the task is re-issued).
            let _ = results.send(r);
        });
    }

    /// Carries out `task` and says how it went.
    pub async fn perform(&self, task: &Task) -> TaskResult {
        let a = &task.action;
        let started = Timestamp::now();
        let (outcome, steps) = perform(a, &self.drivers, &self.jobs, started).await;
        TaskResult {
            site: task.site.clone(),
            host: a.host.clone(),
            seq: a.seq,
            outcome,
            steps,
            ended: Timestamp::now(),
        }
    }
}

async fn perform(
    a: &Action,
    drivers: &HashMap<String, Arc<dyn PowerDriver>>,
    jobs: &JobRunner,
    started: Timestamp,
) -> (Outcome, Vec<RecordStep>) {
    let power = |r: Result<(), vaquero_lom::LomError>| match r {
        Ok(()) => Outcome::ok(),
        Err(e) => Outcome::failed(e.is_transient(), e.to_string()),
    };
    match &a.kind {
        ActionKind::SetBootNetwork | ActionKind::PowerCycle => {
            let Some(d) = drivers.get(&a.host) else {
                return (
                    Outcome::failed(false, format!("{} has no BMC driver", a.host)),
                    Vec::new(),
                );
            };
            let o = if a.kind == ActionKind::SetBootNetwork {
                power(d.set_boot_device(BootOverride::once(BootDevice::Pxe)).await)
            } else {
                power(d.power(PowerAction::Cycle).await)
            };
            (o, Vec::new())
        }
        ActionKind::RunJob { job, .. } => {
            let (o, tries) = jobs.run(job).await;
            let ended = Timestamp::now();
            let steps = tries
                .into_iter()
                .map(|t| RecordStep {
                    name: format!("try {}", t.number),
                    started,
                    ended: Some(ended),
                    status: if t.result == "ok" {
                        RecordStatus::Done
                    } else {
                        RecordStatus::Error
                    },
                    log: if t.output.is_empty() {
                        t.result
                    } else {
                        format!("{}: {}", t.result, t.output)
                    },
                })
                .collect();
            (o, steps)
        }
        ActionKind::Notice(_) => (Outcome::ok(), Vec::new()),
    }
}
