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
mod decide;
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
pub use cdn::CdnConfig;
pub use decide::{Decision, Identity, address_refused, decide, host_of_ip};

pub use script::{
    DEFAULT_TRIES, Script, ScriptFailure, StageScriptFailure, boot_script, chain_script,
    local_boot_script, stage_script,
};
pub use server::{Listeners, serve};
pub use service::{Ack, BootEvent, BootService, KEEP_TIMEOUT, Route, ServiceConfig, router};
pub use state::{BootState, Current, MemoryBootState};
pub use token::{Claims, TokenFailure, TokenKey};

pub use files::PathFailure;
pub use service::ServiceFailure;

/// The crate's one error, built from each part's own failure: a request
/// path ([`PathFailure`]), a script ([`ScriptFailure`],
/// [`StageScriptFailure`]), a checkpoint token ([`TokenFailure`]) and the
/// service's start ([`ServiceFailure`]). Each converts into it with `?`;
/// functions that fail in one way only return that way's type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request path is not one the file root serves.
    #[error(transparent)]
    Path(#[from] PathFailure),
    /// A boot script cannot be made.
    #[error(transparent)]
    Script(#[from] ScriptFailure),
    /// A stage's script cannot be made.
    #[error(transparent)]
    StageScript(#[from] StageScriptFailure),
    /// A checkpoint token does not verify.
    #[error(transparent)]
    Token(#[from] TokenFailure),
    /// The service cannot start.
    #[error(transparent)]
    Service(#[from] ServiceFailure),
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
        "vaquero_http_requests_total",
        "Boot service requests answered, by route (chain, script, config, files, checkpoint, …) and HTTP status."
    );
    metrics::describe_counter!(
        "vaquero_http_response_bytes_total",
        "Boot service response bytes (as announced by Content-Length), by route."
    );
    metrics::describe_histogram!(
        "vaquero_http_request_duration_seconds",
        "Boot service time to answer, by route, in seconds."
    );
    metrics::describe_counter!(
        "vaquero_http_connections_refused_total",
        "Boot service connections refused because the connection limit was reached."
    );
    metrics::describe_counter!(
        "vaquero_http_client_address_refused_total",
        "Boot service requests refused because they came from another address than the host's own (dhcp_mode: server), by route."
    );
    metrics::describe_counter!(
        "vaquero_cdn_cache_lookups_total",
        "Lookups in the caching proxy of asset_server.cdn, by outcome: hit, miss."
    );
    metrics::describe_counter!(
        "vaquero_cdn_upstream_fetches_total",
        "Files the caching proxy fetched from its upstream."
    );
    metrics::describe_counter!(
        "vaquero_cdn_evictions_total",
        "Files the caching proxy evicted to stay within its size."
    );
    metrics::counter!("vaquero_http_connections_refused_total").increment(0);
}
