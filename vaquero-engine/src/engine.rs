//! The pure state engine: `(model, stored state, events, now) → (actions,
//! changed state)`. No I/O, no clock: everything it needs is an argument,
//! so it is tested exhaustively and simulated on a virtual clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use vaquero_model::SiteModel;

use crate::event::{Action, ActionKind, Event, EventKind, JobPhase, JobSpec, Notice, Outcome};
use crate::plan::{Plan, PlanAction};
use crate::policy::{self, Decision, Policy, PolicyCtx, Stats, WorkflowStats};
use crate::state::{Approval, HostState, Pending, Phase, Requested, Rollout, SiteState};

/// Timeouts and retry bounds of the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EngineConfig {
    /// How long a power or boot-device operation may go without an outcome
    /// before it is tried again.
    pub power_timeout: Duration,
    /// Tries of a power or boot-device operation (or a job) that fails
    /// transiently (unreachable, busy, no answer).
    pub action_tries: u32,
    /// Wait before trying a transiently failed operation again.
    pub retry_backoff: Duration,
    /// From the power cycle to the host fetching its script.
    pub netboot_timeout: Duration,
    /// From the script to the checkpoint.
    pub install_timeout: Duration,
    /// Boots of one stage before the host fails.
    pub boot_tries: u32,
    /// A job's timeout when the SoT sets none.
    pub job_timeout: Duration,
    /// Added to a job's own time bound before its outcome counts as lost.
    pub job_grace: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            power_timeout: Duration::from_secs(300),
            action_tries: 5,
            retry_backoff: Duration::from_secs(30),
            netboot_timeout: Duration::from_secs(15 * 60),
            install_timeout: Duration::from_secs(3 * 3600),
            boot_tries: 3,
            job_timeout: Duration::from_secs(600),
            job_grace: Duration::from_secs(60),
        }
    }
}

/// The engine could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineFailure {
    /// The site's policy does not make sense (bad window, unknown zone).
    #[error("site policy: {0}")]
    Policy(String),
    /// The plan is for another model or site.
    #[error("plan mismatch: {0}")]
    PlanMismatch(String),
    /// No such rollout to approve.
    #[error("no rollout {0} waiting for approval")]
    NoSuchRollout(u64),
    /// A reprovision named a host the site does not have.
    #[error("no host named `{host}` in site `{site}`")]
    UnknownHost {
        /// The host named.
        host: String,
        /// The site.
        site: String,
    },
    /// A reprovision named a host that is never provisioned.
    #[error("host `{0}` is never_provision: it is never reprovisioned")]
    NeverProvision(String),
}

/// Kept here too, where it was first defined; it lives in [`crate::state`].
pub use crate::state::Step;

/// The engine of one site and one model.
#[derive(Debug, Clone)]
pub struct Engine {
    model: Arc<SiteModel>,
    policies: Vec<Arc<dyn Policy>>,
    tz: TimeZone,
    config: EngineConfig,
}

fn elapsed(now: Timestamp, since: Timestamp) -> Duration {
    let ms = now.as_millisecond() - since.as_millisecond();
    Duration::from_millis(ms.max(0) as u64)
}

impl Engine {
    /// An engine for `model` with the SoT's built-in policies.
    pub fn new(model: Arc<SiteModel>, config: EngineConfig) -> Result<Self, EngineFailure> {
        let site = model.site();
        let policies = policy::builtin(site).map_err(EngineFailure::Policy)?;
        let tz = policy::site_tz(site).map_err(EngineFailure::Policy)?;
        Ok(Engine {
            model,
            policies,
            tz,
            config,
        })
    }

    /// Adds a policy of the user's.
    pub fn with_policy(mut self, p: Arc<dyn Policy>) -> Self {
        self.policies.push(p);
        self
    }

    /// The model.
    pub fn model(&self) -> &Arc<SiteModel> {
        &self.model
    }

    /// The config.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The plan from `old` to this engine's model, given `state`.
    pub fn plan(&self, old: Option<&SiteModel>, state: &SiteState) -> Plan {
        crate::plan::plan_with_state(old, &self.model, Some(state))
    }

