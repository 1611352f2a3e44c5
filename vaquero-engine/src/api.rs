//! The user API of `vaquero standalone` and `vaquero server`: JSON over
//! HTTP(S), one module and one OpenAPI document for both.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/live` | 200 while the process runs |
//! | GET | `/ready` | 200 once a model is served |
//! | GET | `/leader` | 200 from the process that leads (a replicated server's follower answers 503) |
//! | GET | `/metrics` | Prometheus text |
//! | GET | `/v1/openapi.json` | this API as OpenAPI 3.1 |
//! | GET | `/v1/status` | site, revision served, refused revision, pending plan, rollout progress |
//! | GET | `/v1/hosts` | every host: phase, stage, attempt, since, last event |
//! | GET | `/v1/hosts/{name}` | one host, with the timeline of each boot attempt |
//! | POST | `/v1/hosts/{name}/reprovision` | reprovision the host (body `{"now": true}` skips the reboot windows) |
//! | POST | `/v1/reprovision` | reprovision exactly the hosts of `{"hosts": [..], "now": false}` |
//! | GET | `/v1/plans` | plans, pending or applied (text and JSON) |
//! | POST | `/v1/approve` | approve the waiting plan (`{"rollout": N}` optional) |
//! | POST | `/v1/pause`, `/v1/resume` | hold back new hosts / start them again |
//! | GET | `/v1/executions?host=H` | execution records with their steps and logs |
//! | GET | `/v1/backup` | every key of the state at one moment (admin), for `vaquero backup` |
//!
//! Everything but `/live`, `/ready`, `/leader`, `/metrics` and
//! `/v1/openapi.json` needs
//! `Authorization: Bearer <token>`; a missing or wrong token gets 401 with
//! a JSON error. Errors are `{"error": {"kind", "message"}}`, extractor
//! rejections (400, 415, 422) and 405 included.
//!
//! The OpenAPI document is generated from the handlers (`#[utoipa::path]`)
//! and the bodies' types (`ToSchema`) as the routes are registered
//! ([`openapi`]); `scripts/api-contract` holds the live API to it with
//! schemathesis.
//!
//! Each site's route (`/v1/status` to `/v1/agents/{agent}`) is also at
//! `/v1/sites/{site}/…`. The short form answers for the only site; a
//! server with several answers it 400, naming them, and an unknown
//! `{site}` gets 404.

mod body;
mod doc;
mod extract;
pub(crate) mod reply;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use body::HostRow;
use body::{
    AgentsBody, ApproveBody, Attempt, AttemptEvent, Done, ExecQuery, ExecutionsBody, HostBody,
    HostsBody, LeaderBody, NewToken, PendingPlan, PlansBody, ReprovisionMany, ReprovisionOne,
    SiteRow, SitesBody, StatusBody, TokenMade, TokensBody,
};
use extract::{Body, MaybeBody, Path, Query};
pub(crate) use reply::{ErrorBody, error};

use crate::Error;
use crate::auth::{AuthFailure, Role};
use crate::command::{Command, CommandFailure};
use crate::compose::MetricsRender;
use crate::control::Snapshot;
use crate::control::Timelines;
use crate::observe::Observation;
use crate::record::Records;
use crate::server::routes::PeerCert;
use crate::state::HostState;
use crate::store::Store;

/// One site as the API sees it.
#[derive(Clone)]
pub struct SiteApi {
    /// The latest snapshot.
    pub snapshot: tokio::sync::watch::Receiver<std::sync::Arc<Snapshot>>,
    /// Timelines.
    pub timelines: std::sync::Arc<std::sync::Mutex<Timelines>>,
    /// Commands to the site's control loop.
    pub commands: crate::command::Commands,
}

impl std::fmt::Debug for SiteApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteApi").finish_non_exhaustive()
    }
}

/// What the API shares with the control loops.
#[derive(Clone)]
pub struct Shared {
    /// The sites served, by id (standalone: one).
    pub sites: std::sync::Arc<BTreeMap<String, SiteApi>>,
    /// The store (execution records are read from it).
    pub store: std::sync::Arc<dyn Store>,
    /// The admin token made at first start (`admin.token`).
    pub token: std::sync::Arc<str>,
    /// The user tokens of the store (`vaquero token`).
    pub tokens: crate::auth::Tokens,
    /// Renders `/metrics`.
    pub metrics: Option<MetricsRender>,
    /// A server's agent routes and join tokens (`None`: standalone).
    pub agents: Option<crate::server::routes::AgentApi>,
    /// `POST /v1/webhook/github` (`None`: no secret configured).
    pub webhook: Option<std::sync::Arc<crate::webhook::Webhook>>,
    /// What `GET /leader` says: this process leads (it serves the API).
    pub leader: Leader,
}

