//! `vaquero standalone`: one site's deciding half, acting half and site
//! services in one process, with the embedded redb store, a watched SoT and
//! the user API ([`crate::api`]).
//!
//! The control loop, one task:
//! - every `tick`: observations and task results in → one engine step,
//!   committed to the store before anything is done → tasks to the
//!   [`Actor`];
//! - every `poll`: the SoT's head; a new revision is validated (an invalid
//!   one is refused with all its errors, kept for the API, and the previous
//!   one keeps serving), compiled, planned against the current state, and
//!   started: at once with the site's `auto_apply`, else when approved;
//! - operators' commands from the API (approve, reprovision, pause,
//!   resume).
//!
//! A `kill -9` at any moment loses nothing acknowledged: the state says
//! what was issued, and a restart re-issues what never got an outcome.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use vaquero_ipxe::TokenKey;
use vaquero_lom::{DriverOptions, Lom, LomConfig, PowerDriver, driver_for};
use vaquero_model::{
    DirSource, GitSource, LoadedSot, ModelError, SiteModel, Sot, SotFiles, SotSource,
};

use crate::act::{Actor, TaskResult};
use crate::boot_state::EngineBootState;
use crate::decide::Decider;
use crate::engine::{Engine, EngineConfig};
use crate::job::JobRunner;
use crate::observe::Observation;
use crate::plan::{Plan, PlanAction};
use crate::policy::{Decision, Policy, PolicyCtx};
use crate::site::{SiteOptions, SiteServices};
use crate::state::{HostState, SiteState};
use crate::store::{RedbStore, Store};

/// How `vaquero standalone` runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StandaloneConfig {
    /// The SoT: a directory, or a Git repository (a path or `file://`
    /// URL).
    pub sot: String,
    /// For a Git SoT, the branch followed (default: the one HEAD names).
    pub branch: Option<String>,
    /// The site served (default: the SoT's only one).
    pub site: Option<String>,
    /// Where the state, the admin token and the checkpoint key live.
    pub data: PathBuf,
    /// Where the user API listens.
    pub api: SocketAddr,
    /// The API's certificate and key: HTTPS (needed off loopback).
    pub tls: Option<crate::api::Tls>,
    /// The site services' options (agent, ports, iPXE directories); the
    /// token key is read from `data`.
    pub agent: Option<String>,
    /// Overrides for tests and unusual labs.
    pub ports: Ports,
    /// The engine's timeouts and tries.
    pub engine: EngineConfig,
    /// How often the engine steps.
    pub tick: Duration,
    /// How often the SoT is checked for a new revision when nothing says
    /// it changed. Changes under the SoT's directory (a Git repository's
    /// too) are noticed at once through file-change notification; polling
    /// is the fallback, for file systems that notify nothing (NFS, some
    /// container mounts).
    pub poll: Duration,
    /// Renders the process's metrics (Prometheus text) for `/metrics`.
    pub metrics: Option<MetricsRender>,
}

/// Renders the process's metrics as Prometheus text (the binary installs
/// the exporter; the API serves what it renders).
#[derive(Clone)]
pub struct MetricsRender(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRender")
    }
}

/// Where the site services listen, when not where the SoT says.
#[derive(Debug, Clone)]
pub struct Ports {
    /// DHCP (67).
    pub dhcp: u16,
    /// TFTP (69).
    pub tftp: u16,
    /// The HTTP boot service (default: the port of `asset_server.url`).
    pub http: Option<SocketAddr>,
    /// Where missing iPXE binaries are looked for.
    pub ipxe_dirs: Vec<PathBuf>,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            dhcp: 67,
            tftp: 69,
            http: None,
            ipxe_dirs: vec![PathBuf::from(crate::site::DISTRIBUTION_IPXE)],
        }
    }
}

impl StandaloneConfig {
    /// Defaults: `./vaquero-data`, the API on 127.0.0.1:9090, a step every
    /// 200 ms, the SoT checked every 2 s.
    pub fn new(sot: impl Into<String>) -> Self {
        StandaloneConfig {
            sot: sot.into(),
            branch: None,
            site: None,
            data: PathBuf::from("vaquero-data"),
            api: SocketAddr::from(([127, 0, 0, 1], 9090)),
            tls: None,
            agent: None,
            ports: Ports::default(),
            engine: EngineConfig::default(),
            tick: Duration::from_millis(200),
            poll: Duration::from_secs(2),
            metrics: None,
        }
    }
}

