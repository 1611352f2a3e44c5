//! The exec driver: an operator's program does the power work (a smart
//! PDU's CLI, a vendor tool, a script around a hypervisor).
//!
//! # The contract with the program
//!
//! - **argv** is the SoT's `command`, each element a minijinja template
//!   (strict: an unknown variable is an error) with `host` (the host as
//!   the SoT has it, e.g. `{{ host.name }}`), `bmc` (`address`, `port`,
//!   `username`) and the operation: `action` (`status`, `on`, `off`,
//!   `soft`, `cycle`, `reset`, `boot`, `inventory`), and for `boot`
//!   `device` (`pxe`, `http`, `disk`, `bios`), `persistent` (bool) and
//!   `mode` (`uefi`, `legacy`, `unchanged`). When no element mentions
//!   `action`, the operation is appended as arguments, the way fence
//!   agents and `ipmitool` take them: `… status`, `… on`, `… boot pxe once
//!   uefi`.
//! - **environment**: `VAQUERO_ACTION`, `VAQUERO_HOST`,
//!   `VAQUERO_BMC_ADDRESS`, `VAQUERO_BMC_USERNAME`, `VAQUERO_BMC_PASSWORD`
//!   (when the SoT names a secret: passwords never go on a command line,
//!   where `ps` shows them), and for `boot` `VAQUERO_BOOT_DEVICE`,
//!   `VAQUERO_BOOT_PERSISTENT`, `VAQUERO_BOOT_MODE`.
//! - **exit code**: 0 done; 64 this operation is not supported; 69 the
//!   device is unreachable; 75 busy, try later; 77 credentials refused;
//!   anything else a failure, reported with the output.
//! - **stdout** of `status`: `on` or `off` (first word, any case);
//!   anything else is `unknown`. Of `inventory`: `key=value` lines with
//!   keys `vendor`, `model`, `serial`, `uuid`.

use std::time::Duration;

use async_trait::async_trait;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use crate::driver::{
    BootMode, BootOverride, Inventory, LomError, PowerAction, PowerDriver, PowerState,
};
use crate::process::{Finished, run};

/// What the exec driver runs.
#[derive(Clone)]
#[non_exhaustive]
pub struct ExecConfig {
    /// The program and its arguments, templated.
    pub command: Vec<String>,
    /// The host's data, as `host` in the templates.
    pub host: Value,
    /// The host's name (`VAQUERO_HOST`, and the driver's target).
    pub host_name: String,
    /// Address of the device the program drives, if any.
    pub address: Option<String>,
    /// Port, if any.
    pub port: Option<u16>,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, handed over in `VAQUERO_BMC_PASSWORD` only.
    pub password: Option<String>,
    /// How long one run may take before it is killed.
    pub timeout: Duration,
}

