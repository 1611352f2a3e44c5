//! Lights-out management for Vaquero: the `PowerDriver` trait (power state,
//! on/off/cycle/reset, next boot device, inventory) and its drivers —
//! IPMI over LAN, Redfish, SSH and exec — behind a wrapper that serializes,
//! retries and meters every BMC operation.
//!
//! **Status:** skeleton. The crate exists so the workspace has its final
//! shape; the trait and drivers are built in their own issue.
