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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use vaquero_ipxe::TokenKey;
use vaquero_lom::{Lom, LomConfig};
use vaquero_model::{Diagnostics, LoadedSot, SiteModel, SotSource};

use crate::act::Actor;
use crate::boot_files::check_boot_files;
use crate::boot_state::EngineBootState;
use crate::compose::{
    Fetcher, PRUNE, SETTLE, STATE_FILE, drivers as drivers_of, open_source, secret, until,
    watch_sot,
};
use crate::engine::EngineConfig;
use crate::job::Job;
use crate::job::JobRunner;
use crate::policy::Policy;
use crate::runner::Runner;
use crate::site::{SiteOptions, SiteServices};
use crate::store::RedbStore;
use crate::store::Store;
use crate::transport::LocalSite;
use vaquero_model::types::JobType;

/// How `vaquero standalone` runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StandaloneConfig {
    /// The SoT: a directory, a local Git repository (a path or `file://`
    /// URL), or a remote one (`https://`, `ssh://`, `git@host:path`),
    /// mirrored into the data directory.
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
    /// The agent of the site's SoT whose site services this process runs
    /// (default: the site's only agent).
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
    /// How often a remote SoT is fetched.
    pub fetch: Duration,
    /// Renders the process's metrics (Prometheus text) for `/metrics`.
    pub metrics: Option<MetricsRender>,
    /// How long execution records are kept (checked at start and hourly).
    pub retention: crate::record::Retention,
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
            fetch: Duration::from_secs(60),
            metrics: None,
            retention: crate::record::Retention::default(),
        }
    }
}

use crate::Error;
pub use crate::compose::{MetricsRender, TOKEN_FILE};

/// The checkpoint token key's file in the data directory.
/// The key that signs checkpoint tokens, in the data directory.
pub const KEY_FILE: &str = "checkpoint.key";

/// A secret of the data directory that [`rotate`] replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// `admin.token`: the first admin token.
    AdminToken,
    /// `checkpoint.key`: signs checkpoint tokens.
    CheckpointKey,
}

/// Replaces a secret of the data directory `data` with a new random one
/// (atomically, mode 0600). Refused while a process holds the
/// directory's store: the running process would keep the old secret.
/// Returns the file written.
pub fn rotate(data: &std::path::Path, secret: Secret) -> Result<PathBuf, Error> {
    let state = data.join(STATE_FILE);
    if !data.is_dir() {
        return Err(Error::Data {
            path: data.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such data directory"),
        });
    }
    if state.exists() {
        // Opening the store takes its lock: held, a process runs.
        RedbStore::open(&state).map_err(|source| Error::Locked {
            path: state.clone(),
            source,
        })?;
    }
    let name = match secret {
        Secret::AdminToken => TOKEN_FILE,
        Secret::CheckpointKey => KEY_FILE,
    };
    crate::compose::write_secret(data, name)?;
    Ok(data.join(name))
}
pub use crate::site::Ports;

pub use crate::command::{Command, CommandFailure, CommandMsg, Commands};
pub use crate::control::{
    PlanEntry, PlanKind, PlanStatus, Publisher, Refused, Snapshot, Timelines,
};

pub use crate::api::{Shared, SiteApi};
pub use vaquero_lom::{DriverFactory, DriverOptions, PowerDrivers};

/// The loop's own state: the control half joined in-process to the site
/// half (services, actor, drivers).
struct Loop {
    runner: Runner<dyn Store, LocalSite>,
    source: Arc<dyn SotSource>,
    fetcher: Fetcher,
    head: String,
    publish: Publisher,
    agent: Option<String>,
    drivers: Arc<PowerDrivers>,
}

/// Compiles `site` of the source's head: the model, the head revision.
fn load(
    source: &dyn SotSource,
    site: &str,
    agent: Option<&str>,
    drivers: &PowerDrivers,
) -> Result<(Arc<SiteModel>, String), vaquero_model::Error> {
    take(vaquero_model::load_source(source)?, site, agent, drivers)
}

/// `site`'s model of a loaded SoT and the head revision. The custom BMCs
/// are checked by their drivers (a driver the process does not have, or
/// `params` it refuses, is an error at file:line). Warnings are logged:
/// the SoT's, and the files its boots need that `agent` would not serve
/// ([`check_boot_files`]), before any machine is powered on.
fn take(
    loaded: LoadedSot,
    site: &str,
    agent: Option<&str>,
    drivers: &PowerDrivers,
) -> Result<(Arc<SiteModel>, String), vaquero_model::Error> {
    let errors = drivers.check(&loaded.head);
    if !errors.is_empty() {
        return Err(vaquero_model::Error::Invalid(Diagnostics(errors)));
    }
    let head = loaded.head.revision.clone().unwrap_or_default();
    for w in loaded.warnings.0.iter() {
        tracing::warn!("{w}");
    }
    let mut sites = loaded.sites;
    let model = sites
        .remove(site)
        .ok_or_else(|| vaquero_model::Error::UnknownSite(site.to_owned()))?;
    if let Ok(a) = model.agent(agent) {
        for w in check_boot_files(&model, a, Some(&loaded.head)) {
            tracing::warn!("{w}");
        }
    }
    Ok((Arc::new(model), head))
}