    /// Starts carrying out `plan` (made for this model): a new rollout,
    /// approved at once when the site says `auto_apply`, otherwise
    /// waiting for [`approve`](Self::approve).
    pub fn start(
        &self,
        state: &SiteState,
        plan: &Plan,
        now: Timestamp,
    ) -> Result<Step, EngineFailure> {
        if plan.to != self.model.version() || plan.site != self.model.site().id {
            return Err(EngineFailure::PlanMismatch(format!(
                "plan is for {} {}, the engine runs {} {}",
                plan.site,
                plan.to,
                self.model.site().id,
                self.model.version()
            )));
        }
        let id = state.rollout.as_ref().map_or(1, |r| r.id + 1);
        let rollout = Rollout {
            id,
            from: plan.from.clone(),
            to: plan.to.clone(),
            revision: plan.revision.clone(),
            created: now,
            approval: if plan.auto_apply {
                Approval::Auto
            } else {
                Approval::Pending
            },
        };
        let mut step = Step {
            rollout: Some(rollout),
            ..Step::default()
        };
        for hp in &plan.hosts {
            if hp.action == PlanAction::Removed {
                if state.hosts.contains_key(&hp.name) {
                    step.removed.push(hp.name.clone());
                }
                continue;
            }
            let old = state.hosts.get(&hp.name);
            let mut h = old
                .cloned()
                .unwrap_or_else(|| HostState::new(&hp.name, &hp.workflow, now));
            h.workflow.clone_from(&hp.workflow);
            let in_flight = h.phase.in_flight();
            match hp.action {
                PlanAction::Skip => {
                    if !in_flight {
                        h.phase = Phase::Skipped;
                        h.reason = Some("never_provision".into());
                        h.requested = None;
                    }
                }
                PlanAction::Reprovision => {
                    h.rollout = Some(id);
                    if !in_flight {
                        h.phase = Phase::Queued;
                        h.since = now;
                        h.reason = None;
                    }
                }
                PlanAction::New if hp.rebooted() || plan.force_provision => {
                    h.rollout = Some(id);
                    if !in_flight {
                        h.phase = Phase::Queued;
                        h.since = now;
                        h.reason = None;
                    }
                }
                PlanAction::New => {
                    if !in_flight {
                        h.rollout = Some(id);
                        h.phase = Phase::Waiting;
                        h.since = now;
                        h.stage = 0;
                        h.boots = 0;
                        h.attempt += 1;
                        h.reason = Some("new host: provisioned when it netboots".into());
                    }
                }
                PlanAction::Unchanged => {
                    // Carried along: in-flight and waiting hosts go on
                    // under the new rollout; settled ones stay.
                    if in_flight || h.phase == Phase::Waiting {
                        h.rollout = Some(id);
                    } else if matches!(h.phase, Phase::Queued | Phase::Halted)
                        && h.requested.is_none()
                        && h.version.as_deref() == Some(plan.to.as_str())
                    {
                        // Queued (or halted before it started) by an
                        // earlier rollout but already running this very
                        // version (a revert): nothing to do.
                        h.phase = Phase::Done;
                        h.since = now;
                        h.reason = None;
                    }
                }
                PlanAction::Removed => {}
            }
            if old != Some(&h) {
                step.hosts.push(h);
            }
        }
        Ok(step)
    }

    /// An operator's reprovision of `hosts`: each is queued at once with
    /// a [`Requested`] mark, so it may start whether or not the site's
    /// rollout is approved, under its workflow's policies (the reboot
    /// windows too, unless `skip_windows`). The rollout itself is left
    /// as it is: a plan that waits for approval keeps waiting. Hosts in
    /// flight are left to finish what they do. Returns the step to commit
    /// and the plan that lists exactly the hosts named.
    pub fn reprovision(
        &self,
        state: &SiteState,
        hosts: &[String],
        skip_windows: bool,
        now: Timestamp,
    ) -> Result<(Step, Plan), EngineFailure> {
        let mut names: Vec<&str> = hosts.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let mut step = Step::default();
        for &name in &names {
            let Some(r) = self.model.by_name(name) else {
                return Err(EngineFailure::UnknownHost {
                    host: name.to_owned(),
                    site: self.model.site().id.clone(),
                });
            };
            if r.host.never_provision {
                return Err(EngineFailure::NeverProvision(name.to_owned()));
            }
            let old = state.hosts.get(name);
            let mut h = old
                .cloned()
                .unwrap_or_else(|| HostState::new(name, &r.host.workflow, now));
            h.workflow.clone_from(&r.host.workflow);
            if h.phase.in_flight() {
                continue;
            }
            h.phase = Phase::Queued;
            h.since = now;
            h.tries = 0;
            h.pending = None;
            h.reason = None;
            h.requested = Some(Requested {
                at: now,
                skip_windows,
            });
            if old != Some(&h) {
                step.hosts.push(h);
            }
        }
        let plan = crate::plan::reprovision_plan(&self.model, &names, state, skip_windows);
        Ok((step, plan))
    }

