//! The HTTP boot service: what every machine fetches after DHCP.
//!
//! | route | what |
//! |---|---|
//! | `GET /boot.ipxe` | the chain script ([`crate::chain_script`]) |
//! | `GET /ipxe?mac=&uuid=&serial=&arch=&platform=` | the host's script for its current stage, or exit to disk |
//! | `GET /config/{mac}?boot=ID` | the rendered unattended config |
//! | `GET, HEAD /files/{path}` | assets from `base_dir`, or through the CDN cache |
//! | `GET, POST /checkpoint/{token}` | the installed OS reports completion |
//!
//! The [`BootService`] answers from a compiled model behind a `watch`
//! channel (the agent swaps models at run time), asks a [`BootState`] what
//! each host boots now, emits a [`BootEvent`] per request (file events
//! only when someone takes events), and records metrics
//! (`vaquero_http_requests_total{route,status}`, `vaquero_http_response_bytes_total{route}`,
//! `vaquero_http_request_duration_seconds{route}`) — the same whether a request is answered
//! by [`crate::serve`]'s direct paths or by the router.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};
use vaquero_model::{AssetType, HostRef, MacAddr, SiteModel};

use crate::cdn::{Cdn, CdnConfig};
use crate::decide::{Decision, Identity, address_refused, decide, host_of_ip};
use crate::files::FileRoot;
use crate::limit::ClientLimit;
use crate::metrics_layer::{MetricsLayer, RouteMetrics};
use crate::sendfile::Conn;
use crate::state::{BootState, Current};
use crate::token::{Claims, TokenKey};
use crate::{chain_script, local_boot_script};

/// Which route a request took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/boot.ipxe`.
    Chain,
    /// `/ipxe`.
    Script,
    /// `/config/{mac}`.
    Config,
    /// `/files/{path}`.
    Files,
    /// `/checkpoint/{token}`.
    Checkpoint,
}

impl Route {
    /// The route table: every route, in the order the router is built.
    /// The router and the boot server's fast path both match by it.
    pub const ALL: [Route; 5] = [
        Route::Chain,
        Route::Script,
        Route::Config,
        Route::Files,
        Route::Checkpoint,
    ];

    /// The route's path, in the router's syntax (`{name}` matches one
    /// segment, `{*name}` the rest of the path).
    pub fn path(self) -> &'static str {
        match self {
            Route::Chain => "/boot.ipxe",
            Route::Script => "/ipxe",
            Route::Config => "/config/{mac}",
            Route::Files => "/files/{*path}",
            Route::Checkpoint => "/checkpoint/{token}",
        }
    }

    /// The route a request path takes, and what its capture holds (still
    /// percent-encoded; empty for a route without one), matched as the
    /// router matches the table.
    pub fn of(path: &str) -> Option<(Route, &str)> {
        Route::ALL.into_iter().find_map(|r| {
            let pattern = r.path();
            let Some(open) = pattern.find('{') else {
                return (path == pattern).then_some((r, ""));
            };
            let rest = path.strip_prefix(&pattern[..open])?;
            let whole = pattern[open..].starts_with("{*");
            (!rest.is_empty() && (whole || !rest.contains('/'))).then_some((r, rest))
        })
    }

    /// The route's name in metrics and messages: `chain`, `script`,
    /// `config`, `files`, `checkpoint`.
    pub fn label(self) -> &'static str {
        match self {
            Route::Chain => "chain",
            Route::Script => "script",
            Route::Config => "config",
            Route::Files => "files",
            Route::Checkpoint => "checkpoint",
        }
    }
}

/// One request, for the boot timeline.
#[derive(Debug, Clone)]
pub struct BootEvent {
    /// When it was answered.
    pub at: SystemTime,
    /// The route.
    pub route: Route,
    /// The host, when the request could be tied to one (MAC, UUID, token
    /// or the client's address).
    pub host: Option<String>,
    /// The boot attempt the host is in, when known.
    pub attempt: Option<u64>,
    /// The client's address.
    pub client: Option<IpAddr>,
    /// The response status.
    pub status: u16,
    /// What was served: the boot id, the file, why the host boots from
    /// disk, why a checkpoint was refused.
    pub detail: String,
    /// Set on a checkpoint's event: whoever keeps events calls
    /// [`Ack::kept`] once the event is durable (spooled on disk,
    /// committed to the store). The installer is told "recorded" only
    /// then.
    pub ack: Option<Ack>,
}