/// Runs standalone until `shutdown` completes: [`Standalone::builder`]
/// with the built-in parts (the redb store in the data directory, the
/// built-in power drivers and jobs).
pub async fn run(
    config: StandaloneConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    Standalone::builder(config).build()?.run(shutdown).await
}

/// Puts a standalone together from parts an embedding program chooses:
/// its store, custom power drivers, jobs, policies and metrics. What is
/// not given is the built-in part. See `examples/custom_power.rs`.
///
/// ```no_run
/// # async fn f() -> Result<(), vaquero_engine::Error> {
/// use vaquero_engine::standalone::{Standalone, StandaloneConfig};
/// let config = StandaloneConfig::new("./sot");
/// Standalone::builder(config)
///     .build()?
///     .run(async { let _ = tokio::signal::ctrl_c().await; })
///     .await
/// # }
/// ```
#[must_use = "a builder does nothing until it is built and run"]
pub struct StandaloneBuilder {
    config: StandaloneConfig,
    store: Option<Arc<dyn Store>>,
    drivers: PowerDrivers,
    jobs: JobRunner,
    policies: Vec<Arc<dyn Policy>>,
}

impl std::fmt::Debug for StandaloneBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandaloneBuilder")
            .field("config", &self.config)
            .field("drivers", &self.drivers)
            .finish_non_exhaustive()
    }
}