/// Who leads, for `GET /leader`, as the process serving the API says it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Leader {
    /// The leader's URL (a replicated server's `--advertise`).
    pub leader: Option<String>,
    /// The term's fencing number (0: not replicated).
    pub fence: u64,
}

impl axum::extract::FromRef<Shared> for crate::webhook::Hook {
    fn from_ref(s: &Shared) -> Self {
        crate::webhook::Hook(s.webhook.clone())
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The site a request is about: `{site}` in `/v1/sites/{site}/…`, or the
/// only one when the process serves one (standalone).
struct Site(SiteApi);

/// The site a request is about, by name: the `{site}` of the path, or
/// the only site.
struct SiteName(String);

/// The site a request names (`{site}` in its path), or the only one.
async fn site_of(
    parts: &mut axum::http::request::Parts,
    s: &Shared,
) -> Result<(String, SiteApi), Response> {
    use axum::extract::FromRequestParts as _;
    let params = axum::extract::RawPathParams::from_request_parts(parts, s)
        .await
        .ok();
    let named = params.and_then(|p| {
        p.iter()
            .find(|(k, _)| *k == "site")
            .map(|(_, v)| v.to_owned())
    });
    match named {
        Some(n) => match s.sites.get(&n) {
            Some(api) => Ok((n, api.clone())),
            None => Err(error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no site named `{n}`"),
            )),
        },
        None if s.sites.len() == 1 => s
            .sites
            .iter()
            .next()
            .map(|(n, api)| (n.clone(), api.clone()))
            .ok_or_else(|| error(StatusCode::NOT_FOUND, "not_found", "no site")),
        None => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "this server runs several sites ({}): ask /v1/sites/{{site}}/…",
                s.sites.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

impl axum::extract::FromRequestParts<Shared> for Site {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &Shared,
    ) -> Result<Self, Response> {
        site_of(parts, s).await.map(|(_, api)| Site(api))
    }
}

impl axum::extract::FromRequestParts<Shared> for SiteName {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &Shared,
    ) -> Result<Self, Response> {
        site_of(parts, s).await.map(|(name, _)| SiteName(name))
    }
}

/// `{name}` of a host's path (beside `{site}` or not).
#[derive(Debug, Deserialize)]
struct HostName {
    name: String,
}

/// The running API server.
#[derive(Debug)]
pub struct ApiServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Stops it; requests in flight finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}

/// The API's certificate and key (PEM files).
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate chain.
    pub cert: std::path::PathBuf,
    /// The private key.
    pub key: std::path::PathBuf,
    /// A CA whose client certificates are asked for and verified (a
    /// server's agents); a connection without one is still served (the
    /// user API and enrolment use tokens).
    pub client_ca: Option<std::path::PathBuf>,
}

/// Refuses plain HTTP off loopback (checked before anything starts).
pub fn check(addr: SocketAddr, tls: Option<&Tls>) -> Result<(), Error> {
    if tls.is_none() && !addr.ip().is_loopback() {
        return Err(Error::Api {
            addr,
            source: std::io::Error::other(
                "plain HTTP is served on loopback addresses only (127.0.0.1, ::1): give --tls-cert and --tls-key, or listen there",
            ),
        });
    }
    Ok(())
}