impl ExecConfig {
    /// Runs `command` (templated, with `host` as `host`) for `host_name`:
    /// no address, port or credentials, a minute per run.
    pub fn new(command: Vec<String>, host_name: impl Into<String>, host: Value) -> Self {
        ExecConfig {
            command,
            host,
            host_name: host_name.into(),
            address: None,
            port: None,
            username: None,
            password: None,
            timeout: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for ExecConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecConfig")
            .field("command", &self.command)
            .field("host_name", &self.host_name)
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A [`PowerDriver`] that runs an operator's program.
#[derive(Debug, Clone)]
pub struct ExecDriver {
    config: ExecConfig,
    appends_action: bool,
}

/// One operation, as the program sees it.
struct Op {
    action: &'static str,
    boot: Option<BootOverride>,
}

fn mode_name(mode: BootMode) -> &'static str {
    match mode {
        BootMode::Unchanged => "unchanged",
        BootMode::Uefi => "uefi",
        BootMode::Legacy => "legacy",
    }
}

impl ExecDriver {
    /// A driver for `config`; the templates are checked here, so a broken
    /// one is a configuration error before anything runs.
    pub fn new(config: ExecConfig) -> Result<Self, LomError> {
        if config.command.is_empty() {
            return Err(LomError::Config("an exec BMC needs a `command`".into()));
        }
        let appends_action = !config.command.iter().any(|a| a.contains("action"));
        let d = ExecDriver {
            config,
            appends_action,
        };
        d.argv(&Op {
            action: "status",
            boot: None,
        })?;
        Ok(d)
    }

    fn argv(&self, op: &Op) -> Result<Vec<String>, LomError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let ctx = json!({
            "host": self.config.host,
            "bmc": {
                "address": self.config.address,
                "port": self.config.port,
                "username": self.config.username,
            },
            "action": op.action,
            "device": op.boot.map(|b| b.device.name()),
            "persistent": op.boot.map(|b| b.persistent),
            "mode": op.boot.map(|b| mode_name(b.mode)),
        });
        let mut argv = Vec::with_capacity(self.config.command.len() + 4);
        for (i, t) in self.config.command.iter().enumerate() {
            let arg = env
                .render_str(t, minijinja::Value::from(minijinja::value::Serde(&ctx)))
                .map_err(|e| LomError::Config(format!("command[{i}] {t:?}: {e}")))?;
            argv.push(arg);
        }
        if self.appends_action {
            argv.push(op.action.to_owned());
            if let Some(b) = op.boot {
                argv.push(b.device.name().to_owned());
                argv.push(if b.persistent { "persistent" } else { "once" }.to_owned());
                if b.mode != BootMode::Unchanged {
                    argv.push(mode_name(b.mode).to_owned());
                }
            }
        }
        Ok(argv)
    }

    async fn invoke(&self, op: Op) -> Result<Finished, LomError> {
        let argv = self.argv(&op)?;
        let mut env = vec![
            ("VAQUERO_ACTION".to_owned(), op.action.to_owned()),
            ("VAQUERO_HOST".to_owned(), self.config.host_name.clone()),
        ];
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                env.push((k.to_owned(), v));
            }
        };
        put("VAQUERO_BMC_ADDRESS", self.config.address.clone());
        put("VAQUERO_BMC_USERNAME", self.config.username.clone());
        put("VAQUERO_BMC_PASSWORD", self.config.password.clone());
        if let Some(b) = op.boot {
            put("VAQUERO_BOOT_DEVICE", Some(b.device.name().to_owned()));
            put("VAQUERO_BOOT_PERSISTENT", Some(b.persistent.to_string()));
            put("VAQUERO_BOOT_MODE", Some(mode_name(b.mode).to_owned()));
        }
        let done = run(&argv, &env, self.config.timeout).await?;
        match done.code {
            Some(0) => Ok(done),
            Some(64) => Err(LomError::Unsupported(format!(
                "{} (the program said: {})",
                op.action,
                done.output()
            ))),
            Some(69) => Err(LomError::Unreachable(done.output())),
            Some(75) => Err(LomError::Busy(done.output())),
            Some(77) => Err(LomError::AuthFailed(done.output())),
            _ => Err(done.failed()),
        }
    }
}

#[async_trait]
impl PowerDriver for ExecDriver {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn target(&self) -> String {
        match &self.config.address {
            Some(a) => a.clone(),
            None => format!("exec:{}", self.config.host_name),
        }
    }

    async fn power_state(&self) -> Result<PowerState, LomError> {
        let done = self
            .invoke(Op {
                action: "status",
                boot: None,
            })
            .await?;
        let word = done
            .stdout
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        Ok(match word.as_str() {
            "on" => PowerState::On,
            "off" => PowerState::Off,
            _ => PowerState::Unknown,
        })
    }

    async fn power(&self, action: PowerAction) -> Result<(), LomError> {
        self.invoke(Op {
            action: action.name(),
            boot: None,
        })
        .await
        .map(drop)
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), LomError> {
        self.invoke(Op {
            action: "boot",
            boot: Some(boot),
        })
        .await
        .map(drop)
    }

    async fn inventory(&self) -> Result<Inventory, LomError> {
        let done = self
            .invoke(Op {
                action: "inventory",
                boot: None,
            })
            .await?;
        let mut inv = Inventory::default();
        for line in done.stdout.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = Some(v.trim().to_owned()).filter(|v| !v.is_empty());
            match k.trim() {
                "vendor" => inv.vendor = v,
                "model" => inv.model = v,
                "serial" => inv.serial = v,
                "uuid" => inv.uuid = v.map(|u| u.to_ascii_lowercase()),
                _ => {}
            }
        }
        Ok(inv)
    }
}
