//! Lights-out management for Vaquero: the [`PowerDriver`] trait (power
//! state, on/off/cycle/reset, next boot device, inventory) and its drivers
//! — IPMI over LAN, Redfish, SSH and exec — behind [`Lom`], the wrapper
//! that serializes, retries, bounds and meters every BMC operation.

pub mod driver;
pub mod fake;
pub mod guard;
pub mod ipmi;
pub mod redfish;

pub use driver::{
    BootDevice, BootMode, BootOverride, Inventory, LomError, PowerAction, PowerDriver, PowerState,
};
pub use fake::{FakeCall, FakeDriver};
pub use guard::{Lom, LomConfig, Managed};
pub use ipmi::{IpmiConfig, IpmiDriver};
pub use redfish::{RedfishConfig, RedfishDriver};
