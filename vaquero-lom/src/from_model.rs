//! Drivers for the hosts of a SoT: the host's `bmc` entry, with its
//! secret read from the environment or a file when the driver is made.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vaquero_model::{Bmc, BmcType, Host};

use crate::driver::{LomError, PowerDriver};
use crate::exec::{ExecConfig, ExecDriver};
use crate::ipmi::{IPMI_PORT, IpmiConfig, IpmiDriver};
use crate::redfish::{RedfishConfig, RedfishDriver};
use crate::ssh::{SshConfig, SshDriver};

/// Bounds for the drivers [`driver_for`] makes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DriverOptions {
    /// IPMI: wait for the answer to a request before sending it again
    /// (each further copy waits once more as long).
    pub ipmi_retransmit: Duration,
    /// IPMI: copies of each request, the first included.
    pub ipmi_tries: u32,
    /// Redfish: bound on each request.
    pub http_timeout: Duration,
    /// Redfish: bound on following a task.
    pub task_timeout: Duration,
    /// exec and ssh: bound on each run.
    pub command_timeout: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            ipmi_retransmit: crate::ipmi::DEFAULT_RETRANSMIT,
            ipmi_tries: crate::ipmi::DEFAULT_TRIES,
            http_timeout: Duration::from_secs(15),
            task_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(60),
        }
    }
}

/// Where a secret comes from, read now.
fn secret(host: &str, env: Option<&str>, file: Option<&str>) -> Result<Option<String>, LomError> {
    if let Some(var) = env {
        return std::env::var(var).map(Some).map_err(|_| {
            LomError::Config(format!(
                "{host}: the BMC password is in ${var}, which is not set"
            ))
        });
    }
    if let Some(path) = file {
        let mut s = std::fs::read_to_string(path)
            .map_err(|e| LomError::Config(format!("{host}: password_file {path}: {e}")))?;
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        return Ok(Some(s));
    }
    Ok(None)
}

/// IPMI retransmission for `bmc`: its own `retransmit` and `tries`, else
/// the options'.
fn ipmi_schedule(bmc: &Bmc, opts: &DriverOptions) -> (Duration, u32) {
    (
        bmc.retransmit
            .map_or(opts.ipmi_retransmit, |d| Duration::from_secs(d.as_secs())),
        bmc.tries.unwrap_or(opts.ipmi_tries),
    )
}

/// Makes the power drivers of the hosts whose BMC is
/// `{type: custom, driver: NAME, params: {…}}`, for the name it is
/// registered under in [`PowerDrivers`].
///
/// ```
/// use std::sync::Arc;
/// use vaquero_lom::{DriverFactory, FakeDriver, LomError, PowerDriver, serde_json};
/// use vaquero_model::{Bmc, Host};
///
/// struct Lab;
/// impl DriverFactory for Lab {
///     fn check(&self, params: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
///         match params.get("outlet") {
///             Some(v) if v.is_u64() => Ok(()),
///             _ => Err("`outlet` must be a number".into()),
///         }
///     }
///     fn driver(&self, host: &Host, _bmc: &Bmc) -> Result<Arc<dyn PowerDriver>, LomError> {
///         Ok(Arc::new(FakeDriver::new(&host.name)))
///     }
/// }
/// let mut drivers = vaquero_lom::PowerDrivers::default();
/// drivers.register("lab-pdu", Arc::new(Lab));
/// assert!(drivers.has("lab-pdu"));
/// ```
pub trait DriverFactory: Send + Sync {
    /// Checks a BMC entry's `params`; an error is reported at the entry's
    /// file and line, and the SoT revision is refused.
    fn check(&self, params: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
        let _ = params;
        Ok(())
    }

    /// The driver of `host`, whose BMC entry is `bmc` (its `params`
    /// checked).
    fn driver(&self, host: &Host, bmc: &Bmc) -> Result<Arc<dyn PowerDriver>, LomError>;
}

/// The power drivers a process has: the built-in ones (ipmi, redfish,
/// ssh, exec) and the custom ones registered by name.
#[derive(Clone, Default)]
pub struct PowerDrivers {
    /// Bounds for the built-in drivers.
    pub options: DriverOptions,
    custom: std::collections::BTreeMap<String, Arc<dyn DriverFactory>>,
}

