//! `vaquero agent`: one site's DHCP, TFTP and HTTP boot service, its power
//! actions and jobs, driven by a `vaquero server` over HTTPS (mTLS).
//!
//! The agent dials out; nothing on the boot path asks the server: the
//! site services answer from the model and the boot table last received,
//! both kept on disk in `--cache`, so a restart with the server down
//! boots machines as before. Observations are spooled on disk and
//! uploaded oldest first; results are sent until the server says it has
//! them. A task is carried out once per key, whatever the server repeats:
//! a lease of a task whose result the server confirmed meanwhile gets the
//! result again. A checkpoint is answered only once it is spooled. The
//! certificate is renewed a third of its life before it expires.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use vaquero_ipxe::{BootState, Current, MemoryBootState, TokenKey};
use vaquero_lom::{Lom, LomConfig};
use vaquero_model::SiteModel;

use crate::Error;
use crate::act::{Actor, TaskResult};
use crate::agent::wire::{
    self, EnrolRequest, Enrolled, Lease, ModelDoc, ObservationAck, ObservationBatch, ResultsAck,
    ResultsBody, TaskKey, Work, WorkRequest,
};
use crate::agent::{ModelCache, Spool};
use crate::job::JobRunner;
use crate::observe::{Kept, Observed};
use crate::site::Ports;
use crate::site::{SiteOptions, SiteServices};

/// How `vaquero agent` runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The server's URL (default: the join token's).
    pub server: Option<String>,
    /// The site served: the enrolment must be of this site.
    pub site: String,
    /// The agent (default: the join token's).
    pub agent: Option<String>,
    /// A join token (`vqj1.…`), needed only until the agent is enrolled.
    pub join: Option<String>,
    /// Where the enrolment, the model, the boot table and the observation
    /// spool are kept.
    pub cache: PathBuf,
    /// Where the site services listen, when not where the SoT says.
    pub ports: Ports,
    /// How many bytes of observations are kept for the server at most.
    pub spool_bound: u64,
    /// How long each long-poll waits at the server.
    pub wait: Duration,
    /// The certificate is renewed once it expires within this (default
    /// 30 days, a third of its life).
    pub renew_before: Duration,
}

impl AgentConfig {
    /// Defaults: a 1 GiB spool, long-polls of 25 s.
    pub fn new(site: impl Into<String>, cache: impl Into<PathBuf>) -> Self {
        AgentConfig {
            server: None,
            site: site.into(),
            agent: None,
            join: None,
            cache: cache.into(),
            ports: Ports::default(),
            spool_bound: 1 << 30,
            wait: Duration::from_secs(25),
            renew_before: Duration::from_secs(30 * 86_400),
        }
    }
}

/// The enrolment kept in the cache.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Enrolment {
    server: String,
    site: String,
    agent: String,
    key: String,
    cert: String,
    ca: String,
}

const ENROLMENT: &str = "enrolment.json";
const BOOT: &str = "boot.json";
/// Results the server has not confirmed: kept across a restart, so that
/// a task done before a crash is not done again when leased again.
const RESULTS: &str = "results.json";
const KEY_FILE: &str = "checkpoint.key";
/// The highest fencing number heard: kept across a restart, so that a
/// restarted agent still refuses a deposed leader's tasks.
const FENCING: &str = "fencing.json";

fn enrol_err(e: impl std::fmt::Display) -> Error {
    Error::Enrol(e.to_string())
}

fn version_headers() -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    if let Ok(v) = format!("{}.{}", wire::PROTOCOL.0, wire::PROTOCOL.1).parse() {
        h.insert(wire::VERSION_HEADER, v);
    }
    h
}

