//! Rollout policies: what may start, when a power operation may happen,
//! when a rollout halts.
//!
//! The engine asks every [`Policy`] before a queued host starts
//! ([`Policy::admit`]), before the power operation that takes a host down
//! ([`Policy::allow_power`]), and at every step whether a workflow's
//! rollout must halt ([`Policy::halt`]). The built-in policies come from
//! the SoT ([`builtin`]); users add their own with
//! [`Engine::with_policy`](crate::Engine::with_policy).
//!
//! Built in:
//! - `max_concurrent`: at most N (or N % of the workflow's hosts, rounded
//!   up) in flight.
//! - `min_standing`: at least N hosts of the workflow stay up (not in
//!   flight, not failed; a host failed before and queued again is down).
//!   A down host may always start (it lowers nothing), and down hosts of
//!   a workflow start before the ones up.
//! - `block_deps`: a workflow starts no host until each dependency has
//!   `min_standing` hosts (all its hosts when unset) done or untouched.
//! - `max_fail`: the workflow's rollout halts after more than `max_fail`
//!   failures; hosts not started yet are halted, hosts in flight finish.
//! - `windows`: the first power operation of a reprovisioning happens
//!   only inside a reboot window, in the site's time zone; hosts already
//!   down may finish. An operator's `reprovision --now` skips them.
//!
//! `never_provision` and `force_provision` decide which hosts are in a
//! rollout at all; they are applied when a plan is made.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use vaquero_model::types::{Site, Workflow};

use crate::state::{HostState, Phase};

/// What a policy says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Not now; why.
    Wait(String),
}

/// Counts of one workflow's hosts, kept current while the engine admits
/// hosts within a step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowStats {
    /// Hosts of the workflow in the site.
    pub total: usize,
    /// Queued for the current rollout.
    pub queued: usize,
    /// In flight (down for reprovisioning).
    pub in_flight: usize,
    /// Done, untouched by the rollout (`idle`), or never provisioned
    /// (`skipped`): up, running what they should.
    pub ready: usize,
    /// New hosts waiting to netboot by themselves.
    pub waiting: usize,
    /// Down: failed (in any rollout), or queued or halted again after a
    /// failure and not provisioned since.
    pub failed: usize,
    /// Failed in the current rollout.
    pub failed_now: usize,
    /// Halted.
    pub halted: usize,
}

impl WorkflowStats {
    /// Hosts up: neither in flight nor failed.
    pub fn standing(&self) -> usize {
        self.total.saturating_sub(self.in_flight + self.failed)
    }

    /// Whether nothing of this workflow is left to do in the rollout.
    pub fn settled(&self) -> bool {
        self.queued == 0 && self.in_flight == 0 && self.waiting == 0
    }

    pub(crate) fn add(&mut self, h: &HostState, rollout: Option<u64>) {
        self.total += 1;
        match h.phase {
            Phase::Queued => self.queued += 1,
            Phase::Idle | Phase::Done | Phase::Skipped => self.ready += 1,
            Phase::Waiting => self.waiting += 1,
            Phase::Failed => {
                self.failed += 1;
                if h.rollout.is_some() && h.rollout == rollout {
                    self.failed_now += 1;
                }
            }
            Phase::Halted => self.halted += 1,
            p if p.in_flight() => self.in_flight += 1,
            _ => {}
        }
        if h.down && matches!(h.phase, Phase::Queued | Phase::Halted | Phase::Waiting) {
            self.failed += 1;
        }
    }
}

/// Counts per workflow id.
pub type Stats<'a> = HashMap<&'a str, WorkflowStats>;

/// What a policy sees.
#[derive(Debug)]
pub struct PolicyCtx<'a> {
    /// Now.
    pub now: Timestamp,
    /// The site (its policy: windows, time zone, force_provision).
    pub site: &'a Site,
    /// The site's time zone (UTC when unset).
    pub tz: &'a TimeZone,
    /// The workflow of the host in question.
    pub workflow: &'a Workflow,
    /// Counts per workflow id.
    pub stats: &'a Stats<'a>,
    /// Workflows (by id) of the site, for dependencies.
    pub workflows: &'a std::collections::BTreeMap<String, Workflow>,
}