/// How a checkpoint's installer learns that its event was kept. Call
/// [`kept`](Ack::kept) once the event is durable. An `Ack` dropped unkept
/// (every clone of it), or not kept within [`KEEP_TIMEOUT`], answers the
/// installer 503, and its retry is a new checkpoint.
#[derive(Debug, Clone)]
pub struct Ack(Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>);

impl Ack {
    /// An acknowledgement, and what its sender waits on.
    fn new() -> (Ack, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Ack(Arc::new(std::sync::Mutex::new(Some(tx)))), rx)
    }

    /// The event is durable: its installer is told so.
    pub fn kept(&self) {
        if let Some(tx) = self.0.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send(());
        }
    }
}

/// How long a checkpoint waits for its event to be kept before it is
/// answered 503.
pub const KEEP_TIMEOUT: Duration = Duration::from_secs(15);

/// How the service runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// The directory served under `/files` (the agent's `base_dir`).
    pub files: Option<PathBuf>,
    /// Or a CDN cache in front of an upstream (the site's `cdn`); used
    /// when set.
    pub cdn: Option<CdnConfig>,
    /// Signs checkpoint tokens.
    pub token_key: TokenKey,
    /// How long a checkpoint token stays valid.
    pub token_ttl: Duration,
    /// How long [`crate::serve`] keeps a connection that makes no
    /// progress: idle between requests, or a client that stops sending
    /// its request or reading the response (nginx's `keepalive_timeout`,
    /// `client_header_timeout`, `send_timeout`). Rounded up to seconds.
    pub idle_timeout: Duration,
    /// Serve a host's per-host script (`/ipxe`) and unattended config
    /// (`/config/{mac}`) only to an address the model gives that host;
    /// any other client gets 403 (`vaquero_http_client_address_refused_total`).
    /// Meant for DHCP server mode, where the model's addresses are the
    /// ones hosts use; off behind NAT or a proxy. Default off.
    pub check_client_address: bool,
    /// How many connections [`crate::serve`] keeps open per client
    /// address; past it, new ones are closed at once
    /// (`vaquero_http_connections_refused_total`). Default 64; `None`: no cap.
    pub max_client_connections: Option<std::num::NonZeroUsize>,
    /// Directories that symbolic links under `files` may resolve into
    /// ([`FileRoot::allow_links_to`]). Default none.
    pub allow_links_to: Vec<PathBuf>,
}

/// The default of [`ServiceConfig::max_client_connections`].
pub const MAX_CLIENT_CONNECTIONS: usize = 64;

impl ServiceConfig {
    /// Files from `files`, tokens signed with `key`, valid for a day;
    /// connections closed after a minute without progress.
    pub fn new(files: Option<PathBuf>, key: TokenKey) -> Self {
        ServiceConfig {
            files,
            cdn: None,
            token_key: key,
            token_ttl: Duration::from_secs(24 * 3600),
            idle_timeout: Duration::from_secs(60),
            check_client_address: false,
            max_client_connections: std::num::NonZeroUsize::new(MAX_CLIENT_CONNECTIONS),
            allow_links_to: Vec::new(),
        }
    }
}

/// A rendered per-host script, reused while the model, the host's stage
/// and attempt are the same and its checkpoint token is young (rendering
/// templates per request would cap the request rate; the scripts only
/// differ by the token's expiry).
struct Cached {
    /// The model it was rendered from (a `Weak` keeps the allocation, so
    /// the pointer cannot be reused by a newer model).
    model: std::sync::Weak<SiteModel>,
    stage: usize,
    boot: String,
    attempt: u64,
    minted: Instant,
    text: bytes::Bytes,
}

pub(crate) struct Inner {
    scripts: std::sync::RwLock<std::collections::HashMap<usize, Cached>>,
    model: watch::Receiver<Arc<SiteModel>>,
    state: Arc<dyn BootState>,
    key: TokenKey,
    ttl: Duration,
    files: Option<FileRoot>,
    cdn: Option<Cdn>,
    events: Option<mpsc::Sender<BootEvent>>,
    pub(crate) metrics: Arc<RouteMetrics>,
    pub(crate) idle_timeout: Duration,
    pub(crate) clients: Arc<ClientLimit>,
    check_address: bool,
}

type Shared = Arc<Inner>;