/// Enrols with the join token: fetches the CA, checks it against the
/// token's fingerprint, sends a CSR for a new key.
async fn enrol(join: &str) -> Result<Enrolment, Error> {
    let j = crate::auth::parse_join(join)
        .ok_or_else(|| enrol_err("the join token does not read as one (vqj1.…)"))?;
    // The CA is public; it is trusted only once its fingerprint matches
    // the token's.
    let probe = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(enrol_err)?;
    let ca = probe
        .get(format!("{}/v1/agent/ca", j.server))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::Unreachable(format!("fetching the CA from {}: {e}", j.server)))?
        .text()
        .await
        .map_err(enrol_err)?;
    let fp = crate::pki::first_der(&ca)
        .map(|d| crate::pki::fingerprint(&d))
        .unwrap_or_default();
    if fp != j.ca_fingerprint {
        return Err(enrol_err(format!(
            "the server's CA is {fp}, the join token pins {}: not enrolling",
            j.ca_fingerprint
        )));
    }
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).map_err(enrol_err)?])
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(enrol_err)?;
    let (key, csr) = crate::pki::agent_csr().map_err(enrol_err)?;
    let resp = client
        .post(format!("{}/v1/agent/enrol", j.server))
        .json(&EnrolRequest {
            token: j.token.clone(),
            csr,
        })
        .send()
        .await
        .map_err(|e| Error::Unreachable(format!("enrolling at {}: {}", j.server, why(&e))))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(enrol_err(format!("the server refused: {status} {body}")));
    }
    let e: Enrolled = resp.json().await.map_err(enrol_err)?;
    Ok(Enrolment {
        server: j.server,
        site: e.site,
        agent: e.agent,
        key,
        cert: e.cert,
        ca: e.ca,
    })
}

/// The mTLS client of an enrolment.
fn client(e: &Enrolment, timeout: Duration) -> Result<reqwest::Client, Error> {
    let identity = reqwest::Identity::from_pem(format!("{}\n{}", e.cert, e.key).as_bytes())
        .map_err(enrol_err)?;
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(e.ca.as_bytes()).map_err(enrol_err)?])
        .identity(identity)
        .default_headers(version_headers())
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .build()
        .map_err(enrol_err)
}

/// What the site services ask: the boot table the server sent last.
#[derive(Debug, Default)]
struct AgentBoot {
    inner: MemoryBootState,
    hosts: Mutex<BTreeMap<String, Current>>,
}

/// The boot table as cached.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct BootTable {
    epoch: String,
    version: u64,
    hosts: BTreeMap<String, Current>,
}

impl AgentBoot {
    fn apply(&self, table: &mut BootTable, w: &Work) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if w.full {
            for h in hosts.keys() {
                if !w.changes.iter().any(|c| &c.host == h) {
                    self.inner
                        .set(h, Current::LocalDisk("nothing scheduled".into()));
                }
            }
            hosts.clear();
        }
        for c in &w.changes {
            self.inner.set(&c.host, c.current.clone());
            hosts.insert(c.host.clone(), c.current.clone());
        }
        table.epoch = w.epoch.clone();
        table.version = w.boot;
        table.hosts = hosts.clone();
    }

    fn load(&self, table: &BootTable) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        for (h, c) in &table.hosts {
            self.inner.set(h, c.clone());
        }
        *hosts = table.hosts.clone();
    }
}

impl BootState for AgentBoot {
    fn current(&self, host: &str) -> Current {
        self.inner.current(host)
    }
    fn record_checkpoint(&self, host: &str, attempt: u64) -> bool {
        self.inner.record_checkpoint(host, attempt)
    }
    fn forget_checkpoint(&self, host: &str, attempt: u64) {
        self.inner.forget_checkpoint(host, attempt);
    }
}

/// Tasks the agent holds: running, or finished with a result the server
/// has not confirmed.
#[derive(Debug, Default)]
struct Held {
    running: HashSet<TaskKey>,
    done: HashMap<TaskKey, TaskResult>,
    /// Results the server confirmed lately: a lease of one of them that
    /// was on its way meanwhile (or a server that lost it) gets the
    /// result again, and the task is not run twice.
    confirmed: HashMap<TaskKey, (TaskResult, Timestamp)>,
    /// The highest fencing number seen.
    fencing: u64,
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    std::fs::create_dir_all(&config.cache).map_err(|source| {
        Error::Cache(crate::agent::CacheFailure::Io {
            path: config.cache.clone(),
            source,
        })
    })?;
    let cache = ModelCache::new(&config.cache);
    tokio::pin!(shutdown);
    let enrolment = match cache.load_other::<Enrolment>(ENROLMENT)? {
        Some(e) => e,
        None => {
            let join = config.join.as_deref().ok_or_else(|| {
                enrol_err("not enrolled yet: give --join TOKEN (or --join-file) once")
            })?;
            let e = loop {
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    r = enrol(join) => match r {
                        Ok(e) => break e,
                        // A server that is down: try again; a refusal: stop.
                        Err(Error::Unreachable(m)) => {
                            tracing::warn!("{m}; trying again in 5 s");
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        Err(e) => return Err(e),
                    },
                }
            };
            cache.store_other(ENROLMENT, &e)?;
            tracing::info!(site = %e.site, agent = %e.agent, server = %e.server, "agent: enrolled");
            e
        }
    };
    if enrolment.site != config.site {
        return Err(enrol_err(format!(
            "enrolled for site `{}`, asked to serve `{}`",
            enrolment.site, config.site
        )));
    }
    if let Some(a) = &config.agent
        && *a != enrolment.agent
    {
        return Err(enrol_err(format!(
            "enrolled as agent `{}`, asked to be `{a}`",
            enrolment.agent
        )));
    }
    let server = config
        .server
        .clone()
        .unwrap_or_else(|| enrolment.server.clone());
    let timeout = config.wait + Duration::from_secs(15);
    // The client of the current certificate: renewal swaps it.
    let (http_tx, http) = watch::channel(client(&enrolment, timeout)?);

