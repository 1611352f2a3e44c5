//! The offline subcommands: validate, preview, diff (plan: see plan.rs).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use vaquero_model::{
    Diagnostic, Diagnostics, GitSource, LoadedSot, MacAddr, SiteModel, Sot, SotFiles, SotSource,
};

use crate::Format;

pub fn validate(dir: &Path, branch: Option<&str>, format: Format) -> anyhow::Result<ExitCode> {
    let files = SotFiles::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let revision = files.content_hash();
    let mut result = Sot::load_owned(files);
    // In a Git repository, a site with a `release_tag` is served from
    // that tag: it must resolve and validate too.
    if let Ok(sot) = &mut result
        && GitSource::is_repository(dir)
    {
        let src = git_source(&dir.to_string_lossy(), branch)?;
        match vaquero_model::compile_pinned(sot, &src) {
            Ok((_, warnings)) => sot.warnings = warnings,
            Err(vaquero_model::Error::Pinned {
                site,
                revision,
                diagnostics,
            }) => {
                let mut d = Diagnostics::default();
                d.push(Diagnostic::error(
                    &format!("sites/{site}/env.yml"),
                    1,
                    1,
                    "release_tag",
                    format!(
                        "the site is pinned to revision {}, which has {} error(s) (listed after this one)",
                        &revision[..12.min(revision.len())],
                        diagnostics.errors().count()
                    ),
                ));
                for e in diagnostics.0 {
                    d.push(Diagnostic {
                        file: format!("{}@{}", e.file, &revision[..12.min(revision.len())]),
                        ..e
                    });
                }
                result = Err(d);
            }
            Err(e) => return Err(e.into()),
        }
    }
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
            crate::json::print("Validation", out)?;
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
        Err(vaquero_model::Error::Invalid(d)) => bail!("the SoT does not validate:\n{d}"),
        Err(e) => Err(e.into()),
    }
}