impl PolicyCtx<'_> {
    /// The counts of `workflow` (zeros when it has no hosts).
    pub fn stats_of(&self, workflow: &str) -> WorkflowStats {
        self.stats.get(workflow).cloned().unwrap_or_default()
    }
}

/// A rollout policy. Every method has a permissive default, so a policy
/// implements only what it restricts.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// A short name, shown in reasons.
    fn name(&self) -> &str;

    /// May the queued `host` start now?
    fn admit(&self, ctx: &PolicyCtx<'_>, host: &HostState) -> Decision {
        let _ = (ctx, host);
        Decision::Allow
    }

    /// May the power operation that takes `host` down happen now?
    fn allow_power(&self, ctx: &PolicyCtx<'_>, host: &HostState) -> Decision {
        let _ = (ctx, host);
        Decision::Allow
    }

    /// Must the rollout of `ctx.workflow` halt? `Some(reason)` halts it:
    /// its queued hosts are halted, hosts in flight finish.
    fn halt(&self, ctx: &PolicyCtx<'_>) -> Option<String> {
        let _ = ctx;
        None
    }
}

/// `max_concurrent`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxConcurrent;

impl Policy for MaxConcurrent {
    fn name(&self) -> &str {
        "max_concurrent"
    }

    fn admit(&self, ctx: &PolicyCtx<'_>, _host: &HostState) -> Decision {
        let s = ctx.stats_of(&ctx.workflow.id);
        match ctx.workflow.policy.max_concurrent.limit(s.total) {
            Some(limit) if s.in_flight >= limit => Decision::Wait(format!(
                "max_concurrent: {} of {limit} in flight",
                s.in_flight
            )),
            _ => Decision::Allow,
        }
    }
}

/// `min_standing`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MinStanding;

impl Policy for MinStanding {
    fn name(&self) -> &str {
        "min_standing"
    }

    fn admit(&self, ctx: &PolicyCtx<'_>, host: &HostState) -> Decision {
        let Some(min) = ctx.workflow.policy.min_standing else {
            return Decision::Allow;
        };
        if host.down {
            // Down already: reprovisioning it leaves as many hosts up.
            return Decision::Allow;
        }
        let s = ctx.stats_of(&ctx.workflow.id);
        if s.standing() <= min as usize {
            Decision::Wait(format!(
                "min_standing: {} of {} up, {min} must stay up",
                s.standing(),
                s.total
            ))
        } else {
            Decision::Allow
        }
    }
}

/// How many ready hosts a dependency needs before its dependents start.
pub fn dependency_need(dep: &Workflow, stats: &WorkflowStats) -> usize {
    dep.policy
        .min_standing
        .map_or(stats.total, |m| (m as usize).min(stats.total))
}

/// `block_deps`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockDeps;

impl Policy for BlockDeps {
    fn name(&self) -> &str {
        "block_deps"
    }

    fn admit(&self, ctx: &PolicyCtx<'_>, _host: &HostState) -> Decision {
        for dep in &ctx.workflow.policy.block_deps {
            let Some(d) = ctx.workflows.get(dep) else {
                continue;
            };
            let s = ctx.stats_of(dep);
            let need = dependency_need(d, &s);
            if s.ready < need {
                return Decision::Wait(format!(
                    "block_deps: waiting for {dep} ({} of {need} done)",
                    s.ready
                ));
            }
        }
        Decision::Allow
    }

    fn halt(&self, ctx: &PolicyCtx<'_>) -> Option<String> {
        // A dependency that has nothing left to do and will never have
        // enough hosts done blocks its dependents for good.
        for dep in &ctx.workflow.policy.block_deps {
            let Some(d) = ctx.workflows.get(dep) else {
                continue;
            };
            let s = ctx.stats_of(dep);
            let need = dependency_need(d, &s);
            if s.settled() && s.ready < need {
                return Some(format!(
                    "block_deps: {dep} finished with {} of {need} hosts done",
                    s.ready
                ));
            }
        }
        None
    }
}

