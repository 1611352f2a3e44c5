//! `vaquero server`: every site of the SoT, each with its own control
//! half ([`Runner`] over a [`RemoteSite`]), plans, gate and rollout, its
//! agents served over HTTPS with mTLS, and the user API.
//!
//! One task watches the SoT: a new revision is validated once and each
//! site's model goes to that site's task (an invalid revision is refused
//! at every site, and the previous one keeps serving). Each site's task
//! steps its engine, takes its operators' commands and prunes its
//! records.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use vaquero_model::{SiteModel, SotFiles};

use crate::Error;
use crate::api::{Shared, SiteApi, Tls};
use crate::command::CommandMsg;
use crate::compose::{
    Fetcher, MetricsRender, PRUNE, SETTLE, STATE_FILE, TOKEN_FILE, open_source, secret, until,
    watch_sot,
};
use crate::control::Publisher;
use crate::engine::EngineConfig;
use crate::runner::Runner;
use crate::server::hub::{HubConfig, RemoteSite, SiteHub};
use crate::server::routes::{AgentApi, Ca};
use crate::store::{RedbStore, Store};

/// How `vaquero server` runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The SoT: a directory, a local Git repository (a path or `file://`
    /// URL), or a remote one (`https://`, `ssh://`, `git@host:path`),
    /// mirrored into the data directory.
    pub sot: String,
    /// For a Git SoT, the branch followed (default: the one HEAD names).
    pub branch: Option<String>,
    /// Where the state and the admin token live.
    pub data: PathBuf,
    /// Where the API (users and agents) listens.
    pub listen: SocketAddr,
    /// The server's certificate and key.
    pub cert: PathBuf,
    /// The server's key.
    pub key: PathBuf,
    /// The CA that signs agents' certificates (and that agents pin).
    pub ca_cert: PathBuf,
    /// Its key.
    pub ca_key: PathBuf,
    /// The URL agents reach the server at (in join tokens; default: the
    /// `Host` the admin used).
    pub advertise: Option<String>,
    /// The engine's timeouts and tries.
    pub engine: EngineConfig,
    /// Leases and silence.
    pub hub: HubConfig,
    /// How often each site's engine steps.
    pub tick: Duration,
    /// How often the SoT is checked when nothing says it changed.
    pub poll: Duration,
    /// How often a remote SoT is fetched (a push to the webhook fetches
    /// at once).
    pub fetch: Duration,
    /// Renders `/metrics`.
    pub metrics: Option<MetricsRender>,
    /// How long execution records are kept.
    pub retention: crate::record::Retention,
    /// Whether the SoT's files are watched for changes (else the poll
    /// and the webhook only).
    pub watch: bool,
    /// The secret of `POST /v1/webhook/github` (`None`: no webhook).
    pub webhook_secret: Option<Vec<u8>>,
    /// Replicated: the state on this etcd cluster, one replica leading
    /// (`None`: alone, on the redb file in the data directory).
    pub etcd: Option<crate::etcd::EtcdConfig>,
    /// A replica's lease TTL in the election (default 2 s).
    pub ttl: Duration,
}

impl ServerConfig {
    /// Defaults: the certificates of `vaquero certs init --out certs`,
    /// `./vaquero-data`, listening on 0.0.0.0:9443.
    pub fn new(sot: impl Into<String>, certs: &std::path::Path) -> Self {
        ServerConfig {
            sot: sot.into(),
            branch: None,
            data: PathBuf::from("vaquero-data"),
            listen: SocketAddr::from(([0, 0, 0, 0], 9443)),
            cert: certs.join(crate::pki::SERVER_CERT),
            key: certs.join(crate::pki::SERVER_KEY),
            ca_cert: certs.join(crate::pki::CA_CERT),
            ca_key: certs.join(crate::pki::CA_KEY),
            advertise: None,
            engine: EngineConfig::default(),
            hub: HubConfig::default(),
            tick: Duration::from_millis(200),
            poll: Duration::from_secs(10),
            fetch: Duration::from_secs(60),
            metrics: None,
            retention: crate::record::Retention::default(),
            webhook_secret: None,
            watch: true,
            etcd: None,
            ttl: Duration::from_secs(2),
        }
    }
}

