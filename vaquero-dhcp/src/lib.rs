//! DHCPv4 for Vaquero: the wire boundary over `dhcproto`, a pure responder
//! (request + compiled site model + `now` → reply or silence) for server,
//! proxyDHCP and relay modes, PXE/iPXE boot-file selection, and a tokio
//! server on top.
//!
//! **Status:** skeleton. The crate exists so the workspace has its final
//! shape; the responder and server are built in their own issue. Nothing in
//! it answers packets yet.