    // The model: from the cache, else from the server (nothing boots
    // without one).
    let model = match cache.load() {
        Ok(Some(m)) => {
            tracing::info!(version = m.version(), "agent: serving the cached model");
            m
        }
        Ok(None) | Err(_) => loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                r = fetch_model(current(&http), &server, None, Duration::ZERO) => match r {
                    Ok(Some(doc)) => {
                        cache.store(&doc.model)?;
                        break doc.model;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!("agent: no model yet ({e}); trying again in 5 s");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                },
            }
        },
    };
    let boot = Arc::new(AgentBoot::default());
    let table = match cache.load_other::<BootTable>(BOOT) {
        Ok(Some(t)) => {
            boot.load(&t);
            t
        }
        _ => BootTable::default(),
    };
    let key = TokenKey::new(
        crate::compose::secret(&config.cache, KEY_FILE)
            .map_err(enrol_err)?
            .into_bytes(),
    );
    let mut options = SiteOptions::new(key);
    options.agent = Some(enrolment.agent.clone());
    options.dhcp_port = config.ports.dhcp;
    options.tftp_port = config.ports.tftp;
    options.http_listen = config.ports.http;
    options.ipxe_dirs = config.ports.ipxe_dirs.clone();
    let (observe_tx, observe_rx) = mpsc::unbounded_channel::<Observed>();
    let agent_id = enrolment.agent.clone();
    let check_files = move |m: &SiteModel| {
        if let Ok(a) = m.agent(Some(&agent_id)) {
            for w in crate::boot_files::check_boot_files(m, a, None) {
                tracing::warn!("{w}");
            }
        }
    };
    check_files(&model);
    let mut services =
        SiteServices::start(model.clone(), boot.clone(), options, observe_tx).await?;
    tracing::info!(http = %services.http_addr(), site = %config.site, "agent: serving boots");
    let swap = services.model_handle();
    let lom = Lom::new(LomConfig::default());
    let mut actor = Actor::new(
        crate::compose::drivers(&model, &lom, &vaquero_lom::PowerDrivers::default()),
        JobRunner::new(),
    );
    let spool = Spool::open(&config.cache.join("spool"), config.spool_bound)?;
    let spool_id = crate::compose::secret(&config.cache, "spool.id").map_err(enrol_err)?;

    let mut h = Held::default();
    if let Ok(Some(f)) = cache.load_other::<u64>(FENCING) {
        h.fencing = f;
    }
    if let Ok(Some(done)) = cache.load_other::<Vec<TaskResult>>(RESULTS) {
        for r in done {
            h.done.insert(TaskKey::of_result(&r), r);
        }
    }
    let held = Arc::new(Mutex::new(h));
    let (results_tx, results_rx) = mpsc::unbounded_channel::<TaskResult>();
    let (lease_tx, mut leases) = mpsc::unbounded_channel::<Lease>();
    let (model_tx, mut models) = mpsc::unbounded_channel::<Arc<SiteModel>>();
    let (stop_tx, stop) = watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(model_loop(
        http.clone(),
        server.clone(),
        model.version().to_owned(),
        cache.clone(),
        model_tx,
        config.wait,
        stop.clone(),
    ));
    loops.spawn(work_loop(
        http.clone(),
        server.clone(),
        boot.clone(),
        table,
        cache.clone(),
        held.clone(),
        lease_tx,
        config.wait,
        stop.clone(),
    ));
    loops.spawn(results_loop(
        http.clone(),
        server.clone(),
        cache.clone(),
        held.clone(),
        results_rx,
        stop.clone(),
    ));
    loops.spawn(renew_loop(
        http_tx,
        server.clone(),
        enrolment,
        cache.clone(),
        timeout,
        config.renew_before,
        stop.clone(),
    ));
    loops.spawn(spool_loop(
        http.clone(),
        server.clone(),
        spool,
        spool_id,
        observe_rx,
        stop.clone(),
    ));

    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            e = services.failed() => break Err(e.into()),
            Some(m) = models.recv() => {
                actor.replace_drivers(crate::compose::drivers(&m, &lom, &vaquero_lom::PowerDrivers::default()));
                check_files(&m);
                swap.send_replace(m);
            }
            Some(lease) = leases.recv() => {
                let key = TaskKey::of(&lease.task);
                tracing::info!(host = %key.host, seq = key.seq, action = lease.task.action.kind.name(), "agent: task");
                actor.spawn(lease.task, results_tx.clone());
            }
        }
    };
    tracing::info!("agent: stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while loops.join_next().await.is_some() {}
    })
    .await;
    services.stop().await;
    result
}