impl StandaloneBuilder {
    /// Keeps the state in `store` instead of `state.redb` in the data
    /// directory. The store must be this process's alone, and durable:
    /// what it acknowledges is what a restart resumes from.
    pub fn store(mut self, store: impl Store + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Registers the power driver of hosts whose BMC is
    /// `{type: custom, driver: NAME, params: {…}}`. Its
    /// [`check`](DriverFactory::check) validates each such entry's
    /// `params` with the rest of the SoT, at file and line.
    pub fn power_driver(
        mut self,
        name: impl Into<String>,
        factory: impl DriverFactory + 'static,
    ) -> Self {
        self.drivers.register(name, Arc::new(factory));
        self
    }

    /// Bounds of the built-in power drivers (IPMI retransmission, HTTP
    /// and command timeouts).
    pub fn driver_options(mut self, options: DriverOptions) -> Self {
        self.drivers.options = options;
        self
    }

    /// Runs the workflow jobs of `kind` with `job` instead of the
    /// built-in runner.
    pub fn job(mut self, kind: JobType, job: impl Job + 'static) -> Self {
        self.jobs = self.jobs.with(kind, Arc::new(job));
        self
    }

    /// Adds a rollout policy: a host starts only when every policy, the
    /// built-in ones included, allows it.
    pub fn policy(mut self, policy: impl Policy + 'static) -> Self {
        self.policies.push(Arc::new(policy));
        self
    }

    /// What `/metrics` serves: the process's recorder, rendered (the
    /// engine reports through the `metrics` facade to the process's
    /// recorder; install one, e.g. a Prometheus exporter, before
    /// [`Standalone::run`]).
    pub fn metrics(mut self, render: MetricsRender) -> Self {
        self.config.metrics = Some(render);
        self
    }

    /// Checks the configuration, opens the data directory, the store and
    /// the SoT, and validates the SoT (custom BMCs by their drivers): a
    /// SoT this process cannot serve is refused here, with every error.
    pub fn build(self) -> Result<Standalone, Error> {
        let config = self.config;
        crate::api::check(config.api, config.tls.as_ref())?;
        let data = config.data.clone();
        std::fs::create_dir_all(&data).map_err(|source| Error::Data {
            path: data.clone(),
            source,
        })?;
        let token: Arc<str> = secret(&data, TOKEN_FILE)?.into();
        let key = TokenKey::new(secret(&data, KEY_FILE)?.into_bytes());
        let source = open_source(&config.sot, config.branch.as_deref(), &data)?;
        // Loaded and validated once: the site is picked from it.
        let loaded = vaquero_model::load_source(source.as_ref())?;
        let site = pick_site(config.site.as_deref(), loaded.sites.keys())?;
        let (model, head) = take(loaded, &site, config.agent.as_deref(), &self.drivers)?;
        let store = match self.store {
            Some(s) => s,
            None => Arc::new(RedbStore::open(&data.join(STATE_FILE))?),
        };
        Ok(Standalone {
            config,
            store,
            drivers: Arc::new(self.drivers),
            jobs: self.jobs,
            policies: self.policies,
            token,
            key,
            source,
            site,
            model,
            head,
        })
    }
}

/// The site to serve: the one named, else the SoT's only one.
fn pick_site<'a>(
    named: Option<&str>,
    ids: impl Iterator<Item = &'a String>,
) -> Result<String, Error> {
    let ids: Vec<&String> = ids.collect();
    let list = || {
        ids.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (named, ids.as_slice()) {
        (Some(s), _) if ids.iter().any(|i| *i == s) => Ok(s.to_owned()),
        (Some(s), _) => Err(Error::SiteUnclear(format!(
            "the SoT has no site `{s}` (its sites: {})",
            list()
        ))),
        (None, [one]) => Ok((*one).clone()),
        (None, _) => Err(Error::SiteUnclear(format!(
            "the SoT has several sites ({}): name one with --site",
            list()
        ))),
    }
}

/// A standalone, built ([`Standalone::builder`]) and ready to run.
pub struct Standalone {
    config: StandaloneConfig,
    store: Arc<dyn Store>,
    drivers: Arc<PowerDrivers>,
    jobs: JobRunner,
    policies: Vec<Arc<dyn Policy>>,
    token: Arc<str>,
    key: TokenKey,
    source: Arc<dyn SotSource>,
    site: String,
    model: Arc<SiteModel>,
    head: String,
}

impl std::fmt::Debug for Standalone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standalone")
            .field("site", &self.site)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Standalone {
    /// A builder for `config`, with the built-in parts until others are
    /// given.
    pub fn builder(config: StandaloneConfig) -> StandaloneBuilder {
        StandaloneBuilder {
            config,
            store: None,
            drivers: PowerDrivers::default(),
            jobs: JobRunner::new(),
            policies: Vec::new(),
        }
    }

    /// The site it serves.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Runs until `shutdown` completes: the site services, the user API
    /// on `config.api`, and the control loop ([`start`](Self::start),
    /// then [`Started::run`]).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        self.start().await?.run(shutdown).await
    }

    /// Starts the site services and loads the state (re-issuing what was
    /// issued and never answered); the control loop and the API wait for
    /// [`Started::run`]. A program that serves the API in its own axum
    /// app mounts [`Started::router`] and calls
    /// [`Started::run_without_api`].
    pub async fn start(self) -> Result<Started, Error> {
        let Standalone {
            config,
            store,
            drivers,
            jobs,
            policies,
            token,
            key,
            source,
            site,
            model,
            head,
        } = self;
        let boot = Arc::new(EngineBootState::new());
        let mut options = SiteOptions::new(key);
        options.agent = config.agent.clone();
        options.dhcp_port = config.ports.dhcp;
        options.tftp_port = config.ports.tftp;
        options.http_listen = config.ports.http;
        options.ipxe_dirs = config.ports.ipxe_dirs.clone();
        // One Lom for the life of the process: a BMC gets one operation at a
        // time also across model changes.
        let lom = Lom::new(LomConfig::default());
        let actor = Actor::new(drivers_of(&model, &lom, &drivers), jobs);
        let have = drivers.clone();
        let site_link = LocalSite::new(actor, Box::new(move |m| drivers_of(m, &lom, &have)));
        let services =
            SiteServices::start(model.clone(), boot.clone(), options, site_link.observer()).await?;
        let swap = services.model_handle();
        let site_link = site_link.on_model(move |m| {
            swap.send_replace(m.clone());
        });
        let mut runner: Runner<dyn Store, LocalSite> = Runner::open(
            store.clone(),
            model.clone(),
            config.engine,
            boot.clone(),
            source.describe(),
            site_link,
            Timestamp::now(),
        )
        .await?;
        if !policies.is_empty() {
            runner.add_policies(policies)?;
        }
        let (publish, snapshot) = Publisher::new(runner.control());
        let (commands, command_rx) = Commands::channel(64);
        let site_api = SiteApi {
            snapshot,
            timelines: runner.control().timelines().clone(),
            commands,
        };
        let shared = Shared {
            sites: Arc::new([(site.clone(), site_api)].into_iter().collect()),
            store: store.clone(),
            tokens: crate::auth::Tokens::new(store.clone()),
            token,
            metrics: config.metrics.clone(),
            agents: None,
            webhook: None,
            leader: crate::api::Leader::default(),
        };
        let lp = Loop {
            runner,
            source,
            fetcher: Fetcher::new(&config.sot, config.fetch),
            head,
            publish,
            agent: config.agent.clone(),
            drivers,
        };
        Ok(Started {
            config,
            lp,
            services,
            command_rx,
            shared,
        })
    }
}