/// What the SoT watcher sends a site's task.
enum SiteMsg {
    /// A new revision validated: the site's model in it.
    Adopt(Arc<SiteModel>, Option<SotFiles>),
    /// A revision refused, with every error.
    Refuse(String, Vec<String>),
}

/// What every term of a server shares, read once at start.
struct Base {
    config: ServerConfig,
    ca_cert: String,
    ca_key: String,
    fingerprint: String,
    token: Arc<str>,
    source: Arc<dyn vaquero_model::SotSource>,
}

/// Why [`lead`] returned.
enum Ended {
    /// The server is stopping.
    Shutdown,
    /// The term is suspended or lost: stop acting.
    Inactive,
}

/// Runs the server until `shutdown` completes: alone on its redb file,
/// or, with [`ServerConfig::etcd`], as one replica of several, acting
/// only while it leads.
pub async fn run(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let data = config.data.clone();
    std::fs::create_dir_all(&data).map_err(|source| Error::Data {
        path: data.clone(),
        source,
    })?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|source| Error::Data {
            path: p.clone(),
            source,
        })
    };
    let ca_cert = read(&config.ca_cert)?;
    let ca_key = read(&config.ca_key)?;
    let fingerprint = crate::pki::first_der(&ca_cert)
        .map(|d| crate::pki::fingerprint(&d))
        .ok_or_else(|| Error::Data {
            path: config.ca_cert.clone(),
            source: std::io::Error::other("no certificate in it"),
        })?;
    let token: Arc<str> = secret(&data, TOKEN_FILE)?.into();
    let source = open_source(&config.sot, config.branch.as_deref(), &data)?;
    // A SoT that does not load fails the start.
    let loaded = vaquero_model::load_source(source.as_ref())?;
    for w in loaded.warnings.0.iter() {
        tracing::warn!("{w}");
    }
    let tls = Tls {
        cert: config.cert.clone(),
        key: config.key.clone(),
        client_ca: Some(config.ca_cert.clone()),
    };
    let (routes_tx, routes) = watch::channel(waiting_router(config.metrics.clone()));
    let listen = config.listen;
    let mut base = Base {
        config,
        ca_cert,
        ca_key,
        fingerprint,
        token,
        source,
    };
    let (store, replica) = match base.config.etcd.clone() {
        None => {
            let store: Arc<dyn Store> = Arc::new(RedbStore::open(&data.join(STATE_FILE))?);
            (store, None)
        }
        Some(etcd) => {
            let Some(id) = base.config.advertise.clone() else {
                return Err(Error::Usage(
                    "a replicated server (--etcd) needs --advertise: the URL other replicas send clients to"
                        .into(),
                ));
            };
            let store = crate::etcd::EtcdStore::connect(&etcd).await?;
            base.token = shared_token(&store, &base.token, &data).await?;
            let election = crate::leader::Election::new(&etcd, &id, base.config.ttl).await?;
            let follower: Arc<dyn Store> = Arc::new(store.clone());
            (follower, Some((store, Arc::new(election))))
        }
    };
    let api = crate::api::serve_routes(listen, Some(&tls), routes).await?;
    tracing::info!(
        listen = %api.addr,
        data = %data.display(),
        ca = %base.fingerprint,
        replicated = replica.is_some(),
        "server: listening"
    );
    tokio::pin!(shutdown);
    let result = match replica {
        None => lead(&base, store, None, &routes_tx, shutdown.as_mut())
            .await
            .map(|_| ()),
        Some((store, election)) => {
            replicate(&base, store, election, &routes_tx, shutdown.as_mut()).await
        }
    };
    tracing::info!("server: stopping");
    api.stop().await;
    result
}

/// The admin token every replica shares: the first replica's, kept in
/// etcd, and written to this replica's `DATA/admin.token` so an operator
/// finds it on any of them.
async fn shared_token(
    store: &crate::etcd::EtcdStore,
    local: &str,
    data: &std::path::Path,
) -> Result<Arc<str>, Error> {
    const KEY: &str = "v1/admin-token";
    store
        .compare_and_swap(KEY, None, local.as_bytes().to_vec())
        .await?;
    let kv = store.get(KEY).await?.ok_or_else(|| {
        crate::store::StoreFailure::Backend("the shared admin token vanished".into())
    })?;
    let token = String::from_utf8_lossy(&kv.value).into_owned();
    if token != local {
        let path = data.join(TOKEN_FILE);
        std::fs::write(&path, format!("{token}\n"))
            .map_err(|source| Error::Data { path, source })?;
    }
    Ok(token.into())
}

