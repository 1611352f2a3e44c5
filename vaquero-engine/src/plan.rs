//! Plans: what a new model revision will do to each host of a site, in
//! which batches.
//!
//! A plan is made from the [diff](fn@vaquero_model::diff) of the old and new
//! model (no old model: every host is new). Each host gets an action:
//!
//! | action        | when                                                   |
//! |---------------|--------------------------------------------------------|
//! | `reprovision` | what it installs changed (workflow, stages, rendered kernel, initrds, cmdline, unattended config), or an earlier rollout left it unfinished |
//! | `new`         | not in the old model; rebooted only with the site's `force_provision`, otherwise provisioned when it netboots by itself |
//! | `unchanged`   | nothing to install changed (reasons list in-place changes such as metadata no template reads) |
//! | `skip`        | `never_provision`: never touched, whatever changed     |
//! | `removed`     | only in the old model; left as it is                   |
//!
//! Batches estimate the order under the workflow policies assuming every
//! host takes as long and nothing fails: batch 1 starts at once, batch 2
//! when batch 1 is done, and so on. `max_concurrent`, `min_standing` and
//! `block_deps` shape them; reboot windows and failures only delay them.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;
use vaquero_model::SiteModel;

use crate::policy::{WorkflowStats, dependency_need};
use crate::state::{HostState, Phase, SiteState};

/// What a plan does to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    /// Reinstalled.
    Reprovision,
    /// New in the SoT.
    New,
    /// Nothing to install changed.
    Unchanged,
    /// `never_provision`.
    Skip,
    /// Gone from the SoT.
    Removed,
}

impl PlanAction {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanAction::Reprovision => "reprovision",
            PlanAction::New => "new",
            PlanAction::Unchanged => "unchanged",
            PlanAction::Skip => "skip",
            PlanAction::Removed => "removed",
        }
    }
}

/// One host in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPlan {
    /// The host's name.
    pub name: String,
    /// Its site.
    pub site: String,
    /// Its workflow (the new one; the old one for removed hosts).
    pub workflow: String,
    /// What happens to it.
    pub action: PlanAction,
    /// Why, one line each.
    pub reasons: Vec<String>,
    /// The batch it is expected in (1-based); `None` when it is not
    /// rebooted by the rollout.
    pub batch: Option<usize>,
}

impl HostPlan {
    /// `h` of site `site` with `action` and `reasons`, in no batch yet.
    fn unbatched(
        site: &str,
        h: &vaquero_model::types::Host,
        action: PlanAction,
        reasons: Vec<String>,
    ) -> Self {
        HostPlan {
            name: h.name.clone(),
            site: site.to_owned(),
            workflow: h.workflow.clone(),
            action,
            reasons,
            batch: None,
        }
    }

    /// Whether the rollout reboots the host.
    pub fn rebooted(&self) -> bool {
        self.batch.is_some()
    }
}

/// How many hosts get each action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Reprovisioned.
    pub reprovision: usize,
    /// New.
    pub new: usize,
    /// Unchanged.
    pub unchanged: usize,
    /// Skipped.
    pub skip: usize,
    /// Removed.
    pub removed: usize,
    /// Hosts the rollout reboots.
    pub rebooted: usize,
}

impl Summary {
    /// The counts of `hosts`.
    fn of(hosts: &[HostPlan]) -> Summary {
        let mut s = Summary::default();
        for h in hosts {
            match h.action {
                PlanAction::Reprovision => s.reprovision += 1,
                PlanAction::New => s.new += 1,
                PlanAction::Unchanged => s.unchanged += 1,
                PlanAction::Skip => s.skip += 1,
                PlanAction::Removed => s.removed += 1,
            }
            if h.batch.is_some() {
                s.rebooted += 1;
            }
        }
        s
    }
}

