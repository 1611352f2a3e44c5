//! DHCPv4 for Vaquero: the wire boundary over `dhcproto`, a pure responder
//! (request + compiled site model → reply or silence) for server,
//! proxyDHCP and relay modes with PXE/iPXE boot-file selection, and (next)
//! a tokio server on top.
//!
//! **Status:** the wire boundary ([`wire`]) and the responder
//! ([`responder`]) are built and tested; the tokio server, the network
//! namespace tests with real clients and the benchmark are the next steps
//! of their issue.

pub mod responder;
pub mod wire;

pub use responder::{BootTarget, Decision, Destination, Link, Silence, respond, select_boot};
pub use wire::{MessageType, Reply, Request, WireError};
