//! DHCPv4 for Vaquero: the wire boundary over `dhcproto`, a pure responder
//! (request + compiled site model → reply or silence) for server,
//! proxyDHCP and relay modes with PXE/iPXE boot-file selection, and (next)
//! a tokio server on top.
//!
//! **Status:** the wire boundary ([`wire`]), the responder ([`responder`])
//! and a first tokio [`Server`] (one interface, model swap, metrics,
//! events) are built and tested; see the issue notes for what is next.

pub mod export;
pub mod responder;
pub mod rogue;
pub mod server;
pub mod wire;

pub use responder::{BootTarget, Decision, Destination, Link, Silence, respond, select_boot};
pub use rogue::{RogueReply, inspect};
pub use server::{Decided, DhcpEvent, Server, ServerConfig, Stats};
pub use wire::{MessageType, Reply, Request, WireError};