/// The mTLS client of the current certificate.
type Http = watch::Receiver<reqwest::Client>;

/// The client to call with now (the guard of the watch is not held
/// across an await).
fn current(http: &Http) -> reqwest::Client {
    http.borrow().clone()
}

/// How long to wait after a failed renewal.
const RENEW_RETRY: Duration = Duration::from_secs(60);

/// How often the certificate's expiry is looked at.
const RENEW_CHECK: Duration = Duration::from_secs(3600);

/// When the certificate of `e` expires.
fn expiry(e: &Enrolment) -> Option<jiff::Timestamp> {
    crate::pki::first_der(&e.cert)
        .and_then(|d| crate::pki::agent_of(&d))
        .map(|id| id.not_after)
}

/// Renews the certificate once it expires within `before`: a new key
/// and CSR, signed over the current certificate; the new enrolment is
/// written to the cache before the client is swapped. The server takes
/// the old certificate until the new one is used.
async fn renew_loop(
    http: watch::Sender<reqwest::Client>,
    server: String,
    mut enrolment: Enrolment,
    cache: ModelCache,
    timeout: Duration,
    before: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let due = expiry(&enrolment).is_some_and(|t| {
            jiff::SignedDuration::try_from(before)
                .ok()
                .and_then(|b| t.checked_sub(b).ok())
                .is_none_or(|at| at <= jiff::Timestamp::now())
        });
        let mut wait = RENEW_CHECK;
        if due {
            let current = http.borrow().clone();
            match renew(&current, &server, &enrolment).await {
                Ok(e) => match cache
                    .store_other(ENROLMENT, &e)
                    .map_err(|e| e.to_string())
                    .and_then(|()| client(&e, timeout).map_err(|e| e.to_string()))
                {
                    Ok(c) => {
                        tracing::info!(expires = ?expiry(&e), "agent: certificate renewed");
                        enrolment = e;
                        http.send_replace(c);
                    }
                    Err(why) => {
                        tracing::error!("agent: the renewed certificate is not kept: {why}");
                        wait = RENEW_RETRY;
                    }
                },
                Err(why) => {
                    tracing::warn!(
                        "agent: certificate renewal failed ({why}); trying again in a minute"
                    );
                    metrics::counter!("vaquero_agent_server_errors_total", "call" => "renew")
                        .increment(1);
                    wait = RENEW_RETRY;
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One renewal: a new key, its CSR signed by the server.
async fn renew(http: &reqwest::Client, server: &str, old: &Enrolment) -> Result<Enrolment, String> {
    let (key, csr) = crate::pki::agent_csr().map_err(|e| e.to_string())?;
    let resp = http
        .post(format!("{server}/v1/agent/renew"))
        .json(&wire::RenewRequest { csr })
        .send()
        .await
        .map_err(|e| why(&e))?;
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(format!(
            "{status}: {}",
            resp.text().await.unwrap_or_default()
        ));
    }
    let e: Enrolled = resp.json().await.map_err(|e| why(&e))?;
    Ok(Enrolment {
        key,
        cert: e.cert,
        ca: e.ca,
        ..old.clone()
    })
}

/// An error with every cause of it: a TLS failure names the check that
/// failed (an unknown issuer, an expired certificate, a name mismatch).
fn why(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        source = s.source();
    }
    out
}

/// How long to wait before calling the server again after a failure.
const RETRY: Duration = Duration::from_secs(2);

async fn fetch_model(
    http: reqwest::Client,
    server: &str,
    have: Option<&str>,
    wait: Duration,
) -> Result<Option<ModelDoc>, String> {
    let mut req = http.get(format!("{server}/v1/agent/model?wait={}", wait.as_secs()));
    if let Some(v) = have {
        req = req.header(reqwest::header::IF_NONE_MATCH, format!("\"{v}\""));
    }
    let resp = req.send().await.map_err(|e| why(&e))?;
    match resp.status() {
        reqwest::StatusCode::NOT_MODIFIED => Ok(None),
        s if s.is_success() => resp.json().await.map(Some).map_err(|e| e.to_string()),
        s => Err(format!("{s}: {}", resp.text().await.unwrap_or_default())),
    }
}

/// Long-polls the model; each new one is cached, then served.
async fn model_loop(
    http: Http,
    server: String,
    mut have: String,
    cache: ModelCache,
    models: mpsc::UnboundedSender<Arc<SiteModel>>,
    wait: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let r = tokio::select! {
            _ = stop.changed() => return,
            r = fetch_model(current(&http), &server, Some(&have), wait) => r,
        };
        match r {
            Ok(Some(doc)) => {
                if let Err(e) = cache.store(&doc.model) {
                    tracing::error!(error = %e, "agent: the new model is not cached");
                }
                tracing::info!(version = %doc.version, "agent: new model");
                have = doc.version;
                let _ = models.send(doc.model);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "agent: model poll failed");
                metrics::counter!("vaquero_agent_server_errors_total", "call" => "model")
                    .increment(1);
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// Long-polls work: boot-table changes are applied and cached; each task
/// not held already, whose lease is valid and whose fencing number is
/// not behind, is started once.
#[allow(clippy::too_many_arguments)]
async fn work_loop(
    http: Http,
    server: String,
    boot: Arc<AgentBoot>,
    mut table: BootTable,
    cache: ModelCache,
    held: Arc<Mutex<Held>>,
    leases: mpsc::UnboundedSender<Lease>,
    wait: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let running: Vec<TaskKey> = {
            let h = held.lock().unwrap_or_else(|e| e.into_inner());
            h.running.iter().cloned().collect()
        };
        let req = WorkRequest {
            boot: table.version,
            epoch: table.epoch.clone(),
            running,
            wait: wait.as_secs(),
        };
        let call = async {
            let resp = current(&http)
                .post(format!("{server}/v1/agent/work"))
                .json(&req)
                .send()
                .await
                .map_err(|e| why(&e))?;
            if !resp.status().is_success() {
                return Err(format!(
                    "{}: {}",
                    resp.status(),
                    resp.text().await.unwrap_or_default()
                ));
            }
            resp.json::<Work>().await.map_err(|e| e.to_string())
        };
        let r = tokio::select! {
            _ = stop.changed() => return,
            r = call => r,
        };
        let w = match r {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "agent: work poll failed");
                metrics::counter!("vaquero_agent_server_errors_total", "call" => "work")
                    .increment(1);
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
                continue;
            }
        };
        if w.full || !w.changes.is_empty() {
            boot.apply(&mut table, &w);
            if let Err(e) = cache.store_other(BOOT, &table) {
                tracing::warn!(error = %e, "agent: the boot table is not cached");
            }
        }
        let now = Timestamp::now();
        let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
        let heard = h.fencing;
        for lease in w.tasks {
            let key = TaskKey::of(&lease.task);
            match h.admit(&lease, now) {
                Admit::Start => {
                    let _ = leases.send(lease);
                }
                Admit::Held | Admit::Resend => {}
                Admit::Deposed => tracing::warn!(
                    host = %key.host, seq = key.seq, fencing = lease.fencing, seen = h.fencing,
                    "agent: task of a deposed leader refused"
                ),
                Admit::Late => tracing::warn!(
                    host = %key.host, seq = key.seq,
                    "agent: task whose lease expired refused"
                ),
            }
        }
        if h.fencing > heard
            && let Err(e) = cache.store_other(FENCING, &h.fencing)
        {
            tracing::warn!(error = %e, "agent: the fencing number is not kept on disk");
        }
    }
}

/// What the agent does with a leased task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Run it (it is now held as running).
    Start,
    /// Running or finished already: nothing.
    Held,
    /// Done and confirmed lately: its result is sent again, not run.
    Resend,
    /// From a leader older than one heard since: refused.
    Deposed,
    /// Its lease ended (beyond the clock skew): refused.
    Late,
}