/// The rustls server configuration of `tls`.
fn tls_config(tls: &Tls) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate {}: {e}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("key {}: {e}", tls.key.display()))?;
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let builder = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client CA {}: {e}", ca.display()))?
            {
                roots
                    .add(c)
                    .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            }
            let verifier =
                tokio_rustls::rustls::server::WebPkiClientVerifier::builder_with_provider(
                    std::sync::Arc::new(roots),
                    provider,
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// Binds `addr` and serves the API: over HTTPS with `tls`, otherwise plain
/// HTTP, which only loopback addresses get (a token must not cross a
/// network in the clear).
pub async fn serve(
    addr: SocketAddr,
    tls: Option<&Tls>,
    shared: Shared,
) -> Result<ApiServer, Error> {
    let (_, routes) = tokio::sync::watch::channel(router(shared));
    serve_routes(addr, tls, routes).await
}

/// As [`serve`], with the routes `routes` holds at each request: a
/// replicated server switches between a leader's and a follower's on
/// one listener.
pub async fn serve_routes(
    addr: SocketAddr,
    tls: Option<&Tls>,
    routes: tokio::sync::watch::Receiver<Router>,
) -> Result<ApiServer, Error> {
    check(addr, tls)?;
    let api_err = |addr, msg: String| Error::Api {
        addr,
        source: std::io::Error::other(msg),
    };
    let acceptor = match tls {
        Some(t) => Some(tls_config(t).map_err(|e| api_err(addr, e))?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Api { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Api { addr, source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_conns(listener, acceptor, routes, stopped));
    Ok(ApiServer { addr, stop, task })
}

/// How large a request's head (request line and headers) may be: past
/// it, 431 (hyper's floor is 8 KiB).
pub const MAX_HEAD: usize = 16 * 1024;

/// HTTP/1.1 on one connection, heads bounded by [`MAX_HEAD`]; when
/// `closing` fires, the request in flight finishes and the connection
/// closes.
async fn serve_http<IO>(
    io: IO,
    app: tokio::sync::watch::Receiver<Router>,
    peer: Option<PeerCert>,
    mut closing: tokio::sync::watch::Receiver<()>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // A Router is always ready: `call` without `poll_ready`.
    let service = hyper::service::service_fn(move |mut req: axum::http::Request<_>| {
        if let Some(p) = &peer {
            req.extensions_mut().insert(p.clone());
        }
        let mut app = app.borrow().clone();
        tower_service::Service::call(&mut app, req)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(MAX_HEAD);
    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = closing.changed() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// Each connection: its TLS handshake (bounded) with `acceptor`, then
/// HTTP/1.1 with heads bounded by [`MAX_HEAD`].
async fn serve_conns(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: tokio::sync::watch::Receiver<Router>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut conns = tokio::task::JoinSet::new();
    // Dropped when stopping: each connection finishes its request in
    // flight and closes.
    let (closing_tx, closing) = tokio::sync::watch::channel(());
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "API accept");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let closing = closing.clone();
        conns.spawn(async move {
            let Some(acceptor) = acceptor else {
                return serve_http(tcp, app, None, closing).await;
            };
            match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                .await
            {
                Ok(Ok(tls)) => {
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| PeerCert(std::sync::Arc::from(c.as_ref())));
                    serve_http(tls, app, peer, closing).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "API TLS handshake failed"),
                Err(_) => {}
            }
        });
    }
    // Connections in flight finish (bounded).
    drop(closing_tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

/// The API's routes.
pub fn router(shared: Shared) -> Router {
    let (public, v1, document) = documented(shared.agents.is_some());
    let document = OpenApiJson(std::sync::Arc::from(
        document
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")),
    ));
    let v1 = v1
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), auth));
    let mut app = public
        .method_not_allowed_fallback(method_not_allowed)
        .merge(v1)
        .layer(axum::Extension(document));
    if let Some(agents) = &shared.agents {
        app = app.merge(crate::server::routes::router(agents.clone()));
    }
    app.with_state(shared)
}

/// The OpenAPI document of the API a process serves: with the agents'
/// routes of a server's sites (`with_agents`) or without (standalone).
pub fn openapi(with_agents: bool) -> utoipa::openapi::OpenApi {
    documented(with_agents).2
}

/// The routes anyone may call, those behind the token check, and the
/// OpenAPI document of both, registered together: a route cannot be
/// served without its document.
fn documented(with_agents: bool) -> (Router<Shared>, Router<Shared>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    // A site's routes: at `/v1/…` for the only site, and at
    // `/v1/sites/{site}/…` for any.
    let site = || {
        let routes = OpenApiRouter::new()
            .routes(routes!(status))
            .routes(routes!(hosts))
            .routes(routes!(host))
            .routes(routes!(reprovision))
            .routes(routes!(reprovision_many))
            .routes(routes!(plans))
            .routes(routes!(approve))
            .routes(routes!(pause))
            .routes(routes!(resume))
            .routes(routes!(executions));
        if with_agents {
            routes.routes(routes!(agents)).routes(routes!(agent_revoke))
        } else {
            routes
        }
    };
    let mut only = OpenApiRouter::new().nest("/v1", site());
    doc::only_site(only.get_openapi_mut());
    let mut any = OpenApiRouter::new().nest("/v1/sites/{site}", site());
    doc::any_site(any.get_openapi_mut());
    let mut v1 = OpenApiRouter::new()
        .routes(routes!(sites))
        .routes(routes!(token_list, token_create))
        .routes(routes!(token_revoke))
        .routes(routes!(backup))
        .merge(only)
        .merge(any);
    doc::behind_tokens(v1.get_openapi_mut());
    let mut public = OpenApiRouter::with_openapi(doc::ApiDoc::openapi())
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(leader))
        .routes(routes!(metrics))
        // No token: it holds no secret, and clients are generated from it.
        .routes(routes!(openapi_json));
    let (schemas, paths, method) = routes!(crate::webhook::github);
    let limit = axum::extract::DefaultBodyLimit::max(crate::webhook::MAX_BODY);
    public = public.routes((schemas, paths, method.layer(limit)));
    doc::public(public.get_openapi_mut());
    let (v1, v1_doc) = v1.split_for_parts();
    let (public, mut document) = public.split_for_parts();
    document.merge(v1_doc);
    (public, v1, document)
}

/// The document `GET /v1/openapi.json` serves.
#[derive(Clone)]
struct OpenApiJson(std::sync::Arc<str>);

/// This API as OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    responses((status = 200, description = "The document", body = Object, content_type = "application/json"))
)]
async fn openapi_json(axum::Extension(doc): axum::Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.0.to_string(),
    )
        .into_response()
}