/// One replica of several: campaigns, leads while its term is active,
/// and serves as a follower otherwise.
async fn replicate(
    base: &Base,
    store: crate::etcd::EtcdStore,
    election: Arc<crate::leader::Election>,
    routes: &watch::Sender<axum::Router>,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<(), Error> {
    let follow = || follower_router(store.clone(), election.clone(), base.config.metrics.clone());
    loop {
        let _ = routes.send_replace(follow());
        let mut term = tokio::select! {
            () = shutdown.as_mut() => return Ok(()),
            t = election.lead() => t,
        };
        // Lead while the term is active; wait while it is suspended.
        loop {
            let fenced: Arc<dyn Store> = Arc::new(term.store(&store));
            match lead(base, fenced, Some(&mut term), routes, shutdown.as_mut()).await {
                Ok(Ended::Shutdown) => {
                    let _ = routes.send_replace(follow());
                    term.resign().await;
                    return Ok(());
                }
                Ok(Ended::Inactive) => {}
                Err(e) => {
                    // Fenced, or etcd unreachable mid-step: a successor
                    // (or this replica, once etcd answers) leads.
                    tracing::warn!(error = %e, fence = term.fence(), "server: stepping down");
                    let _ = routes.send_replace(follow());
                    term.resign().await;
                    break;
                }
            }
            let _ = routes.send_replace(follow());
            let state = tokio::select! {
                () = shutdown.as_mut() => return Ok(()),
                s = term.settled() => s,
            };
            if state != crate::leader::TermState::Active {
                tracing::warn!(fence = term.fence(), "server: the term is over");
                break;
            }
            tracing::info!(
                fence = term.fence(),
                "server: the term goes on; leading again"
            );
        }
    }
}

/// Completes when `term` is no longer active; never without a term.
async fn inactive(term: Option<&mut crate::leader::Term>) {
    match term {
        Some(t) => t.inactive().await,
        None => std::future::pending().await,
    }
}

/// Serves every site of the SoT from `store` until `shutdown` completes
/// or `term` (a replica's) is no longer active.
async fn lead(
    base: &Base,
    store: Arc<dyn Store>,
    mut term: Option<&mut crate::leader::Term>,
    routes: &watch::Sender<axum::Router>,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<Ended, Error> {
    let config = &base.config;
    let source = &base.source;
    let loaded = vaquero_model::load_source(source.as_ref())?;
    let mut head = loaded.head.revision.clone().unwrap_or_default();
    let now = Timestamp::now();
    let mut hubs = BTreeMap::new();
    let mut sites = BTreeMap::new();
    let mut inboxes: BTreeMap<String, mpsc::UnboundedSender<SiteMsg>> = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let (stop_tx, stop) = watch::channel(false);
    // Every task carries the term's fencing number: an agent that heard a
    // newer leader refuses this one's.
    let fence = term.as_ref().map_or(0, |t| t.fence());
    let hub_config = HubConfig {
        fencing: fence,
        ..config.hub
    };
    for (id, model) in loaded.sites {
        let model = Arc::new(model);
        let hub = SiteHub::open(&id, store.clone(), hub_config, now).await?;
        let mut runner = Runner::open(
            store.clone(),
            model.clone(),
            config.engine,
            hub.clone(),
            source.describe(),
            RemoteSite::new(hub.clone()),
            now,
        )
        .await?;
        runner.refused_unless(&head).await;
        let files = model.revision().and_then(|r| source.files(r).ok());
        runner.adopt(None, files.as_ref(), now).await?;
        // The agents serve the model planned from.
        let served = runner.control().model().clone();
        crate::transport::SiteLink::send_model(runner.link_mut(), served);
        let (publish, snapshot) = Publisher::new(runner.control());
        let (commands, command_rx) = crate::command::Commands::channel(64);
        let (inbox, msgs) = mpsc::unbounded_channel();
        sites.insert(
            id.clone(),
            SiteApi {
                snapshot,
                timelines: runner.control().timelines().clone(),
                commands,
            },
        );
        hubs.insert(id.clone(), hub.clone());
        inboxes.insert(id.clone(), inbox);
        tasks.spawn(site_loop(
            runner,
            hub,
            publish,
            command_rx,
            msgs,
            config.tick,
            config.retention,
            stop.clone(),
        ));
    }
    let tokens = crate::auth::Tokens::new(store.clone());
    let agents = AgentApi {
        hubs: Arc::new(hubs),
        ca: Arc::new(Ca {
            cert: base.ca_cert.clone(),
            key: base.ca_key.clone(),
            fingerprint: base.fingerprint.clone(),
        }),
        tokens: tokens.clone(),
        store: store.clone(),
        advertise: config.advertise.clone(),
    };
    let (webhook, mut pushed) = match &config.webhook_secret {
        Some(secret) => {
            let (w, rx) = crate::webhook::Webhook::new(secret.clone());
            (Some(Arc::new(w)), rx)
        }
        None => (None, mpsc::unbounded_channel().1),
    };
    let shared = Shared {
        sites: Arc::new(sites),
        store: store.clone(),
        token: base.token.clone(),
        tokens,
        metrics: config.metrics.clone(),
        agents: Some(agents),
        webhook,
        leader: crate::api::Leader {
            leader: config.advertise.clone(),
            fence,
        },
    };
    let _ = routes.send_replace(crate::api::router(shared));
    tracing::info!(sites = inboxes.len(), "server: serving its sites");

    let mut poll = tokio::time::interval(config.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (_watcher, mut changes) = if config.watch {
        watch_sot(&config.sot)
    } else {
        (None, mpsc::unbounded_channel().1)
    };
    let mut settled: Option<tokio::time::Instant> = None;
    let mut refused: Option<String> = None;
    let mut fetcher = Fetcher::new(&config.sot, config.fetch);
    let result = loop {
        // Whether to read the SoT's head now, and whether a push said so.
        let (check, push) = tokio::select! {
            () = shutdown.as_mut() => break Ok(Ended::Shutdown),
            () = inactive(term.as_deref_mut()) => break Ok(Ended::Inactive),
            Some(r) = tasks.join_next() => {
                break match r {
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(())) => Ok(Ended::Shutdown),
                    Err(e) => Err(Error::SiteLoop(format!("it panicked: {e}"))),
                };
            }
            _ = poll.tick() => (true, false),
            // A push: the branch tip is fetched now.
            Some(()) = pushed.recv() => (true, true),
            Some(()) = changes.recv() => {
                settled = Some(tokio::time::Instant::now() + SETTLE);
                (false, false)
            }
            () = until(settled) => {
                settled = None;
                (true, false)
            }
        };
        if !check {
            continue;
        }
        fetcher.fetch(source, push).await;
        let new = match source.head() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "SoT: cannot read the head");
                continue;
            }
        };
        if new == head || refused.as_deref() == Some(new.as_str()) {
            continue;
        }
        match vaquero_model::load_source(source.as_ref()) {
            Ok(loaded) => {
                for w in loaded.warnings.0.iter() {
                    tracing::warn!("{w}");
                }
                head = loaded.head.revision.clone().unwrap_or(new);
                refused = None;
                let files = source.files(&head).ok();
                for (id, model) in loaded.sites {
                    match inboxes.get(&id) {
                        Some(inbox) => {
                            let _ = inbox.send(SiteMsg::Adopt(Arc::new(model), files.clone()));
                        }
                        None => tracing::warn!(
                            site = %id,
                            "SoT: a new site; restart the server to serve it"
                        ),
                    }
                }
            }
            Err(e) => {
                let errors: Vec<String> = match &e {
                    vaquero_model::Error::Invalid(d) => d.errors().map(|d| d.to_string()).collect(),
                    other => vec![other.to_string()],
                };
                tracing::warn!(revision = %new, errors = errors.len(), "SoT: revision refused");
                for inbox in inboxes.values() {
                    let _ = inbox.send(SiteMsg::Refuse(new.clone(), errors.clone()));
                }
                refused = Some(new);
            }
        }
    };
    // A replica that stops acting stops at once: its site loops are
    // aborted, not waited for.
    let _ = stop_tx.send(true);
    if matches!(result, Ok(Ended::Shutdown)) {
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    } else {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    result
}

