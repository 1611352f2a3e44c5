//! A TFTP server crate: a `nom` codec for RFC 1350 packets and the option
//! extensions (RFC 2347 negotiation, 2348 `blksize`, 2349 `timeout` and
//! `tsize`, 7440 `windowsize`), a pure transfer state machine that takes
//! time as an argument, the [`FileSource`] trait for where bytes come from,
//! and a tokio [`Server`].
//!
//! Serve a directory:
//!
//! ```no_run
//! use vaquero_tftp::{Directory, Server, ServerConfig};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let config = ServerConfig::new("0.0.0.0:69".parse().unwrap());
//!     let server = Server::bind(config, Directory::new("/srv/tftp")?).await?;
//!     server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! }
//! ```
//!
//! The layers are usable alone: [`packet`] encodes and decodes datagrams;
//! [`transfer`] (sending) and [`receive`] (receiving) are transfers with no
//! sockets and no clock — drive them from your own event loop or a
//! simulation; [`source`] has the file sources ([`Directory`], which never
//! serves outside its root, [`Memory`], [`Generated`] per-client content,
//! [`Overlay`]).
//!
//! The server answers read requests, and write requests only when the
//! source accepts them ([`Directory::allow_create`]). Transfers that have a
//! port of their own (the default, as RFC 1350 has it) run on a thread of
//! their own with a blocking socket: lock-step TFTP is bound by the round
//! trip, and that is the shortest one. In single-port mode
//! ([`ServerConfig::single_port`]) transfers run as tokio tasks fed from
//! the listening socket.

#![forbid(unsafe_code)]

pub mod endpoint;
pub mod packet;
pub mod receive;
pub mod server;
pub mod source;
pub mod transfer;

pub use endpoint::{Accepted, Endpoint, Ignored, Limits, Verdict};
pub use packet::{DecodeFailure, ErrorCode, Mode, Options, Packet, Request};
pub use receive::{Receive, Write};
pub use server::{Server, ServerConfig, Stats, TftpEvent};
pub use source::{
    Directory, FileHandle, FileSink, FileSource, Generated, Memory, OpenFailure, Overlay,
};
pub use transfer::{Outcome, Transfer, TransferConfig, TransferStats, Transmit};

/// The crate's one error, built from each part's own failure: decoding a
/// packet ([`DecodeFailure`]) and opening a file to serve or to receive
/// ([`OpenFailure`]). Each converts into it with `?`; functions that fail
/// in one way only return that way's type. ([`ErrorCode`] is not a Rust
/// error: it is the code an ERROR packet carries on the wire.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A packet does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeFailure),
    /// A file cannot be opened.
    #[error(transparent)]
    Open(#[from] OpenFailure),
}

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
        "vaquero_tftp_requests_total",
        "TFTP read and write requests received."
    );
    metrics::describe_counter!(
        "vaquero_tftp_transfers_total",
        "TFTP transfers ended, by outcome: completed, aborted (by the client), timed_out, failed."
    );
    metrics::describe_counter!(
        "vaquero_tftp_refused_total",
        "TFTP requests refused, by reason: not_found, access, outside (a link out of the root), io, write."
    );
    metrics::describe_counter!(
        "vaquero_tftp_dropped_total",
        "TFTP datagrams dropped, by reason: malformed, rate_limited, busy (a request while at max_transfers: its retransmission is served later), unexpected."
    );
    metrics::describe_counter!(
        "vaquero_tftp_sent_bytes_total",
        "File bytes sent over TFTP."
    );
    metrics::describe_counter!(
        "vaquero_tftp_retransmits_total",
        "TFTP blocks sent again after a timeout."
    );
    metrics::describe_counter!(
        "vaquero_tftp_send_lost_total",
        "TFTP datagrams the socket refused to send."
    );
    metrics::counter!("vaquero_tftp_requests_total").increment(0);
    metrics::counter!("vaquero_tftp_sent_bytes_total").increment(0);
    metrics::counter!("vaquero_tftp_retransmits_total").increment(0);
    metrics::counter!("vaquero_tftp_send_lost_total").increment(0);
}