    /// Approves the waiting rollout `id`.
    pub fn approve(&self, state: &SiteState, id: u64) -> Result<Step, EngineFailure> {
        match &state.rollout {
            Some(r) if r.id == id && r.approval == Approval::Pending => {
                let mut r = r.clone();
                r.approval = Approval::Approved;
                Ok(Step {
                    rollout: Some(r),
                    ..Step::default()
                })
            }
            _ => Err(EngineFailure::NoSuchRollout(id)),
        }
    }

    /// After a restart: the actions the stored state says were issued but
    /// whose outcome never arrived, issued again with the same sequence
    /// numbers (an outcome that was acknowledged is never asked for again).
    pub fn resume(&self, state: &SiteState) -> Vec<Action> {
        let mut out = Vec::new();
        for h in state.hosts.values() {
            if let Some(p) = &h.pending
                && let Ok(Some(kind)) = self.action_kind(h)
            {
                out.push(self.action(h, p.seq, kind));
            }
        }
        out
    }

    /// One step: apply `events`, check timeouts, admit queued hosts under
    /// the policies, and say what to do next.
    pub fn step(&self, state: &SiteState, events: &[Event], now: Timestamp) -> Step {
        let mut w = Work {
            engine: self,
            state,
            now,
            changed: BTreeMap::new(),
            actions: Vec::new(),
            ignored: 0,
        };
        for e in events {
            w.event(e);
        }
        // Timeouts, retries after backoff, and hosts whose next action is
        // due (a step that just finished, a window that opened).
        for (name, h) in &state.hosts {
            if !w.changed.contains_key(name.as_str()) && w.due(h) {
                w.changed.insert(name, h.clone());
            }
        }
        // `drive` touches no host but the one it is given.
        let mut changed = std::mem::take(&mut w.changed);
        for h in changed.values_mut() {
            w.drive(h);
        }
        w.changed = changed;
        w.admit();
        let Work {
            changed,
            actions,
            ignored,
            ..
        } = w;
        let hosts = changed
            .into_iter()
            .filter(|(n, h)| state.hosts.get(*n) != Some(h))
            .map(|(_, h)| h)
            .collect();
        Step {
            actions,
            hosts,
            removed: Vec::new(),
            rollout: None,
            ignored,
        }
    }

    /// Per-workflow counts of `state` for the current rollout.
    pub fn stats(&self, state: &SiteState) -> HashMap<String, WorkflowStats> {
        let rollout = state.rollout.as_ref().map(|r| r.id);
        let workflows = &self.model.data().workflows;
        let mut stats: Stats<'_> = HashMap::new();
        for h in state.hosts.values() {
            if let Some((wid, _)) = workflows.get_key_value(&h.workflow) {
                stats.entry(wid.as_str()).or_default().add(h, rollout);
            }
        }
        stats.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    fn boot_of(&self, h: &HostState) -> Option<&str> {
        let r = self.model.by_name(&h.name)?;
        self.model.stage(r.host, h.stage)
    }

    fn stage_count(&self, h: &HostState) -> usize {
        self.model
            .by_name(&h.name)
            .map_or(0, |r| self.model.stage_count(r.host))
    }

    /// Job `index` of `phase` of `boot` for host `h`, rendered (only that
    /// one: a job is rendered when it is issued).
    fn job(
        &self,
        h: &HostState,
        boot: &str,
        phase: JobPhase,
        index: usize,
    ) -> Result<Option<JobSpec>, String> {
        let Some(r) = self.model.by_name(&h.name) else {
            return Ok(None);
        };
        if !self.model.data().boots.contains_key(boot) {
            // A boot gone from the SoT (the one a host is leaving) has no
            // jobs left to run.
            return Ok(None);
        }
        let bs = phase == JobPhase::BeforeShutdown;
        let ctx = self.model.context(r, boot, None);
        let job = self
            .model
            .render_job(boot, bs, index, &ctx)
            .map_err(|e| format!("rendering the jobs of {boot}: {e}"))?;
        let target = r.host.primary_interface().map(|i| i.ipv4.to_string());
        Ok(job.map(|j| JobSpec::new(j, self.config.job_timeout, target)))
    }

    /// The boot whose `before_shutdown` jobs run while draining: the one
    /// the host is leaving.
    fn leaving(h: &HostState) -> Option<&str> {
        h.installed.as_deref()
    }

    /// How many jobs of `phase` `boot` has (no rendering).
    fn job_count(&self, boot: &str, phase: JobPhase) -> usize {
        self.model
            .data()
            .boots
            .get(boot)
            .map_or(0, |b| match phase {
                JobPhase::BeforeShutdown => b.before_shutdown.len(),
                JobPhase::Validate => b.validate.len(),
            })
    }

    /// The boot and job list the host's phase works through, if any.
    fn job_list<'h>(&'h self, h: &'h HostState) -> Option<(&'h str, JobPhase)> {
        match h.phase {
            Phase::Draining => Some((Self::leaving(h)?, JobPhase::BeforeShutdown)),
            Phase::Validating => Some((self.boot_of(h)?, JobPhase::Validate)),
            _ => None,
        }
    }

