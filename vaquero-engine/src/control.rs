//! The control half of one site: the models it is given, the plans made
//! of them, the approval gate, operators' commands, and the deciding half
//! ([`Decider`]) that steps the engine.
//!
//! [`Control`] does no network I/O and reads no clock: a caller (the
//! standalone loop, a test, a simulation) hands it models, commands,
//! observations and task results with `now`, and carries out the tasks it
//! returns. Everything an operator relies on (the engine's state, the
//! plans with their text, the pause flag, the last refused revision, the
//! SoT files last applied) is kept in the [`Store`], so a restart resumes
//! where the last commit left off.
//!
//! Which commands start which hosts:
//! - a new SoT revision makes a plan; with the site's `auto_apply` it
//!   starts at once, otherwise its hosts wait until the plan is approved;
//! - [`Command::Approve`] starts the hosts of the waiting plan;
//! - [`Command::Reprovision`] starts the hosts it names and no others,
//!   whether or not a plan waits for approval (which keeps waiting);
//! - [`Command::Pause`] holds every host not started yet, whatever started
//!   it; hosts in flight finish.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use vaquero_model::{SiteModel, Sot, SotFiles};

use crate::Error;
use crate::act::{Task, TaskResult};
use crate::decide::{Decider, Follower};
use crate::engine::{Engine, EngineConfig, EngineFailure};
use crate::event::{ActionKind, Outcome};
use crate::observe::{Observation, ObservationKind};
use crate::plan::{Plan, PlanSet};
use crate::policy::{Decision, Policy, PolicyCtx};
use crate::state::{HostState, Phase, SiteState};
use crate::store::{Store, TxnOp};
use crate::transport::Inbound;

pub use crate::command::{Command, CommandFailure, CommandMsg, Commands};

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Waits for approval.
    Pending,
    /// Approved, applied without approval, or an operator's reprovision.
    Applied,
    /// A newer plan came before it was approved.
    Superseded,
}

/// What made a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// A new SoT revision.
    Revision,
    /// An operator's reprovision of named hosts.
    Reprovision,
}

/// A plan the control half made, for the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PlanEntry {
    /// The rollout it became; for a reprovision, the site's rollout at
    /// the time (which it leaves as it was).
    pub rollout: u64,
    /// What made it.
    pub kind: PlanKind,
    /// Where it stands.
    pub status: PlanStatus,
    /// When it was made.
    pub created: Timestamp,
    /// The SoT revision planned to.
    pub revision: Option<String>,
    /// The text `vaquero plan` prints.
    pub text: String,
    /// The stable JSON form (a `PlanSet`).
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub plan: serde_json::Value,
}

/// A revision that was refused, for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Refused {
    /// The revision.
    pub revision: String,
    /// When it was seen.
    pub at: Timestamp,
    /// Every problem (`file:line:col: key: message`).
    pub errors: Vec<String>,
}

/// What the API reads: published after every change.
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
    /// Why new hosts are held back by the site's link (it has not been
    /// heard from), if they are.
    pub held: Option<String>,
    /// The last revision refused, if it is still the newest.
    pub refused: Option<Refused>,
    /// Plans, newest last.
    pub plans: Arc<Vec<PlanEntry>>,
    /// The engine's state.
    pub state: SiteState,
    /// The model served (boot ids and names of each host's stages).
    pub model: Arc<SiteModel>,
}

/// Publishes a control half's [`Snapshot`] to the user API. A snapshot
/// copies the site's state (every host), so a step that changes it
/// publishes at most every [`Publisher::EVERY`]; a change left waiting is
/// published at [`due`](Publisher::due). Commands publish at once, so an
/// operator reads what they just did.
#[derive(Debug)]
pub struct Publisher {
    tx: tokio::sync::watch::Sender<Arc<Snapshot>>,
    last: tokio::time::Instant,
    waiting: bool,
}

impl Publisher {
    /// The least time between two snapshots published after steps.
    pub const EVERY: std::time::Duration = std::time::Duration::from_millis(250);

    /// Publishes `control`'s snapshot; returns the publisher and what the
    /// API reads.
    pub fn new<S: Store + ?Sized>(
        control: &Control<S>,
    ) -> (Self, tokio::sync::watch::Receiver<Arc<Snapshot>>) {
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(control.snapshot()));
        let p = Publisher {
            tx,
            last: tokio::time::Instant::now(),
            waiting: false,
        };
        (p, rx)
    }

    /// Publishes `control`'s snapshot now.
    pub fn now<S: Store + ?Sized>(&mut self, control: &Control<S>) {
        self.tx.send_replace(Arc::new(control.snapshot()));
        self.last = tokio::time::Instant::now();
        self.waiting = false;
    }

    /// A step changed `control`: publishes now, or at [`due`](Self::due)
    /// when the last snapshot is younger than [`EVERY`](Self::EVERY).
    pub fn changed<S: Store + ?Sized>(&mut self, control: &Control<S>) {
        if self.last.elapsed() >= Self::EVERY {
            self.now(control);
        } else {
            self.waiting = true;
        }
    }

    /// When a change left waiting is to be published (`None`: none waits).
    pub fn due(&self) -> Option<tokio::time::Instant> {
        self.waiting.then_some(self.last + Self::EVERY)
    }
}