/// A standalone whose site services run and whose state is loaded
/// ([`Standalone::start`]); [`run`](Self::run) runs the rest.
pub struct Started {
    config: StandaloneConfig,
    lp: Loop,
    services: SiteServices,
    command_rx: tokio::sync::mpsc::Receiver<CommandMsg>,
    shared: Shared,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("site", &self.lp.runner.control().site())
            .finish_non_exhaustive()
    }
}

impl Started {
    /// The user API ([`crate::api`]) of this standalone, to mount in a
    /// program's own axum app: it reads from the store and sends its
    /// commands to the control loop that
    /// [`run_without_api`](Self::run_without_api) runs. Its bearer tokens
    /// are the data directory's admin token and the store's user tokens.
    pub fn router(&self) -> axum::Router {
        crate::api::router(self.shared.clone())
    }

    /// Serves the user API on `config.api` and runs the control loop
    /// until `shutdown` completes or a site service fails.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        let api = crate::api::serve(
            self.config.api,
            self.config.tls.as_ref(),
            self.shared.clone(),
        )
        .await?;
        tracing::info!(
            api = %api.addr,
            data = %self.config.data.display(),
            "standalone: API listening"
        );
        let result = self.run_without_api(shutdown).await;
        api.stop().await;
        result
    }

    /// Runs the control loop until `shutdown` completes or a site
    /// service fails, serving no API of its own (see
    /// [`router`](Self::router)).
    pub async fn run_without_api(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        let Started {
            config,
            mut lp,
            mut services,
            mut command_rx,
            shared: _,
        } = self;
        // The head validated at start: a revision refused before is old news.
        lp.runner.refused_unless(&lp.head).await;
        // The first plan: against the model the state was last planned for.
        lp.adopt(None).await?;
        lp.publish();

        let mut tick = tokio::time::interval(config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(PRUNE);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                e = services.failed() => break Err(e.into()),
                _ = tick.tick() => {
                    if let Err(e) = lp.step().await {
                        break Err(e);
                    }
                }
                _ = poll.tick() => lp.poll().await,
                _ = prune.tick() => {
                    let control = lp.runner.control();
                    if let Err(e) = control.prune(&config.retention, Timestamp::now()).await {
                        tracing::warn!(error = %e, "execution records not pruned");
                    }
                }
                () = until(lp.publish.due()) => lp.publish(),
                Some(()) = changes.recv() => {
                    settled = Some(tokio::time::Instant::now() + SETTLE);
                }
                () = until(settled) => {
                    settled = None;
                    lp.poll().await;
                }
                Some((cmd, reply)) = command_rx.recv() => {
                    let r = lp.runner.command(cmd, Timestamp::now()).await;
                    lp.publish();
                    let _ = reply.send(r);
                }
            }
        };
        tracing::info!("standalone: stopping");
        services.stop().await;
        result
    }
}

impl Loop {
    /// One engine step on what was observed and finished since the last.
    async fn step(&mut self) -> Result<(), Error> {
        let (_, changed) = self.runner.tick(Timestamp::now()).await?;
        if changed {
            self.publish.changed(self.runner.control());
        }
        Ok(())
    }

    /// Checks the SoT for a new revision.
    async fn poll(&mut self) {
        self.fetcher.fetch(&self.source, false).await;
        let head = match self.source.head() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "SoT: cannot read the head");
                return;
            }
        };
        let control = self.runner.control();
        if head == self.head || control.refused().is_some_and(|r| r.revision == head) {
            return;
        }
        let site = control.site().to_owned();
        match load(
            self.source.as_ref(),
            &site,
            self.agent.as_deref(),
            &self.drivers,
        ) {
            Ok((model, rev)) => {
                self.head = rev;
                if let Err(e) = self.adopt(Some(model)).await {
                    tracing::error!(error = %e, "SoT: cannot adopt the new revision");
                }
            }
            Err(e) => {
                let errors: Vec<String> = match &e {
                    vaquero_model::Error::Invalid(d) => d.errors().map(|d| d.to_string()).collect(),
                    other => vec![other.to_string()],
                };
                self.runner.refuse(head, errors, Timestamp::now()).await;
            }
        }
        self.publish();
    }

    /// Plans and starts `model` (or the current one, at start-up); the
    /// site half serves it when it is new.
    async fn adopt(&mut self, model: Option<Arc<SiteModel>>) -> Result<(), Error> {
        let rev = model
            .as_ref()
            .unwrap_or(self.runner.control().model())
            .revision()
            .map(str::to_owned);
        let files = rev.and_then(|r| self.source.files(&r).ok());
        self.runner
            .adopt(model, files.as_ref(), Timestamp::now())
            .await
    }

    fn publish(&mut self) {
        self.publish.now(self.runner.control());
    }
}
