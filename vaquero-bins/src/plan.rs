//! `vaquero plan`: what a SoT change would do to each host, offline.

use std::path::Path;
use std::process::ExitCode;

use vaquero_engine::{PlanAction, SitePlans};
use vaquero_model::GitSource;

use crate::Format;

/// Plans `to` (a revision, or the directory as it is) against `from` (a
/// revision; none: every host is new). Each site is planned at the
/// revision it is served from: its `release_tag`, when it has one.
pub fn plan(
    sot: &str,
    branch: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    format: Format,
    detailed_exitcode: bool,
) -> anyhow::Result<ExitCode> {
    let dir = Path::new(sot.strip_prefix("file://").unwrap_or(sot));
    let git = || -> anyhow::Result<GitSource> {
        if !GitSource::is_repository(dir) {
            anyhow::bail!(
                "--from/--to name Git revisions, and {} is not a Git repository",
                dir.display()
            );
        }
        crate::commands::git_source(sot, branch)
    };
    let short = |id: &str| id[..12.min(id.len())].to_owned();
    let (old, from_label) = match from {
        Some(rev) => {
            let (id, loaded) = crate::commands::load_rev(&git()?, rev)?;
            (Some(loaded.sites), Some(format!("{rev} ({})", short(&id))))
        }
        None => (None, None),
    };
    let (new, to_label) = match to {
        Some(rev) => {
            let (id, loaded) = crate::commands::load_rev(&git()?, rev)?;
            (loaded.sites, format!("{rev} ({})", short(&id)))
        }
        None => {
            let sot = crate::commands::load(dir)?;
            let models = if GitSource::is_repository(dir) {
                vaquero_model::compile_pinned(&sot, &git()?)?.0
            } else {
                sot.compile()?
            };
            (models, dir.display().to_string())
        }
    };
    let plans = SitePlans::between(from_label, to_label, old.as_ref(), &new);
    match format {
        Format::Json => crate::json::print("Plan", plans.to_set())?,
        Format::Text => print!("{plans}"),
    }
    let changes = !plans.removed.is_empty()
        || plans.plans.iter().any(|p| {
            p.hosts.iter().any(|h| {
                matches!(
                    h.action,
                    PlanAction::Reprovision | PlanAction::New | PlanAction::Removed
                )
            })
        });
    Ok(crate::changes_code(detailed_exitcode, changes))
}