/// A method a path does not serve: 405, with `Allow` (set by the
/// router) and the API's JSON error.
async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not serve that method",
    )
}

/// A change carried out, as `{"ok": true, "message"}`.
fn done(message: impl Into<String>) -> Response {
    Json(Done {
        ok: true,
        message: message.into(),
    })
    .into_response()
}

async fn auth(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    if req
        .extensions()
        .get::<PeerCert>()
        .is_some_and(|p| crate::pki::agent_of(&p.0).is_some())
    {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an agent's certificate cannot use the user API",
        );
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let role = match given {
        None => None,
        Some(t) => {
            use subtle::ConstantTimeEq;
            if bool::from(t.as_bytes().ct_eq(s.token.as_bytes())) {
                Some(Role::Admin)
            } else {
                match s.tokens.verify(t).await {
                    Ok(r) => r.map(|r| r.role),
                    Err(e) => {
                        return error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string());
                    }
                }
            }
        }
    };
    let Some(role) = role else {
        let why = if given.is_some() {
            "wrong or revoked token"
        } else {
            "a bearer token is needed (Authorization: Bearer <token>)"
        };
        let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", why);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    };
    if role == Role::Agent {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a join token cannot use the user API (it enrols an agent)",
        );
    }
    let reads = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if role == Role::Read && !reads {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a token of role read cannot change anything",
        );
    }
    req.extensions_mut().insert(role);
    next.run(req).await
}

/// The agents of a site: those its SoT names and those enrolled, with
/// when each enrolled and last called (a server's).
#[utoipa::path(
    get,
    path = "/agents",
    responses(
        (status = 200, description = "The site's agents", body = AgentsBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    )
)]
async fn agents(State(s): State<Shared>, SiteName(site): SiteName) -> Response {
    let Some(api) = &s.agents else {
        return no_agents();
    };
    match api.agents(&site).await {
        Ok(agents) => Json(AgentsBody { site, agents }).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    }
}

/// `DELETE /v1/sites/{site}/agents/{agent}`'s path.
#[derive(Debug, Deserialize)]
struct AgentName {
    agent: String,
}

/// Revoke an agent's enrolment: its certificates are refused at once; it
/// needs a new join token.
#[utoipa::path(
    delete,
    path = "/agents/{agent}",
    params(("agent" = String, Path, description = "The agent")),
    responses(
        (status = 200, description = "Revoked", body = Done),
        (status = 404, description = "No such site, or the agent is not enrolled", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    )
)]
async fn agent_revoke(
    State(s): State<Shared>,
    SiteName(site): SiteName,
    Path(AgentName { agent }): Path<AgentName>,
) -> Response {
    let Some(api) = &s.agents else {
        return no_agents();
    };
    match api.revoke(&site, &agent).await {
        Ok(true) => {
            tracing::info!(%site, %agent, "agent revoked");
            done(format!(
                "agent {agent} of site {site} revoked: enrol it again with a new join token"
            ))
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("agent `{agent}` of site `{site}` is not enrolled"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    }
}

fn no_agents() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "standalone has no remote agents (its site services run in the process)",
    )
}

fn auth_error(e: AuthFailure) -> Response {
    match e {
        AuthFailure::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        e => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    }
}