/// The plan of one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The site.
    pub site: String,
    /// The old model version (`None`: nothing before).
    pub from: Option<String>,
    /// The new model version.
    pub to: String,
    /// The SoT revision of the new model, when known.
    pub revision: Option<String>,
    /// Whether the site applies plans without approval.
    pub auto_apply: bool,
    /// Whether new hosts are rebooted.
    pub force_provision: bool,
    /// Number of batches.
    pub batches: usize,
    /// Counts per action.
    pub summary: Summary,
    /// Every host of either model, sorted by name (only the hosts named,
    /// for an operator's reprovision).
    pub hosts: Vec<HostPlan>,
    /// Made by an operator's reprovision (`vaquero reprovision`): it
    /// lists exactly the hosts named and starts them without approval.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub requested: bool,
}

impl Plan {
    /// Whether the plan reboots nothing and changes nothing.
    pub fn is_noop(&self) -> bool {
        self.summary.rebooted == 0
            && self
                .hosts
                .iter()
                .all(|h| h.action == PlanAction::Unchanged && h.reasons.is_empty())
    }

    /// The entry of `host`.
    pub fn host(&self, name: &str) -> Option<&HostPlan> {
        self.hosts
            .binary_search_by(|h| h.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.hosts[i])
    }
}

/// The plan from `old` (or nothing) to `new`, for hosts in no rollout.
pub fn plan(old: Option<&SiteModel>, new: &SiteModel) -> Plan {
    plan_with_state(old, new, None)
}

/// The plan from `old` to `new` given what the engine knows: hosts an
/// earlier rollout left queued, halted or failed are planned again.
pub fn plan_with_state(
    old: Option<&SiteModel>,
    new: &SiteModel,
    state: Option<&SiteState>,
) -> Plan {
    let site = new.site();
    let diff = old.map(|o| vaquero_model::diff(o, new));
    let changed: HashMap<&str, &vaquero_model::diff::HostChange> = diff
        .as_ref()
        .map(|d| d.changed.iter().map(|c| (c.host.as_str(), c)).collect())
        .unwrap_or_default();
    let force = site.policy.force_provision;
    // Per host: independent, so spread over the cores.
    use rayon::prelude::*;
    let mut hosts: Vec<HostPlan> = new
        .hosts()
        .par_iter()
        .with_min_len(1024)
        .map(|h| {
            let is_new = old.is_none_or(|o| o.by_name(&h.name).is_none());
            let change = changed.get(h.name.as_str());
            let mut reasons = Vec::new();
            let mut action = if is_new {
                reasons.push(if force {
                    "new host; force_provision: rebooted and provisioned".to_owned()
                } else {
                    "new host; force_provision is off: not rebooted, provisioned when it netboots"
                        .to_owned()
                });
                PlanAction::New
            } else if let Some(c) = change {
                reasons.extend(c.fields.iter().map(|f| field_reason(&titled(f, old, new))));
                if c.reprovision {
                    PlanAction::Reprovision
                } else {
                    PlanAction::Unchanged
                }
            } else {
                PlanAction::Unchanged
            };
            if action == PlanAction::Unchanged
                && let Some(st) = state.and_then(|s| s.hosts.get(&h.name))
                && let Some(why) = unfinished(st)
            {
                reasons.push(why.to_owned());
                action = PlanAction::Reprovision;
            }
            // A host that finished its workflow under exactly this model
            // (a revert to what it runs) is not provisioned again, even if
            // the rollout being reverted had queued or halted it (halted
            // hosts were never started).
            if action == PlanAction::Reprovision
                && let Some(st) = state.and_then(|s| s.hosts.get(&h.name))
                && matches!(st.phase, Phase::Done | Phase::Queued | Phase::Halted)
                && st.version.as_deref() == Some(new.version())
            {
                reasons = vec![ALREADY_RUNS.to_owned()];
                action = PlanAction::Unchanged;
            }
            if h.never_provision {
                if is_new {
                    reasons = vec!["new host".to_owned()];
                }
                reasons.insert(0, "never_provision".to_owned());
                action = PlanAction::Skip;
            }
            HostPlan::unbatched(&site.id, h, action, reasons)
        })
        .collect();
    if let (Some(d), Some(o)) = (&diff, old) {
        for name in &d.removed {
            let workflow = o
                .by_name(name)
                .map(|r| r.host.workflow.clone())
                .unwrap_or_default();
            hosts.push(HostPlan {
                name: name.clone(),
                site: site.id.clone(),
                workflow,
                action: PlanAction::Removed,
                reasons: vec!["removed from the SoT; left as it is".to_owned()],
                batch: None,
            });
        }
    }
    hosts.par_sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let batches = assign_batches(new, &mut hosts, force);
    let summary = Summary::of(&hosts);
    Plan {
        site: site.id.clone(),
        from: old.map(|o| o.version().to_owned()),
        to: new.version().to_owned(),
        revision: new.revision().map(str::to_owned),
        auto_apply: site.policy.auto_apply,
        force_provision: force,
        batches,
        summary,
        hosts,
        requested: false,
    }
}