    /// The action the host's phase calls for (ignoring whether one is
    /// pending). `Ok(None)`: nothing to do in this phase; `Err`: a job
    /// does not render.
    fn action_kind(&self, h: &HostState) -> Result<Option<ActionKind>, String> {
        match h.phase {
            Phase::SetBoot => Ok(Some(ActionKind::SetBootNetwork)),
            Phase::PowerCycle => Ok(Some(ActionKind::PowerCycle)),
            _ => {
                let Some((boot, phase)) = self.job_list(h) else {
                    return Ok(None);
                };
                let job = self.job(h, boot, phase, h.job)?;
                Ok(job.map(|job| ActionKind::RunJob {
                    phase,
                    boot: boot.to_owned(),
                    index: h.job,
                    job,
                }))
            }
        }
    }

    fn action(&self, h: &HostState, seq: u64, kind: ActionKind) -> Action {
        Action {
            host: h.name.clone(),
            seq,
            rollout: h.rollout,
            stage: h.stage,
            attempt: h.attempt,
            kind,
        }
    }

    /// How long an action may go without an outcome.
    fn outcome_timeout(&self, kind: &ActionKind) -> Duration {
        match kind {
            ActionKind::RunJob { job, .. } => {
                job.timeout() * (job.retries() + 1) + self.config.job_grace
            }
            _ => self.config.power_timeout,
        }
    }
}

/// One step's scratch space.
struct Work<'a> {
    engine: &'a Engine,
    state: &'a SiteState,
    now: Timestamp,
    /// Hosts touched in this step, keyed by the name in `state`.
    changed: BTreeMap<&'a str, HostState>,
    actions: Vec<Action>,
    ignored: usize,
}

impl<'a> Work<'a> {
    /// Takes `name`'s state out to work on (its latest in this step);
    /// put it back with `self.changed.insert(key, h)`.
    fn take(&mut self, name: &str) -> Option<(&'a str, HostState)> {
        if let Some(kv) = self.changed.remove_entry(name) {
            return Some(kv);
        }
        let (k, h) = self.state.hosts.get_key_value(name)?;
        Some((k.as_str(), h.clone()))
    }

    fn notice(&mut self, h: &HostState, n: Notice) {
        self.actions
            .push(self.engine.action(h, 0, ActionKind::Notice(n)));
    }

    fn enter(&mut self, h: &mut HostState, phase: Phase) {
        h.phase = phase;
        h.since = self.now;
        h.tries = 0;
        h.pending = None;
    }

    fn fail(&mut self, h: &mut HostState, reason: String) {
        self.enter(h, Phase::Failed);
        h.requested = None;
        h.down = true;
        h.version = None;
        h.reason = Some(reason.clone());
        self.notice(h, Notice::Failed { reason });
    }

    /// A new boot of the current stage.
    fn boot(&mut self, h: &mut HostState) {
        h.attempt += 1;
        h.boots += 1;
        self.enter(h, Phase::SetBoot);
    }

