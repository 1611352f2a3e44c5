//! `vaquero power`: one power or boot-device operation on one host, through
//! the driver its SoT entry names and the same wrapper the engine uses.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::ValueEnum;
use vaquero_lom::{
    BootDevice, BootMode, BootOverride, DriverOptions, Lom, LomConfig, PowerAction, PowerDriver,
    driver_for,
};

use crate::Format;

/// What to do.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Op {
    /// Print the power state.
    Status,
    /// Power on.
    On,
    /// Hard power off.
    Off,
    /// Power off, then on (powers on a machine that is off).
    Cycle,
    /// Soft off: ask the OS to shut down.
    Soft,
    /// Hard reset.
    Reset,
    /// Boot from the network next (PXE).
    Pxe,
    /// Boot over UEFI HTTP next.
    Http,
    /// Boot from the local disk next.
    Disk,
    /// Enter the firmware setup next.
    Bios,
    /// Print what the BMC knows of the machine.
    Inventory,
}

pub fn power(
    dir: &Path,
    site: Option<&str>,
    host: &str,
    op: Op,
    persistent: bool,
    mode: BootMode,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let sot = crate::commands::load(dir)?;
    let models = sot.compile()?;
    let (site, found) = sot.find_host(host, site)?;
    let found = models
        .get(site)
        .and_then(|m| m.hosts().iter().find(|h| h.name == found.name))
        .with_context(|| format!("host {site}/{host} is not in the compiled model"))?;
    let name = found.name.clone();
    // Said in full in every line: host names repeat across sites.
    let host = format!("{site}/{name}");
    let host = host.as_str();
    let driver =
        driver_for(found, &DriverOptions::default()).map_err(|e| anyhow::anyhow!("{host}: {e}"))?;
    let lom = Lom::new(LomConfig::default());
    let managed: Arc<dyn PowerDriver> = Arc::new(lom.manage(driver));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let boot = |device| BootOverride {
        device,
        persistent,
        mode,
    };
    let result: Result<serde_json::Value, vaquero_lom::LomError> = runtime.block_on(async {
        Ok(match op {
            Op::Status => serde_json::json!({ "power": managed.power_state().await? }),
            Op::Inventory => {
                serde_json::to_value(managed.inventory().await?).unwrap_or(serde_json::Value::Null)
            }
            Op::On | Op::Off | Op::Cycle | Op::Soft | Op::Reset => {
                let action = match op {
                    Op::On => PowerAction::On,
                    Op::Off => PowerAction::Off,
                    Op::Cycle => PowerAction::Cycle,
                    Op::Soft => PowerAction::SoftOff,
                    _ => PowerAction::Reset,
                };
                managed.power(action).await?;
                serde_json::json!({ "done": action.name() })
            }
            Op::Pxe | Op::Http | Op::Disk | Op::Bios => {
                let device = match op {
                    Op::Pxe => BootDevice::Pxe,
                    Op::Http => BootDevice::Http,
                    Op::Disk => BootDevice::Disk,
                    _ => BootDevice::BiosSetup,
                };
                managed.set_boot_device(boot(device)).await?;
                serde_json::json!({
                    "next_boot": device.name(),
                    "persistent": persistent,
                })
            }
        })
    });
    let target = format!("{} {}", managed.kind(), managed.target());
    match (result, format) {
        (Ok(v), Format::Json) => {
            crate::json::print(
                "PowerResult",
                serde_json::json!({ "site": site, "host": name, "bmc": target, "ok": true, "result": v }),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        (Ok(v), Format::Text) => {
            let text = match op {
                Op::Status => format!("{host}: power {}", v["power"].as_str().unwrap_or("?")),
                Op::Inventory => {
                    let f = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
                    format!(
                        "{host}: vendor {}, model {}, serial {}, uuid {}",
                        f("vendor"),
                        f("model"),
                        f("serial"),
                        f("uuid")
                    )
                }
                Op::Pxe | Op::Http | Op::Disk | Op::Bios => format!(
                    "{host}: next boot from {} ({})",
                    v["next_boot"].as_str().unwrap_or("?"),
                    if persistent { "every boot" } else { "once" }
                ),
                _ => format!("{host}: {} done", v["done"].as_str().unwrap_or("?")),
            };
            println!("{text} [{target}]");
            Ok(ExitCode::SUCCESS)
        }
        (Err(e), Format::Json) => {
            crate::json::print(
                "PowerResult",
                serde_json::json!({
                    "site": site, "host": name, "bmc": target, "ok": false,
                    "error": { "kind": e.label(), "message": e.to_string() },
                }),
            )?;
            Ok(ExitCode::from(1))
        }
        (Err(e), Format::Text) => {
            eprintln!("{host}: {e} [{target}]");
            Ok(ExitCode::from(1))
        }
    }
}