/// Make a token (admin role); its secret is in this answer only, its
/// hash is kept.
///
/// Role `agent` makes a join token for an agent of a server's site.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    request_body = NewToken,
    responses(
        (status = 200, description = "The token and its record", body = TokenMade),
        (status = 400, description = "Malformed JSON; or a join token without `site`, or of an agent the site does not have", body = ErrorBody),
        (status = 404, description = "A join token's site is not served (standalone serves no agents)", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
        (status = 503, description = "A join token's site has no model yet", body = ErrorBody),
    )
)]
async fn token_create(
    State(s): State<Shared>,
    headers: axum::http::HeaderMap,
    Body(b): Body<NewToken>,
) -> Response {
    if b.role == Role::Agent {
        return join_create(&s, &headers, b).await;
    }
    match s.tokens.create(b.role, &b.note, Timestamp::now()).await {
        Ok((token, record)) => {
            tracing::info!(id = %record.id, role = record.role.as_str(), "token created");
            Json(TokenMade { token, record }).into_response()
        }
        Err(e) => auth_error(e),
    }
}

/// A join token: for an agent of the model of the site named.
async fn join_create(s: &Shared, headers: &axum::http::HeaderMap, b: NewToken) -> Response {
    let Some(agents) = &s.agents else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "join tokens enrol agents of `vaquero server`'s sites; standalone has none",
        );
    };
    let Some(site) = b.site else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a join token needs `site`",
        );
    };
    let Some(hub) = agents.hubs.get(&site) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no site named `{site}`"),
        );
    };
    let Some(model) = hub.site_model() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_model",
            format!("site `{site}` has no model yet"),
        );
    };
    let agent = match model.agent(b.agent.as_deref()) {
        Ok(a) => a.id.clone(),
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    let server = match &agents.advertise {
        Some(a) => a.clone(),
        None => match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
            Some(h) => format!("https://{h}"),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "no Host header, and the server has no --advertise URL",
                );
            }
        },
    };
    match s
        .tokens
        .create_join(&site, &agent, &b.note, Timestamp::now())
        .await
    {
        Ok((token, record)) => {
            tracing::info!(id = %record.id, %site, %agent, "join token created");
            let join = crate::auth::join_token(&token, &agents.ca.fingerprint, &server);
            Json(TokenMade {
                token: join,
                record,
            })
            .into_response()
        }
        Err(e) => auth_error(e),
    }
}

/// The 403 a role other than admin gets: `what` needs the admin role.
fn refused_unless_admin(role: Role, what: &str) -> Option<Response> {
    (role != Role::Admin).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{what} needs the admin role"),
        )
    })
}

/// Every token (admin role): id, role, note, created, revoked; never a
/// secret.
#[utoipa::path(
    get,
    path = "/v1/tokens",
    responses(
        (status = 200, description = "Every token", body = TokensBody),
        (status = 403, description = "Not the admin role", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    )
)]
async fn token_list(State(s): State<Shared>, role: axum::Extension<Role>) -> Response {
    if let Some(refused) = refused_unless_admin(role.0, "listing tokens") {
        return refused;
    }
    match s.tokens.list().await {
        Ok(tokens) => Json(TokensBody { tokens }).into_response(),
        Err(e) => auth_error(e),
    }
}

/// Revoke a token: refused at once.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    params(("id" = String, Path, description = "The token's id")),
    responses(
        (status = 200, description = "Revoked (or revoked already)", body = Done),
        (status = 404, description = "No such token", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    )
)]
async fn token_revoke(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    match s.tokens.revoke(&id, Timestamp::now()).await {
        Ok(record) => {
            tracing::info!(id = %record.id, "token revoked");
            done(format!("token {id} revoked"))
        }
        Err(e) => auth_error(e),
    }
}

/// Every key of the state at one moment (admin role), for `vaquero
/// backup`.
#[utoipa::path(
    get,
    path = "/v1/backup",
    responses(
        (status = 200, description = "The state, with its count and checksum", body = crate::migrate::Snapshot),
        (status = 403, description = "Not the admin role", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    )
)]
async fn backup(State(s): State<Shared>, role: axum::Extension<Role>) -> Response {
    if let Some(refused) = refused_unless_admin(role.0, "a backup") {
        return refused;
    }
    match crate::migrate::Snapshot::take(s.store.as_ref()).await {
        Ok(snap) => {
            tracing::info!(
                keys = snap.keys,
                bytes = snap.bytes,
                "state backed up through the API"
            );
            Json(snap).into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the store: {e}"),
        ),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// 200 while the process runs.
#[utoipa::path(
    get,
    path = "/live",
    responses((status = 200, description = "The process runs", body = String, content_type = "text/plain"))
)]
async fn live() -> &'static str {
    "ok\n"
}

/// 200 from the process that leads (a replicated server's follower
/// answers 503).
#[utoipa::path(
    get,
    path = "/leader",
    responses(
        (status = 200, description = "This process leads", body = LeaderBody),
        (status = 503, description = "A follower: the leader is elsewhere", body = Object),
    )
)]
async fn leader(State(s): State<Shared>) -> Response {
    Json(LeaderBody {
        leader: s.leader.leader.clone(),
        fence: s.leader.fence,
        this: true,
    })
    .into_response()
}