/// `max_fail`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxFail;

impl Policy for MaxFail {
    fn name(&self) -> &str {
        "max_fail"
    }

    fn halt(&self, ctx: &PolicyCtx<'_>) -> Option<String> {
        let max = ctx.workflow.policy.max_fail?;
        let s = ctx.stats_of(&ctx.workflow.id);
        (s.failed_now > max as usize).then(|| {
            format!(
                "max_fail: {} failures in {} (max_fail {max})",
                s.failed_now, ctx.workflow.id
            )
        })
    }
}

/// Reboot windows (`"HH:MM-HH:MM"`, minutes of the day; an end before the
/// start wraps past midnight).
#[derive(Debug, Clone, Default)]
pub struct Windows {
    windows: Vec<(u16, u16)>,
}

impl Windows {
    /// The windows of a site (parsed when the SoT was read; validation
    /// refuses a SoT with a window that does not parse).
    pub fn new(windows: &[vaquero_model::types::Window]) -> Self {
        Windows {
            windows: windows.iter().filter_map(|w| w.minutes().ok()).collect(),
        }
    }

    /// Whether `now` is inside a window (always, when there are none).
    pub fn open(&self, now: Timestamp, tz: &TimeZone) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let t = now.to_zoned(tz.clone()).time();
        let m = t.hour() as u16 * 60 + t.minute() as u16;
        self.windows.iter().any(|&(start, end)| {
            if start < end {
                (start..end).contains(&m)
            } else {
                m >= start || m < end
            }
        })
    }
}

impl Policy for Windows {
    fn name(&self) -> &str {
        "windows"
    }

    fn allow_power(&self, ctx: &PolicyCtx<'_>, host: &HostState) -> Decision {
        // An operator's `reprovision --now` skips the windows.
        if host.requested.is_some_and(|r| r.skip_windows) || self.open(ctx.now, ctx.tz) {
            Decision::Allow
        } else {
            Decision::Wait(format!(
                "windows: outside the reboot windows {:?} ({})",
                ctx.site.policy.windows,
                ctx.tz.iana_name().unwrap_or("UTC")
            ))
        }
    }
}

/// The built-in policies for `site`.
pub fn builtin(site: &Site) -> Result<Vec<Arc<dyn Policy>>, String> {
    Ok(vec![
        Arc::new(MaxConcurrent),
        Arc::new(MinStanding),
        Arc::new(BlockDeps),
        Arc::new(MaxFail),
        Arc::new(Windows::new(&site.policy.windows)),
    ])
}

/// The time zone of `site` (UTC when unset).
pub fn site_tz(site: &Site) -> Result<TimeZone, String> {
    match &site.policy.timezone {
        None => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|e| format!("unknown time zone `{name}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn windows_in_a_time_zone_wrap_midnight() {
        let w = Windows::new(&["22:00-06:00".into()]);
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 21:30 UTC in November is 22:30 in Berlin: inside.
        let t: Timestamp = "2026-11-22T21:30:00Z".parse().unwrap();
        assert!(w.open(t, &berlin));
        // 05:30 UTC is 06:30 in Berlin: outside.
        let t: Timestamp = "2026-11-22T05:30:00Z".parse().unwrap();
        assert!(!w.open(t, &berlin));
        assert!(w.open(t, &TimeZone::UTC));
        // 12:00 nowhere inside.
        let t: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        assert!(!w.open(t, &berlin));
        assert!(Windows::default().open(t, &berlin));
        let day = Windows::new(&["09:00-17:00".into(), "20:00-21:00".into()]);
        assert!(day.open(t, &TimeZone::UTC));
        let t: Timestamp = "2026-11-22T17:00:00Z".parse().unwrap();
        assert!(!day.open(t, &TimeZone::UTC));
    }
}
