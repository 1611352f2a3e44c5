//! [`SiteHub`]: a site's end of the server↔agent link, between the
//! site's [`Runner`](crate::Runner) and the agents' HTTPS calls.
//!
//! The runner sees a [`SiteLink`] ([`RemoteSite`]): tasks go into the
//! hub's lease table, the model and the boot table are published, and
//! what agents sent is drained at each step. The agent routes see the
//! hub: the model and boot-table changes since a version, tasks leased
//! with an expiry and the fencing number, results and observations taken
//! once each.
//!
//! Idempotency, learned from Tinkerbell's lost acknowledgements:
//! - a result is taken only while its task is in the lease table; a late
//!   or repeated one is ignored and counted, never applied twice;
//! - observations are numbered by the agent's spool; the hub keeps, per
//!   agent and spool, the highest number it took, so a batch sent again
//!   is taken once;
//! - an agent is answered only once what it sent is committed (the
//!   runner's next step), so an acknowledged result or observation
//!   survives a server crash.
//!
//! Every decision takes `now`, and the hub does no I/O: the spool numbers
//! are written by the step that takes their observations, in its
//! transaction (see [`Inbound::writes`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use vaquero_ipxe::Current;
use vaquero_model::SiteModel;

use crate::act::{Task, TaskResult};
use crate::agent::Spooled;
use crate::agent::wire::{BootEntry, Lease, ModelDoc, TaskKey, Work, WorkRequest};
use crate::boot_state::current;
use crate::decide::Follower;
use crate::observe::Observation;
use crate::state::{HostState, SiteState};
use crate::store::{Store, TxnOp};
use crate::transport::{Inbound, SiteLink};

/// How a hub leases and waits.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// How long a task's lease lasts without a renewal.
    pub lease: Duration,
    /// With no call from any agent of the site for this long, no new host
    /// starts there.
    pub silence: Duration,
    /// The leader's fencing number, sent with every task (0 without HA).
    pub fencing: u64,
}

impl Default for HubConfig {
    /// Leases of 60 s; a site is held after 90 s of silence (three
    /// long-polls missed).
    fn default() -> Self {
        HubConfig {
            lease: Duration::from_secs(60),
            silence: Duration::from_secs(90),
            fencing: 0,
        }
    }
}

/// A task and who holds it, until when.
#[derive(Debug, Clone)]
struct Leased {
    task: Task,
    holder: Option<(String, Timestamp)>,
}

#[derive(Debug, Default)]
struct HubState {
    model: Option<Arc<ModelBlob>>,
    /// What each host boots, with the version that last changed it.
    boot: BTreeMap<String, (u64, Current)>,
    boot_version: u64,
    /// Agents below this version get the whole table (a new model).
    full_from: u64,
    tasks: BTreeMap<TaskKey, Leased>,
    inbound: Inbound,
    /// Per (agent, spool): the highest observation number taken.
    taken: HashMap<(String, String), u64>,
    /// The spools whose number changed since the last drain: stored in
    /// the step that takes their observations.
    marked: std::collections::BTreeSet<(String, String)>,
    /// When each agent last called.
    heard: HashMap<String, Timestamp>,
    /// Work long-polls waiting now, per agent: an agent waiting is heard.
    polling: HashMap<String, usize>,
    /// Steps drained so far; a caller waits until the one after its
    /// call is committed.
    drained: u64,
}

/// A model, serialized once for every agent that fetches it.
#[derive(Debug)]
pub struct ModelBlob {
    /// Its version: the ETag.
    pub version: String,
    /// [`ModelDoc`] as JSON.
    pub json: bytes::Bytes,
    /// The model.
    pub model: Arc<SiteModel>,
}

/// One site's end of the link to its agents.
pub struct SiteHub {
    site: String,
    config: HubConfig,
    /// A new boot table each restart: agents then take the whole table.
    epoch: String,
    state: Mutex<HubState>,
    /// Raised on every change an agent's long-poll waits for.
    changes: watch::Sender<u64>,
    /// The number of the last drained step that is committed.
    committed: watch::Sender<u64>,
    /// Raised when results or observations arrive: the site's loop steps
    /// at once rather than at its next tick, so an agent waits for one
    /// commit, not for a tick and a commit.
    arrived: tokio::sync::Notify,
}