/// Observations per host, newest last, bounded; each numbered per host
/// (its key in the store).
#[derive(Debug, Default)]
pub struct Timelines {
    hosts: HashMap<String, VecDeque<(u64, Observation)>>,
}

/// How many observations a host's timeline keeps.
const TIMELINE: usize = 512;

/// How many plans are kept.
const PLANS: usize = 32;

fn timeline_prefix(site: &str) -> String {
    format!("v1/timelines/{site}/")
}

impl Timelines {
    /// Adds `o`; returns its number and the number of the one it pushed
    /// out, if any.
    fn push(&mut self, o: Observation) -> (u64, Option<u64>) {
        let t = self.hosts.entry(o.host.clone()).or_default();
        let n = t.back().map_or(1, |(n, _)| n + 1);
        let gone = if t.len() == TIMELINE {
            t.pop_front().map(|(n, _)| n)
        } else {
            None
        };
        t.push_back((n, o));
        (n, gone)
    }

    /// The observations of `host`, oldest first.
    pub fn of(&self, host: &str) -> Vec<Observation> {
        self.hosts
            .get(host)
            .map(|t| t.iter().map(|(_, o)| o.clone()).collect())
            .unwrap_or_default()
    }

    /// The newest observation of `host`.
    pub fn last(&self, host: &str) -> Option<Observation> {
        self.hosts.get(host)?.back().map(|(_, o)| o.clone())
    }

    /// Drops, from the front of each host's timeline, what retention lets
    /// go: entries seen before `cutoff`, and those of boot attempts older
    /// than the host's newest `attempts` (with the DHCP and TFTP entries,
    /// which know no attempt, that came before them). Returns the hosts
    /// and numbers dropped. Pure: the caller deletes them from the store.
    pub fn expire(&mut self, attempts: usize, cutoff: Timestamp) -> Vec<(String, u64)> {
        let mut gone = Vec::new();
        for (host, t) in &mut self.hosts {
            let mut seen: Vec<u64> = t.iter().filter_map(|(_, o)| o.attempt).collect();
            seen.sort_unstable();
            seen.dedup();
            let oldest_kept = seen
                .len()
                .checked_sub(attempts.max(1))
                .and_then(|i| seen.get(i).copied());
            // The first entry to keep: of a kept attempt (or later), and
            // not older than the cutoff.
            let keep_from = t
                .iter()
                .position(|(_, o)| {
                    let young = o.at >= cutoff;
                    let kept = match (oldest_kept, o.attempt) {
                        (Some(k), Some(a)) => a >= k,
                        (Some(_), None) => false,
                        (None, _) => true,
                    };
                    young && kept
                })
                .unwrap_or(t.len());
            for (n, _) in t.drain(..keep_from) {
                gone.push((host.clone(), n));
            }
        }
        self.hosts.retain(|_, t| !t.is_empty());
        gone
    }
}

/// Holds every queued host back while an operator paused the site, or
/// while the site cannot be heard from (its link says why).
#[derive(Debug, Default, Clone)]
struct Pause {
    paused: Arc<AtomicBool>,
    held: Arc<Mutex<Option<String>>>,
}

impl Policy for Pause {
    fn name(&self) -> &str {
        "pause"
    }

    fn admit(&self, _: &PolicyCtx<'_>, _: &HostState) -> Decision {
        if self.paused.load(Ordering::Relaxed) {
            return Decision::Wait("paused by an operator".into());
        }
        match self.held.lock().ok().and_then(|h| h.clone()) {
            Some(why) => Decision::Wait(why),
            None => Decision::Allow,
        }
    }
}

fn key(site: &str, what: &str) -> String {
    format!("v1/standalone/{site}/{what}")
}

/// Plan number `n`'s key (numbers rise: keys sort oldest first).
fn plan_key(site: &str, n: u64) -> String {
    key(site, &format!("plan/{n:020}"))
}

/// A plan as stored: its JSON, compressed with zstd. A plan lists every
/// host it touches, in its JSON and again in its text (about 2.7 MiB at
/// 10,000 hosts); compressed, a tenth of that or less.
fn encode_plan(p: &PlanEntry) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(p).map_err(|e| e.to_string())?;
    zstd::bulk::compress(&json, 3).map_err(|e| e.to_string())
}

/// The plan `bytes` store (see [`encode_plan`]).
fn decode_plan(bytes: &[u8]) -> Result<PlanEntry, String> {
    // Bounded: a plan of 100,000 hosts is far below it.
    const MAX: usize = 1 << 30;
    let json = zstd::bulk::decompress(bytes, MAX).map_err(|e| e.to_string())?;
    serde_json::from_slice(&json).map_err(|e| e.to_string())
}