impl std::fmt::Debug for PowerDrivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerDrivers")
            .field("options", &self.options)
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PowerDrivers {
    /// Registers `factory` for `bmc: {type: custom, driver: NAME}`
    /// (replacing one registered under the same name).
    pub fn register(&mut self, name: impl Into<String>, factory: Arc<dyn DriverFactory>) {
        self.custom.insert(name.into(), factory);
    }

    /// Whether a custom driver is registered under `name`.
    pub fn has(&self, name: &str) -> bool {
        self.custom.contains_key(name)
    }

    /// The driver for `host`'s BMC, as its SoT entry says.
    pub fn driver_for(&self, host: &Host) -> Result<Arc<dyn PowerDriver>, LomError> {
        match host.bmc() {
            Some((_, bmc)) if bmc.kind == BmcType::Custom => {
                let name = bmc.driver.as_deref().unwrap_or_default();
                let factory = self.custom.get(name).ok_or_else(|| {
                    LomError::Config(format!(
                        "{}: this process has no power driver `{name}`",
                        host.name
                    ))
                })?;
                factory.driver(host, bmc)
            }
            _ => driver_for(host, &self.options),
        }
    }

    /// The errors of `sot`'s custom BMCs, at their file and line: a driver
    /// this process does not have, `params` its driver refuses.
    pub fn check(&self, sot: &vaquero_model::Sot) -> Vec<vaquero_model::Diagnostic> {
        let mut out = Vec::new();
        for (site_id, site) in &sot.sites {
            for host in &site.hosts {
                let Some((_, bmc)) = host.bmc() else { continue };
                if bmc.kind != BmcType::Custom {
                    continue;
                }
                let path = host
                    .interfaces
                    .iter()
                    .position(|i| i.bmc.is_some())
                    .map(|i| format!("interfaces[{i}].bmc"))
                    .unwrap_or_default();
                let here = |message: String| match sot
                    .bmc_origins
                    .get(&(site_id.clone(), host.name.clone()))
                {
                    Some(o) => o.error(&path, message),
                    None => vaquero_model::Diagnostic::error(
                        &format!("sites/{site_id}"),
                        0,
                        0,
                        &host.name,
                        message,
                    ),
                };
                let name = bmc.driver.as_deref().unwrap_or_default();
                match self.custom.get(name) {
                    None => out.push(here(format!(
                        "no power driver `{name}` in this process (it has: {})",
                        if self.custom.is_empty() {
                            "none registered".to_owned()
                        } else {
                            self.custom.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ))),
                    Some(f) => {
                        if let Err(e) = f.check(&bmc.params) {
                            out.push(here(format!("params for driver `{name}`: {e}")));
                        }
                    }
                }
            }
        }
        out
    }
}

/// The driver for `host`'s BMC, as its SoT entry says (the built-in
/// types; a custom one needs [`PowerDrivers`]).
pub fn driver_for(host: &Host, opts: &DriverOptions) -> Result<Arc<dyn PowerDriver>, LomError> {
    let (iface, bmc) = host
        .bmc()
        .ok_or_else(|| LomError::Config(format!("{} has no BMC in the SoT", host.name)))?;
    let address = bmc
        .address
        .clone()
        .unwrap_or_else(|| iface.ipv4.to_string());
    let name = &host.name;
    let need_user = || {
        bmc.username
            .clone()
            .ok_or_else(|| LomError::Config(format!("{name}: the BMC needs a `username`")))
    };
    Ok(match bmc.kind {
        BmcType::Ipmi => {
            let password = secret(
                name,
                bmc.password_env.as_deref(),
                bmc.password_file.as_deref(),
            )?
            .unwrap_or_default();
            let (retransmit, tries) = ipmi_schedule(bmc, opts);
            Arc::new(IpmiDriver::new(IpmiConfig {
                address,
                port: bmc.port.unwrap_or(IPMI_PORT),
                username: need_user()?,
                password,
                retransmit,
                tries,
            }))
        }
        BmcType::Redfish => {
            let base = if address.starts_with("http://") || address.starts_with("https://") {
                address
            } else {
                match bmc.port {
                    Some(p) => format!("https://{address}:{p}"),
                    None => format!("https://{address}"),
                }
            };
            let password = secret(
                name,
                bmc.password_env.as_deref(),
                bmc.password_file.as_deref(),
            )?
            .unwrap_or_default();
            let ca_cert_pem = match &bmc.ca_cert {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| LomError::Config(format!("{name}: ca_cert {path}: {e}")))?,
                ),
                None => None,
            };
            Arc::new(RedfishDriver::new(RedfishConfig {
                insecure_tls: bmc.insecure_tls,
                ca_cert_pem,
                timeout: opts.http_timeout,
                task_timeout: opts.task_timeout,
                ..RedfishConfig::new(base, need_user()?, password)
            })?)
        }
        BmcType::Ssh => {
            let key = bmc.password_file.clone().ok_or_else(|| {
                LomError::Config(format!(
                    "{name}: an ssh BMC needs `password_file` naming the private key"
                ))
            })?;
            let mut config = SshConfig::new(address, need_user()?, PathBuf::from(key));
            if let Some(p) = bmc.port {
                config.port = p;
            }
            if !bmc.command.is_empty() {
                config.reboot_command = bmc.command.join(" ");
            }
            config.timeout = opts.command_timeout;
            Arc::new(SshDriver::new(config))
        }
        BmcType::Exec => {
            let password = secret(
                name,
                bmc.password_env.as_deref(),
                bmc.password_file.as_deref(),
            )?;
            let host_json =
                serde_json::to_value(host).map_err(|e| LomError::Config(format!("{name}: {e}")))?;
            Arc::new(ExecDriver::new(ExecConfig {
                command: bmc.command.clone(),
                host: host_json,
                host_name: name.clone(),
                address: Some(address),
                port: bmc.port,
                username: bmc.username.clone(),
                password,
                timeout: opts.command_timeout,
            })?)
        }
        BmcType::Custom => {
            return Err(LomError::Config(format!(
                "{name}: a custom BMC (driver `{}`) needs the process's registered drivers",
                bmc.driver.as_deref().unwrap_or_default()
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bmc_s_own_schedule_wins_over_the_options() {
        let opts = DriverOptions::default();
        let own: Bmc = serde_json::from_value(
            serde_json::json!({"type": "ipmi", "retransmit": "3s", "tries": 6}),
        )
        .unwrap();
        assert_eq!(ipmi_schedule(&own, &opts), (Duration::from_secs(3), 6));
        let plain: Bmc = serde_json::from_value(serde_json::json!({"type": "ipmi"})).unwrap();
        assert_eq!(
            ipmi_schedule(&plain, &opts),
            (Duration::from_secs(1), 4),
            "ipmitool's defaults"
        );
    }
}
