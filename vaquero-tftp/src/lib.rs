//! A TFTP server crate: a `nom` codec for RFC 1350 packets and the option
//! extensions (RFC 2347/2348/2349/7440), a pure transfer state machine that
//! takes time as an argument, the `FileSource` trait, and a tokio server.
//!
//! **Status:** skeleton. The crate exists so the workspace has its final
//! shape; the codec, transfer core and server are built in their own issue.