/// Why the service could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceFailure {
    /// The files directory cannot be used.
    #[error("files directory {path}: {source}")]
    Files {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The CDN cache cannot be set up.
    #[error("CDN cache: {0}")]
    Cdn(String),
}

/// The router of the boot service: `BootService::new(…)?.router()`.
/// Serve it with
/// [`axum::serve()`]`(listener, router.into_make_service_with_connect_info::<SocketAddr>())`
/// so that requests can be tied to hosts by address, or serve the
/// [`BootService`] with [`crate::serve`].
pub fn router(
    model: watch::Receiver<Arc<SiteModel>>,
    state: Arc<dyn BootState>,
    config: ServiceConfig,
    events: Option<mpsc::Sender<BootEvent>>,
) -> Result<Router, ServiceFailure> {
    Ok(BootService::new(model, state, config, events)?.router())
}

/// The boot service: its state, and its routes as an axum [`Router`]
/// (for embedding in another axum application) — cheap to clone.
#[derive(Clone)]
pub struct BootService {
    pub(crate) inner: Shared,
    pub(crate) router: Router,
}

impl std::fmt::Debug for BootService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootService").finish_non_exhaustive()
    }
}

impl BootService {
    /// The service for the model behind `model` (swapped at run time by
    /// sending a new one), what hosts boot from `state`, `config`, and
    /// an event per request to `events` (dropped, not waited for, when
    /// the channel is full).
    pub fn new(
        model: watch::Receiver<Arc<SiteModel>>,
        state: Arc<dyn BootState>,
        config: ServiceConfig,
        events: Option<mpsc::Sender<BootEvent>>,
    ) -> Result<BootService, ServiceFailure> {
        let files = match &config.files {
            Some(p) => Some(
                FileRoot::new(p)
                    .and_then(|r| r.allow_links_to(&config.allow_links_to))
                    .map_err(|source| ServiceFailure::Files {
                        path: p.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        let cdn = match &config.cdn {
            Some(c) => Some(Cdn::new(c.clone()).map_err(ServiceFailure::Cdn)?),
            None => None,
        };
        let inner = Arc::new(Inner {
            scripts: Default::default(),
            model,
            state,
            key: config.token_key,
            ttl: config.token_ttl,
            idle_timeout: config.idle_timeout,
            files,
            cdn,
            events,
            metrics: Arc::default(),
            clients: ClientLimit::new(config.max_client_connections),
            check_address: config.check_client_address,
        });
        let router = Route::ALL
            .into_iter()
            .fold(Router::new(), |router, r| {
                let handler = match r {
                    Route::Chain => get(chain),
                    Route::Script => get(host_script),
                    Route::Config => get(config_handler),
                    Route::Files => get(files_handler),
                    Route::Checkpoint => get(checkpoint).post(checkpoint),
                };
                router.route(r.path(), handler)
            })
            .layer(MetricsLayer::new(inner.metrics.clone()))
            .with_state(inner.clone());
        Ok(BootService { inner, router })
    }

    /// The routes, as an axum router.
    pub fn router(&self) -> Router {
        self.router.clone()
    }
}

/// The client's address, when the server was started with connect info,
/// and whether the connection can take `sendfile` placeholders (only
/// those accepted by [`serve`]).
struct Peer(Option<IpAddr>, Option<crate::files::ZeroCopy>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<ConnectInfo<Conn>>() {
            return Ok(Peer(Some(c.0.addr.ip()), Some(c.0.zero_copy.clone())));
        }
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
            None,
        ))
    }
}

/// The event of one request.
fn event(
    route: Route,
    host: Option<&str>,
    attempt: Option<u64>,
    client: Option<IpAddr>,
    status: StatusCode,
    detail: String,
) -> BootEvent {
    BootEvent {
        at: SystemTime::now(),
        route,
        host: host.map(str::to_owned),
        attempt,
        client,
        status: status.as_u16(),
        detail,
        ack: None,
    }
}

/// The debug log line of an event.
fn log(e: &BootEvent) {
    debug!(route = ?e.route, host = e.host, attempt = e.attempt, client = ?e.client, status = e.status, detail = %e.detail, "boot service");
}

impl Inner {
    /// Whether anyone takes events (a listener, or debug logging): when
    /// no one does, hot paths skip building them.
    pub(crate) fn observed(&self) -> bool {
        self.events.is_some() || tracing::enabled!(tracing::Level::DEBUG)
    }