    /// The current boot is lost: boot again, or fail.
    fn reboot(&mut self, h: &mut HostState, why: String) {
        if h.boots >= self.engine.config.boot_tries {
            let reason = format!("stage {}: {why}, after {} boots", h.stage, h.boots);
            self.fail(h, reason);
        } else {
            self.notice(h, Notice::Retry { reason: why });
            self.boot(h);
        }
    }

    fn event(&mut self, e: &Event) {
        let Some((key, mut h)) = self.take(&e.host) else {
            self.ignored += 1;
            return;
        };
        // Events of an earlier attempt are stale; a script can come before
        // the outcome of the power cycle (or even of the boot-device
        // change) that caused it. The boot service already refused
        // checkpoints of attempts it knew were stale (answering the
        // installer); this is the check against the authoritative state,
        // for every event, however late an agent's spool delivers it.
        let current = |a: u64, h: &HostState| {
            a == h.attempt && (h.phase.booting() || h.phase == Phase::SetBoot)
        };
        match &e.kind {
            EventKind::Dhcp | EventKind::Tftp => {
                // DHCP and TFTP carry no attempt: only a host waiting to
                // boot by itself learns anything from them.
                if h.phase == Phase::Waiting {
                    self.enter(&mut h, Phase::Netbooting);
                    h.boots = 1;
                    self.notice(&h, Notice::Started);
                } else {
                    self.ignored += 1;
                }
            }
            EventKind::Script { attempt } if current(*attempt, &h) => {
                if matches!(
                    h.phase,
                    Phase::Waiting | Phase::SetBoot | Phase::PowerCycle | Phase::Netbooting
                ) {
                    if h.phase == Phase::Waiting {
                        h.boots = 1;
                        self.notice(&h, Notice::Started);
                    }
                    let has_config = self
                        .engine
                        .boot_of(&h)
                        .and_then(|b| self.engine.model.data().boots.get(b))
                        .is_some_and(|b| b.unattended.is_some());
                    let next = if has_config {
                        Phase::Installing
                    } else {
                        Phase::AwaitingCheckpoint
                    };
                    self.enter(&mut h, next);
                }
            }
            EventKind::Config { attempt } if current(*attempt, &h) => {
                if h.phase != Phase::AwaitingCheckpoint {
                    if h.phase == Phase::Waiting {
                        h.boots = 1;
                        self.notice(&h, Notice::Started);
                    }
                    self.enter(&mut h, Phase::AwaitingCheckpoint);
                }
            }
            EventKind::Checkpoint { attempt } if current(*attempt, &h) => {
                if h.phase == Phase::Waiting {
                    h.boots = 1;
                    self.notice(&h, Notice::Started);
                }
                self.enter(&mut h, Phase::Validating);
                h.job = 0;
                h.job_failures = 0;
            }
            EventKind::Result { seq, outcome } => {
                if h.pending.as_ref().map(|p| p.seq) != Some(*seq) {
                    self.ignored += 1;
                } else {
                    h.pending = None;
                    self.result(&mut h, outcome);
                }
            }
            _ => self.ignored += 1,
        }
        self.changed.insert(key, h);
    }

    fn result(&mut self, h: &mut HostState, outcome: &Outcome) {
        let cfg = &self.engine.config;
        match outcome {
            Outcome::Ok { .. } => match h.phase {
                Phase::Draining => {
                    h.job += 1;
                    h.tries = 0;
                }
                Phase::SetBoot => self.enter(h, Phase::PowerCycle),
                Phase::PowerCycle => self.enter(h, Phase::Netbooting),
                Phase::Validating => {
                    h.job += 1;
                    h.tries = 0;
                }
                _ => {}
            },
            Outcome::Failed { transient, message } => {
                let what = match h.phase {
                    Phase::Draining => format!("before_shutdown job {}", h.job),
                    Phase::Validating => format!("validate job {}", h.job),
                    p => p.to_string(),
                };
                if *transient && h.tries < cfg.action_tries {
                    // Tried again after the backoff (see `due`).
                    h.since = self.now;
                } else if h.phase == Phase::Validating {
                    h.job_failures += 1;
                    h.job += 1;
                    h.tries = 0;
                } else {
                    self.fail(h, format!("{what} failed: {message}"));
                }
            }
        }
    }

