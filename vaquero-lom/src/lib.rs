//! Lights-out management for Vaquero: the [`PowerDriver`] trait (power
//! state, on/off/cycle/reset, next boot device, inventory), its drivers —
//! [IPMI over LAN](ipmi), [Redfish](redfish), [SSH](ssh), [exec] and
//! a [fake] — and [`Lom`], the wrapper every driver goes through:
//! one operation at a time per BMC, a global cap on operations in flight,
//! a timeout on every attempt, bounded retries with backoff for transient
//! errors, and metrics (`vaquero_lom_operations_total{kind,op,result}`,
//! `vaquero_lom_operation_duration_seconds`, `vaquero_lom_retries_total`,
//! `vaquero_lom_operations_in_flight`) and a tracing span per operation.
//!
//! `driver_for` makes the driver a SoT host's `bmc` entry describes,
//! reading its secret from the environment or a file (feature `model`, on
//! by default; without it the crate does not depend on vaquero-model).
//!
//! The [`PowerDriver`] trait is an [`macro@async_trait`]; the macro is
//! re-exported here, so a driver needs no other dependency for it.
//!
//! # Writing a driver
//!
//! Implement [`PowerDriver`] for your hardware — a smart PDU, a
//! hypervisor, a vendor API. A driver does one attempt of one operation
//! and says what went wrong with a [`LomError`] variant: retries,
//! timeouts, serialization and metrics come from [`Lom`], so the driver
//! stays small. Return [`LomError::Unsupported`] for what the hardware
//! cannot do (a PDU has no boot device), and make transient failures
//! [`LomError::Busy`], [`LomError::Timeout`] or [`LomError::Unreachable`]
//! so they are retried.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use vaquero_lom::{
//!     BootOverride, Lom, LomConfig, LomError, PowerAction, PowerDriver, PowerState,
//! };
//!
//! /// One outlet of a PDU (here in memory; a real one speaks HTTP or SNMP).
//! struct Outlet {
//!     pdu: String,
//!     outlet: u8,
//!     on: AtomicBool,
//! }
//!
//! #[vaquero_lom::async_trait]
//! impl PowerDriver for Outlet {
//!     fn kind(&self) -> &'static str {
//!         "pdu"
//!     }
//!     fn target(&self) -> String {
//!         // Operations on one PDU are serialized, whatever the outlet.
//!         self.pdu.clone()
//!     }
//!     async fn power_state(&self) -> Result<PowerState, LomError> {
//!         Ok(if self.on.load(Ordering::SeqCst) { PowerState::On } else { PowerState::Off })
//!     }
//!     async fn power(&self, action: PowerAction) -> Result<(), LomError> {
//!         match action {
//!             PowerAction::On | PowerAction::Cycle | PowerAction::Reset => {
//!                 self.on.store(true, Ordering::SeqCst)
//!             }
//!             PowerAction::Off => self.on.store(false, Ordering::SeqCst),
//!             PowerAction::SoftOff => {
//!                 return Err(LomError::Unsupported("a PDU cannot ask the OS".into()))
//!             }
//!         }
//!         Ok(())
//!     }
//!     async fn set_boot_device(&self, _: BootOverride) -> Result<(), LomError> {
//!         Err(LomError::Unsupported("a PDU has no boot device".into()))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let lom = Lom::new(LomConfig::default());
//! let machine = lom.manage(Arc::new(Outlet {
//!     pdu: "pdu-r1".into(),
//!     outlet: 4,
//!     on: AtomicBool::new(false),
//! }));
//! machine.power(PowerAction::Cycle).await.unwrap();
//! assert_eq!(machine.power_state().await.unwrap(), PowerState::On);
//! # });
//! ```
//!
//! `examples/custom_driver.rs` is a complete one: a PDU driven over HTTP.

pub mod driver;
pub mod exec;
pub mod fake;
#[cfg(feature = "model")]
mod from_model;
pub mod guard;
pub mod ipmi;
mod process;
pub mod redfish;
pub mod ssh;

pub use async_trait::async_trait;
pub use driver::{
    BootDevice, BootMode, BootOverride, Inventory, LomError, PowerAction, PowerDriver, PowerState,
};
pub use exec::{ExecConfig, ExecDriver};
pub use fake::{FakeCall, FakeDriver};
#[cfg(feature = "model")]
pub use from_model::{DriverFactory, DriverOptions, PowerDrivers, driver_for};
pub use guard::{Lom, LomConfig, Managed};
pub use ipmi::{IpmiConfig, IpmiDriver};
pub use process::{Finished, run as run_program};
pub use redfish::{RedfishConfig, RedfishDriver};
/// Re-exported: an exec driver's host context ([`ExecConfig::host`]) is a
/// `serde_json::Value`.
pub use serde_json;
pub use ssh::{SshConfig, SshDriver};

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Describes this crate's metrics to the process's `metrics` recorder
/// (the help text a Prometheus scrape shows), and registers those without
/// labels at zero so that they are scraped before their first event. Call
/// it once, after the recorder is installed. The repository's
/// `docs/metrics.md` lists every metric of Vaquero.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "vaquero_lom_operations_total",
        "BMC operations ended, by driver kind (ipmi, redfish, ssh, exec, or a custom driver's), operation and outcome (ok, unreachable, auth, timeout, busy, protocol, unsupported, command, config)."
    );
    metrics::describe_histogram!(
        "vaquero_lom_operation_duration_seconds",
        "Time a BMC operation took, retries included, by driver kind and operation, in seconds."
    );
    metrics::describe_counter!(
        "vaquero_lom_retries_total",
        "BMC operations tried again after a transient failure, by driver kind and operation."
    );
    metrics::describe_gauge!(
        "vaquero_lom_operations_in_flight",
        "BMC operations running now."
    );
    metrics::describe_counter!(
        "vaquero_lom_ipmi_retransmits_total",
        "IPMI requests sent again for want of an answer."
    );
    metrics::gauge!("vaquero_lom_operations_in_flight").increment(0.0);
    metrics::counter!("vaquero_lom_ipmi_retransmits_total").increment(0);
}