    /// The event of a `/files` request. Tying a file to its host is only
    /// worth it when someone takes events.
    ///
    /// A refused or missing file says why in the event's detail (where a
    /// link leads, what to do), for the host's timeline and the log.
    pub(crate) fn file_served(&self, ip: Option<IpAddr>, path: &str, status: StatusCode) {
        if self.observed() {
            let m = self.model.borrow().clone();
            let host = host_of_ip(&m, ip).map(|h| h.host.name.clone());
            let attempt = host.as_deref().and_then(|h| self.attempt_of(h));
            let detail = match (&self.files, status) {
                (Some(root), StatusCode::FORBIDDEN | StatusCode::NOT_FOUND)
                    if self.cdn.is_none() =>
                {
                    format!("{path} {}: {}", status.as_u16(), root.explain(path, status))
                }
                _ => path.to_owned(),
            };
            self.emit(event(
                Route::Files,
                host.as_deref(),
                attempt,
                ip,
                status,
                detail,
            ));
        }
    }

    /// Whether `ip` may have `h`'s per-host script or config: always,
    /// unless addresses are checked; then only from an address the model
    /// gives `h`. A refusal is counted and becomes `h`'s event.
    /// The 403 of a per-host request from an address not the host's
    /// (see [`address_refused`]), counted and recorded.
    fn refuse_address(&self, route: Route, h: HostRef<'_>, ip: Option<IpAddr>) -> Response {
        let name = h.host.name.as_str();
        let from = ip.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
        metrics::counter!("vaquero_http_client_address_refused_total", "route" => route.label())
            .increment(1);
        let why = format!(
            "{name}'s {} asked from {from}, not an address of {name}",
            route.label()
        );
        debug!(host = name, %from, "refused: not the host's address");
        self.emit(event(
            route,
            Some(name),
            None,
            ip,
            StatusCode::FORBIDDEN,
            why,
        ));
        text(
            StatusCode::FORBIDDEN,
            format!(
                "{from} is not an address of this host: per-host scripts and configs are served to the host's own address\n"
            ),
        )
    }

    /// The local file root, when `/files` is served from a directory
    /// (not through a CDN cache).
    pub(crate) fn local_files(&self) -> Option<&FileRoot> {
        self.files.as_ref().filter(|_| self.cdn.is_none())
    }

    /// Sends `e` to whoever takes events; dropped when the channel is
    /// full (a boot is never held up by a slow consumer).
    fn emit(&self, e: BootEvent) {
        log(&e);
        if let Some(tx) = &self.events {
            let _ = tx.try_send(e);
        }
    }

    /// Sends `e` and waits for room in the channel rather than drop it,
    /// then for whoever takes events to keep it (checkpoints). Whether it
    /// was kept (always, when no one takes events).
    async fn keep(&self, mut e: BootEvent) -> bool {
        log(&e);
        let Some(tx) = &self.events else {
            return true;
        };
        let (ack, kept) = Ack::new();
        e.ack = Some(ack);
        let sent = async { tx.send(e).await.is_ok() && kept.await.is_ok() };
        tokio::time::timeout(KEEP_TIMEOUT, sent)
            .await
            .unwrap_or(false)
    }

    fn attempt_of(&self, host: &str) -> Option<u64> {
        match self.state.current(host) {
            Current::Stage { attempt, .. } => Some(attempt),
            Current::LocalDisk(_) => None,
        }
    }

    fn token(&self, host: &str, boot: &str, attempt: u64) -> String {
        let expires = SystemTime::now()
            .checked_add(self.ttl)
            .unwrap_or(SystemTime::now())
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.key.mint(&Claims {
            host: host.to_owned(),
            boot: boot.to_owned(),
            attempt,
            expires,
        })
    }
}

fn text(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body.into(),
    )
        .into_response()
}

/// The agent's base URL: the model's, else the one the client used.
fn agent_url(m: &SiteModel, headers: &HeaderMap) -> Option<String> {
    if let Some(u) = m.agent_url() {
        return Some(u.trim_end_matches('/').to_owned());
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
}

async fn chain(State(s): State<Shared>, Peer(ip, _): Peer, headers: HeaderMap) -> Response {
    let m = s.model.borrow().clone();
    let host = host_of_ip(&m, ip).map(|h| h.host.name.clone());
    let attempt = host.as_deref().and_then(|h| s.attempt_of(h));
    let (status, body) = match agent_url(&m, &headers).map(|a| chain_script(&a)) {
        Some(Ok(script)) => (StatusCode::OK, script.render()),
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no agent URL in the model and no Host header".to_owned(),
        ),
    };
    let detail = if status == StatusCode::OK {
        "boot.ipxe".to_owned()
    } else {
        body.clone()
    };
    s.emit(event(
        Route::Chain,
        host.as_deref(),
        attempt,
        ip,
        status,
        detail,
    ));
    text(status, body)
}

