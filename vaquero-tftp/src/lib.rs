//! A TFTP server crate: a `nom` codec for RFC 1350 packets and the option
//! extensions (RFC 2347/2348/2349/7440), a pure transfer state machine that
//! takes time as an argument, and (next) file sources and a tokio server.
//!
//! **Status:** the codec ([`packet`]) and the sending state machine
//! ([`transfer`]) are done and tested; file sources and the server are the
//! next step of their issue.

#![forbid(unsafe_code)]

pub mod packet;
pub mod transfer;

pub use packet::{DecodeError, ErrorCode, Mode, Options, Packet, Request};
pub use transfer::{Outcome, Transfer, TransferConfig, TransferStats, Transmit};