/// 200 once every site has a model to serve.
#[utoipa::path(
    get,
    path = "/ready",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "A site has no model yet (or a follower cannot read etcd)", body = String, content_type = "text/plain"),
    )
)]
async fn ready(State(s): State<Shared>) -> Response {
    let waiting: Vec<&str> = s
        .sites
        .iter()
        .filter(|(_, site)| site.snapshot.borrow().version.is_empty())
        .map(|(id, _)| id.as_str())
        .collect();
    if waiting.is_empty() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no model yet for {}\n", waiting.join(", ")),
        )
            .into_response()
    }
}

/// Every site served, in brief.
#[utoipa::path(
    get,
    path = "/v1/sites",
    responses((status = 200, description = "The sites", body = SitesBody))
)]
async fn sites(State(s): State<Shared>) -> Response {
    let sites = s
        .sites
        .values()
        .map(|site| {
            let snap = site.snapshot.borrow().clone();
            SiteRow {
                site: snap.site.clone(),
                revision: snap.revision.clone(),
                version: snap.version.clone(),
                paused: snap.paused,
                held: snap.held.clone(),
                rollout: snap.state.rollout.as_ref().map(|r| r.id),
                hosts: snap.state.hosts.len(),
            }
        })
        .collect();
    Json(SitesBody { sites }).into_response()
}

/// Prometheus metrics, in its text format.
#[utoipa::path(
    get,
    path = "/metrics",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain"),
        (status = 404, description = "No metrics exporter in this process", body = ErrorBody),
    )
)]
async fn metrics(State(s): State<Shared>) -> Response {
    metrics_response(s.metrics.as_ref())
}

/// `GET /metrics` from `render` (404 without an exporter).
pub(crate) fn metrics_response(render: Option<&MetricsRender>) -> Response {
    match render {
        Some(render) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            (render.0)(),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "no metrics exporter"),
    }
}

fn row(snap: &Snapshot, h: &HostState, last: Option<Observation>) -> HostRow {
    let model = &snap.model;
    let boot = model
        .by_name(&h.name)
        .and_then(|r| model.stage(r.host, h.stage));
    let boot_name = boot
        .and_then(|b| model.data().boots.get(b))
        .and_then(|b| b.name.clone());
    let site = snap.site.as_str();
    HostRow {
        name: h.name.clone(),
        site: site.to_owned(),
        workflow: h.workflow.clone(),
        phase: h.phase,
        stage: h.stage,
        boot: boot.map(str::to_owned),
        boot_name,
        attempt: h.attempt,
        since: h.since,
        reason: h.reason.clone(),
        last_event: last,
    }
}

/// The site, the revision served, a refused revision, the plan that
/// waits, and the rollout's progress.
#[utoipa::path(
    get,
    path = "/status",
    responses((status = 200, description = "The site's status", body = StatusBody))
)]
async fn status(Site(s): Site) -> Response {
    let snap = s.snapshot.borrow().clone();
    let phases = snap
        .state
        .phase_counts()
        .into_iter()
        .map(|(p, n)| (p.as_str().to_owned(), n))
        .collect();
    let pending_plan = snap
        .plans
        .iter()
        .rev()
        .find(|p| p.status == crate::control::PlanStatus::Pending)
        .map(|p| PendingPlan {
            rollout: p.rollout,
            text: p.text.clone(),
        });
    Json(StatusBody {
        site: snap.site.clone(),
        source: snap.source.clone(),
        revision: snap.revision.clone(),
        version: snap.version.clone(),
        paused: snap.paused,
        held: snap.held.clone(),
        refused: snap.refused.clone(),
        rollout: snap.state.rollout.clone(),
        pending_plan,
        hosts: snap.state.hosts.len(),
        phases,
    })
    .into_response()
}

/// Every host: phase, stage, attempt, since, last event.
#[utoipa::path(
    get,
    path = "/hosts",
    responses((status = 200, description = "The site's hosts", body = HostsBody))
)]
async fn hosts(Site(s): Site) -> Response {
    let snap = s.snapshot.borrow().clone();
    let t = s.timelines.lock().unwrap_or_else(|p| p.into_inner());
    let hosts = snap
        .state
        .hosts
        .values()
        .map(|h| row(&snap, h, t.last(&h.name)))
        .collect();
    Json(HostsBody { hosts }).into_response()
}

