//! `vaquero plan`: what a SoT change would do to each host, offline.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use vaquero_engine::{HostPlan, PlanAction, PlanSet, plan::SitePlanSummary};
use vaquero_model::{GitSource, Sot};

use crate::Format;

/// Plans `to` (a revision, or the directory as it is) against `from` (a
/// revision; none: every host is new).
pub fn plan(
    dir: &Path,
    from: Option<&str>,
    to: Option<&str>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let git = || -> anyhow::Result<GitSource> {
        let location = dir.to_str().unwrap_or_default();
        if !GitSource::is_repository(dir) {
            anyhow::bail!(
                "--from/--to name Git revisions, and {} is not a Git repository",
                dir.display()
            );
        }
        Ok(GitSource::open(location, "main")?)
    };
    let (old, from_label): (Option<Sot>, Option<String>) = match from {
        Some(rev) => {
            let (id, sot) = crate::commands::load_rev(&git()?, rev)?;
            (
                Some(sot),
                Some(format!("{rev} ({})", &id[..12.min(id.len())])),
            )
        }
        None => (None, None),
    };
    let (new, to_label) = match to {
        Some(rev) => {
            let (id, sot) = crate::commands::load_rev(&git()?, rev)?;
            (sot, format!("{rev} ({})", &id[..12.min(id.len())]))
        }
        None => (crate::commands::load(dir)?, dir.display().to_string()),
    };
    let old_models = match &old {
        Some(s) => Some(s.compile()?),
        None => None,
    };
    let new_models = new.compile()?;
    let mut plans = Vec::new();
    let mut removed_sites = Vec::new();
    let sites: BTreeSet<&String> = new_models
        .keys()
        .chain(old_models.iter().flat_map(|m| m.keys()))
        .collect();
    for s in sites {
        let before = old_models.as_ref().and_then(|m| m.get(s));
        match new_models.get(s) {
            Some(after) => plans.push(vaquero_engine::plan(before, after)),
            None => {
                if let Some(b) = before {
                    removed_sites.push(b);
                }
            }
        }
    }
    let texts: Vec<String> = plans.iter().map(|p| p.to_string()).collect();
    let mut set = PlanSet::new(from_label.clone(), Some(to_label.clone()), plans);
    for b in &removed_sites {
        set.sites.push(SitePlanSummary {
            site: b.site().id.clone(),
            from: Some(b.version().to_owned()),
            to: None,
            auto_apply: b.site().policy.auto_apply,
            force_provision: b.site().policy.force_provision,
            batches: 0,
            summary: vaquero_engine::plan::Summary {
                removed: b.hosts().len(),
                ..Default::default()
            },
        });
        set.hosts.extend(b.hosts().iter().map(|h| HostPlan {
            name: h.name.clone(),
            site: b.site().id.clone(),
            workflow: h.workflow.clone(),
            action: PlanAction::Removed,
            reasons: vec!["its site was removed from the SoT; left as it is".into()],
            batch: None,
        }));
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&set)?),
        Format::Text => {
            println!(
                "plan {} → {to_label}",
                from_label
                    .as_deref()
                    .unwrap_or("(nothing: every host is new)")
            );
            for t in texts {
                print!("{t}");
            }
            for b in removed_sites {
                println!(
                    "site {}: removed from the SoT; its {} hosts are left as they are",
                    b.site().id,
                    b.hosts().len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