    /// Whether an unchanged host needs looking at now.
    fn due(&self, h: &HostState) -> bool {
        let cfg = &self.engine.config;
        let age = elapsed(self.now, h.since);
        if let Some(p) = &h.pending {
            return self.now >= p.deadline;
        }
        match h.phase {
            Phase::Draining | Phase::SetBoot | Phase::PowerCycle | Phase::Validating => {
                h.tries == 0 || age >= cfg.retry_backoff
            }
            Phase::Netbooting => age >= cfg.netboot_timeout,
            Phase::Installing | Phase::AwaitingCheckpoint => age >= cfg.install_timeout,
            _ => false,
        }
    }

    /// Moves `h` on as far as it goes without an outside answer.
    fn drive(&mut self, h: &mut HostState) {
        let cfg = self.engine.config;
        for _ in 0..8 {
            if let Some(p) = &h.pending {
                if self.now < p.deadline {
                    return;
                }
                // No outcome in time: as good as a transient failure.
                let msg = format!("no outcome of {} in time", h.phase);
                h.pending = None;
                self.result(h, &Outcome::failed(true, msg));
                continue;
            }
            if h.tries > 0 && elapsed(self.now, h.since) < cfg.retry_backoff {
                return;
            }
            match h.phase {
                Phase::Netbooting if elapsed(self.now, h.since) >= cfg.netboot_timeout => {
                    self.reboot(h, "no netboot in time".into());
                    continue;
                }
                Phase::Installing | Phase::AwaitingCheckpoint
                    if elapsed(self.now, h.since) >= cfg.install_timeout =>
                {
                    self.reboot(h, "no checkpoint in time".into());
                    continue;
                }
                Phase::Draining => {
                    let count = Engine::leaving(h)
                        .map_or(0, |b| self.engine.job_count(b, JobPhase::BeforeShutdown));
                    if h.job >= count {
                        self.boot(h);
                        continue;
                    }
                }
                Phase::Validating => {
                    if let Some(b) = self.engine.boot_of(h) {
                        let count = self.engine.job_count(b, JobPhase::Validate);
                        if h.job >= count {
                            let b = b.to_owned();
                            if h.job_failures > 0 {
                                let reason = format!(
                                    "stage {} ({b}): {} of {count} validate jobs failed",
                                    h.stage, h.job_failures
                                );
                                self.fail(h, reason);
                            } else {
                                self.stage_done(h, b);
                            }
                            continue;
                        }
                    }
                }
                Phase::PowerCycle if h.stage == 0 && h.boots <= 1 => {
                    if let Decision::Wait(why) = self.power_allowed(h) {
                        if h.reason.as_deref() != Some(&why) {
                            h.reason = Some(why);
                        }
                        return;
                    }
                    h.reason = None;
                }
                _ => {}
            }
            let kind = match self.engine.action_kind(h) {
                Ok(Some(kind)) => kind,
                Ok(None) => return,
                Err(e) => {
                    self.fail(h, e);
                    return;
                }
            };
            {
                h.seq += 1;
                h.tries += 1;
                let wait = self.engine.outcome_timeout(&kind);
                h.pending = Some(Pending {
                    seq: h.seq,
                    issued: self.now,
                    deadline: self.now.checked_add(wait).unwrap_or(jiff::Timestamp::MAX),
                });
                let a = self.engine.action(h, h.seq, kind);
                self.actions.push(a);
            }
            return;
        }
    }

    fn stage_done(&mut self, h: &mut HostState, boot: String) {
        h.installed = Some(boot.clone());
        self.notice(h, Notice::StageDone { boot });
        if h.stage + 1 < self.engine.stage_count(h) {
            h.stage += 1;
            h.boots = 0;
            h.job = 0;
            self.enter(h, Phase::Draining);
        } else {
            self.enter(h, Phase::Done);
            h.reason = None;
            h.requested = None;
            h.version = Some(self.engine.model.version().to_owned());
            h.down = false;
            self.notice(h, Notice::Done);
        }
    }

