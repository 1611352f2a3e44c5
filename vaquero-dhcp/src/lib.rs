//! DHCPv4 for Vaquero: the first packet a machine sends decides whether
//! it boots.
//!
//! - [`wire`]: the boundary over `dhcproto`. Datagrams are validated
//!   (magic cookie, option lengths) before decoding; no `dhcproto` type
//!   escapes. A [`Request`] has typed accessors for what boot decisions
//!   need (message type, architecture, vendor and user class, iPXE's
//!   option 175, GUID, NIC id, relay agent information, option 55, 57).
//! - [`responder`]: pure — a request, the compiled
//!   [`vaquero_model::SiteModel`] and the link give a reply or a
//!   [`Silence`]. Server mode answers hosts in the model
//!   with their static address and the subnet's options; proxy mode gives
//!   PXE clients boot information only (ports 67 and 4011); relayed
//!   requests are answered to the relay with option 82 echoed. Boot
//!   selection: iPXE → `boot.ipxe` over HTTP; BIOS → `undionly.kpxe`; UEFI
//!   x64 → `ipxe.efi`; UEFI HTTP boot → a URL; ARM64 → its binary; all
//!   overridable per site and per host (`boot_files`).
//! - [`server`]: the tokio [`Server`] on one interface (SO_BINDTODEVICE),
//!   a model that can be swapped while packets flow, metrics, a
//!   [`DhcpEvent`] per decision, and [`rogue`] server detection.
//! - [`export`]: a subnet of the model as dnsmasq or Kea configuration.
//!
//! ```no_run
//! # async fn demo(model: vaquero_model::SiteModel) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use vaquero_dhcp::{Server, ServerConfig};
//! use vaquero_model::DhcpMode;
//!
//! let (swap, rx) = tokio::sync::watch::channel(Arc::new(model));
//! let config = ServerConfig::new(Some("eth1".into()), "10.99.0.2".parse().unwrap(), DhcpMode::Server);
//! let server = Server::bind(config, rx, None)?;
//! // `swap.send(Arc::new(new_model))` replaces the model at run time.
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # drop(swap); Ok(()) }
//! ```

pub mod export;
pub mod responder;
pub mod rogue;
pub mod server;
pub mod wire;

pub use responder::{BootTarget, Decision, Destination, Link, Silence, respond, select_boot};
pub use rogue::{RogueReply, inspect};
pub use server::{Decided, DhcpEvent, Server, ServerConfig, Stats};
pub use wire::{MessageType, Reply, Request, WireFailure};

pub use export::ExportFailure;

/// The crate's one error, built from each part's own failure: decoding a
/// packet ([`WireFailure`]) and exporting a site's configuration to
/// another DHCP server ([`ExportFailure`]). Each converts into it with
/// `?`; functions that fail in one way only return that way's type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A packet does not decode.
    #[error(transparent)]
    Wire(#[from] WireFailure),
    /// A configuration cannot be exported.
    #[error(transparent)]
    Export(#[from] ExportFailure),
}

/// The README's example, run as a doctest.
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
        "vaquero_dhcp_requests_total",
        "DHCP requests received, by message type (discover, request, inform, release, decline, …)."
    );
    metrics::describe_counter!("vaquero_dhcp_replies_total", "DHCP replies sent.");
    metrics::describe_counter!(
        "vaquero_dhcp_dropped_total",
        "DHCP requests not answered, by reason: malformed, unknown_client, wrong_subnet, other_server, not_for_proxy, ignored, decline, release, …"
    );
    metrics::describe_counter!(
        "vaquero_dhcp_send_lost_total",
        "DHCP replies the socket refused to send."
    );
    metrics::describe_counter!(
        "vaquero_dhcp_rogue_replies_total",
        "Offers and acks of another DHCP server seen on a served interface (each server is logged once)."
    );
    metrics::describe_histogram!(
        "vaquero_dhcp_decision_duration_seconds",
        "Time to decide the answer to one DHCP request, in seconds."
    );
    metrics::counter!("vaquero_dhcp_replies_total").increment(0);
    metrics::counter!("vaquero_dhcp_send_lost_total").increment(0);
    metrics::counter!("vaquero_dhcp_rogue_replies_total").increment(0);
}
