//! Jobs: `before_shutdown` and `validate` steps of a boot, run by the
//! agent for the engine's [`ActionKind::RunJob`](crate::ActionKind).
//!
//! A [`Job`] runs one try of a [`JobSpec`], bounded by its timeout;
//! [`JobRunner`] picks the job for the spec's type, retries (`retries`
//! extra tries, a delay apart: "retry until ready"), and returns the
//! [`Outcome`] for the engine with a log of every try for the execution
//! record.
//!
//! | type   | runs                                        | success        |
//! |--------|---------------------------------------------|----------------|
//! | `exec` | `command` on the agent, with `env` added    | exit code 0    |
//! | `http` | `GET url`                                   | `expect_status` (200) |
//! | `ssh`  | `command` on the host (its primary address) | exit code 0    |

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use vaquero_lom::LomError;
use vaquero_model::types::JobType;

use crate::event::{JobSpec, Outcome};

/// One try of a job failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobFailure {
    /// It ran and failed (exit code, unexpected status).
    #[error("{status}: {output}")]
    Failed {
        /// `exit code 1`, `HTTP 503`, …
        status: String,
        /// What it printed or answered (capped).
        output: String,
    },
    /// It could not run to the end: unreachable, timed out.
    #[error("{0}")]
    Unavailable(String),
    /// It can never run as written (no such program, no SSH key, no URL).
    #[error("{0}")]
    Config(String),
}

impl JobFailure {
    /// Whether another try may work.
    pub fn is_transient(&self) -> bool {
        !matches!(self, JobFailure::Config(_))
    }
}

/// A job type.
#[async_trait]
pub trait Job: Send + Sync + fmt::Debug {
    /// One try of `spec`, bounded by its timeout; `Ok` carries the
    /// output.
    async fn run(&self, spec: &JobSpec) -> Result<String, JobFailure>;
}

fn from_lom(e: LomError) -> JobFailure {
    match e {
        LomError::CommandFailed { status, output } => JobFailure::Failed { status, output },
        LomError::Config(m) => JobFailure::Config(m),
        other if other.is_transient() => JobFailure::Unavailable(other.to_string()),
        other => JobFailure::Failed {
            status: other.label().to_owned(),
            output: other.to_string(),
        },
    }
}

/// `exec`: a program on the agent.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecJob;

#[async_trait]
impl Job for ExecJob {
    async fn run(&self, spec: &JobSpec) -> Result<String, JobFailure> {
        let env: Vec<(String, String)> = spec
            .job()
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let done = vaquero_lom::run_program(&spec.job().command, &env, spec.timeout())
            .await
            .map_err(from_lom)?;
        if done.success() {
            Ok(done.output())
        } else {
            Err(JobFailure::Failed {
                status: done.status.clone(),
                output: done.output(),
            })
        }
    }
}

/// `http`: a GET that must answer the expected status.
#[derive(Debug, Clone, Default)]
pub struct HttpJob {
    client: reqwest::Client,
}

impl HttpJob {
    /// An HTTP job runner with its own connection pool.
    pub fn new() -> Self {
        HttpJob::default()
    }
}

#[async_trait]
impl Job for HttpJob {
    async fn run(&self, spec: &JobSpec) -> Result<String, JobFailure> {
        let url = spec
            .job()
            .url
            .as_deref()
            .ok_or_else(|| JobFailure::Config("an http job without a url".into()))?;
        let want = spec.job().expect_status.unwrap_or(200);
        let resp = self
            .client
            .get(url)
            .timeout(spec.timeout())
            .send()
            .await
            .map_err(|e| {
                if e.is_builder() {
                    JobFailure::Config(format!("{url}: {e}"))
                } else {
                    JobFailure::Unavailable(format!("{url}: {e}"))
                }
            })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let body = cap(body.trim());
        if status == want {
            Ok(body)
        } else {
            Err(JobFailure::Failed {
                status: format!("HTTP {status} (expected {want})"),
                output: body,
            })
        }
    }
}

