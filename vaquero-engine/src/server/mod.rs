//! `vaquero server`: the control halves of many sites, each joined to its
//! agents over HTTPS.
//!
//! - [`hub`]: a site's end of the link ([`SiteHub`](hub::SiteHub)): the
//!   lease table, the boot table, what agents sent, taken once each.

pub mod hub;
pub mod routes;
mod run;

pub use run::{ServerConfig, run};