/// One site's control half.
pub struct Control<S: Store + ?Sized + 'static> {
    site: String,
    source: String,
    store: Arc<S>,
    decider: Decider<S>,
    model: Arc<SiteModel>,
    engine_config: EngineConfig,
    /// Policies beside the built-in ones, for every model.
    policies: Vec<Arc<dyn crate::policy::Policy>>,
    /// What the site's gauges last said: set again only on a change.
    exported: Option<Exported>,
    paused: Arc<AtomicBool>,
    held: Arc<Mutex<Option<String>>>,
    refused: Option<Refused>,
    plans: Arc<Vec<PlanEntry>>,
    /// Each plan's number (its key), beside it.
    plan_numbers: Vec<u64>,
    /// The tasks out, by (host, seq): what each was and for which boot
    /// attempt, for the timeline entry of its result.
    issued: HashMap<(String, u64), (String, u64)>,
    timelines: Arc<Mutex<Timelines>>,
}

impl<S: Store + ?Sized + 'static> std::fmt::Debug for Control<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

/// The site's plans (at most [`PLANS`], oldest first) and their
/// numbers. Plans stored by earlier versions under the one key `plans`
/// are moved to keys of their own. A plan that cannot be read is left
/// out, with a warning; so is a plan pending behind a newer one (a crash
/// between two writes can leave one).
async fn load_plans<S: Store + ?Sized>(
    store: &S,
    site: &str,
) -> Result<(Vec<PlanEntry>, Vec<u64>), Error> {
    let failed =
        |e: crate::store::StoreFailure| Error::from(crate::persist::PersistFailure::from(e));
    let mut plans: Vec<(u64, PlanEntry)> = Vec::new();
    for kv in store.list(&key(site, "plan/")).await.map_err(failed)? {
        let n = kv
            .key
            .rsplit('/')
            .next()
            .and_then(|n| n.parse::<u64>().ok());
        match (n, decode_plan(&kv.value)) {
            (Some(n), Ok(p)) => {
                plans.push((n, p));
            }
            (_, Err(e)) => {
                tracing::warn!(key = %kv.key, error = %e, "a stored plan is unreadable; left out")
            }
            (None, _) => {
                tracing::warn!(key = %kv.key, "a stored plan's key has no number; left out")
            }
        }
    }
    let old = key(site, "plans");
    if let Some(kv) = store.get(&old).await.map_err(failed)? {
        match serde_json::from_slice::<Vec<PlanEntry>>(&kv.value) {
            Ok(list) => {
                let mut n = plans.last().map_or(0, |(n, _)| *n);
                for p in list {
                    n += 1;
                    let bytes = encode_plan(&p).map_err(|e| {
                        Error::from(crate::persist::PersistFailure::Corrupt {
                            key: old.clone(),
                            error: e,
                        })
                    })?;
                    store.put(&plan_key(site, n), bytes).await.map_err(failed)?;
                    plans.push((n, p));
                }
            }
            Err(e) => tracing::warn!(error = %e, "stored plans unreadable; starting without them"),
        }
        store.delete(&old).await.map_err(failed)?;
    }
    plans.sort_by_key(|(n, _)| *n);
    while plans.len() > PLANS {
        let (n, _) = plans.remove(0);
        store.delete(&plan_key(site, n)).await.map_err(failed)?;
    }
    let newest_pending = plans
        .iter()
        .rposition(|(_, p)| p.status == PlanStatus::Pending);
    for (i, (_, p)) in plans.iter_mut().enumerate() {
        if p.status == PlanStatus::Pending && Some(i) != newest_pending {
            p.status = PlanStatus::Superseded;
        }
    }
    let (numbers, plans) = plans.into_iter().unzip();
    Ok((plans, numbers))
}