async fn host_script(State(s): State<Shared>, Peer(ip, _): Peer, uri: axum::http::Uri) -> Response {
    script_response(&s, ip, uri.query())
}

/// `GET /ipxe?…`: the host's script for its current stage, or exit to
/// disk (also answered by [`crate::serve`] without the router).
pub(crate) fn script_response(s: &Inner, ip: Option<IpAddr>, query: Option<&str>) -> Response {
    let id = Identity::parse(query);
    let m = s.model.borrow().clone();
    let (h, stage, boot, attempt) = match decide(&m, &id, ip, s.check_address, |name| {
        s.state.current(name)
    }) {
        Decision::Script {
            host,
            stage,
            boot,
            attempt,
        } => (host, stage, boot, attempt),
        Decision::LocalDisk { host, why, stale } => {
            if stale {
                warn!(host = host.map(|h| h.host.name.as_str()), %why, "boot state names a stage the host's workflow does not have");
            }
            s.emit(event(
                Route::Script,
                host.map(|h| h.host.name.as_str()),
                None,
                ip,
                StatusCode::OK,
                format!("local disk: {why}"),
            ));
            return text(StatusCode::OK, local_boot_script(&why).render());
        }
        Decision::Refused { host } => return s.refuse_address(Route::Script, host, ip),
    };
    let name = h.host.name.as_str();
    let detail = || {
        // "{boot} (stage {stage}) for {mac} ({arch} {platform})", without
        // `format!`: one per script served.
        let mac = id.mac.as_deref().unwrap_or("?");
        let arch = id.arch.as_deref().unwrap_or("?");
        let platform = id.platform.as_deref().unwrap_or("?");
        let stage = stage.to_string();
        let mut d =
            String::with_capacity(boot.len() + mac.len() + arch.len() + platform.len() + 32);
        for part in [
            boot.as_str(),
            " (stage ",
            &stage,
            ") for ",
            mac,
            " (",
            arch,
            " ",
            platform,
            ")",
        ] {
            d.push_str(part);
        }
        d
    };
    let fresh = |c: &Cached| {
        std::ptr::eq(c.model.as_ptr(), Arc::as_ptr(&m))
            && c.stage == stage
            && c.attempt == attempt
            && c.boot == boot
            && c.minted.elapsed() < s.ttl / 2
    };
    let hit = s
        .scripts
        .read()
        .ok()
        .and_then(|c| c.get(&h.index).filter(|c| fresh(c)).map(|c| c.text.clone()));
    let body = match hit {
        Some(b) => b,
        None => match render(s, &m, h, stage, &boot, attempt) {
            Ok(b) => b,
            Err(e) => {
                warn!(host = name, boot, error = %e, "rendering a boot script");
                s.emit(event(
                    Route::Script,
                    Some(name),
                    Some(attempt),
                    ip,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    e.clone(),
                ));
                return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
            }
        },
    };
    if s.observed() {
        s.emit(event(
            Route::Script,
            Some(name),
            Some(attempt),
            ip,
            StatusCode::OK,
            detail(),
        ));
    }
    text(StatusCode::OK, body)
}

/// Renders `h`'s script for a stage and caches it.
fn render(
    s: &Inner,
    m: &Arc<SiteModel>,
    h: HostRef<'_>,
    stage: usize,
    boot: &str,
    attempt: u64,
) -> Result<bytes::Bytes, String> {
    let name = h.host.name.as_str();
    let token = s.token(name, boot, attempt);
    let body = bytes::Bytes::from(
        crate::script::stage_script(m, h, stage, boot, Some(attempt), &token)
            .map_err(|e| e.to_string())?
            .render(),
    );
    if let Ok(mut c) = s.scripts.write() {
        c.insert(
            h.index,
            Cached {
                model: Arc::downgrade(m),
                stage,
                boot: boot.to_owned(),
                attempt,
                minted: Instant::now(),
                text: body.clone(),
            },
        );
    }
    Ok(body)
}

