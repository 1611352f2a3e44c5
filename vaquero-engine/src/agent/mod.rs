//! The agent's disk: what lets a site keep booting machines while the
//! control plane is away.
//!
//! - [`ModelCache`]: the last good model of the site, written atomically
//!   with a checksum; an agent starts from it when the server cannot be
//!   reached, and never asks the server anything on the boot path.
//! - [`Spool`]: observations buffered append-only on disk, numbered, until
//!   the server acknowledges them; uploaded oldest first, bounded in size.

mod cache;
#[cfg(feature = "agent")]
mod run;
mod spool;
#[cfg(any(feature = "server", feature = "agent"))]
pub mod wire;

#[cfg(feature = "agent")]
pub use run::{AgentConfig, run};

pub use cache::{CacheFailure, ModelCache};
pub use spool::{Spool, SpoolFailure, Spooled};
