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

/// The driver for `host`'s BMC, as its SoT entry says.
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
