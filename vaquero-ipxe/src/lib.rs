//! iPXE for Vaquero: a typed script builder and the HTTP boot service —
//! everything a machine fetches after DHCP: the chain script, its per-host
//! script, kernels and initrds, its unattended config, and the checkpoint
//! call that says "I am installed".
//!
//! - [`Script`], [`boot_script`], [`chain_script`], [`local_boot_script`]:
//!   scripts that never carry a value iPXE would split or expand, with
//!   bounded retries of every fetch.
//! - [`BootService`]: the boot service (see the route table in
//!   [`service`]), answering from a swappable compiled model and a
//!   [`BootState`] (what each host boots now; the engine implements it,
//!   [`MemoryBootState`] is here). [`serve`] runs it on a listener over
//!   hyper's HTTP/1 connection (per-host scripts and local files answered
//!   without the router; `sendfile` for large files; stalled connections
//!   closed); [`Listeners`] runs one such event loop per thread, as
//!   nginx's workers; [`BootService::router`] is its axum router for
//!   embedding in another application.
//! - [`files`]: `/files` from a directory (ranges, validators, no path
//!   escape), or a caching proxy to a CDN.
//! - [`token`]: signed, expiring checkpoint tokens.
//!
//! ```
//! let mut s = vaquero_ipxe::Script::new();
//! s.kernel("kernel", "http://10.0.0.2:8080/files/vmlinuz").unwrap();
//! s.boot("kernel").unwrap();
//! assert!(s.render().starts_with("#!ipxe\n"));
//! ```

mod cdn;
pub mod files;
mod idle;
mod limit;
mod metrics_layer;
mod script;
mod sendfile;
mod server;
pub mod service;
pub mod state;
pub mod token;

/// Re-exported: the boot service is an `axum` router
/// ([`router`], [`files::FileRoot::serve`]); `axum::http` has the request
/// and response types.
pub use axum;

pub use script::{
    DEFAULT_TRIES, Script, ScriptError, StageScriptError, boot_script, chain_script,
    local_boot_script, stage_script,
};
pub use server::{Listeners, serve};
pub use service::{
    Ack, BootEvent, BootService, CdnConfig, KEEP_TIMEOUT, Route, ServiceConfig, router,
};
pub use state::{BootState, Current, MemoryBootState};
pub use token::{Claims, TokenError, TokenKey};

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