#[derive(Debug, Deserialize)]
struct ConfigQuery {
    boot: Option<String>,
}

fn config_type(t: AssetType) -> &'static str {
    match t {
        AssetType::CloudConfig => "text/cloud-config; charset=utf-8",
        AssetType::Ignition => "application/vnd.coreos.ignition+json",
        AssetType::Kickstart | AssetType::Untyped => "text/plain; charset=utf-8",
    }
}

async fn config_handler(
    State(s): State<Shared>,
    Peer(ip, _): Peer,
    Path(mac): Path<String>,
    Query(q): Query<ConfigQuery>,
) -> Response {
    let m = s.model.borrow().clone();
    let Some(h) = mac.parse::<MacAddr>().ok().and_then(|mac| m.by_mac(&mac)) else {
        s.emit(event(
            Route::Config,
            None,
            None,
            ip,
            StatusCode::NOT_FOUND,
            format!("unknown MAC {mac}"),
        ));
        return text(
            StatusCode::NOT_FOUND,
            format!("{mac} is not in the model\n"),
        );
    };
    if address_refused(&m, h, ip, s.check_address) {
        return s.refuse_address(Route::Config, h, ip);
    }
    let name = h.host.name.clone();
    let current = s.state.current(&name);
    let attempt = match &current {
        Current::Stage { attempt, .. } => *attempt,
        Current::LocalDisk(_) => 0,
    };
    let boot = match (q.boot, &current) {
        (Some(b), _) => b,
        (None, Current::Stage { boot, .. }) => boot.clone(),
        (None, Current::LocalDisk(why)) => {
            s.emit(event(
                Route::Config,
                Some(&name),
                None,
                ip,
                StatusCode::NOT_FOUND,
                why.clone(),
            ));
            return text(
                StatusCode::NOT_FOUND,
                format!("{name} has no current boot: {why}\n"),
            );
        }
    };
    if !m.stages(h.host).contains(&boot.as_str()) {
        s.emit(event(
            Route::Config,
            Some(&name),
            Some(attempt),
            ip,
            StatusCode::NOT_FOUND,
            format!("{boot} is not in the workflow"),
        ));
        return text(
            StatusCode::NOT_FOUND,
            format!("boot `{boot}` is not in {name}'s workflow\n"),
        );
    }
    let token = s.token(&name, &boot, attempt);
    let urls = m.urls(h, &boot, &token);
    let ctx = m.context(h, &boot, urls.as_ref());
    match m.render_unattended(&boot, &ctx) {
        Ok(Some((kind, body))) => {
            s.emit(event(
                Route::Config,
                Some(&name),
                Some(attempt),
                ip,
                StatusCode::OK,
                boot,
            ));
            ([(header::CONTENT_TYPE, config_type(kind))], body).into_response()
        }
        Ok(None) => {
            s.emit(event(
                Route::Config,
                Some(&name),
                Some(attempt),
                ip,
                StatusCode::NOT_FOUND,
                format!("{boot} has no unattended config"),
            ));
            text(
                StatusCode::NOT_FOUND,
                format!("boot `{boot}` has no unattended config\n"),
            )
        }
        Err(e) => {
            s.emit(event(
                Route::Config,
                Some(&name),
                Some(attempt),
                ip,
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ));
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
    }
}

async fn files_handler(
    State(s): State<Shared>,
    Peer(ip, zero_copy): Peer,
    Path(path): Path<String>,
    req: Request,
) -> Response {
    let head = req.method() == Method::HEAD;
    let headers = req.headers();
    let resp = if let Some(cdn) = &s.cdn {
        cdn.serve(&path, headers, head, zero_copy.as_ref()).await
    } else if let Some(root) = &s.files {
        root.serve(&path, headers, head, zero_copy.as_ref())
    } else {
        text(StatusCode::NOT_FOUND, "no files are served here\n")
    };
    s.file_served(ip, &path, resp.status());
    resp
}

/// What an installer may send with its checkpoint (query and body) that is
/// kept in the timeline.
const CHECKPOINT_NOTE_BYTES: usize = 4096;

async fn checkpoint(
    State(s): State<Shared>,
    Peer(ip, _): Peer,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    // What the installer sent along (`?status=ok`, a small body): kept in
    // the timeline, never interpreted.
    let query = req.uri().query().map(str::to_owned);
    let body = match axum::body::to_bytes(req.into_body(), CHECKPOINT_NOTE_BYTES).await {
        Ok(b) if b.is_empty() => None,
        Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Err(_) => Some(format!(
            "(body over {CHECKPOINT_NOTE_BYTES} bytes, not kept)"
        )),
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let refuse = |status: StatusCode, host: Option<&str>, why: String| {
        s.emit(event(
            Route::Checkpoint,
            host,
            None,
            ip,
            status,
            why.clone(),
        ));
        text(status, format!("{why}\n"))
    };
    let claims = match s.key.verify(&token, now) {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                None,
                format!("checkpoint refused: {e}"),
            );
        }
    };
    let m = s.model.borrow().clone();
    if m.by_name(&claims.host).is_none() {
        return refuse(
            StatusCode::NOT_FOUND,
            Some(&claims.host),
            format!("{} is not in the model", claims.host),
        );
    }
    // A machine known by its address may only report for itself.
    if let Some(other) = host_of_ip(&m, ip)
        && other.host.name != claims.host
    {
        return refuse(
            StatusCode::FORBIDDEN,
            Some(&other.host.name),
            format!(
                "{} presented {}'s checkpoint token",
                other.host.name, claims.host
            ),
        );
    }
    // The installer learns here, from what this service knows (on an
    // agent, its cache), whether its token is of the current attempt: a
    // stale one gets 409 rather than a "recorded" nobody will act on.
    // Whoever consumes the event checks the attempt again against its own
    // state, which may have moved on by the time a spooled event arrives.
    match s.state.current(&claims.host) {
        Current::Stage { attempt, boot, .. }
            if attempt == claims.attempt && boot == claims.boot => {}
        _ => {
            return refuse(
                StatusCode::CONFLICT,
                Some(&claims.host),
                format!(
                    "{}: attempt {} of {} is not the current one",
                    claims.host, claims.attempt, claims.boot
                ),
            );
        }
    }
    if s.state.record_checkpoint(&claims.host, claims.attempt) {
        let mut detail = claims.boot.clone();
        for (what, v) in [("query", &query), ("body", &body)] {
            if let Some(v) = v {
                detail.push_str(&format!(" {what}: {}", v.trim_end()));
            }
        }
        // The installer is told "recorded" only once the event is kept:
        // a checkpoint is never dropped for a full channel, nor lost in a
        // crash after it was answered.
        let kept = s
            .keep(event(
                Route::Checkpoint,
                Some(&claims.host),
                Some(claims.attempt),
                ip,
                StatusCode::OK,
                detail,
            ))
            .await;
        if !kept {
            s.state.forget_checkpoint(&claims.host, claims.attempt);
            warn!(host = %claims.host, attempt = claims.attempt, "checkpoint not kept: the installer is asked to retry");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not recorded: {} {} attempt {}; try again\n",
                    claims.host, claims.boot, claims.attempt
                ),
            );
        }
        text(
            StatusCode::OK,
            format!(
                "recorded: {} {} attempt {}\n",
                claims.host, claims.boot, claims.attempt
            ),
        )
    } else {
        text(
            StatusCode::OK,
            format!(
                "already recorded: {} {} attempt {}\n",
                claims.host, claims.boot, claims.attempt
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_route_table_matches_as_the_router_does() {
        let of = Route::of;
        assert_eq!(of("/boot.ipxe"), Some((Route::Chain, "")));
        assert_eq!(of("/ipxe"), Some((Route::Script, "")));
        assert_eq!(
            of("/config/52-54-00-00-01-21"),
            Some((Route::Config, "52-54-00-00-01-21"))
        );
        assert_eq!(
            of("/files/debian/linux%20x"),
            Some((Route::Files, "debian/linux%20x"))
        );
        assert_eq!(of("/checkpoint/t.k"), Some((Route::Checkpoint, "t.k")));
        // A one-segment capture takes one segment, and none is empty.
        for p in [
            "/",
            "/ipxe/",
            "/ipxe/x",
            "/boot.ipxe/",
            "/config/",
            "/config/a/b",
            "/files/",
            "/files",
            "/checkpoint/",
            "/checkpoint/a/b",
            "/other",
        ] {
            assert_eq!(of(p), None, "{p}");
        }
        // Every route of the table is found by its own path.
        for r in Route::ALL {
            let sample = r.path().replace("{*path}", "a/b").replace(['{', '}'], "");
            assert_eq!(of(&sample).map(|(found, _)| found), Some(r), "{sample}");
        }
    }
}