/// Groups a host's observations into boot attempts. DHCP and TFTP carry
/// no attempt: they belong to the attempt whose requests follow them (or,
/// at the end, to the one before).
fn attempts(obs: &[Observation]) -> Vec<Attempt> {
    let mut effective: Vec<Option<u64>> = vec![None; obs.len()];
    let mut next = None;
    for (i, o) in obs.iter().enumerate().rev() {
        next = o.attempt.or(next);
        effective[i] = next;
    }
    let mut prev = None;
    for (i, o) in obs.iter().enumerate() {
        prev = o.attempt.or(prev);
        if effective[i].is_none() {
            effective[i] = prev;
        }
    }
    let mut out: Vec<Attempt> = Vec::new();
    for (o, attempt) in obs.iter().zip(effective) {
        if out.last().is_none_or(|a| a.attempt != attempt) {
            out.push(Attempt {
                attempt,
                started: o.at,
                ended: o.at,
                seconds: 0.0,
                events: Vec::new(),
            });
        }
        if let Some(a) = out.last_mut() {
            let since = (o.at.as_millisecond() - a.started.as_millisecond()) as f64 / 1000.0;
            a.ended = o.at;
            a.seconds = since;
            a.events.push(AttemptEvent {
                at: o.at,
                after_seconds: since,
                kind: o.kind,
                ok: o.ok,
                detail: o.detail.clone(),
            });
        }
    }
    out
}

/// One host, with the timeline of each boot attempt.
#[utoipa::path(
    get,
    path = "/hosts/{name}",
    params(("name" = String, Path, description = "The host")),
    responses(
        (status = 200, description = "The host", body = HostBody),
        (status = 404, description = "No such host (or site)", body = ErrorBody),
    )
)]
async fn host(Site(s): Site, Path(HostName { name }): Path<HostName>) -> Response {
    let snap = s.snapshot.borrow().clone();
    let Some(h) = snap.state.hosts.get(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no host named `{name}` in site `{}`", snap.site),
        );
    };
    let obs = s
        .timelines
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .of(&name);
    Json(HostBody {
        host: row(&snap, h, obs.last().cloned()),
        state: h.clone(),
        attempts: attempts(&obs),
    })
    .into_response()
}

/// Plans, pending, applied or superseded, with their text and JSON.
#[utoipa::path(
    get,
    path = "/plans",
    responses((status = 200, description = "The site's plans, newest last", body = PlansBody))
)]
async fn plans(Site(s): Site) -> Response {
    let snap = s.snapshot.borrow().clone();
    Json(PlansBody {
        plans: snap.plans.to_vec(),
    })
    .into_response()
}

async fn send(s: &SiteApi, cmd: Command) -> Response {
    match s.commands.send(cmd).await {
        Ok(msg) => done(msg),
        Err(e @ CommandFailure::NotFound(_)) => {
            error(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        Err(e @ CommandFailure::Refused(_)) => {
            error(StatusCode::CONFLICT, "refused", e.to_string())
        }
        Err(e @ CommandFailure::Store(_)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string()),
    }
}

/// Approve the plan that waits (the body is optional).
#[utoipa::path(
    post,
    path = "/approve",
    request_body(content = Option<ApproveBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "Approved", body = Done),
        (status = 409, description = "No plan waits, or another rollout than `rollout` does", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
        (status = 503, description = "The control loop is stopping", body = ErrorBody),
    )
)]
async fn approve(Site(s): Site, MaybeBody(body): MaybeBody<ApproveBody>) -> Response {
    let id = body.and_then(|b| b.rollout);
    send(&s, Command::Approve(id)).await
}

/// Reprovision the host, under its workflow's policies (the body is
/// optional; `{"now": true}` skips the reboot windows).
#[utoipa::path(
    post,
    path = "/hosts/{name}/reprovision",
    params(("name" = String, Path, description = "The host")),
    request_body(content = Option<ReprovisionOne>, content_type = "application/json"),
    responses(
        (status = 200, description = "Started (or in flight already)", body = Done),
        (status = 404, description = "No such host (or site)", body = ErrorBody),
        (status = 409, description = "Refused by the engine (the host is never provisioned, say)", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
        (status = 503, description = "The control loop is stopping", body = ErrorBody),
    )
)]
async fn reprovision(
    Site(s): Site,
    Path(HostName { name }): Path<HostName>,
    MaybeBody(body): MaybeBody<ReprovisionOne>,
) -> Response {
    let now = body.is_some_and(|b| b.now);
    send(
        &s,
        Command::Reprovision {
            hosts: vec![name],
            now,
        },
    )
    .await
}