fn cap(s: &str) -> String {
    let mut out: String = s.chars().take(2000).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// `ssh`: a command on the host itself, over OpenSSH.
#[derive(Debug, Clone)]
pub struct SshJob {
    /// The user to log in as.
    pub username: String,
    /// The private key.
    pub key_file: PathBuf,
    /// The port (22).
    pub port: u16,
    /// A known_hosts file; `None`: host keys are not checked (they change
    /// with every reinstall).
    pub known_hosts: Option<PathBuf>,
    /// The `ssh` program.
    pub ssh_program: String,
}

impl SshJob {
    /// Logs in as `username` with `key_file` on port 22.
    pub fn new(username: &str, key_file: impl Into<PathBuf>) -> Self {
        SshJob {
            username: username.to_owned(),
            key_file: key_file.into(),
            port: 22,
            known_hosts: None,
            ssh_program: "ssh".into(),
        }
    }
}

#[async_trait]
impl Job for SshJob {
    async fn run(&self, spec: &JobSpec) -> Result<String, JobFailure> {
        let target = spec
            .target()
            .ok_or_else(|| JobFailure::Config("an ssh job for a host without an address".into()))?;
        let command = &spec.job().command;
        let line = shlex::try_join(command.iter().map(String::as_str))
            .map_err(|e| JobFailure::Config(format!("ssh command {command:?}: {e}")))?;
        let mut c = vaquero_lom::SshConfig::new(target, &self.username, self.key_file.clone());
        c.port = self.port;
        c.known_hosts.clone_from(&self.known_hosts);
        c.timeout = spec.timeout();
        c.ssh_program.clone_from(&self.ssh_program);
        let done = vaquero_lom::SshDriver::new(c)
            .run_command(&line)
            .await
            .map_err(from_lom)?;
        Ok(done.output())
    }
}

/// One try of a job, for the execution record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Try {
    /// 1-based.
    pub number: u32,
    /// `ok`, or the error.
    pub result: String,
    /// Output (capped).
    pub output: String,
}

/// Runs jobs by type with retries.
#[derive(Debug, Clone)]
pub struct JobRunner {
    exec: Arc<dyn Job>,
    http: Arc<dyn Job>,
    ssh: Option<Arc<dyn Job>>,
    /// Delay between tries.
    pub retry_delay: Duration,
}

impl Default for JobRunner {
    fn default() -> Self {
        JobRunner {
            exec: Arc::new(ExecJob),
            http: Arc::new(HttpJob::new()),
            ssh: None,
            retry_delay: Duration::from_secs(5),
        }
    }
}

impl JobRunner {
    /// exec and http built in; ssh only once configured.
    pub fn new() -> Self {
        JobRunner::default()
    }

    /// Runs `ssh` jobs with `job`.
    pub fn with_ssh(mut self, job: Arc<dyn Job>) -> Self {
        self.ssh = Some(job);
        self
    }

    /// Replaces the runner of `kind`.
    pub fn with(mut self, kind: JobType, job: Arc<dyn Job>) -> Self {
        match kind {
            JobType::Exec => self.exec = job,
            JobType::Http => self.http = job,
            JobType::Ssh => self.ssh = Some(job),
        }
        self
    }

    /// Runs `spec`: up to `retries + 1` tries, `retry_delay` apart, until
    /// one succeeds or one fails for good. The outcome for the engine, and
    /// every try.
    pub async fn run(&self, spec: &JobSpec) -> (Outcome, Vec<Try>) {
        let job = match spec.job().kind {
            JobType::Exec => Some(&self.exec),
            JobType::Http => Some(&self.http),
            JobType::Ssh => self.ssh.as_ref(),
        };
        let Some(job) = job else {
            let msg = "ssh jobs need an SSH user and key: none configured".to_owned();
            return (Outcome::failed(false, msg), Vec::new());
        };
        let mut tries = Vec::new();
        let mut last = JobFailure::Config("not run".into());
        for n in 1..=spec.retries().saturating_add(1) {
            if n > 1 {
                tokio::time::sleep(self.retry_delay).await;
            }
            match job.run(spec).await {
                Ok(output) => {
                    tries.push(Try {
                        number: n,
                        result: "ok".into(),
                        output: output.clone(),
                    });
                    return (Outcome::Ok { output }, tries);
                }
                Err(e) => {
                    let (result, output) = match &e {
                        JobFailure::Failed { status, output } => (status.clone(), output.clone()),
                        other => (other.to_string(), String::new()),
                    };
                    tries.push(Try {
                        number: n,
                        result,
                        output,
                    });
                    let stop = !e.is_transient();
                    last = e;
                    if stop {
                        break;
                    }
                }
            }
        }
        // Every try used: a job that keeps failing has failed (the engine
        // must not retry it again); only a job that could not run at all
        // (unreachable) is worth the engine's own retries.
        let transient = matches!(last, JobFailure::Unavailable(_));
        (Outcome::failed(transient, last.to_string()), tries)
    }
}
