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
//!     let config = ServerConfig { listen: "0.0.0.0:69".parse().unwrap(), ..Default::default() };
//!     let server = Server::bind(config, Directory::new("/srv/tftp")?).await?;
//!     server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! }
//! ```
//!
//! The layers are usable alone: [`packet`] encodes and decodes datagrams,
//! [`transfer`] is the sending side of a transfer with no sockets and no
//! clock (drive it from your own event loop or a simulation), and
//! [`source`] has the file sources.

#![forbid(unsafe_code)]

pub mod packet;
pub mod receive;
pub mod server;
pub mod source;
pub mod transfer;

pub use packet::{DecodeError, ErrorCode, Mode, Options, Packet, Request};
pub use receive::{Receive, Write};
pub use server::{Server, ServerConfig, Stats};
pub use source::{
    Directory, FileHandle, FileSink, FileSource, Generated, Memory, OpenError, Overlay,
};
pub use transfer::{Outcome, Transfer, TransferConfig, TransferStats, Transmit};