/// `GET /metrics` outside the sites' API (a follower, a server starting).
fn metrics_route(metrics: Option<MetricsRender>) -> axum::routing::MethodRouter {
    axum::routing::get(move || {
        let m = metrics.clone();
        async move { crate::api::metrics_response(m.as_ref()) }
    })
}

/// The routes before the sites are served: `/live`, `/metrics`, and 503
/// for the rest.
fn waiting_router(metrics: Option<MetricsRender>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route("/metrics", metrics_route(metrics))
        .fallback(|| async {
            crate::api::error(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is starting",
            )
        })
}

/// A follower's routes: `/live`; `/ready` (200 while etcd answers, so a
/// load balancer may send requests to any replica); `/leader` (503: not
/// the leader, with the leader's URL); `/metrics`; every other request is
/// redirected to the leader with 307 (method and body kept), or 503 when
/// no replica leads.
fn follower_router(
    store: crate::etcd::EtcdStore,
    election: Arc<crate::leader::Election>,
    metrics: Option<MetricsRender>,
) -> axum::Router {
    use axum::http::{StatusCode, Uri, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let e1 = election.clone();
    axum::Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route(
            "/ready",
            get(move || {
                let store = store.clone();
                async move {
                    match store.revision().await {
                        Ok(_) => "ready (follower)\n".into_response(),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("etcd: {e}\n"))
                            .into_response(),
                    }
                }
            }),
        )
        .route(
            "/leader",
            get(move || {
                let e = e1.clone();
                async move {
                    let leader = e.leader().await.ok().flatten();
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(serde_json::json!({"leader": leader, "this": false})),
                    )
                        .into_response()
                }
            }),
        )
        .route("/metrics", metrics_route(metrics))
        .fallback(move |uri: Uri| {
            let e = election.clone();
            async move {
                match e.leader().await {
                    Ok(Some(leader)) => {
                        let path = uri.path_and_query().map_or("/", |p| p.as_str());
                        let to = format!("{}{path}", leader.trim_end_matches('/'));
                        (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
                    }
                    Ok(None) => crate::api::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "no replica leads right now; try again",
                    ),
                    Err(err) => crate::api::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!("cannot tell who leads: {err}"),
                    ),
                }
            }
        })
}

