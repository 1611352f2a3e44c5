//! The SSH driver: power work through the machine's own OS, for machines
//! without a usable BMC — a soft reboot (`sudo reboot`) or power-off over
//! SSH with a key file, through the OpenSSH client (`ssh`), so operators'
//! `ssh_config`, agents and jump hosts apply as they do for them.
//!
//! What an OS can do is limited, and the driver says so with
//! [`LomError::Unsupported`]: it cannot power itself on or off hard, nor
//! set a firmware boot device. `cycle` and `reset` run the reboot command,
//! `soft` the power-off command; `status` is `on` when a login works and an
//! [`LomError::Unreachable`] when it does not (an unreachable OS may be off
//! or may be a broken network: this driver cannot tell).
//!
//! Host keys: a machine that is reinstalled gets a new host key each
//! time, so by default the driver does not check them
//! (`StrictHostKeyChecking=no`, no known-hosts file); give a
//! `known_hosts` file to check them.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use crate::driver::{BootOverride, LomError, PowerAction, PowerDriver, PowerState};
use crate::process::{Finished, run};

/// How to reach a machine's OS over SSH.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SshConfig {
    /// Host name or address.
    pub address: String,
    /// Port (22).
    pub port: u16,
    /// Login name.
    pub username: String,
    /// Private key file.
    pub key_file: PathBuf,
    /// The command that reboots (`sudo reboot`).
    pub reboot_command: String,
    /// The command that powers off (`sudo poweroff`).
    pub poweroff_command: String,
    /// Check host keys against this file instead of not checking.
    pub known_hosts: Option<PathBuf>,
    /// Bound on each SSH run, connection included.
    pub timeout: Duration,
    /// The `ssh` program (`ssh`).
    pub ssh_program: String,
}

impl SshConfig {
    /// Defaults: port 22, `sudo reboot`, `sudo poweroff`, 30 s, `ssh`.
    pub fn new(
        address: impl Into<String>,
        username: impl Into<String>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        SshConfig {
            address: address.into(),
            port: 22,
            username: username.into(),
            key_file: key_file.into(),
            reboot_command: "sudo reboot".into(),
            poweroff_command: "sudo poweroff".into(),
            known_hosts: None,
            timeout: Duration::from_secs(30),
            ssh_program: "ssh".into(),
        }
    }
}

/// A [`PowerDriver`] that works through the OS over SSH.
#[derive(Debug, Clone)]
pub struct SshDriver {
    config: SshConfig,
}

/// How the OpenSSH client reports its own failures (exit code 255).
fn ssh_failure(done: &Finished, after_command: bool, timeout: Duration) -> Option<LomError> {
    if done.code != Some(255) {
        return None;
    }
    let err = done.stderr.to_ascii_lowercase();
    let text = done.output();
    if err.contains("permission denied") || err.contains("too many authentication failures") {
        Some(LomError::AuthFailed(text))
    } else if err.contains("timed out") {
        Some(LomError::Timeout(timeout))
    } else if err.contains("connection refused")
        || err.contains("no route to host")
        || err.contains("could not resolve")
        || err.contains("network is unreachable")
    {
        Some(LomError::Unreachable(text))
    } else if after_command
        && (err.contains("closed by remote host")
            || err.contains("connection reset")
            || err.contains("broken pipe")
            || err.is_empty())
    {
        // A reboot or power-off ends the session under us: that is the
        // command working, not failing.
        None
    } else {
        Some(LomError::Protocol(format!("ssh: {text}")))
    }
}

impl SshDriver {
    /// A driver for `config`.
    pub fn new(config: SshConfig) -> Self {
        SshDriver { config }
    }

    fn argv(&self, command: &str) -> Vec<String> {
        let c = &self.config;
        let secs = c.timeout.as_secs().clamp(1, 3600);
        let mut argv = vec![
            c.ssh_program.clone(),
            "-F".into(),
            "none".into(),
            "-i".into(),
            c.key_file.display().to_string(),
            "-p".into(),
            c.port.to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={secs}"),
            "-o".into(),
            "ServerAliveInterval=5".into(),
            "-o".into(),
            "ServerAliveCountMax=2".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        match &c.known_hosts {
            Some(file) => argv.extend([
                "-o".into(),
                "StrictHostKeyChecking=yes".into(),
                "-o".into(),
                format!("UserKnownHostsFile={}", file.display()),
            ]),
            None => argv.extend([
                "-o".into(),
                "StrictHostKeyChecking=no".into(),
                "-o".into(),
                "UserKnownHostsFile=/dev/null".into(),
            ]),
        }
        argv.push(format!("{}@{}", c.username, c.address));
        argv.push("--".into());
        argv.push(command.to_owned());
        argv
    }

    /// Runs `command` (a remote shell command line) on the machine; `Ok`
    /// when it exits 0. Connection failures are typed as for the driver
    /// (unreachable, auth, timeout).
    pub async fn run_command(&self, command: &str) -> Result<Finished, LomError> {
        self.remote(command, false).await
    }

    async fn remote(&self, command: &str, ends_session: bool) -> Result<Finished, LomError> {
        if !self.config.key_file.exists() {
            return Err(LomError::Config(format!(
                "SSH key file {} does not exist",
                self.config.key_file.display()
            )));
        }
        let done = run(&self.argv(command), &[], self.config.timeout).await?;
        if let Some(e) = ssh_failure(&done, ends_session, self.config.timeout) {
            return Err(e);
        }
        if done.success() || (ends_session && done.code == Some(255)) {
            Ok(done)
        } else {
            Err(done.failed())
        }
    }
}

#[async_trait]
impl PowerDriver for SshDriver {
    fn kind(&self) -> &'static str {
        "ssh"
    }

    fn target(&self) -> String {
        format!("{}:{}", self.config.address, self.config.port)
    }

    async fn power_state(&self) -> Result<PowerState, LomError> {
        self.remote("true", false).await?;
        Ok(PowerState::On)
    }

    async fn power(&self, action: PowerAction) -> Result<(), LomError> {
        let command = match action {
            PowerAction::Cycle | PowerAction::Reset => self.config.reboot_command.clone(),
            PowerAction::SoftOff => self.config.poweroff_command.clone(),
            PowerAction::On | PowerAction::Off => {
                return Err(LomError::Unsupported(format!(
                    "power {action} through the OS over SSH"
                )));
            }
        };
        self.remote(&command, true).await.map(drop)
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), LomError> {
        Err(LomError::Unsupported(format!(
            "setting the boot device ({}) over SSH: the machine must boot from the network by its own boot order",
            boot.device.name()
        )))
    }
}