impl Held {
    /// Decides on a leased task at `now` (pure but for the held state it
    /// updates): a task runs at most once per agent, and never for a
    /// leader whose fencing number is behind one already heard.
    fn admit(&mut self, lease: &Lease, now: Timestamp) -> Admit {
        let key = TaskKey::of(&lease.task);
        if lease.fencing < self.fencing {
            return Admit::Deposed;
        }
        self.fencing = lease.fencing;
        if self.running.contains(&key) || self.done.contains_key(&key) {
            return Admit::Held;
        }
        if let Some((r, _)) = self.confirmed.remove(&key) {
            tracing::info!(host = %key.host, seq = key.seq, "agent: a task done already is leased again: its result is sent again");
            self.done.insert(key, r);
            return Admit::Resend;
        }
        let late = lease
            .expires
            .checked_add(wire::CLOCK_SKEW)
            .is_ok_and(|t| t < now);
        if late {
            return Admit::Late;
        }
        self.running.insert(key);
        Admit::Start
    }
}

/// How long a confirmed result is kept in memory for a lease of it that
/// crossed the confirmation.
const CONFIRMED_KEPT: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// Sends results until the server says it has them (taken or ignored).
async fn results_loop(
    http: Http,
    server: String,
    cache: ModelCache,
    held: Arc<Mutex<Held>>,
    mut results: mpsc::UnboundedReceiver<TaskResult>,
    mut stop: watch::Receiver<bool>,
) {
    // Each change of the results not confirmed is written before they
    // are sent.
    let keep = |h: &Held| {
        let done: Vec<&TaskResult> = h.done.values().collect();
        if let Err(e) = cache.store_other(RESULTS, &done) {
            tracing::error!(error = %e, "agent: results not kept on disk");
        }
    };
    let take = |r: TaskResult| {
        let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
        let k = TaskKey::of_result(&r);
        h.running.remove(&k);
        h.done.insert(k, r);
        keep(&h);
    };
    loop {
        let pending: Vec<TaskResult> = {
            let h = held.lock().unwrap_or_else(|e| e.into_inner());
            h.done.values().cloned().collect()
        };
        if pending.is_empty() {
            tokio::select! {
                _ = stop.changed() => return,
                Some(r) = results.recv() => take(r),
                // A result to send again (a task leased again) is put
                // back without a message.
                () = tokio::time::sleep(RETRY) => {}
            }
            continue;
        }
        let call = async {
            let resp = current(&http)
                .post(format!("{server}/v1/agent/results"))
                .json(&ResultsBody { results: pending })
                .send()
                .await
                .map_err(|e| why(&e))?;
            if !resp.status().is_success() {
                return Err(resp.status().to_string());
            }
            resp.json::<ResultsAck>().await.map_err(|e| e.to_string())
        };
        let r = tokio::select! {
            _ = stop.changed() => return,
            r = call => r,
        };
        match r {
            Ok(ack) => {
                let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
                let now = Timestamp::now();
                for k in ack.taken.iter().chain(&ack.ignored) {
                    if let Some(r) = h.done.remove(k) {
                        h.confirmed.insert(k.clone(), (r, now));
                    }
                }
                let since = now.checked_sub(CONFIRMED_KEPT).unwrap_or(now);
                h.confirmed.retain(|_, (_, at)| *at >= since);
                keep(&h);
            }
            Err(e) => {
                tracing::debug!(error = %e, "agent: results not sent");
                metrics::counter!("vaquero_agent_server_errors_total", "call" => "results")
                    .increment(1);
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
        // Results that arrived meanwhile.
        while let Ok(r) = results.try_recv() {
            take(r);
        }
    }
}

/// How many observations one upload carries at most.
const BATCH: usize = 2000;

/// Spools what the site services observe and uploads it oldest first.
async fn spool_loop(
    http: Http,
    server: String,
    mut spool: Spool,
    spool_id: String,
    mut observed: mpsc::UnboundedReceiver<Observed>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff: Option<tokio::time::Instant> = None;
    // Checkpoints are told they are kept once they are on disk; those
    // not spooled are dropped untold, and their installers retry.
    let push =
        |spool: &mut Spool, first: Option<Observed>, rx: &mut mpsc::UnboundedReceiver<Observed>| {
            let (mut batch, mut kept) = (Vec::new(), Vec::new());
            for (o, k) in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                kept.push(k);
                batch.push(o);
            }
            if batch.is_empty() {
                return;
            }
            match spool.push(&batch) {
                Ok(n) => kept.into_iter().take(n).flatten().for_each(Kept::done),
                Err(e) => tracing::error!(error = %e, "agent: observations not spooled"),
            }
        };
    loop {
        let due = backoff.is_none_or(|t| t <= tokio::time::Instant::now());
        let pending = spool.next_seq() > spool.acked() + 1;
        if !(pending && due) {
            tokio::select! {
                _ = stop.changed() => return,
                Some(o) = observed.recv() => push(&mut spool, Some(o), &mut observed),
                () = crate::compose::until(backoff) => backoff = None,
            }
            continue;
        }
        push(&mut spool, None, &mut observed);
        let items = match spool.pending(BATCH) {
            Ok(i) if !i.is_empty() => i,
            Ok(_) => continue,
            Err(e) => {
                tracing::error!(error = %e, "agent: the spool does not read");
                backoff = Some(tokio::time::Instant::now() + RETRY);
                continue;
            }
        };
        let call = async {
            let resp = current(&http)
                .post(format!("{server}/v1/agent/observations"))
                .json(&ObservationBatch {
                    spool: spool_id.clone(),
                    items,
                })
                .send()
                .await
                .map_err(|e| why(&e))?;
            if !resp.status().is_success() {
                return Err(resp.status().to_string());
            }
            resp.json::<ObservationAck>()
                .await
                .map_err(|e| e.to_string())
        };
        let r = tokio::select! {
            _ = stop.changed() => return,
            r = call => r,
        };
        match r {
            Ok(ack) => {
                if let Err(e) = spool.ack(ack.acked) {
                    tracing::error!(error = %e, "agent: the spool does not take the acknowledgement");
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "agent: observations not uploaded");
                metrics::counter!("vaquero_agent_server_errors_total", "call" => "observations")
                    .increment(1);
                backoff = Some(tokio::time::Instant::now() + RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, ActionKind, Outcome};

    fn lease(seq: u64, fencing: u64, expires: Timestamp) -> Lease {
        Lease {
            task: crate::act::Task {
                site: "s".into(),
                action: Action {
                    host: "h".into(),
                    seq,
                    rollout: Some(1),
                    stage: 0,
                    attempt: 1,
                    kind: ActionKind::PowerCycle,
                },
            },
            expires,
            fencing,
        }
    }

    #[test]
    fn a_task_runs_once_and_never_for_a_deposed_leader() {
        let now = Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(1000);
        let later = now + jiff::SignedDuration::from_mins(1);
        let mut h = Held::default();
        assert_eq!(h.admit(&lease(1, 5, later), now), Admit::Start);
        // The same lease again (a poll crossed its start): held.
        assert_eq!(h.admit(&lease(1, 5, later), now), Admit::Held);
        // A new leader (higher fencing number) leases it again: still held,
        // and from now on leader 5's tasks are refused.
        assert_eq!(h.admit(&lease(1, 9, later), now), Admit::Held);
        assert_eq!(h.admit(&lease(2, 5, later), now), Admit::Deposed);
        assert!(!h.running.contains(&TaskKey {
            host: "h".into(),
            seq: 2
        }));
        assert_eq!(h.admit(&lease(2, 9, later), now), Admit::Start);
        // A lease that ended beyond the clock skew: refused.
        let ended = now - wire::CLOCK_SKEW - jiff::SignedDuration::from_secs(1);
        assert_eq!(h.admit(&lease(3, 9, ended), now), Admit::Late);
        // A task whose result the server confirmed: its result is sent
        // again, it is not run.
        let key = TaskKey {
            host: "h".into(),
            seq: 4,
        };
        let result = TaskResult {
            site: "s".into(),
            host: "h".into(),
            seq: 4,
            outcome: Outcome::Ok {
                output: String::new(),
            },
            steps: Vec::new(),
            ended: now,
        };
        h.confirmed.insert(key.clone(), (result, now));
        assert_eq!(h.admit(&lease(4, 9, later), now), Admit::Resend);
        assert!(h.done.contains_key(&key) && !h.running.contains(&key));
    }
}
