//! The offline subcommands: validate, preview, diff (plan: see plan.rs).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use vaquero_model::{
    Diagnostics, GitSource, MacAddr, ModelError, SiteModel, Sot, SotFiles, SotSource,
};

use crate::Format;

pub fn validate(dir: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let files = SotFiles::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let revision = files.content_hash();
    let result = Sot::load_owned(files);
    let (diags, summary) = match &result {
        Ok(sot) => {
            let hosts: usize = sot.sites.values().map(|s| s.hosts.len()).sum();
            (
                sot.warnings.clone(),
                format!(
                    "{}: valid ({} site(s), {} host(s), {} workflow(s), {} OS, revision {})",
                    dir.display(),
                    sot.sites.len(),
                    hosts,
                    sot.workflows.len(),
                    sot.os.len(),
                    &revision[..12]
                ),
            )
        }
        Err(d) => (
            d.clone(),
            format!("{}: {} error(s)", dir.display(), d.errors().count()),
        ),
    };
    match format {
        Format::Text => {
            for d in &diags.0 {
                println!("{d}");
            }
            if result.is_ok() {
                println!("{summary}");
            } else {
                eprintln!("{summary}");
            }
        }
        Format::Json => {
            let out = serde_json::json!({
                "valid": result.is_ok(),
                "errors": diags.errors().collect::<Vec<_>>(),
                "warnings": diags.warnings().collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn load(dir: &Path) -> anyhow::Result<Sot> {
    match Sot::load_dir(dir) {
        Ok(s) => Ok(s),
        Err(ModelError::Invalid(d)) => bail!("the SoT does not validate:\n{d}"),
        Err(e) => Err(e.into()),
    }
}

pub fn preview(
    dir: &Path,
    mac: &str,
    boot: Option<&str>,
    stage: usize,
) -> anyhow::Result<ExitCode> {
    let mac: MacAddr = mac.parse().map_err(anyhow::Error::msg)?;
    let sot = load(dir)?;
    let (site, _) = sot
        .find_mac(&mac)
        .with_context(|| format!("no host has MAC {mac}"))?;
    let model = SiteModel::compile(&sot, site)?;
    let h = model
        .by_mac(&mac)
        .with_context(|| format!("no host has MAC {mac}"))?;
    let stages = model.stages(h.host);
    let boot_id = match boot {
        Some(b) => {
            if !stages.contains(&b) {
                bail!(
                    "host {} does not use boot `{b}` (its stages: {})",
                    h.host.name,
                    stages.join(", ")
                );
            }
            b
        }
        None => *stages.get(stage).with_context(|| {
            format!(
                "host {} has {} stage(s); --stage {stage} does not exist",
                h.host.name,
                stages.len()
            )
        })?,
    };
    let urls = model.urls(h, boot_id, "preview");
    let ctx = model.context(h, boot_id, urls.as_ref());
    if boot.is_some() {
        match model.render_unattended(boot_id, &ctx)? {
            Some((_, text)) => print!("{text}"),
            None => bail!("boot `{boot_id}` has no unattended config"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let script = if h.interface.kind == vaquero_model::InterfaceType::Bmc {
        vaquero_ipxe::local_boot_script(&format!("{mac} is a BMC interface of {}", h.host.name))
    } else {
        let rendered = model.render_boot(boot_id, &ctx)?;
        let title = format!(
            "Vaquero: {} stage {} ({boot_id}, {})",
            h.host.name, stage, rendered.os
        );
        vaquero_ipxe::boot_script(&title, &rendered)?
    };
    print!("{}", script.render());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn load_rev(src: &GitSource, rev: &str) -> anyhow::Result<(String, Sot)> {
    let id = src
        .resolve(rev)?
        .with_context(|| format!("unknown revision `{rev}` in {}", src.describe()))?;
    let files = src.files(&id)?;
    let mut sot = Sot::load_owned(files).map_err(|d: Diagnostics| {
        anyhow::anyhow!("revision {rev} ({id}) does not validate:\n{d}")
    })?;
    sot.revision = Some(id.clone());
    Ok((id, sot))
}

pub fn diff(repo: &str, from: &str, to: &str, format: Format) -> anyhow::Result<ExitCode> {
    let src = GitSource::open(repo, "main")?;
    let (from_id, old) = load_rev(&src, from)?;
    let (to_id, new) = load_rev(&src, to)?;
    let old_models = old.compile()?;
    let new_models = new.compile()?;
    let sites: BTreeSet<&String> = old_models.keys().chain(new_models.keys()).collect();
    let mut diffs = Vec::new();
    let mut added_sites = Vec::new();
    let mut removed_sites = Vec::new();
    for s in sites {
        match (old_models.get(s), new_models.get(s)) {
            (Some(a), Some(b)) => diffs.push(vaquero_model::diff(a, b)),
            (None, Some(_)) => added_sites.push(s.clone()),
            (Some(_), None) => removed_sites.push(s.clone()),
            (None, None) => {}
        }
    }
    match format {
        Format::Json => {
            let out = serde_json::json!({
                "from": {"rev": from, "commit": from_id},
                "to": {"rev": to, "commit": to_id},
                "sites_added": added_sites,
                "sites_removed": removed_sites,
                "sites": diffs,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Text => {
            println!("diff {from} ({}) → {to} ({})", &from_id[..12], &to_id[..12]);
            for s in &added_sites {
                println!("site {s}: new site");
            }
            for s in &removed_sites {
                println!("site {s}: removed");
            }
            for d in &diffs {
                print!("{d}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