impl std::fmt::Debug for SiteHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteHub")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

/// The number a spool's high-water mark is stored under.
fn spool_key(site: &str, agent: &str, spool: &str) -> String {
    format!("v1/agents/{site}/{agent}/spool/{spool}")
}

impl SiteHub {
    /// The hub of `site`, with the spool numbers taken before a restart
    /// read back from `store`.
    pub async fn open(
        site: &str,
        store: Arc<dyn Store>,
        config: HubConfig,
        now: Timestamp,
    ) -> Result<Arc<SiteHub>, crate::store::StoreFailure> {
        let mut state = HubState::default();
        let prefix = format!("v1/agents/{site}/");
        for kv in store.list(&prefix).await? {
            let rest = &kv.key[prefix.len()..];
            let (Some((agent, spool)), Some(n)) = (
                rest.split_once("/spool/"),
                std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|v| v.parse().ok()),
            ) else {
                continue;
            };
            state.taken.insert((agent.to_owned(), spool.to_owned()), n);
        }
        Ok(Arc::new(SiteHub {
            site: site.to_owned(),
            config,
            epoch: format!("{}", now.as_millisecond()),
            state: Mutex::new(state),
            changes: watch::channel(0).0,
            committed: watch::channel(0).0,
            arrived: tokio::sync::Notify::new(),
        }))
    }

    /// The site.
    pub fn site(&self) -> &str {
        &self.site
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding the lock leaves plain data: go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The site's model now, if there is one.
    pub fn site_model(&self) -> Option<Arc<SiteModel>> {
        self.lock().model.as_ref().map(|m| m.model.clone())
    }

    /// The model agents serve now, if there is one.
    pub fn model(&self) -> Option<Arc<ModelBlob>> {
        self.lock().model.clone()
    }

    /// Waits up to `wait` for a model whose version is not `have`.
    pub async fn model_after(&self, have: Option<&str>, wait: Duration) -> Option<Arc<ModelBlob>> {
        let mut rx = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(m) = self.model()
                && have != Some(m.version.as_str())
            {
                return Some(m);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// When each agent last called (since this server started).
    pub fn heard_at(&self) -> Vec<(String, Timestamp)> {
        let st = self.lock();
        st.heard.iter().map(|(a, t)| (a.clone(), *t)).collect()
    }

    /// `agent` called: the site is heard from.
    pub fn heard(&self, agent: &str, now: Timestamp) {
        self.lock().heard.insert(agent.to_owned(), now);
    }

    /// What `agent` should do now: the boot-table changes since its
    /// version, and tasks leased to it (free ones and ones whose lease
    /// expired). The leases of the tasks it says it is running are
    /// renewed. Empty when there is nothing new.
    pub fn work(&self, agent: &str, req: &WorkRequest, now: Timestamp) -> Work {
        let mut st = self.lock();
        st.heard.insert(agent.to_owned(), now);
        let until = now.checked_add(self.config.lease).unwrap_or(now);
        for k in &req.running {
            if let Some(l) = st.tasks.get_mut(k) {
                l.holder = Some((agent.to_owned(), until));
            }
        }
        let mut tasks = Vec::new();
        for l in st.tasks.values_mut() {
            let free = match &l.holder {
                None => true,
                Some((_, expires)) => *expires <= now,
            };
            if free {
                l.holder = Some((agent.to_owned(), until));
                tasks.push(Lease {
                    task: l.task.clone(),
                    expires: until,
                    fencing: self.config.fencing,
                });
            }
        }
        // Before any boot table, there is nothing to send whole.
        let full = (req.epoch != self.epoch || req.boot < st.full_from) && st.boot_version > 0;
        let changes = st
            .boot
            .iter()
            .filter(|(_, (v, _))| full || *v > req.boot)
            .map(|(host, (_, current))| BootEntry {
                host: host.clone(),
                current: current.clone(),
            })
            .collect();
        Work {
            boot: st.boot_version,
            epoch: self.epoch.clone(),
            full,
            changes,
            tasks,
        }
    }

    /// [`work`](Self::work), waiting up to `wait` while there is none.
    pub async fn work_wait(
        &self,
        agent: &str,
        req: &WorkRequest,
        wait: Duration,
        now: impl Fn() -> Timestamp,
    ) -> Work {
        /// Counts the long-poll while it waits.
        struct Polling<'a>(&'a SiteHub, &'a str);
        impl Drop for Polling<'_> {
            fn drop(&mut self) {
                let mut st = self.0.lock();
                if let Some(n) = st.polling.get_mut(self.1) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        *self.lock().polling.entry(agent.to_owned()).or_default() += 1;
        let _polling = Polling(self, agent);
        let mut rx = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            rx.borrow_and_update();
            let w = self.work(agent, req, now());
            if w.full || !w.changes.is_empty() || !w.tasks.is_empty() {
                return w;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return w;
            }
        }
    }

    /// Takes `results` from `agent`: a result whose task is in the lease
    /// table is taken (once); the rest are late or repeated and ignored.
    /// Returns the taken and ignored keys and the step to wait for.
    pub fn results(
        &self,
        agent: &str,
        results: Vec<TaskResult>,
        now: Timestamp,
    ) -> (Vec<TaskKey>, Vec<TaskKey>, u64) {
        let mut st = self.lock();
        st.heard.insert(agent.to_owned(), now);
        let (mut taken, mut ignored) = (Vec::new(), Vec::new());
        for r in results {
            let k = TaskKey::of_result(&r);
            if r.site == self.site && st.tasks.remove(&k).is_some() {
                st.inbound.results.push(r);
                taken.push(k);
            } else {
                metrics::counter!("vaquero_server_results_ignored_total").increment(1);
                ignored.push(k);
            }
        }
        let step = st.drained + 1;
        if !taken.is_empty() {
            self.arrived.notify_one();
        }
        (taken, ignored, step)
    }

    /// Takes the observations of `agent`'s `spool` numbered above what was
    /// taken before. Returns the highest number now taken and the step to
    /// wait for.
    pub fn observations(
        &self,
        agent: &str,
        spool: &str,
        items: Vec<Spooled>,
        now: Timestamp,
    ) -> (u64, u64) {
        let mut st = self.lock();
        st.heard.insert(agent.to_owned(), now);
        let key = (agent.to_owned(), spool.to_owned());
        let mut high = st.taken.get(&key).copied().unwrap_or(0);
        let mut fresh: Vec<Observation> = Vec::new();
        for s in items {
            if s.seq <= high {
                metrics::counter!("vaquero_server_observations_repeated_total").increment(1);
                continue;
            }
            high = s.seq;
            fresh.push(s.observation);
        }
        metrics::counter!("vaquero_server_observations_total").increment(fresh.len() as u64);
        if !fresh.is_empty() {
            self.arrived.notify_one();
            st.marked.insert(key.clone());
        }
        st.inbound.observations.extend(fresh);
        st.taken.insert(key, high);
        let step = st.drained + 1;
        (high, step)
    }

    /// Returns once results or observations arrived since the last call
    /// (at once if some did meanwhile).
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// Waits (up to `wait`) until step `step` is committed.
    pub async fn committed(&self, step: u64, wait: Duration) -> bool {
        let mut rx = self.committed.subscribe();
        tokio::time::timeout(wait, rx.wait_for(|c| *c >= step))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The number of tasks in the lease table.
    pub fn tasks(&self) -> usize {
        self.lock().tasks.len()
    }

    fn set_model(&self, model: &Arc<SiteModel>) {
        let doc = ModelDoc {
            version: model.version().to_owned(),
            model: model.clone(),
        };
        match serde_json::to_vec(&doc) {
            Ok(json) => {
                self.lock().model = Some(Arc::new(ModelBlob {
                    version: doc.version,
                    json: json.into(),
                    model: model.clone(),
                }));
                self.changed();
            }
            Err(e) => tracing::error!(site = %self.site, error = %e, "model not serialized"),
        }
    }

    fn set_boot(&self, model: &SiteModel, hosts: &mut dyn Iterator<Item = &HostState>, all: bool) {
        let mut st = self.lock();
        let version = st.boot_version + 1;
        let mut any = false;
        if all {
            st.boot.clear();
            st.full_from = version;
            any = true;
        }
        for h in hosts {
            let boot = model
                .by_name(&h.name)
                .and_then(|r| model.stage(r.host, h.stage));
            let c = current(h, boot);
            if st.boot.get(&h.name).is_some_and(|(_, old)| *old == c) {
                continue;
            }
            st.boot.insert(h.name.clone(), (version, c));
            any = true;
        }
        if any {
            st.boot_version = version;
            drop(st);
            self.changed();
        }
    }
}

impl Follower for SiteHub {
    fn load(&self, model: &SiteModel, state: &SiteState) {
        self.set_boot(model, &mut state.hosts.values(), true);
    }
    fn update(&self, model: &SiteModel, changed: &[HostState]) {
        self.set_boot(model, &mut changed.iter(), false);
    }
}

/// The runner's side of a [`SiteHub`].
#[derive(Debug, Clone)]
pub struct RemoteSite {
    hub: Arc<SiteHub>,
    /// The step drained last.
    drained: u64,
}

impl RemoteSite {
    /// The link through `hub`.
    pub fn new(hub: Arc<SiteHub>) -> Self {
        RemoteSite { hub, drained: 0 }
    }
}

impl SiteLink for RemoteSite {
    fn send_tasks(&mut self, tasks: Vec<Task>) {
        if tasks.is_empty() {
            return;
        }
        let mut st = self.hub.lock();
        for t in tasks {
            // A task sent again (after a restart) keeps its lease.
            st.tasks.entry(TaskKey::of(&t)).or_insert(Leased {
                task: t,
                holder: None,
            });
        }
        drop(st);
        self.hub.changed();
    }

    fn send_model(&mut self, model: Arc<SiteModel>) {
        self.hub.set_model(&model);
    }

    fn drain(&mut self) -> Inbound {
        let mut st = self.hub.lock();
        st.drained += 1;
        self.drained = st.drained;
        let mut inbound = std::mem::take(&mut st.inbound);
        // The spool numbers, in the transaction that takes what they
        // number: a restart takes no batch twice and loses none.
        for key in std::mem::take(&mut st.marked) {
            let high = st.taken.get(&key).copied().unwrap_or(0);
            inbound.writes.push(TxnOp::Put(
                spool_key(&self.hub.site, &key.0, &key.1),
                high.to_string().into_bytes(),
            ));
        }
        inbound
    }

    fn committed(&mut self) {
        let n = self.drained;
        self.hub.committed.send_modify(|c| *c = (*c).max(n));
    }

    fn hold(&self, now: Timestamp) -> Option<String> {
        let st = self.hub.lock();
        if st.polling.values().any(|n| *n > 0) {
            return None;
        }
        let last = st.heard.values().max().copied();
        match last {
            None => Some(format!(
                "no agent of site {} has called the server since it started",
                self.hub.site
            )),
            Some(t)
                if now.duration_since(t).is_positive()
                    && now.duration_since(t).unsigned_abs() > self.hub.config.silence =>
            {
                Some(format!(
                    "no agent of site {} heard from since {t} (more than {} s)",
                    self.hub.site,
                    self.hub.config.silence.as_secs()
                ))
            }
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::event::{Action, ActionKind, Outcome};
    use crate::observe::ObservationKind;

    fn task(host: &str, seq: u64) -> Task {
        Task {
            site: "s".into(),
            action: Action {
                host: host.into(),
                seq,
                rollout: Some(1),
                stage: 0,
                attempt: 1,
                kind: ActionKind::PowerCycle,
            },
        }
    }

    fn result(host: &str, seq: u64) -> TaskResult {
        TaskResult {
            site: "s".into(),
            host: host.into(),
            seq,
            outcome: Outcome::Ok {
                output: String::new(),
            },
            steps: Vec::new(),
            ended: Timestamp::UNIX_EPOCH,
        }
    }

    async fn hub(lease: u64) -> (Arc<SiteHub>, RemoteSite) {
        let config = HubConfig {
            lease: Duration::from_secs(lease),
            silence: Duration::from_secs(10),
            fencing: 7,
        };
        let store = Arc::new(crate::store::MemoryStore::new());
        let hub = SiteHub::open("s", store, config, Timestamp::UNIX_EPOCH)
            .await
            .unwrap();
        let link = RemoteSite::new(hub.clone());
        (hub, link)
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[tokio::test]
    async fn a_task_is_leased_once_until_its_lease_expires() {
        let (hub, mut link) = hub(60).await;
        link.send_tasks(vec![task("h1", 1)]);
        let req = WorkRequest::default();
        let w = hub.work("a", &req, at(100));
        assert_eq!(w.tasks.len(), 1);
        assert_eq!(w.tasks[0].fencing, 7);
        assert_eq!(w.tasks[0].expires, at(160));
        // Leased: neither this agent nor another gets it again.
        assert!(hub.work("a", &req, at(110)).tasks.is_empty());
        assert!(hub.work("b", &req, at(110)).tasks.is_empty());
        // Renewed by a poll that says it runs: still not leased again.
        let running = WorkRequest {
            running: vec![TaskKey {
                host: "h1".into(),
                seq: 1,
            }],
            ..WorkRequest::default()
        };
        assert!(hub.work("a", &running, at(150)).tasks.is_empty());
        assert!(hub.work("b", &req, at(200)).tasks.is_empty());
        // Unconfirmed past its lease: leased again.
        assert_eq!(hub.work("b", &req, at(211)).tasks.len(), 1);
        // Sent again (after a restart): one task still.
        link.send_tasks(vec![task("h1", 1)]);
        assert_eq!(hub.tasks(), 1);
    }

    #[tokio::test]
    async fn a_result_is_taken_once_and_a_late_one_ignored() {
        let (hub, mut link) = hub(60).await;
        link.send_tasks(vec![task("h1", 1)]);
        let (taken, ignored, _) = hub.results("a", vec![result("h1", 1)], at(1));
        assert_eq!((taken.len(), ignored.len()), (1, 0));
        // Repeated (a lost answer) or for a task never sent: ignored.
        let (taken, ignored, _) = hub.results("a", vec![result("h1", 1), result("h9", 3)], at(2));
        assert_eq!((taken.len(), ignored.len()), (0, 2));
        assert_eq!(link.drain().results.len(), 1);
        // A result for another site: ignored.
        link.send_tasks(vec![task("h2", 1)]);
        let mut other = result("h2", 1);
        other.site = "t".into();
        assert_eq!(hub.results("a", vec![other], at(3)).1.len(), 1);
    }

    #[tokio::test]
    async fn observations_sent_twice_are_taken_once_and_answered_after_commit() {
        let (hub, mut link) = hub(60).await;
        let obs = |seq: u64| Spooled {
            seq,
            observation: Observation {
                at: Timestamp::UNIX_EPOCH,
                host: "h1".into(),
                attempt: Some(1),
                kind: ObservationKind::Checkpoint,
                ok: true,
                detail: String::new(),
            },
        };
        let (high, step) = hub.observations("a", "sp", vec![obs(1), obs(2)], at(1));
        assert_eq!((high, step), (2, 1));
        let (high, _) = hub.observations("a", "sp", vec![obs(2), obs(3)], at(1));
        assert_eq!(high, 3);
        // Another spool of the same agent numbers from 1 again.
        let (high, _) = hub.observations("a", "sp2", vec![obs(1)], at(1));
        assert_eq!(high, 1);
        assert!(!hub.committed(step, Duration::from_millis(10)).await);
        let inbound = link.drain();
        assert_eq!(inbound.observations.len(), 4);
        // The drain's writes store each spool's number once, with the
        // step that takes them.
        assert_eq!(inbound.writes.len(), 2);
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        store.txn(Vec::new(), inbound.writes).await.unwrap();
        link.committed();
        assert!(hub.committed(step, Duration::from_millis(10)).await);
        assert!(
            link.drain().writes.is_empty(),
            "nothing new, nothing written"
        );
        // The numbers survive a restart once stored.
        let again = SiteHub::open("s", store, hub.config, at(5)).await.unwrap();
        let (high, _) = again.observations("a", "sp", vec![obs(3)], at(6));
        assert_eq!(high, 3);
        assert!(RemoteSite::new(again).drain().observations.is_empty());
    }

    #[tokio::test]
    async fn a_site_is_held_until_heard_and_after_silence() {
        let (hub, link) = hub(60).await;
        assert!(link.hold(at(1)).is_some());
        hub.heard("a", at(1));
        assert_eq!(link.hold(at(5)), None);
        assert!(link.hold(at(12)).is_some());
    }
}
