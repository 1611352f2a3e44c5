//! The crate's one error: [`Error`], built from the typed failures of
//! each part ([`StoreFailure`](crate::StoreFailure),
//! [`PersistFailure`](crate::PersistFailure), …), each convertible into
//! it with `?`. Functions that can fail in one way only return that
//! part's failure, so that a caller can match on it; those that compose
//! several parts (the control loop, `standalone`, `server`, `agent`)
//! return [`Error`].

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why Vaquero's engine, a control loop or one of the processes it
/// composes (`vaquero standalone`, `server`, `agent`) stopped, could not
/// start, or could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SoT cannot be read or does not validate at start-up.
    #[error("SoT: {0}")]
    Sot(#[from] vaquero_model::Error),
    /// The site to serve is not clear (none named among several, or an
    /// unknown one).
    #[error("{0}")]
    SiteUnclear(String),
    /// A site's control loop ended abnormally.
    #[error("a site's loop stopped: {0}")]
    SiteLoop(String),
    /// The data (or cache) directory.
    #[error("data directory {path}: {source}")]
    Data {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The options given do not fit together.
    #[error("{0}")]
    Usage(String),
    /// The store's file cannot be opened: most often, a running process
    /// holds its lock.
    #[error("{}: {source} (a running vaquero holds it: stop it, rotate, start it again)", .path.display())]
    Locked {
        /// The store's file.
        path: PathBuf,
        /// What the store said.
        source: crate::store::StoreFailure,
    },
    /// The store.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreFailure),
    /// The engine's state kept in the store.
    #[error("state: {0}")]
    Persist(#[from] crate::persist::PersistFailure),
    /// Tokens.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthFailure),
    /// Certificates.
    #[cfg(any(feature = "server", feature = "agent"))]
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiFailure),
    /// A copy between stores.
    #[error(transparent)]
    Migrate(#[from] crate::migrate::MigrateFailure),
    /// The engine refused its model, plan or command.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineFailure),
    /// A command was not carried out.
    #[error(transparent)]
    Command(#[from] crate::command::CommandFailure),
    /// A job's try failed.
    #[error(transparent)]
    Job(#[from] crate::job::JobFailure),
    /// The site services (DHCP, TFTP, HTTP) cannot start.
    #[cfg(feature = "agent")]
    #[error(transparent)]
    Site(#[from] crate::site::SiteFailure),
    /// The agent's cache directory.
    #[error(transparent)]
    Cache(#[from] crate::agent::CacheFailure),
    /// The agent's observation spool.
    #[error(transparent)]
    Spool(#[from] crate::agent::SpoolFailure),
    /// Enrolment failed, or its files are unusable.
    #[error("enrolment: {0}")]
    Enrol(String),
    /// The server could not be reached to enrol (tried again).
    #[error("enrolment: {0}")]
    Unreachable(String),
    /// The user API could not listen.
    #[error("API on {addr}: {source}")]
    Api {
        /// Its address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
}