/// The plan of an operator's reprovision of `names` (sorted, each a host
/// of `model`): exactly those hosts, each `reprovision` unless it is in
/// flight already (it finishes what it does), in batches estimated under
/// the workflow policies with every other host of the site standing.
pub fn reprovision_plan(
    model: &SiteModel,
    names: &[&str],
    state: &SiteState,
    skip_windows: bool,
) -> Plan {
    let site = model.site();
    let mut hosts: Vec<HostPlan> = model
        .hosts()
        .iter()
        .map(|h| {
            let named = names.binary_search(&h.name.as_str()).is_ok();
            let busy = state
                .hosts
                .get(&h.name)
                .is_some_and(|st| st.phase.in_flight());
            let (action, reasons) = match (named, busy) {
                (true, false) => {
                    let mut r = vec!["requested by an operator".to_owned()];
                    if skip_windows {
                        r.push("reboot windows skipped (--now)".to_owned());
                    }
                    (PlanAction::Reprovision, r)
                }
                (true, true) => (
                    PlanAction::Unchanged,
                    vec!["in flight already: finishes what it does".to_owned()],
                ),
                (false, _) => (PlanAction::Unchanged, Vec::new()),
            };
            HostPlan::unbatched(&site.id, h, action, reasons)
        })
        .collect();
    hosts.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    // Batches under the policies, the rest of the site counted as up.
    let batches = assign_batches(model, &mut hosts, false);
    hosts.retain(|h| names.binary_search(&h.name.as_str()).is_ok());
    let summary = Summary::of(&hosts);
    Plan {
        site: site.id.clone(),
        from: Some(model.version().to_owned()),
        to: model.version().to_owned(),
        revision: model.revision().map(str::to_owned),
        auto_apply: true,
        force_provision: site.policy.force_provision,
        batches,
        summary,
        hosts,
        requested: true,
    }
}

/// Why a host the diff would reprovision is left as it is.
const ALREADY_RUNS: &str = "already runs this version (finished under it before)";

fn unfinished(st: &HostState) -> Option<&'static str> {
    match st.phase {
        Phase::Queued if st.requested.is_some() => {
            Some("queued by an operator's reprovision, not started yet")
        }
        Phase::Queued => Some("queued by an earlier rollout, not started yet"),
        Phase::Halted => Some("halted in an earlier rollout"),
        Phase::Failed => Some("failed in an earlier rollout"),
        _ => None,
    }
}

/// A change of a host's stages with each boot's title beside its id
/// (`burnin (Burn-in)`), where the boot has one.
fn titled(
    f: &vaquero_model::diff::FieldChange,
    old: Option<&SiteModel>,
    new: &SiteModel,
) -> vaquero_model::diff::FieldChange {
    let mut f = f.clone();
    if f.path != "stages" {
        return f;
    }
    let title = |m: Option<&SiteModel>, v: &mut Value| {
        let Value::Array(ids) = v else { return };
        for id in ids {
            let name = id
                .as_str()
                .and_then(|b| m?.data().boots.get(b))
                .and_then(|b| b.name.as_deref());
            if let (Some(i), Some(n)) = (id.as_str(), name) {
                *id = Value::String(format!("{i} ({n})"));
            }
        }
    };
    title(old, &mut f.from);
    title(Some(new), &mut f.to);
    f
}

