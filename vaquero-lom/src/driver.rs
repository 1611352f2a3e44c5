//! The [`PowerDriver`] trait, what it operates on, and its error type.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What a BMC says about the machine's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// The machine is powered on.
    On,
    /// The machine is powered off.
    Off,
    /// The BMC did not say, or the machine is between states (Redfish
    /// `PoweringOn` / `PoweringOff`). Ask again later; never act on it.
    Unknown,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
        })
    }
}

/// A power operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    /// Power on (nothing happens when already on).
    On,
    /// Hard power off, at once.
    Off,
    /// Ask the OS to shut down (ACPI power button, or the OS itself).
    SoftOff,
    /// Power off, then on. A machine that is off is powered on: after a
    /// cycle the machine is booting, whatever state it was in (IPMI and
    /// Redfish BMCs differ on cycling a machine that is off; drivers hide
    /// that).
    Cycle,
    /// Hard reset (the reset line), without removing power.
    Reset,
}

impl PowerAction {
    /// Every action, in a stable order.
    pub const ALL: [PowerAction; 5] = [
        PowerAction::On,
        PowerAction::Off,
        PowerAction::SoftOff,
        PowerAction::Cycle,
        PowerAction::Reset,
    ];

    /// The lower-case name used in logs, metrics and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::SoftOff => "soft",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A device to boot from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    /// Network boot through PXE.
    Pxe,
    /// UEFI HTTP boot (Redfish `UefiHttp`; IPMI has no such device).
    Http,
    /// The first local disk.
    Disk,
    /// The firmware's setup screen.
    BiosSetup,
}

impl BootDevice {
    /// The lower-case name used in logs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Http => "http",
            BootDevice::Disk => "disk",
            BootDevice::BiosSetup => "bios",
        }
    }
}

/// The firmware mode to boot the device in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    /// Leave the mode as the firmware has it.
    #[default]
    Unchanged,
    /// UEFI boot.
    Uefi,
    /// Legacy (BIOS) boot.
    Legacy,
}

/// A next-boot override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BootOverride {
    /// The device.
    pub device: BootDevice,
    /// Every boot from now on (true) or the next boot only (false).
    pub persistent: bool,
    /// UEFI or legacy.
    pub mode: BootMode,
}

impl BootOverride {
    /// The next boot only, from `device`, in the firmware's current mode.
    pub fn once(device: BootDevice) -> Self {
        BootOverride {
            device,
            persistent: false,
            mode: BootMode::Unchanged,
        }
    }
}

/// What a BMC tells about its machine. Every field is optional: BMCs
/// differ in what they know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Manufacturer, e.g. `Dell Inc.` (IPMI: the IANA enterprise number).
    pub vendor: Option<String>,
    /// Model or product.
    pub model: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// SMBIOS UUID, lower-case hyphenated.
    pub uuid: Option<String>,
}

/// What went wrong talking to a BMC. Every variant says what happened; the
/// text inside is detail for the operator, never something to match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LomError {
    /// Nothing answers at the address (connection refused, no route, DNS).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The BMC refused the credentials (or the user lacks the privilege).
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The BMC, or this driver, cannot do that.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The BMC said it is busy (out of sessions, node busy, HTTP 503).
    #[error("BMC busy: {0}")]
    Busy(String),
    /// No answer within the time allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The BMC answered something this driver cannot use (an error code,
    /// a malformed reply, a task that ended in an exception).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An operator program (exec, ssh) ran and failed.
    #[error("command failed with {status}: {output}")]
    CommandFailed {
        /// The exit status as text (`exit code 3`, `signal 9`).
        status: String,
        /// Its captured output (stdout then stderr), trimmed.
        output: String,
    },
    /// The driver is not configured well enough to try (no password, a bad
    /// URL, a missing key file).
    #[error("configuration: {0}")]
    Config(String),
}

impl LomError {
    /// Whether trying again may succeed: unreachable, busy and timed out
    /// BMCs are retried; refused credentials, unsupported operations,
    /// protocol errors and bad configuration are not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LomError::Unreachable(_) | LomError::Busy(_) | LomError::Timeout(_)
        )
    }

    /// A short, stable label for metrics (`unreachable`, `auth`, …).
    pub fn label(&self) -> &'static str {
        match self {
            LomError::Unreachable(_) => "unreachable",
            LomError::AuthFailed(_) => "auth",
            LomError::Unsupported(_) => "unsupported",
            LomError::Busy(_) => "busy",
            LomError::Timeout(_) => "timeout",
            LomError::Protocol(_) => "protocol",
            LomError::CommandFailed { .. } => "command",
            LomError::Config(_) => "config",
        }
    }
}

/// Power and boot-device control of one machine.
///
/// One value drives one machine through its BMC (or PDU, or OS). Methods
/// take `&self` and may be called from many tasks; [`crate::Lom`] wraps
/// every driver so that one operation at a time reaches a BMC, transient
/// errors are retried and every call is bounded in time — a driver itself
/// only does one attempt of one operation.
#[async_trait]
pub trait PowerDriver: Send + Sync {
    /// The protocol, for logs and metrics: `ipmi`, `redfish`, `ssh`, …
    fn kind(&self) -> &'static str;

    /// What this driver talks to, e.g. `10.0.0.5:623`: operations on
    /// drivers with the same target are serialized.
    fn target(&self) -> String;

    /// The machine's power state.
    async fn power_state(&self) -> Result<PowerState, LomError>;

    /// Carry out a power operation.
    async fn power(&self, action: PowerAction) -> Result<(), LomError>;

    /// Set the device the machine boots from next.
    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), LomError>;

    /// Identity of the machine, when the BMC offers it.
    async fn inventory(&self) -> Result<Inventory, LomError> {
        Err(LomError::Unsupported(format!(
            "inventory over {}",
            self.kind()
        )))
    }
}

impl fmt::Debug for dyn PowerDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerDriver")
            .field("kind", &self.kind())
            .field("target", &self.target())
            .finish()
    }
}
