//! The files a site's boots need, checked where they are served, before
//! any machine is powered on: every kernel and initrd a host's stages
//! load from the agent's `asset_server.base_dir`, and the iPXE binaries
//! of its TFTP root. A file that is missing, or that the boot service
//! would refuse (a link out of the root, unreadable), is a warning at
//! the line of the SoT that names it — not a machine looping on
//! "Loading the kernel failed".

use std::collections::{BTreeMap, BTreeSet};

use vaquero_ipxe::files::FileRoot;
use vaquero_model::{Agent, Diagnostic, SiteModel, Sot};

use crate::site::IPXE_FILES;

/// Warnings about the files `agent` serves for `model`'s boots. `sot`
/// (the revision the model was compiled from) gives each its line; a
/// model alone (an agent's) points at the OS file. Renders each host's
/// boots once; each file is opened once.
pub fn check_boot_files(model: &SiteModel, agent: &Agent, sot: Option<&Sot>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let site_file = format!("sites/{}/env.yml", model.site().id);
    let at = |os: &str, path: &str, message: String| match sot
        .and_then(|s| s.origins.get(&(os.to_owned(), path.to_owned())))
    {
        Some(o) => o.warning(path, message),
        None => Diagnostic::error(&format!("os/{os}.yml"), 0, 0, path, message).into_warning(),
    };
    let asset = agent.asset_server.as_ref();
    let root = match asset.and_then(|a| a.base_dir.as_deref()) {
        None => None,
        Some(dir) => match FileRoot::new(std::path::Path::new(dir)).and_then(|r| {
            r.allow_links_to(
                asset
                    .map(|a| a.allow_links_to.as_slice())
                    .unwrap_or_default(),
            )
        }) {
            Ok(r) => Some(r),
            Err(e) => {
                out.push(
                    Diagnostic::error(
                        &site_file,
                        0,
                        0,
                        "asset_server.base_dir",
                        format!("`{dir}` (or a directory of allow_links_to) cannot be served: {e}"),
                    )
                    .into_warning(),
                );
                None
            }
        },
    };
    if let (Some(root), Some(url)) = (&root, model.agent_url()) {
        let prefix = format!("{}/files/", url.trim_end_matches('/'));
        // file -> (os, key path, boots, hosts), in a stable order.
        let mut wanted: BTreeMap<String, (String, String, BTreeSet<String>, usize)> =
            BTreeMap::new();
        for h in model.hosts() {
            let Some(href) = model.by_name(&h.name).filter(|_| !h.never_provision) else {
                continue;
            };
            // The files of this host's stages, each counted once per host.
            let mut mine = BTreeSet::new();
            for boot in model.stages(h) {
                let Some(urls) = model.urls(href, boot, "check") else {
                    continue;
                };
                let ctx = model.context(href, boot, Some(&urls));
                let Ok(r) = model.render_boot(boot, &ctx) else {
                    continue; // validation reports templates that fail
                };
                let parts = std::iter::once(("boot.kernel".to_owned(), r.kernel)).chain(
                    r.initrds
                        .into_iter()
                        .enumerate()
                        .map(|(i, u)| (format!("boot.initrd[{i}]"), u)),
                );
                for (path, u) in parts {
                    let Some(rel) = u.strip_prefix(&prefix) else {
                        continue; // served from elsewhere
                    };
                    let rel = rel.split(['?', '#']).next().unwrap_or_default();
                    let rel = percent_encoding::percent_decode_str(rel)
                        .decode_utf8_lossy()
                        .into_owned();
                    wanted
                        .entry(rel.clone())
                        .or_insert_with(|| (r.os.clone(), path, BTreeSet::new(), 0))
                        .2
                        .insert(boot.to_owned());
                    mine.insert(rel);
                }
            }
            for rel in mine {
                if let Some(e) = wanted.get_mut(&rel) {
                    e.3 += 1;
                }
            }
        }
        for (rel, (os, path, boots, hosts)) in wanted {
            if let Err(status) = root.open(&rel) {
                let what = if path == "boot.kernel" {
                    "kernel"
                } else {
                    "initrd"
                };
                let boots = boots.into_iter().collect::<Vec<_>>().join(", ");
                out.push(at(
                    &os,
                    &path,
                    format!(
                        "the {what} `{rel}` of boot {boots} ({hosts} host{}) would not be served ({}): {}",
                        if hosts == 1 { "" } else { "s" },
                        status.as_u16(),
                        root.explain(&rel, status)
                    ),
                ));
            }
        }
    }
    if let Some(tftp) = agent.tftp_server.as_ref()
        && let Some(dir) = tftp.base_dir.as_deref()
    {
        match vaquero_tftp::Directory::new(dir).and_then(|d| d.allow_links_to(&tftp.allow_links_to))
        {
            Ok(d) => {
                let client = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                for f in IPXE_FILES {
                    use vaquero_tftp::FileSource;
                    match d.open(f, client) {
                        Ok(_) | Err(vaquero_tftp::OpenFailure::NotFound) => {}
                        Err(e) => out.push(
                            Diagnostic::error(
                                &site_file,
                                0,
                                0,
                                "tftp_server.base_dir",
                                format!("`{f}` would not be served over TFTP: {e}"),
                            )
                            .into_warning(),
                        ),
                    }
                }
            }
            Err(e) => out.push(
                Diagnostic::error(
                    &site_file,
                    0,
                    0,
                    "tftp_server.base_dir",
                    format!("`{dir}` (or a directory of allow_links_to) cannot be served: {e}"),
                )
                .into_warning(),
            ),
        }
    }
    out.sort();
    out
}