/// One site's loop: steps, commands, new models, pruning.
#[allow(clippy::too_many_arguments)]
async fn site_loop(
    mut runner: Runner<dyn Store, RemoteSite>,
    hub: Arc<SiteHub>,
    mut publish: Publisher,
    mut commands: mpsc::Receiver<CommandMsg>,
    mut msgs: mpsc::UnboundedReceiver<SiteMsg>,
    tick: Duration,
    retention: crate::record::Retention,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut tick = tokio::time::interval(tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(PRUNE);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            // At every tick, and at once when an agent sent something
            // (it waits for the commit).
            _ = async {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = hub.arrived() => {}
                }
            } => {
                let (_, changed) = runner
                    .tick(Timestamp::now())
                    .await?;
                if changed {
                    publish.changed(runner.control());
                }
            }
            () = until(publish.due()) => publish.now(runner.control()),
            _ = prune.tick() => {
                if let Err(e) = runner.control().prune(&retention, Timestamp::now()).await {
                    tracing::warn!(error = %e, "execution records not pruned");
                }
            }
            Some((cmd, reply)) = commands.recv() => {
                let r = runner.command(cmd, Timestamp::now()).await;
                publish.now(runner.control());
                let _ = reply.send(r);
            }
            Some(msg) = msgs.recv() => {
                match msg {
                    SiteMsg::Adopt(model, files) => {
                        if let Err(e) = runner.adopt(Some(model), files.as_ref(), Timestamp::now()).await {
                            tracing::error!(error = %e, "SoT: cannot adopt the new revision");
                        }
                    }
                    SiteMsg::Refuse(rev, errors) => {
                        runner.refuse(rev, errors, Timestamp::now()).await;
                    }
                }
                publish.now(runner.control());
            }
        }
    }
}