pub fn preview(
    dir: &Path,
    mac: &str,
    boot: Option<&str>,
    stage: usize,
    format: Format,
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
    if boot.is_some() {
        let urls = model.urls(h, boot_id, "preview");
        let ctx = model.context(h, boot_id, urls.as_ref());
        match model.render_unattended(boot_id, &ctx)? {
            Some((kind, text)) => print_preview(format, &h.host.name, site, boot_id, kind, &text)?,
            None => bail!("boot `{boot_id}` has no unattended config"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    // What the boot service would serve this MAC in that stage (the same
    // decision), but for the attempt number.
    let index = stages.iter().position(|s| *s == boot_id).unwrap_or(stage);
    let query = format!("mac={}", mac.hyphenated());
    let id = vaquero_ipxe::Identity::parse(Some(&query));
    let current = |_: &str| vaquero_ipxe::Current::Stage {
        stage: index,
        boot: boot_id.to_owned(),
        attempt: 0,
    };
    let script = match vaquero_ipxe::decide(&model, &id, None, false, current) {
        vaquero_ipxe::Decision::Script {
            host, stage, boot, ..
        } => vaquero_ipxe::stage_script(&model, host, stage, &boot, None, "preview")?,
        vaquero_ipxe::Decision::LocalDisk { why, .. } => vaquero_ipxe::local_boot_script(&why),
        d => bail!("the boot service would not answer {mac}: {d:?}"),
    };
    print_preview(
        format,
        &h.host.name,
        site,
        boot_id,
        "ipxe",
        &script.render(),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// What `preview` shows: the text itself, or it in a JSON object with
/// whose it is.
fn print_preview(
    format: Format,
    host: &str,
    site: &str,
    boot: &str,
    kind: impl std::fmt::Display,
    text: &str,
) -> anyhow::Result<()> {
    match format {
        Format::Text => print!("{text}"),
        Format::Json => crate::json::print(
            "Preview",
            serde_json::json!({
                "site": site,
                "host": host,
                "boot": boot,
                "type": kind.to_string(),
                "content": text,
            }),
        )?,
    }
    Ok(())
}

/// The Git repository at `location` (a path or `file://` URL), following
/// `branch`, or the branch its HEAD names.
pub(crate) fn git_source(location: &str, branch: Option<&str>) -> anyhow::Result<GitSource> {
    Ok(match branch {
        Some(b) => GitSource::open(location, b)?,
        None => GitSource::open_head(location)?,
    })
}

/// Revision `rev` of a Git SoT, each site compiled at the revision it is
/// served from (its `release_tag`, or `rev`).
pub(crate) fn load_rev(src: &GitSource, rev: &str) -> anyhow::Result<(String, LoadedSot)> {
    let id = src
        .resolve(rev)?
        .with_context(|| format!("unknown revision `{rev}` in {}", src.describe()))?;
    let loaded = match vaquero_model::load_revision(src, &id) {
        Ok(l) => l,
        Err(vaquero_model::Error::Invalid(d)) => {
            bail!("revision {rev} ({id}) does not validate:\n{d}")
        }
        Err(e) => bail!("revision {rev} ({id}): {e}"),
    };
    Ok((id, loaded))
}

pub fn diff(
    repo: &str,
    branch: Option<&str>,
    from: &str,
    to: &str,
    format: Format,
    detailed_exitcode: bool,
) -> anyhow::Result<ExitCode> {
    let src = git_source(repo, branch)?;
    let (from_id, old) = load_rev(&src, from)?;
    let (to_id, new) = load_rev(&src, to)?;
    let diffs = vaquero_model::diff_sites(&old.sites, &new.sites);
    match format {
        Format::Json => {
            let out = serde_json::json!({
                "from": {"rev": from, "commit": from_id},
                "to": {"rev": to, "commit": to_id},
                "sites_added": diffs.sites_added,
                "sites_removed": diffs.sites_removed,
                "sites": diffs.sites,
            });
            crate::json::print("Diff", out)?;
        }
        Format::Text => {
            println!("diff {from} ({}) → {to} ({})", &from_id[..12], &to_id[..12]);
            print!("{diffs}");
        }
    }
    Ok(crate::changes_code(detailed_exitcode, !diffs.is_empty()))
}

/// `vaquero hosts --sot DIR`: the SoT's hosts, offline.
pub fn hosts(dir: &Path, site: Option<&str>, format: Format) -> anyhow::Result<ExitCode> {
    let sot = load(dir)?;
    if let Some(s) = site
        && !sot.sites.contains_key(s)
    {
        bail!(
            "unknown site `{s}` (the SoT's sites: {})",
            sot.sites.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let mut rows = Vec::new();
    for (id, s) in &sot.sites {
        if site.is_some_and(|want| want != id) {
            continue;
        }
        for h in &s.hosts {
            let bmc = h
                .interfaces
                .iter()
                .find_map(|i| i.bmc.as_ref())
                .map(|b| format!("{:?}", b.kind).to_lowercase());
            let ifaces: Vec<serde_json::Value> = h
                .interfaces
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "type": format!("{:?}", i.kind).to_lowercase(),
                        "mac": i.mac.to_string(),
                        "ipv4": i.ipv4.to_string(),
                        "subnet": i.subnet,
                    })
                })
                .collect();
            rows.push(serde_json::json!({
                "site": id,
                "name": h.name,
                "workflow": h.workflow,
                "never_provision": h.never_provision,
                "bmc": bmc,
                "interfaces": ifaces,
            }));
        }
    }
    match format {
        Format::Json => crate::json::print("Hosts", serde_json::json!({ "hosts": rows }))?,
        Format::Text => {
            let cell = crate::client::s;
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let nics: Vec<String> = r["interfaces"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|i| {
                            format!(
                                "{} {} {}",
                                cell(&i["type"]),
                                cell(&i["mac"]),
                                cell(&i["ipv4"])
                            )
                        })
                        .collect();
                    vec![
                        cell(&r["site"]),
                        cell(&r["name"]),
                        cell(&r["workflow"]),
                        cell(&r["bmc"]),
                        nics.join(", "),
                    ]
                })
                .collect();
            crate::client::table(&["site", "host", "workflow", "bmc", "interfaces"], &table);
        }
    }
    Ok(ExitCode::SUCCESS)
}