/// Why standalone stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandaloneError {
    /// The SoT cannot be read or does not validate at start-up.
    #[error("SoT: {0}")]
    Sot(#[from] ModelError),
    /// The site to serve is not clear.
    #[error("{0}")]
    Site(String),
    /// The data directory.
    #[error("data directory {path}: {source}")]
    Data {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The store.
    #[error("store: {0}")]
    Store(String),
    /// The site services.
    #[error(transparent)]
    SiteServices(#[from] crate::site::SiteError),
    /// The engine refused its model.
    #[error(transparent)]
    Engine(#[from] crate::EngineError),
    /// The user API.
    #[error("API on {addr}: {source}")]
    Api {
        /// Its address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// The admin token's file in the data directory.
pub const TOKEN_FILE: &str = "admin.token";
const KEY_FILE: &str = "checkpoint.key";
const STATE_FILE: &str = "state.redb";

/// Reads `data/name`, or writes 32 random bytes (hex) there with mode 0600.
fn secret(data: &Path, name: &str) -> Result<String, StandaloneError> {
    let path = data.join(name);
    let err = |source| StandaloneError::Data {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    f.write_all(format!("{text}\n").as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(text)
}

/// The SoT source named by `sot`: a Git repository or a directory.
pub fn open_source(sot: &str, branch: Option<&str>) -> Result<Box<dyn SotSource>, ModelError> {
    let path = Path::new(sot.strip_prefix("file://").unwrap_or(sot));
    if GitSource::is_repository(path) {
        Ok(Box::new(match branch {
            Some(b) => GitSource::open(sot, b)?,
            None => GitSource::open_head(sot)?,
        }))
    } else {
        if !path.is_dir() {
            return Err(ModelError::NotFound(path.to_path_buf()));
        }
        Ok(Box::new(DirSource::new(path)))
    }
}

/// An operator's command to the control loop.
#[derive(Debug)]
pub enum Command {
    /// Approve the waiting rollout (`None`: whichever waits).
    Approve(Option<u64>),
    /// Reprovision these hosts now (a rollout of their own, approved).
    Reprovision(Vec<String>),
    /// Start no new host; hosts in flight finish.
    Pause,
    /// Start hosts again.
    Resume,
}

/// A command and where its answer goes.
pub type CommandMsg = (Command, oneshot::Sender<Result<String, String>>);

/// A plan the loop made, for the API.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    /// The rollout it became.
    pub rollout: u64,
    /// `pending` (waits for approval) or `applied`.
    pub status: &'static str,
    /// When it was made.
    pub created: Timestamp,
    /// The SoT revision planned to.
    pub revision: Option<String>,
    /// The text `vaquero plan` prints.
    pub text: String,
    /// The stable JSON form.
    pub plan: crate::plan::PlanSet,
}

/// A revision that was refused, for the API.
#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    /// The revision.
    pub revision: String,
    /// When it was seen.
    pub at: Timestamp,
    /// Every problem (`file:line:col: key: message`).
    pub errors: Vec<String>,
}

/// What the API reads: published by the loop after every change.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The site.
    pub site: String,
    /// The SoT source.
    pub source: String,
    /// The SoT revision served.
    pub revision: Option<String>,
    /// The model version served.
    pub version: String,
    /// Whether new hosts are held back.
    pub paused: bool,
    /// The last revision refused, if it is still the newest.
    pub refused: Option<Refused>,
    /// Plans, newest last.
    pub plans: Vec<PlanEntry>,
    /// The engine's state.
    pub state: SiteState,
    /// The model served (boot ids and names of each host's stages).
    pub model: Arc<SiteModel>,
}

/// Observations per host, newest last, bounded.
#[derive(Debug, Default)]
pub struct Timelines {
    hosts: HashMap<String, VecDeque<Observation>>,
}

/// How many observations a host's timeline keeps.
const TIMELINE: usize = 512;

impl Timelines {
    fn push(&mut self, o: Observation) {
        let t = self.hosts.entry(o.host.clone()).or_default();
        if t.len() == TIMELINE {
            t.pop_front();
        }
        t.push_back(o);
    }

    /// The observations of `host`, oldest first.
    pub fn of(&self, host: &str) -> Vec<Observation> {
        self.hosts
            .get(host)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The newest observation of `host`.
    pub fn last(&self, host: &str) -> Option<Observation> {
        self.hosts.get(host)?.back().cloned()
    }
}

/// What the API shares with the loop.
#[derive(Clone)]
pub struct Shared {
    /// The latest snapshot.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Timelines.
    pub timelines: Arc<Mutex<Timelines>>,
    /// Commands to the loop.
    pub commands: mpsc::Sender<CommandMsg>,
    /// The store (execution records are read from it).
    pub store: Arc<RedbStore>,
    /// The admin token.
    pub token: Arc<str>,
    /// Renders `/metrics`.
    pub metrics: Option<MetricsRender>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Holds every queued host back while set.
#[derive(Debug, Default)]
struct Pause(Arc<AtomicBool>);

impl Policy for Pause {
    fn name(&self) -> &str {
        "pause"
    }

    fn admit(&self, _: &PolicyCtx<'_>, _: &HostState) -> Decision {
        if self.0.load(Ordering::Relaxed) {
            Decision::Wait("paused by an operator".into())
        } else {
            Decision::Allow
        }
    }
}

/// The store key of the SoT files the site's current model came from.
fn applied_key(site: &str) -> String {
    format!("v1/standalone/{site}/applied")
}

fn paused_key(site: &str) -> String {
    format!("v1/standalone/{site}/paused")
}

/// The loop's own state.
struct Loop {
    site: String,
    /// The tasks out, by (host, seq): what each was and for which boot
    /// attempt, for the timeline entry of its result.
    issued: HashMap<(String, u64), (String, u64)>,
    source: Box<dyn SotSource>,
    store: Arc<RedbStore>,
    decider: Decider<RedbStore>,
    actor: Actor,
    lom: Lom,
    services: SiteServices,
    model: Arc<SiteModel>,
    head: String,
    engine_config: EngineConfig,
    paused: Arc<AtomicBool>,
    refused: Option<Refused>,
    plans: Vec<PlanEntry>,
    results_tx: mpsc::UnboundedSender<TaskResult>,
    results: mpsc::UnboundedReceiver<TaskResult>,
    observations: mpsc::UnboundedReceiver<Observation>,
    timelines: Arc<Mutex<Timelines>>,
    publish: watch::Sender<Arc<Snapshot>>,
}

/// Power drivers of the model's hosts, managed (one operation per BMC,
/// retries, timeouts). A host whose BMC entry cannot be used (a missing
/// secret) gets none, with a warning: its power actions fail, named.
fn drivers(model: &SiteModel, lom: &Lom) -> HashMap<String, Arc<dyn PowerDriver>> {
    let mut out = HashMap::new();
    for h in model.hosts() {
        if h.interfaces.iter().all(|i| i.bmc.is_none()) {
            continue;
        }
        match driver_for(h, &DriverOptions::default()) {
            Ok(d) => {
                out.insert(
                    h.name.clone(),
                    Arc::new(lom.manage(d)) as Arc<dyn PowerDriver>,
                );
            }
            Err(e) => tracing::warn!(host = %h.name, error = %e, "no power driver"),
        }
    }
    out
}

/// Compiles `site` of the source's head: the model, the head revision.
fn load(source: &dyn SotSource, site: &str) -> Result<(Arc<SiteModel>, String), ModelError> {
    take(vaquero_model::load_source(source)?, site)
}

/// `site`'s model of a loaded SoT and the head revision (warnings logged).
fn take(loaded: LoadedSot, site: &str) -> Result<(Arc<SiteModel>, String), ModelError> {
    let head = loaded.head.revision.clone().unwrap_or_default();
    for w in loaded.warnings.0.iter() {
        tracing::warn!("{w}");
    }
    let mut sites = loaded.sites;
    let model = sites
        .remove(site)
        .ok_or_else(|| ModelError::UnknownSite(site.to_owned()))?;
    Ok((Arc::new(model), head))
}

/// Runs standalone until `shutdown` completes.
pub async fn run(
    config: StandaloneConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StandaloneError> {
    crate::api::check(config.api, config.tls.as_ref())?;
    let data = config.data.clone();
    std::fs::create_dir_all(&data).map_err(|source| StandaloneError::Data {
        path: data.clone(),
        source,
    })?;
    let token: Arc<str> = secret(&data, TOKEN_FILE)?.into();
    let key = TokenKey::new(secret(&data, KEY_FILE)?.into_bytes());

    let source = open_source(&config.sot, config.branch.as_deref())?;
    // Loaded and validated once: the site is picked from it.
    let loaded = vaquero_model::load_source(source.as_ref())?;
    let site = match (
        &config.site,
        loaded.sites.keys().collect::<Vec<_>>().as_slice(),
    ) {
        (Some(s), _) if loaded.sites.contains_key(s) => s.clone(),
        (Some(s), ids) => {
            return Err(StandaloneError::Site(format!(
                "the SoT has no site `{s}` (its sites: {})",
                ids.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        (None, [one]) => (*one).clone(),
        (None, ids) => {
            return Err(StandaloneError::Site(format!(
                "the SoT has several sites ({}): name one with --site",
                ids.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let (model, head) = take(loaded, &site)?;

    let store = Arc::new(
        RedbStore::open(&data.join(STATE_FILE))
            .map_err(|e| StandaloneError::Store(e.to_string()))?,
    );
    let paused = Arc::new(AtomicBool::new(
        store
            .get(&paused_key(&site))
            .await
            .map_err(|e| StandaloneError::Store(e.to_string()))?
            .is_some_and(|kv| kv.value == b"true"),
    ));
    let engine =
        Engine::new(model.clone(), config.engine)?.with_policy(Arc::new(Pause(paused.clone())));
    let boot = Arc::new(EngineBootState::new());
    let now = Timestamp::now();
    let (decider, resumed) = Decider::open(engine, store.clone(), boot.clone(), now)
        .await
        .map_err(|e| StandaloneError::Store(e.to_string()))?;
    let (obs_tx, observations) = mpsc::unbounded_channel();
    let mut options = SiteOptions::new(key);
    options.agent = config.agent.clone();
    options.dhcp_port = config.ports.dhcp;
    options.tftp_port = config.ports.tftp;
    options.http_listen = config.ports.http;
    options.ipxe_dirs = config.ports.ipxe_dirs.clone();
    let services = SiteServices::start(model.clone(), boot.clone(), options, obs_tx).await?;
    let (results_tx, results) = mpsc::unbounded_channel();
    // One Lom for the life of the process: a BMC gets one operation at a
    // time also across model changes.
    let lom = Lom::new(LomConfig::default());
    let actor = Actor::new(drivers(&model, &lom), JobRunner::new());
    let mut issued = HashMap::new();
    for t in resumed {
        issued.insert((t.action.host.clone(), t.action.seq), issued_as(&t));
        actor.spawn(t, results_tx.clone());
    }
    let timelines = Arc::new(Mutex::new(Timelines::default()));
    let (publish, snapshot) = watch::channel(Arc::new(Snapshot {
        site: site.clone(),
        source: source.describe(),
        revision: model.revision().map(str::to_owned),
        version: model.version().to_owned(),
        paused: paused.load(Ordering::Relaxed),
        refused: None,
        plans: Vec::new(),
        state: decider.state().clone(),
        model: model.clone(),
    }));
    let (commands, mut command_rx) = mpsc::channel::<CommandMsg>(64);
    let shared = Shared {
        snapshot,
        timelines: timelines.clone(),
        commands,
        store: store.clone(),
        token,
        metrics: config.metrics.clone(),
    };
    let api = crate::api::serve(config.api, config.tls.as_ref(), shared).await?;
    tracing::info!(api = %api.addr, data = %data.display(), "standalone: API listening");

    let mut lp = Loop {
        site,
        source,
        store,
        decider,
        actor,
        lom,
        services,
        model,
        head,
        engine_config: config.engine,
        paused,
        refused: None,
        plans: Vec::new(),
        results_tx,
        results,
        observations,
        timelines,
        publish,
        issued,
    };
    // The first plan: against the model the state was last planned for.
    lp.adopt_if_new(None).await?;
    lp.publish();

    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(config.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (_watcher, mut changes) = watch_sot(&config.sot);
    // A change is acted on once the files have been quiet for a moment
    // (an editor's save or a `git commit` writes several).
    let mut settled: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            e = lp.services.failed() => break Err(e.into()),
            _ = tick.tick() => {
                if let Err(e) = lp.step().await {
                    break Err(e);
                }
            }
            _ = poll.tick() => lp.poll().await,
            Some(()) = changes.recv() => {
                settled = Some(tokio::time::Instant::now() + SETTLE);
            }
            () = until(settled) => {
                settled = None;
                lp.poll().await;
            }
            Some((cmd, reply)) = command_rx.recv() => {
                let r = lp.command(cmd).await;
                lp.publish();
                let _ = reply.send(r);
            }
        }
    };
    tracing::info!("standalone: stopping");
    api.stop().await;
    lp.services.stop().await;
    result
}

/// How long the SoT's files must be quiet after a change before it is read.
const SETTLE: Duration = Duration::from_millis(250);

/// Sleeps until `at`; never returns when there is none.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Watches the SoT's directory (recursively: a Git repository's refs and
/// a directory's files alike); each change is one message. Without
/// notification (an unsupported file system, too few inotify watches),
/// the receiver never yields and polling alone notices changes.
fn watch_sot(
    sot: &str,
) -> (
    Option<notify::RecommendedWatcher>,
    mpsc::UnboundedReceiver<()>,
) {
    use notify::Watcher;
    let (tx, rx) = mpsc::unbounded_channel();
    let path = Path::new(sot.strip_prefix("file://").unwrap_or(sot)).to_path_buf();
    let watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if let Ok(e) = e
            && !matches!(e.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&path, notify::RecursiveMode::Recursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => {
            tracing::debug!(path = %path.display(), "SoT: watching for changes");
            (Some(w), rx)
        }
        Err(e) => {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "SoT: no file-change notification; polling only"
            );
            (None, rx)
        }
    }
}

/// A task as its result's timeline entry names it: the action (a job with
/// its name) and the boot attempt.
fn issued_as(t: &crate::act::Task) -> (String, u64) {
    let what = match &t.action.kind {
        crate::event::ActionKind::RunJob { boot, index, .. } => {
            format!("{} job {} of {boot}", t.action.kind.name(), index + 1)
        }
        k => k.name().to_owned(),
    };
    (what, t.action.attempt)
}

impl Loop {
    /// The timeline entry of a task's result.
    fn action_observation(&mut self, r: &TaskResult) -> Option<Observation> {
        let (what, attempt) = self.issued.remove(&(r.host.clone(), r.seq))?;
        let (ok, detail) = match &r.outcome {
            crate::event::Outcome::Ok { .. } => (true, format!("{what}: ok")),
            crate::event::Outcome::Failed { transient, message } => (
                false,
                format!(
                    "{what}: failed{}: {message}",
                    if *transient { " (transient)" } else { "" }
                ),
            ),
        };
        if !ok {
            tracing::warn!(host = %r.host, attempt, "{}: {detail}", r.host);
        }
        Some(Observation {
            at: r.ended,
            host: r.host.clone(),
            attempt: Some(attempt),
            kind: crate::observe::ObservationKind::Action,
            ok,
            detail,
        })
    }

    /// One engine step on what was observed and finished since the last.
    async fn step(&mut self) -> Result<(), StandaloneError> {
        let mut events = Vec::new();
        {
            let mut t = self.timelines.lock().unwrap_or_else(|p| p.into_inner());
            while let Ok(o) = self.observations.try_recv() {
                events.extend(o.event());
                t.push(o);
            }
        }
        while let Ok(r) = self.results.try_recv() {
            if let Some(o) = self.action_observation(&r) {
                self.timelines
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(o);
            }
            events.push(self.decider.finished(&r).await);
        }
        let before = self.decider.state().phase_counts();
        let tasks = self
            .decider
            .step(&events, Timestamp::now())
            .await
            .map_err(|e| StandaloneError::Store(e.to_string()))?;
        let changed = !tasks.is_empty() || !events.is_empty();
        for t in tasks {
            tracing::info!(
                host = %t.action.host,
                action = t.action.kind.name(),
                attempt = t.action.attempt,
                "{}: {}",
                t.action.host,
                t.action.kind.name()
            );
            self.issued
                .insert((t.action.host.clone(), t.action.seq), issued_as(&t));
            self.actor.spawn(t, self.results_tx.clone());
        }
        let after = self.decider.state().phase_counts();
        for (phase, n) in &after {
            metrics::gauge!("engine_hosts", "phase" => phase.as_str()).set(*n as f64);
        }
        if before != after {
            let text: Vec<String> = after.iter().map(|(p, n)| format!("{p} {n}")).collect();
            tracing::info!(site = %self.site, "hosts: {}", text.join(", "));
        }
        if changed || before != after {
            self.publish();
        }
        Ok(())
    }

    /// Checks the SoT for a new revision.
    async fn poll(&mut self) {
        let head = match self.source.head() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "SoT: cannot read the head");
                return;
            }
        };
        if head == self.head || self.refused.as_ref().is_some_and(|r| r.revision == head) {
            return;
        }
        match load(self.source.as_ref(), &self.site) {
            Ok((model, rev)) => {
                self.head = rev;
                self.refused = None;
                if let Err(e) = self.adopt_if_new(Some(model)).await {
                    tracing::error!(error = %e, "SoT: cannot adopt the new revision");
                }
            }
            Err(e) => {
                let errors: Vec<String> = match &e {
                    ModelError::Invalid(d) => d.errors().map(|d| d.to_string()).collect(),
                    other => vec![other.to_string()],
                };
                tracing::error!(
                    revision = %head,
                    "SoT revision refused ({} error(s)); the previous one keeps serving:\n{}",
                    errors.len(),
                    errors.join("\n")
                );
                self.refused = Some(Refused {
                    revision: head,
                    at: Timestamp::now(),
                    errors,
                });
            }
        }
        self.publish();
    }

    /// The model of the SoT files last applied, from the store.
    async fn applied_model(&self) -> Option<Arc<SiteModel>> {
        let kv = self.store.get(&applied_key(&self.site)).await.ok()??;
        let files: BTreeMap<String, String> = serde_json::from_slice(&kv.value).ok()?;
        let mut f = SotFiles::new();
        for (p, t) in files {
            f.insert(p, t);
        }
        let sot = Sot::load_owned(f).ok()?;
        SiteModel::compile(&sot, &self.site).ok().map(Arc::new)
    }

    /// Plans and starts `model` (or the current one, at start-up) when the
    /// state was not planned for it yet; remembers its files.
    async fn adopt_if_new(&mut self, model: Option<Arc<SiteModel>>) -> Result<(), StandaloneError> {
        let model = model.unwrap_or_else(|| self.model.clone());
        let planned_for = self.decider.state().rollout.as_ref().map(|r| r.to.clone());
        if planned_for.as_deref() == Some(model.version()) {
            if !Arc::ptr_eq(&model, &self.model) {
                self.switch(model)?;
            }
            return Ok(());
        }
        let old = match planned_for {
            Some(v) if v == self.model.version() && !Arc::ptr_eq(&model, &self.model) => {
                Some(self.model.clone())
            }
            Some(_) => self.applied_model().await,
            None => None,
        };
        if !Arc::ptr_eq(&model, &self.model) {
            self.switch(model.clone())?;
        }
        let plan = crate::plan::plan_with_state(old.as_deref(), &model, Some(self.decider.state()));
        self.start(plan).await?;
        // The files of the revision the model came from, for the next
        // plan after a restart.
        if let Some(rev) = model.revision()
            && let Ok(files) = self.source.files(rev)
        {
            let map: BTreeMap<&str, &str> = files.iter().map(|(p, t)| (p, &**t)).collect();
            if let Ok(bytes) = serde_json::to_vec(&map)
                && let Err(e) = self.store.put(&applied_key(&self.site), bytes).await
            {
                tracing::warn!(error = %e, "the applied SoT was not stored");
            }
        }
        Ok(())
    }

    /// Serves `model` from now on: engine, boot state, site services.
    fn switch(&mut self, model: Arc<SiteModel>) -> Result<(), StandaloneError> {
        let engine = Engine::new(model.clone(), self.engine_config)?
            .with_policy(Arc::new(Pause(self.paused.clone())));
        self.decider.replace_engine(engine);
        self.services.swap(model.clone());
        self.actor.replace_drivers(drivers(&model, &self.lom));
        self.model = model;
        Ok(())
    }

    async fn start(&mut self, plan: Plan) -> Result<(), StandaloneError> {
        let text = plan.to_string();
        tracing::info!("plan for site {}:\n{text}", self.site);
        self.decider
            .start(&plan, Timestamp::now())
            .await
            .map_err(|e| StandaloneError::Store(e.to_string()))?;
        let r = self.decider.state().rollout.clone();
        let (rollout, pending) = r.map_or((0, false), |r| (r.id, !r.approved()));
        for p in &mut self.plans {
            if p.status == "pending" {
                p.status = "superseded";
            }
        }
        self.plans.push(PlanEntry {
            rollout,
            status: if pending { "pending" } else { "applied" },
            created: Timestamp::now(),
            revision: plan.revision.clone(),
            text,
            plan: crate::plan::PlanSet::new(None, plan.revision.clone(), vec![plan]),
        });
        if self.plans.len() > 32 {
            self.plans.remove(0);
        }
        if pending {
            tracing::info!(rollout, "the plan waits for approval: vaquero approve");
        }
        Ok(())
    }

    async fn command(&mut self, cmd: Command) -> Result<String, String> {
        match cmd {
            Command::Approve(id) => {
                let waiting = self
                    .decider
                    .state()
                    .rollout
                    .as_ref()
                    .filter(|r| !r.approved())
                    .map(|r| r.id);
                let Some(w) = waiting else {
                    return Err("no rollout waits for approval".into());
                };
                if id.is_some_and(|id| id != w) {
                    return Err(format!(
                        "rollout {w} waits for approval, not {}",
                        id.unwrap_or(0)
                    ));
                }
                self.decider.approve(w).await.map_err(|e| e.to_string())?;
                for p in &mut self.plans {
                    if p.rollout == w {
                        p.status = "applied";
                    }
                }
                tracing::info!(rollout = w, "approved");
                Ok(format!("rollout {w} approved"))
            }
            Command::Reprovision(hosts) => {
                for h in &hosts {
                    if self.model.by_name(h).is_none() {
                        return Err(format!("no host named `{h}` in site `{}`", self.site));
                    }
                }
                let mut plan = self
                    .decider
                    .engine()
                    .plan(Some(&self.model), self.decider.state());
                for hp in &mut plan.hosts {
                    if hosts.contains(&hp.name) {
                        hp.action = PlanAction::Reprovision;
                        hp.reasons = vec!["requested by an operator".into()];
                    }
                }
                plan.auto_apply = true;
                self.start(plan).await.map_err(|e| e.to_string())?;
                Ok(format!("reprovisioning {}", hosts.join(", ")))
            }
            Command::Pause | Command::Resume => {
                let pause = matches!(cmd, Command::Pause);
                self.paused.store(pause, Ordering::Relaxed);
                self.store
                    .put(&paused_key(&self.site), pause.to_string().into_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(
                    paused = pause,
                    "rollout {}",
                    if pause { "paused" } else { "resumed" }
                );
                Ok(if pause {
                    "paused: no new host starts; hosts in flight finish".into()
                } else {
                    "resumed".into()
                })
            }
        }
    }

    fn publish(&self) {
        self.publish.send_replace(Arc::new(Snapshot {
            site: self.site.clone(),
            source: self.source.describe(),
            revision: self.model.revision().map(str::to_owned),
            version: self.model.version().to_owned(),
            paused: self.paused.load(Ordering::Relaxed),
            refused: self.refused.clone(),
            plans: self.plans.clone(),
            state: self.decider.state().clone(),
            model: self.model.clone(),
        }));
    }
}