impl<S: Store + ?Sized + 'static> Control<S> {
    /// Loads the site's state, plans and flags from `store`, serving
    /// `model` (not planned yet: call [`adopt`](Self::adopt)); returns the
    /// control half and the tasks issued before a restart whose outcome
    /// never arrived.
    pub async fn open(
        store: Arc<S>,
        model: Arc<SiteModel>,
        engine_config: EngineConfig,
        follower: Arc<dyn Follower>,
        source: String,
        now: Timestamp,
    ) -> Result<(Self, Vec<Task>), Error> {
        let site = model.site().id.clone();
        let read = async |what: &str| -> Result<Option<Vec<u8>>, Error> {
            Ok(store
                .get(&key(&site, what))
                .await
                .map_err(crate::persist::PersistFailure::from)?
                .map(|kv| kv.value))
        };
        let paused = Arc::new(AtomicBool::new(
            read("paused").await?.is_some_and(|v| v == b"true"),
        ));
        let (plans, plan_numbers) = load_plans(store.as_ref(), &site).await?;
        let refused: Option<Refused> = read("refused")
            .await?
            .and_then(|v| serde_json::from_slice(&v).ok());
        let mut timelines = Timelines::default();
        for kv in store
            .list(&timeline_prefix(&site))
            .await
            .map_err(crate::persist::PersistFailure::from)?
        {
            let n = kv.key.rsplit('/').next().and_then(|n| n.parse().ok());
            match (n, serde_json::from_slice::<Observation>(&kv.value)) {
                (Some(n), Ok(o)) => timelines
                    .hosts
                    .entry(o.host.clone())
                    .or_default()
                    .push_back((n, o)),
                _ => tracing::warn!(key = %kv.key, "a stored timeline entry is unreadable"),
            }
        }
        let held = Arc::new(Mutex::new(None));
        let engine = Engine::new(model.clone(), engine_config)?.with_policy(Arc::new(Pause {
            paused: paused.clone(),
            held: held.clone(),
        }));
        let (decider, resumed) = Decider::open(engine, store.clone(), follower, now).await?;
        let mut c = Control {
            site,
            source,
            store,
            decider,
            model,
            engine_config,
            policies: Vec::new(),
            exported: None,
            paused,
            held,
            refused,
            plans: Arc::new(plans),
            plan_numbers,
            issued: HashMap::new(),
            timelines: Arc::new(Mutex::new(timelines)),
        };
        for t in &resumed {
            c.issued
                .insert((t.action.host.clone(), t.action.seq), issued_as(t));
        }
        Ok((c, resumed))
    }

    /// The site.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// Holds every host not started yet for `why` (the site cannot be
    /// heard from), or lets them start again (`None`). Hosts in flight
    /// finish. Not stored: the link decides it anew after a restart.
    /// Returns whether that changed.
    pub fn hold(&self, why: Option<String>) -> bool {
        let Ok(mut h) = self.held.lock() else {
            return false;
        };
        if *h == why {
            return false;
        }
        match &why {
            Some(w) => tracing::warn!(site = %self.site, "no new host starts: {w}"),
            None => tracing::info!(site = %self.site, "the site is heard from again"),
        }
        *h = why;
        true
    }

    /// Why hosts are held back by the link, if they are.
    pub fn held(&self) -> Option<String> {
        self.held.lock().ok().and_then(|h| h.clone())
    }

    /// The model served.
    pub fn model(&self) -> &Arc<SiteModel> {
        &self.model
    }

    /// The engine's state as last committed.
    pub fn state(&self) -> &SiteState {
        self.decider.state()
    }

    /// The deciding half.
    pub fn decider(&self) -> &Decider<S> {
        &self.decider
    }

    /// The timelines (shared with the API).
    pub fn timelines(&self) -> &Arc<Mutex<Timelines>> {
        &self.timelines
    }

    /// The last revision refused, while it is the newest.
    pub fn refused(&self) -> Option<&Refused> {
        self.refused.as_ref()
    }

    /// Plans, newest last.
    pub fn plans(&self) -> &[PlanEntry] {
        &self.plans
    }

    /// Whether new hosts are held back.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// What the API reads.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            site: self.site.clone(),
            source: self.source.clone(),
            revision: self.model.revision().map(str::to_owned),
            version: self.model.version().to_owned(),
            paused: self.paused(),
            held: self.held(),
            refused: self.refused.clone(),
            plans: self.plans.clone(),
            state: self.decider.state().clone(),
            model: self.model.clone(),
        }
    }

    async fn put_json(&self, what: &str, v: &impl Serialize) {
        let r = match serde_json::to_vec(v) {
            Ok(bytes) => self.store.put(&key(&self.site, what), bytes).await,
            Err(e) => {
                tracing::warn!(error = %e, "{what} not serialized");
                return;
            }
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "{what} not stored");
        }
    }

    /// Deletes the execution records and timeline entries `retention`
    /// lets go, then compacts the store; returns how many records.
    pub async fn prune(
        &self,
        retention: &crate::record::Retention,
        now: Timestamp,
    ) -> Result<usize, Error> {
        let n = self
            .decider
            .records()
            .prune_retained(retention, now)
            .await?;
        // Timelines by the same retention: age and attempts per host.
        let cutoff = retention.cutoff(now);
        let gone = self
            .timelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expire(retention.attempts, cutoff);
        let prefix = timeline_prefix(&self.site);
        for chunk in gone.chunks(crate::migrate::BATCH) {
            let ops = chunk
                .iter()
                .map(|(host, n)| TxnOp::Delete(format!("{prefix}{host}/{n:020}")))
                .collect();
            self.store
                .txn(Vec::new(), ops)
                .await
                .map_err(crate::persist::PersistFailure::from)?;
        }
        if n > 0 || !gone.is_empty() {
            tracing::info!(site = %self.site, records = n, timeline_entries = gone.len(), "execution records and timelines pruned");
        }
        // What was pruned, and the pages copy-on-write commits freed, go
        // back to the file system.
        match self.store.compact().await {
            Ok(true) => tracing::debug!(site = %self.site, "store compacted"),
            Ok(false) => {}
            Err(e) => tracing::warn!(site = %self.site, error = %e, "store not compacted"),
        }
        Ok(n)
    }

    /// A revision that does not validate: kept (and stored) for the API
    /// until a newer one is adopted; the current model keeps serving.
    pub async fn refuse(&mut self, revision: String, errors: Vec<String>, now: Timestamp) {
        tracing::error!(
            revision = %revision,
            "SoT revision refused ({} error(s)); the previous one keeps serving:\n{}",
            errors.len(),
            errors.join("\n")
        );
        self.refused = Some(Refused {
            revision,
            at: now,
            errors,
        });
        self.put_json("refused", &self.refused).await;
    }

    /// Forgets the refused revision unless it is `head`, the SoT's newest
    /// (at start-up: a revision refused before a restart and since
    /// replaced is no longer news).
    pub async fn refused_unless(&mut self, head: &str) {
        if self.refused.as_ref().is_some_and(|r| r.revision != head) {
            self.refused = None;
            self.put_json("refused", &None::<Refused>).await;
        }
    }

    /// The model of the SoT files last applied, from the store.
    async fn applied_model(&self) -> Option<Arc<SiteModel>> {
        let kv = self.store.get(&key(&self.site, "applied")).await.ok()??;
        let files: BTreeMap<String, String> = serde_json::from_slice(&kv.value).ok()?;
        let mut f = SotFiles::new();
        for (p, t) in files {
            f.insert(p, t);
        }
        let sot = Sot::load_owned(f).ok()?;
        SiteModel::compile(&sot, &self.site).ok().map(Arc::new)
    }

    /// Plans and starts `model` (`None`: the one served, at start-up)
    /// when the state was not planned for it yet: at once with the site's
    /// `auto_apply`, otherwise it waits for approval. `files` are the SoT
    /// files `model` came from, kept so the next plan after a restart
    /// diffs against what was applied. Returns the model when the site
    /// must serve a new one (its services and drivers).
    pub async fn adopt(
        &mut self,
        model: Option<Arc<SiteModel>>,
        files: Option<&SotFiles>,
        now: Timestamp,
    ) -> Result<Option<Arc<SiteModel>>, Error> {
        if model.is_some() && self.refused.take().is_some() {
            self.put_json("refused", &None::<Refused>).await;
        }
        let model = model.unwrap_or_else(|| self.model.clone());
        let switched = !Arc::ptr_eq(&model, &self.model);
        let planned_for = self.decider.state().rollout.as_ref().map(|r| r.to.clone());
        if planned_for.as_deref() == Some(model.version()) {
            if switched {
                self.switch(model.clone())?;
                return Ok(Some(model));
            }
            return Ok(None);
        }
        let old = match planned_for {
            Some(v) if v == self.model.version() && switched => Some(self.model.clone()),
            Some(_) => self.applied_model().await,
            None => None,
        };
        if switched {
            self.switch(model.clone())?;
        }
        let plan = crate::plan::plan_with_state(old.as_deref(), &model, Some(self.decider.state()));
        self.start(plan, now).await?;
        if let Some(files) = files {
            let map: BTreeMap<&str, &str> = files.iter().map(|(p, t)| (p, &**t)).collect();
            self.put_json("applied", &map).await;
        }
        Ok(switched.then_some(model))
    }

    /// Adds `policies` to the built-in ones, for the model served and
    /// every later one: a task starts only when every policy allows it.
    pub fn add_policies(
        &mut self,
        policies: impl IntoIterator<Item = Arc<dyn crate::policy::Policy>>,
    ) -> Result<(), Error> {
        self.policies.extend(policies);
        self.switch(self.model.clone())
    }

    /// Serves `model` from now on (the engine and what follows it).
    fn switch(&mut self, model: Arc<SiteModel>) -> Result<(), Error> {
        let mut engine =
            Engine::new(model.clone(), self.engine_config)?.with_policy(Arc::new(Pause {
                paused: self.paused.clone(),
                held: self.held.clone(),
            }));
        for p in &self.policies {
            engine = engine.with_policy(p.clone());
        }
        self.decider.replace_engine(engine);
        self.model = model;
        Ok(())
    }

    async fn record_plan(
        &mut self,
        plan: &Plan,
        kind: PlanKind,
        status: PlanStatus,
        now: Timestamp,
    ) {
        let text = plan.to_string();
        tracing::info!("plan for site {}:\n{text}", self.site);
        let rollout = self.decider.state().rollout.as_ref().map_or(0, |r| r.id);
        let mut changed = Vec::new();
        if kind == PlanKind::Revision {
            for (p, n) in Arc::make_mut(&mut self.plans)
                .iter_mut()
                .zip(&self.plan_numbers)
            {
                if p.status == PlanStatus::Pending {
                    p.status = PlanStatus::Superseded;
                    changed.push(*n);
                }
            }
        }
        let set = PlanSet::new(None, plan.revision.clone(), vec![plan.clone()]);
        Arc::make_mut(&mut self.plans).push(PlanEntry {
            rollout,
            kind,
            status,
            created: now,
            revision: plan.revision.clone(),
            text,
            plan: serde_json::to_value(&set).unwrap_or_default(),
        });
        let n = self.plan_numbers.last().map_or(1, |n| n + 1);
        self.plan_numbers.push(n);
        changed.push(n);
        self.store_plans(&changed).await;
        while self.plans.len() > PLANS {
            Arc::make_mut(&mut self.plans).remove(0);
            let n = self.plan_numbers.remove(0);
            if let Err(e) = self.store.delete(&plan_key(&self.site, n)).await {
                tracing::warn!(error = %e, plan = n, "an old plan not deleted");
            }
        }
    }

    /// Stores the plans numbered `changed` (new, or superseded or
    /// applied since stored), each under its own key.
    async fn store_plans(&self, changed: &[u64]) {
        for (p, n) in self.plans.iter().zip(&self.plan_numbers) {
            if !changed.contains(n) {
                continue;
            }
            let r = match encode_plan(p) {
                Ok(bytes) => self
                    .store
                    .put(&plan_key(&self.site, *n), bytes)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, plan = n, "plan not stored");
            }
        }
    }

    async fn start(&mut self, plan: Plan, now: Timestamp) -> Result<(), Error> {
        self.decider.start(&plan, now).await?;
        let pending = self
            .decider
            .state()
            .rollout
            .as_ref()
            .is_some_and(|r| !r.approved());
        let status = if pending {
            PlanStatus::Pending
        } else {
            PlanStatus::Applied
        };
        self.record_plan(&plan, PlanKind::Revision, status, now)
            .await;
        if pending {
            tracing::info!("the plan waits for approval: vaquero approve");
        }
        Ok(())
    }

    /// Carries out an operator's command.
    pub async fn command(
        &mut self,
        cmd: Command,
        now: Timestamp,
    ) -> Result<String, CommandFailure> {
        let store = |e: &dyn std::fmt::Display| CommandFailure::Store(e.to_string());
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
                    return Err(CommandFailure::Refused(
                        "no rollout waits for approval".into(),
                    ));
                };
                if let Some(id) = id.filter(|&id| id != w) {
                    return Err(CommandFailure::Refused(format!(
                        "rollout {w} waits for approval, not {id}"
                    )));
                }
                self.decider.approve(w).await.map_err(|e| store(&e))?;
                let mut changed = Vec::new();
                for (p, n) in Arc::make_mut(&mut self.plans)
                    .iter_mut()
                    .zip(&self.plan_numbers)
                {
                    if p.rollout == w && p.status == PlanStatus::Pending {
                        p.status = PlanStatus::Applied;
                        changed.push(*n);
                    }
                }
                self.store_plans(&changed).await;
                tracing::info!(rollout = w, "approved");
                Ok(format!("rollout {w} approved"))
            }
            Command::Reprovision { hosts, now: skip } => {
                let plan =
                    self.decider
                        .reprovision(&hosts, skip, now)
                        .await
                        .map_err(|e| match e {
                            crate::Error::Engine(e @ EngineFailure::UnknownHost { .. }) => {
                                CommandFailure::NotFound(e.to_string())
                            }
                            crate::Error::Engine(e) => CommandFailure::Refused(e.to_string()),
                            e => store(&e),
                        })?;
                self.record_plan(&plan, PlanKind::Reprovision, PlanStatus::Applied, now)
                    .await;
                let list = |a: crate::plan::PlanAction| {
                    plan.hosts
                        .iter()
                        .filter(|h| h.action == a)
                        .map(|h| h.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let started = list(crate::plan::PlanAction::Reprovision);
                let busy = list(crate::plan::PlanAction::Unchanged);
                let mut msg = if started.is_empty() {
                    "nothing to reprovision".to_owned()
                } else {
                    format!("reprovisioning {started}")
                };
                if !busy.is_empty() {
                    msg.push_str(&format!("; in flight already: {busy}"));
                }
                Ok(msg)
            }
            Command::Pause | Command::Resume => {
                let pause = matches!(cmd, Command::Pause);
                self.store
                    .put(&key(&self.site, "paused"), pause.to_string().into_bytes())
                    .await
                    .map_err(|e| store(&e))?;
                self.paused.store(pause, Ordering::Relaxed);
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

    /// Adds `seen` to the hosts' timelines in memory, and to `ops` the
    /// store writes that keep them (committed with the step that saw
    /// them; the entries a full timeline pushes out are deleted).
    fn record_timelines(&self, seen: Vec<Observation>, ops: &mut Vec<TxnOp>) {
        if seen.is_empty() {
            return;
        }
        let prefix = timeline_prefix(&self.site);
        ops.reserve(seen.len());
        let mut t = self.timelines.lock().unwrap_or_else(|p| p.into_inner());
        for o in seen {
            let host = o.host.clone();
            let bytes = serde_json::to_vec(&o).unwrap_or_default();
            let (n, gone) = t.push(o);
            if let Some(g) = gone {
                ops.push(TxnOp::Delete(format!("{prefix}{host}/{g:020}")));
            }
            ops.push(TxnOp::Put(format!("{prefix}{host}/{n:020}"), bytes));
        }
    }

    /// The timeline entry of a task's result.
    fn action_observation(&mut self, r: &TaskResult) -> Option<Observation> {
        let (what, attempt) = self.issued.remove(&(r.host.clone(), r.seq))?;
        let (ok, detail) = match &r.outcome {
            Outcome::Ok { .. } => (true, format!("{what}: ok")),
            Outcome::Failed { transient, message } => (
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
            kind: ObservationKind::Action,
            ok,
            detail,
        })
    }

    /// One engine step on what the site observed and finished since the
    /// last: committed to the store, in one transaction with the timeline
    /// entries and the inbound's writes, before anything is done. Returns
    /// the tasks to carry out, and whether anything changed (publish a
    /// snapshot).
    pub async fn step(
        &mut self,
        inbound: Inbound,
        now: Timestamp,
    ) -> Result<(Vec<Task>, bool), Error> {
        let Inbound {
            observations,
            results,
            writes,
        } = inbound;
        let mut events = Vec::new();
        let mut seen = Vec::with_capacity(observations.len() + results.len());
        for o in observations {
            events.extend(o.event());
            seen.push(o);
        }
        for r in &results {
            if let Some(o) = self.action_observation(r) {
                seen.push(o);
            }
            events.push(self.decider.finished(r).await);
        }
        let mut ops = writes;
        self.record_timelines(seen, &mut ops);
        let before = self.decider.state().phase_counts();
        let (tasks, stepped) = self.decider.step(&events, ops, now).await?;
        for t in &tasks {
            tracing::info!(
                host = %t.action.host,
                action = t.action.kind.name(),
                attempt = t.action.attempt,
                "{}: {}",
                t.action.host,
                t.action.kind.name()
            );
            self.issued
                .insert((t.action.host.clone(), t.action.seq), issued_as(t));
        }
        // The counts after the step, from the pass the gauges take too.
        let (phases, rollout) = tally(self.decider.state());
        let after: BTreeMap<Phase, usize> = Phase::ALL
            .iter()
            .zip(phases)
            .filter(|(_, n)| *n > 0)
            .map(|(p, n)| (*p, n))
            .collect();
        export_counts(
            &self.site,
            phases,
            &rollout,
            self.refused.is_some(),
            &mut self.exported,
        );
        if before != after {
            let text: Vec<String> = after.iter().map(|(p, n)| format!("{p} {n}")).collect();
            tracing::info!(site = %self.site, "hosts: {}", text.join(", "));
        }
        // Observations that change no host's state (a DHCP packet of a
        // host that is not waiting) change nothing the API shows.
        let changed = stepped || !results.is_empty() || before != after;
        Ok((tasks, changed))
    }
}

/// The site's hosts by phase, and each workflow's rollout progress
/// (queued, in flight, done, failed), in one pass over the hosts.
fn tally(state: &SiteState) -> ([usize; Phase::ALL.len()], BTreeMap<&str, [usize; 4]>) {
    let mut phases = [0usize; Phase::ALL.len()];
    let mut rollout: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    for h in state.hosts.values() {
        if let Some(i) = Phase::ALL.iter().position(|p| *p == h.phase) {
            phases[i] += 1;
        }
        let slot = match h.phase {
            Phase::Queued => Some(0),
            p if p.in_flight() => Some(1),
            Phase::Done => Some(2),
            Phase::Failed => Some(3),
            _ => None,
        };
        let counts = rollout.entry(h.workflow.as_str()).or_default();
        if let Some(i) = slot {
            counts[i] += 1;
        }
    }
    (phases, rollout)
}

/// What the site's gauges last said ([`export_counts`]).
#[derive(Debug, PartialEq)]
struct Exported {
    phases: [usize; Phase::ALL.len()],
    rollout: Vec<(String, [usize; 4])>,
    refused: bool,
}

/// Sets the site's gauges: `vaquero_hosts` (every phase, zeros included,
/// so a count that falls to zero is seen to), `vaquero_rollout_hosts`
/// and `vaquero_sot_refused`, only when they differ from what `last`
/// says was exported.
fn export_counts(
    site: &str,
    phases: [usize; Phase::ALL.len()],
    rollout: &BTreeMap<&str, [usize; 4]>,
    refused: bool,
    last: &mut Option<Exported>,
) {
    if last.as_ref().is_some_and(|e| {
        e.phases == phases
            && e.refused == refused
            && e.rollout.len() == rollout.len()
            && e.rollout
                .iter()
                .zip(rollout)
                .all(|((w, c), (w2, c2))| w == w2 && c == c2)
    }) {
        return;
    }
    for (phase, n) in Phase::ALL.iter().zip(phases) {
        metrics::gauge!("vaquero_hosts", "site" => site.to_owned(), "phase" => phase.as_str())
            .set(n as f64);
    }
    for (workflow, counts) in rollout {
        for (state, n) in ["queued", "in_flight", "done", "failed"].iter().zip(counts) {
            metrics::gauge!(
                "vaquero_rollout_hosts",
                "site" => site.to_owned(),
                "workflow" => (*workflow).to_owned(),
                "state" => *state
            )
            .set(*n as f64);
        }
    }
    metrics::gauge!("vaquero_sot_refused", "site" => site.to_owned()).set(if refused {
        1.0
    } else {
        0.0
    });
    *last = Some(Exported {
        phases,
        rollout: rollout.iter().map(|(w, c)| ((*w).to_owned(), *c)).collect(),
        refused,
    });
}

/// A task as its result's timeline entry names it: the action (a job with
/// its name) and the boot attempt.
fn issued_as(t: &Task) -> (String, u64) {
    let what = match &t.action.kind {
        ActionKind::RunJob { boot, index, .. } => {
            format!("{} job {} of {boot}", t.action.kind.name(), index + 1)
        }
        k => k.name().to_owned(),
    };
    (what, t.action.attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(host: &str, attempt: Option<u64>, at: i64) -> Observation {
        Observation {
            at: Timestamp::from_second(at).unwrap_or(Timestamp::UNIX_EPOCH),
            host: host.into(),
            attempt,
            kind: crate::observe::ObservationKind::Script,
            ok: true,
            detail: String::new(),
        }
    }

    #[test]
    fn timelines_expire_by_attempts_and_age() {
        let mut t = Timelines::default();
        // Three boots of h: an action, then DHCP (no attempt), then script.
        for (a, at) in [(1, 100), (2, 200), (3, 300)] {
            t.push(obs("h", Some(a), at));
            t.push(obs("h", None, at + 1));
            t.push(obs("h", Some(a), at + 2));
        }
        t.push(obs("g", None, 50));
        let epoch = Timestamp::UNIX_EPOCH;
        // Two attempts kept: attempt 1 and its DHCP go.
        let gone = t.expire(2, epoch);
        assert_eq!(
            gone,
            vec![
                ("h".to_owned(), 1),
                ("h".to_owned(), 2),
                ("h".to_owned(), 3)
            ]
        );
        let left: Vec<Option<u64>> = t.of("h").iter().map(|o| o.attempt).collect();
        assert_eq!(left, [Some(2), None, Some(2), Some(3), None, Some(3)]);
        assert_eq!(
            t.of("g").len(),
            1,
            "a host with no attempt keeps its entries"
        );
        // Nothing more to drop at the same retention.
        assert!(t.expire(2, epoch).is_empty());
        // By age: what was seen before the cutoff.
        let cutoff = Timestamp::from_second(250).unwrap_or(epoch);
        let gone = t.expire(20, cutoff);
        assert_eq!(gone.len(), 4, "{gone:?}");
        assert_eq!(t.of("h").len(), 3);
        assert!(t.of("g").is_empty());
        // New entries number on from the last.
        let (n, _) = t.push(obs("h", Some(4), 400));
        assert_eq!(n, 10);
    }

    fn entry(rollout: u64, status: PlanStatus) -> PlanEntry {
        PlanEntry {
            rollout,
            kind: PlanKind::Revision,
            status,
            created: Timestamp::UNIX_EPOCH,
            revision: Some(format!("r{rollout}")),
            text: format!("plan {rollout}\n").repeat(1000),
            plan: serde_json::json!({"rollout": rollout}),
        }
    }

    /// Plans live under a key each, compressed; the single key of earlier
    /// versions is moved to them; only the newest pending plan stays
    /// pending; no more than PLANS are kept.
    #[tokio::test]
    async fn plans_load_from_keys_of_their_own() {
        #![allow(clippy::unwrap_used)]
        let store = crate::store::MemoryStore::new();
        // The layout of earlier versions: every plan in one JSON value.
        let old = vec![entry(1, PlanStatus::Applied), entry(2, PlanStatus::Pending)];
        store
            .put(&key("lab", "plans"), serde_json::to_vec(&old).unwrap())
            .await
            .unwrap();
        // And one stored the new way, pending too, made after a crash
        // between two writes.
        let newer = entry(3, PlanStatus::Pending);
        let bytes = encode_plan(&newer).unwrap();
        assert!(
            bytes.len() * 10 < serde_json::to_vec(&newer).unwrap().len(),
            "compressed: {} bytes",
            bytes.len()
        );
        store.put(&plan_key("lab", 7), bytes).await.unwrap();
        let (plans, numbers) = load_plans(&store, "lab").await.unwrap();
        assert_eq!(numbers, [7, 8, 9]);
        let rollouts: Vec<u64> = plans.iter().map(|p| p.rollout).collect();
        assert_eq!(rollouts, [3, 1, 2]);
        let statuses: Vec<PlanStatus> = plans.iter().map(|p| p.status).collect();
        assert_eq!(
            statuses,
            [
                PlanStatus::Superseded,
                PlanStatus::Applied,
                PlanStatus::Pending
            ]
        );
        assert!(store.get(&key("lab", "plans")).await.unwrap().is_none());
        // Read again: the same, from the new keys alone.
        let (again, numbers) = load_plans(&store, "lab").await.unwrap();
        assert_eq!(numbers, [7, 8, 9]);
        assert_eq!(again[1], plans[1]);
        // Past PLANS, the oldest go, from the store too.
        for n in 10..10 + PLANS as u64 {
            let bytes = encode_plan(&entry(n, PlanStatus::Applied)).unwrap();
            store.put(&plan_key("lab", n), bytes).await.unwrap();
        }
        let (plans, numbers) = load_plans(&store, "lab").await.unwrap();
        assert_eq!(plans.len(), PLANS);
        assert_eq!(
            numbers.first(),
            Some(&(numbers[PLANS - 1] + 1 - PLANS as u64))
        );
        assert_eq!(store.list(&key("lab", "plan/")).await.unwrap().len(), PLANS);
        // An unreadable plan is left out, not fatal.
        store
            .put(&plan_key("lab", 100), b"garbage".to_vec())
            .await
            .unwrap();
        let (plans, _) = load_plans(&store, "lab").await.unwrap();
        assert_eq!(plans.len(), PLANS);
    }
}