fn field_reason(f: &vaquero_model::diff::FieldChange) -> String {
    let tail = if f.reprovision {
        ""
    } else {
        " (no reprovision)"
    };
    match (&f.from, &f.to) {
        (Value::Null, Value::Null) => format!("{} changed{tail}", f.path),
        (Value::String(a), Value::String(b)) if f.path.ends_with("cmdline") => {
            // Kernel command lines: which parameters went and came.
            let old: Vec<&str> = a.split_whitespace().collect();
            let new: Vec<&str> = b.split_whitespace().collect();
            let mut parts: Vec<String> = old
                .iter()
                .filter(|t| !new.contains(t))
                .map(|t| format!("-{t}"))
                .collect();
            parts.extend(
                new.iter()
                    .filter(|t| !old.contains(t))
                    .map(|t| format!("+{t}")),
            );
            format!("{}: {}{tail}", f.path, shorten(&parts.join(" ")))
        }
        (Value::String(a), Value::String(b))
            if a.chars().count() > 60 || b.chars().count() > 60 =>
        {
            let (x, y) = differing(a, b);
            format!("{}: {x} → {y}{tail}", f.path)
        }
        (a, b) => format!("{}: {} → {}{tail}", f.path, show(a), show(b)),
    }
}

/// The parts of two long strings that differ, with a little context.
fn differing(a: &str, b: &str) -> (String, String) {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let cut = |s: &[char]| {
        let start = pre.saturating_sub(12);
        let end = (s.len() - suf + 12).min(s.len());
        let mut out = String::new();
        if start > 0 {
            out.push('…');
        }
        out.extend(&s[start..end]);
        if end < s.len() {
            out.push('…');
        }
        shorten(&out)
    };
    (cut(&a), cut(&b))
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 100 {
        let mut t: String = s.chars().take(99).collect();
        t.push('…');
        t
    } else {
        s.to_owned()
    }
}