/// Reprovision exactly the hosts named, no others, under their
/// workflows' policies.
#[utoipa::path(
    post,
    path = "/reprovision",
    request_body = ReprovisionMany,
    responses(
        (status = 200, description = "Started (or in flight already)", body = Done),
        (status = 400, description = "Malformed JSON, or no host named", body = ErrorBody),
        (status = 404, description = "A host named does not exist (or the site)", body = ErrorBody),
        (status = 409, description = "Refused by the engine (a host is never provisioned, say)", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
        (status = 503, description = "The control loop is stopping", body = ErrorBody),
    )
)]
async fn reprovision_many(Site(s): Site, Body(b): Body<ReprovisionMany>) -> Response {
    if b.hosts.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_request", "no host named");
    }
    send(
        &s,
        Command::Reprovision {
            hosts: b.hosts,
            now: b.now,
        },
    )
    .await
}

/// Hold back new hosts (those in flight finish).
#[utoipa::path(
    post,
    path = "/pause",
    responses(
        (status = 200, description = "Paused", body = Done),
        (status = 500, description = "The store failed", body = ErrorBody),
        (status = 503, description = "The control loop is stopping", body = ErrorBody),
    )
)]
async fn pause(Site(s): Site) -> Response {
    send(&s, Command::Pause).await
}

/// Start new hosts again.
#[utoipa::path(
    post,
    path = "/resume",
    responses(
        (status = 200, description = "Resumed", body = Done),
        (status = 500, description = "The store failed", body = ErrorBody),
        (status = 503, description = "The control loop is stopping", body = ErrorBody),
    )
)]
async fn resume(Site(s): Site) -> Response {
    send(&s, Command::Resume).await
}

/// Execution records with their steps and logs: one host's, one
/// rollout's, or (by default) the current rollout's.
#[utoipa::path(
    get,
    path = "/executions",
    params(ExecQuery),
    responses(
        (status = 200, description = "The records", body = ExecutionsBody),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 500, description = "The store failed", body = ErrorBody),
    )
)]
async fn executions(
    State(shared): State<Shared>,
    Site(s): Site,
    Query(q): Query<ExecQuery>,
) -> Response {
    // Rollout ids are documented as int64 (JSON Schema has no wider
    // integer): larger ones are refused, not read.
    if q.rollout.is_some_and(|r| i64::try_from(r).is_err()) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "`rollout` is past the largest rollout id (2^63 - 1)",
        );
    }
    let snap = s.snapshot.borrow().clone();
    let records = Records::new(shared.store.clone(), &snap.site);
    let r = match (&q.host, q.rollout) {
        (Some(h), _) => records.for_host(h).await,
        (None, Some(id)) => records.for_rollout(id).await,
        (None, None) => match snap.state.rollout.as_ref() {
            Some(r) => records.for_rollout(r.id).await,
            None => Ok(Vec::new()),
        },
    };
    match r {
        Ok(executions) => Json(ExecutionsBody { executions }).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// The document names every site route twice: at `/v1/…` (the only
    /// site; 400 when there are several) and at `/v1/sites/{site}/…`
    /// (404 for a site the server does not run), with the same methods.
    #[test]
    fn the_openapi_document_has_every_site_route_both_ways() {
        let doc = serde_json::to_value(super::openapi(true)).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let scoped: Vec<&String> = paths
            .keys()
            .filter(|p| p.starts_with("/v1/sites/{site}/"))
            .collect();
        assert!(scoped.len() >= 12, "{scoped:?}");
        for p in scoped {
            let plain = format!("/v1/{}", &p["/v1/sites/{site}/".len()..]);
            let (a, b) = (&paths[p.as_str()], &paths[&plain]);
            let methods =
                |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(methods(a), methods(b), "{p} and {plain}");
            for (m, op) in a.as_object().unwrap() {
                assert!(op["responses"]["404"].is_object(), "{m} {p}: 404");
                assert_eq!(op["parameters"][0]["name"], "site", "{m} {p}");
                assert!(b[m]["responses"]["400"].is_object(), "{m} {plain}: 400");
                assert_ne!(op["operationId"], b[m]["operationId"], "{m} {p}");
            }
        }
        // A route behind the token that takes a body documents what its
        // extractor refuses.
        let mut bodies = 0;
        for (p, item) in paths.iter().filter(|(p, _)| !p.contains("webhook")) {
            for (m, op) in item.as_object().unwrap() {
                if op.get("requestBody").is_some() {
                    bodies += 1;
                    for status in ["400", "401", "403", "413", "415", "422"] {
                        assert!(op["responses"][status].is_object(), "{m} {p}: {status}");
                    }
                }
            }
        }
        assert!(bodies >= 7, "{bodies} routes with a body");
    }
}