    fn ctx<'b>(
        &self,
        workflow: &'b vaquero_model::types::Workflow,
        stats: &'b Stats<'b>,
    ) -> PolicyCtx<'b>
    where
        Self: 'b,
    {
        PolicyCtx {
            now: self.now,
            site: self.engine.model.site(),
            tz: &self.engine.tz,
            workflow,
            stats,
            workflows: &self.engine.model.data().workflows,
        }
    }

    fn power_allowed(&self, h: &HostState) -> Decision {
        let Some(wf) = self.engine.model.data().workflows.get(&h.workflow) else {
            return Decision::Allow;
        };
        let stats = HashMap::new();
        let ctx = self.ctx(wf, &stats);
        for p in &self.engine.policies {
            if let d @ Decision::Wait(_) = p.allow_power(&ctx, h) {
                return d;
            }
        }
        Decision::Allow
    }

    /// Halts and admissions of queued hosts.
    fn admit(&mut self) {
        let state = self.state;
        let engine = self.engine;
        let workflows = &engine.model.data().workflows;
        let rollout = state.rollout.as_ref();
        let rid = rollout.map(|r| r.id);
        // Counts over the state with this step's changes, keyed by the
        // model's workflow ids (no allocation per host).
        let mut stats: Stats<'_> = HashMap::new();
        // Queued hosts per workflow, down ones first (taking one does not
        // lower the hosts up), each part by name; with each, whether an
        // operator asked for it (it needs no approval).
        type Queue<'q> = Vec<(&'q str, bool)>;
        let mut queued: BTreeMap<&str, (Queue<'_>, Queue<'_>)> = BTreeMap::new();
        // Both maps are sorted by name and `changed` ⊆ `state`: a merge
        // instead of a lookup per host.
        let mut touched = self.changed.iter().peekable();
        for (name, h) in &state.hosts {
            let h = match touched.peek() {
                Some((k, c)) if **k == name.as_str() => {
                    let c = *c;
                    touched.next();
                    c
                }
                _ => h,
            };
            let Some((wid, _)) = workflows.get_key_value(&h.workflow) else {
                continue;
            };
            stats.entry(wid.as_str()).or_default().add(h, rid);
            if h.phase == Phase::Queued {
                let (down, up) = queued.entry(wid.as_str()).or_default();
                if h.down { down } else { up }.push((name.as_str(), h.requested.is_some()));
            }
        }
        if queued.is_empty() {
            return;
        }
        let approved = rollout.is_some_and(|r| r.approved());
        for (wid, (mut names, up)) in queued {
            names.extend(up);
            let Some(wf) = workflows.get(wid) else {
                continue;
            };
            let halt = {
                let ctx = self.ctx(wf, &stats);
                engine.policies.iter().find_map(|p| p.halt(&ctx))
            };
            if let Some(reason) = halt {
                for (n, _) in &names {
                    if let Some((key, mut h)) = self.take(n) {
                        self.enter(&mut h, Phase::Halted);
                        h.requested = None;
                        h.reason = Some(reason.clone());
                        self.notice(
                            &h,
                            Notice::Halted {
                                reason: reason.clone(),
                            },
                        );
                        if let Some(s) = stats.get_mut(wid) {
                            s.queued -= 1;
                            s.halted += 1;
                        }
                        self.changed.insert(key, h);
                    }
                }
                continue;
            }
            // Without approval, only the hosts an operator named start.
            for (n, requested) in &names {
                if !approved && !requested {
                    continue;
                }
                let Some((key, mut h)) = self.take(n) else {
                    continue;
                };
                let verdict = {
                    let ctx = self.ctx(wf, &stats);
                    engine
                        .policies
                        .iter()
                        .map(|p| p.admit(&ctx, &h))
                        .find(|d| *d != Decision::Allow)
                };
                if let Some(Decision::Wait(why)) = verdict {
                    if h.reason.as_deref() != Some(&why) {
                        h.reason = Some(why);
                    }
                    self.changed.insert(key, h);
                    // Hosts of one workflow wait for the same reasons.
                    break;
                }
                h.reason = None;
                h.stage = 0;
                h.job = 0;
                h.boots = 0;
                h.job_failures = 0;
                self.enter(&mut h, Phase::Draining);
                self.notice(&h, Notice::Started);
                if let Some(s) = stats.get_mut(wid) {
                    s.queued -= 1;
                    s.in_flight += 1;
                    if h.down {
                        // Counted in flight now, not down.
                        s.failed -= 1;
                    }
                }
                self.drive(&mut h);
                self.changed.insert(key, h);
            }
        }
    }
}