fn show(v: &Value) -> String {
    shorten(&match v {
        Value::Null => "(none)".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Numbers the rebooted hosts' batches by playing the rollout in waves
/// under the workflow policies; returns the number of batches. Hosts that
/// can never start (a dependency can't get enough hosts done,
/// `min_standing` keeps every host up) get no batch and a reason.
fn assign_batches(model: &SiteModel, hosts: &mut [HostPlan], force: bool) -> usize {
    let workflows = &model.data().workflows;
    let mut stats: BTreeMap<String, WorkflowStats> = BTreeMap::new();
    let mut queue: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, h) in hosts.iter().enumerate() {
        if h.action == PlanAction::Removed {
            continue;
        }
        let s = stats.entry(h.workflow.clone()).or_default();
        s.total += 1;
        let goes = match h.action {
            PlanAction::Reprovision => true,
            PlanAction::New => force,
            _ => false,
        };
        if goes {
            s.queued += 1;
            queue.entry(h.workflow.clone()).or_default().push(i);
        } else if h.action != PlanAction::New {
            s.ready += 1;
        }
    }
    let mut wave = 0;
    let mut cursor: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let pending = queue
            .iter()
            .any(|(w, q)| cursor.get(w).copied().unwrap_or(0) < q.len());
        if !pending {
            break;
        }
        wave += 1;
        let snapshot = stats.clone();
        let mut admitted_any = false;
        for (w, q) in &queue {
            let at = cursor.entry(w.clone()).or_insert(0);
            if *at >= q.len() {
                continue;
            }
            let Some(wf) = workflows.get(w) else {
                continue;
            };
            let blocked = wf.policy.block_deps.iter().any(|d| {
                let ds = snapshot.get(d).cloned().unwrap_or_default();
                workflows
                    .get(d)
                    .is_some_and(|dw| ds.ready < dependency_need(dw, &ds))
            });
            if blocked {
                continue;
            }
            let s = snapshot.get(w).cloned().unwrap_or_default();
            let mut cap = q.len() - *at;
            if let Some(l) = wf.policy.max_concurrent.limit(s.total) {
                cap = cap.min(l);
            }
            if let Some(m) = wf.policy.min_standing {
                cap = cap.min(s.total.saturating_sub(m as usize));
            }
            for &i in &q[*at..*at + cap] {
                hosts[i].batch = Some(wave);
            }
            *at += cap;
            if cap > 0 {
                admitted_any = true;
                if let Some(st) = stats.get_mut(w) {
                    st.ready += cap;
                    st.queued -= cap;
                }
            }
        }
        if !admitted_any {
            wave -= 1;
            for (w, q) in &queue {
                let at = cursor.get(w).copied().unwrap_or(0);
                let why = blocked_reason(model, w, &stats);
                for &i in &q[at..] {
                    hosts[i].reasons.push(why.clone());
                }
            }
            break;
        }
    }
    wave
}

fn blocked_reason(model: &SiteModel, w: &str, stats: &BTreeMap<String, WorkflowStats>) -> String {
    let workflows = &model.data().workflows;
    let Some(wf) = workflows.get(w) else {
        return format!("workflow {w} is not in the model");
    };
    for d in &wf.policy.block_deps {
        let ds = stats.get(d).cloned().unwrap_or_default();
        if let Some(dw) = workflows.get(d) {
            let need = dependency_need(dw, &ds);
            if ds.ready < need {
                return format!(
                    "never starts: block_deps {d} can only get {} of the {need} hosts it needs done",
                    ds.ready
                );
            }
        }
    }
    if let Some(m) = wf.policy.min_standing {
        return format!(
            "never starts: min_standing {m} keeps every host of {w} up ({} hosts)",
            stats.get(w).map_or(0, |s| s.total)
        );
    }
    "never starts".to_owned()
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |v: &str| v.get(..12).unwrap_or(v).to_owned();
        writeln!(
            f,
            "site {}: {} → {}{}",
            self.site,
            self.from.as_deref().map_or("(nothing)".to_owned(), short),
            short(&self.to),
            self.revision
                .as_deref()
                .map(|r| format!(" (revision {})", short(r)))
                .unwrap_or_default()
        )?;
        let s = &self.summary;
        writeln!(
            f,
            "  {} to reprovision, {} new, {} unchanged, {} skipped, {} removed; {} rebooted in {} batch{}",
            s.reprovision,
            s.new,
            s.unchanged,
            s.skip,
            s.removed,
            s.rebooted,
            self.batches,
            if self.batches == 1 { "" } else { "es" }
        )?;
        writeln!(
            f,
            "  {}",
            if self.requested {
                "requested by an operator: these hosts start without approval"
            } else if self.auto_apply {
                "auto_apply: applied without approval"
            } else {
                "auto_apply is off: waits for approval"
            }
        )?;
        for b in 1..=self.batches {
            writeln!(f, "  batch {b}:")?;
            for h in self.hosts.iter().filter(|h| h.batch == Some(b)) {
                host_lines(f, h)?;
            }
        }
        let rest: Vec<&HostPlan> = self
            .hosts
            .iter()
            .filter(|h| {
                h.batch.is_none() && !(h.action == PlanAction::Unchanged && h.reasons.is_empty())
            })
            .collect();
        if !rest.is_empty() {
            writeln!(f, "  not rebooted:")?;
            for h in rest {
                host_lines(f, h)?;
            }
        }
        let quiet = self
            .hosts
            .iter()
            .filter(|h| h.action == PlanAction::Unchanged && h.reasons.is_empty())
            .count();
        if quiet > 0 {
            writeln!(
                f,
                "  {quiet} host{} unchanged",
                if quiet == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

fn host_lines(f: &mut std::fmt::Formatter<'_>, h: &HostPlan) -> std::fmt::Result {
    writeln!(
        f,
        "    {:<12} {} ({})",
        h.action.as_str(),
        h.name,
        h.workflow
    )?;
    for r in &h.reasons {
        writeln!(f, "                   {r}")?;
    }
    Ok(())
}

/// Plans of several sites, in the stable JSON form for CI pipelines:
/// `{"from", "to", "sites": [..], "hosts": [{"name", "site", "workflow",
/// "action", "reasons", "batch"}]}`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanSet {
    /// The old SoT revision, when planned between revisions.
    pub from: Option<String>,
    /// The new SoT revision (or the directory).
    pub to: Option<String>,
    /// Per site: everything but the hosts.
    pub sites: Vec<SitePlanSummary>,
    /// Every host of every site.
    pub hosts: Vec<HostPlan>,
}

/// A site's plan without its hosts.
#[derive(Debug, Clone, Serialize)]
pub struct SitePlanSummary {
    /// The site.
    pub site: String,
    /// The old model version.
    pub from: Option<String>,
    /// The new model version (`None`: the site was removed).
    pub to: Option<String>,
    /// Whether the site applies plans without approval.
    pub auto_apply: bool,
    /// Whether new hosts are rebooted.
    pub force_provision: bool,
    /// Number of batches.
    pub batches: usize,
    /// Counts per action.
    pub summary: Summary,
}

/// The plans of every site between two sets of compiled models (by site
/// id), as [`between`](SitePlans::between) makes them; prints as
/// `vaquero plan` does.
#[derive(Debug, Clone)]
pub struct SitePlans {
    /// The old SoT revision's label (`None`: every host is new).
    pub from: Option<String>,
    /// The new SoT revision's label.
    pub to: String,
    /// One plan per site of the new models.
    pub plans: Vec<Plan>,
    /// Sites only in the old models: their hosts are left as they are.
    pub removed: Vec<SitePlanSummary>,
    /// The hosts of the removed sites.
    pub removed_hosts: Vec<HostPlan>,
}

impl SitePlans {
    /// Plans every site of `new` against the same site of `old` (none:
    /// every host is new); sites only in `old` are removed.
    pub fn between(
        from: Option<String>,
        to: String,
        old: Option<&BTreeMap<String, SiteModel>>,
        new: &BTreeMap<String, SiteModel>,
    ) -> Self {
        let plans = new
            .iter()
            .map(|(id, after)| plan(old.and_then(|m| m.get(id)), after))
            .collect();
        let mut removed = Vec::new();
        let mut removed_hosts = Vec::new();
        for (id, b) in old.into_iter().flatten() {
            if new.contains_key(id) {
                continue;
            }
            removed.push(SitePlanSummary {
                site: id.clone(),
                from: Some(b.version().to_owned()),
                to: None,
                auto_apply: b.site().policy.auto_apply,
                force_provision: b.site().policy.force_provision,
                batches: 0,
                summary: Summary {
                    removed: b.hosts().len(),
                    ..Default::default()
                },
            });
            removed_hosts.extend(b.hosts().iter().map(|h| HostPlan {
                name: h.name.clone(),
                site: id.clone(),
                workflow: h.workflow.clone(),
                action: PlanAction::Removed,
                reasons: vec!["its site was removed from the SoT; left as it is".into()],
                batch: None,
            }));
        }
        SitePlans {
            from,
            to,
            plans,
            removed,
            removed_hosts,
        }
    }

    /// Whether no site changes at all.
    pub fn is_noop(&self) -> bool {
        self.removed.is_empty() && self.plans.iter().all(Plan::is_noop)
    }

    /// The stable JSON form.
    pub fn to_set(&self) -> PlanSet {
        let mut set = PlanSet::new(self.from.clone(), Some(self.to.clone()), self.plans.clone());
        set.sites.extend(self.removed.iter().cloned());
        set.hosts.extend(self.removed_hosts.iter().cloned());
        set
    }
}

impl std::fmt::Display for SitePlans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "plan {} → {}",
            self.from
                .as_deref()
                .unwrap_or("(nothing: every host is new)"),
            self.to
        )?;
        for p in &self.plans {
            write!(f, "{p}")?;
        }
        for r in &self.removed {
            writeln!(
                f,
                "site {}: removed from the SoT; its {} hosts are left as they are",
                r.site, r.summary.removed
            )?;
        }
        Ok(())
    }
}

impl PlanSet {
    /// Collects site plans.
    pub fn new(from: Option<String>, to: Option<String>, plans: Vec<Plan>) -> Self {
        let mut sites = Vec::new();
        let mut hosts = Vec::new();
        for p in plans {
            sites.push(SitePlanSummary {
                site: p.site,
                from: p.from,
                to: Some(p.to),
                auto_apply: p.auto_apply,
                force_provision: p.force_provision,
                batches: p.batches,
                summary: p.summary,
            });
            hosts.extend(p.hosts);
        }
        PlanSet {
            from,
            to,
            sites,
            hosts,
        }
    }
}
