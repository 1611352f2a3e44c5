//! The load pass: every file of the tree read into typed entities, each
//! problem a diagnostic at file:line, the rest kept for the check pass.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use marked_yaml::Node;

use crate::class::{ClassResolver, declared_classes, merge};
use crate::diag::{Diagnostic, Diagnostics};
use crate::files::SotFiles;
use crate::types::{
    AssetType, Boot, CmdlineValue, Host, Interface, Location, Os, Site, Uuid, Workflow,
};
use crate::yaml::{self, SourceMap, deserialize_all, node_at, take_metadata};

use super::{Entity, Loader, SiteSot};

pub(super) enum Kind<'a> {
    Os,
    Boot,
    Workflow,
    Class(String),
    Asset(&'a str),
    SiteEnv(&'a str),
    Inventory(&'a str),
}

pub(super) fn is_yaml(p: &str) -> bool {
    p.ends_with(".yml") || p.ends_with(".yaml")
}

/// The top-level directories of the SoT layout.
pub(super) const LAYOUT_DIRS: [&str; 6] = ["os", "boot", "workflows", "classes", "assets", "sites"];

/// Why a file is not read as part of the SoT.
pub(super) enum Misplaced {
    /// An error: the file was surely meant to be read (a typo in a
    /// directory name, a nested site directory, a YAML file at the top).
    Error(String),
    /// A warning: a YAML file outside the layout (CI configuration, say).
    Unread(String),
}

pub(super) fn classify(path: &str) -> Result<Option<Kind<'_>>, Misplaced> {
    let parts: Vec<&str> = path.split('/').collect();
    Ok(match parts.as_slice() {
        ["os", f] if is_yaml(f) => Some(Kind::Os),
        ["boot", f] if is_yaml(f) => Some(Kind::Boot),
        ["workflows", f] if is_yaml(f) => Some(Kind::Workflow),
        ["classes", ..] if is_yaml(path) => crate::class::class_id(path).map(Kind::Class),
        ["assets", t, _, ..] => match AssetType::from_dir(t) {
            Some(_) => Some(Kind::Asset(&path["assets/".len()..])),
            None => {
                return Err(Misplaced::Error(format!(
                    "unknown asset type directory `{t}`: expected cloud-config, ignition, kickstart or untyped"
                )));
            }
        },
        ["sites", s, "env.yml" | "env.yaml"] => Some(Kind::SiteEnv(s)),
        ["sites", s, f] if is_yaml(f) => Some(Kind::Inventory(s)),
        ["assets", _] => {
            return Err(Misplaced::Error(
                "assets go in `assets/<type>/` (cloud-config, ignition, kickstart or untyped): this file is not read"
                    .into(),
            ));
        }
        _ if !is_yaml(path) => None,
        [dir @ ("os" | "boot" | "workflows"), ..] => {
            return Err(Misplaced::Error(format!(
                "`{dir}/` is read one level deep: this file is not read (move it to `{dir}/`)"
            )));
        }
        ["sites", s, .., _] => {
            return Err(Misplaced::Error(format!(
                "directories inside a site are not read: this file's hosts would be left out (move it to `sites/{s}/`)"
            )));
        }
        ["sites", _] => {
            return Err(Misplaced::Error(
                "a site's files go in `sites/<site>/` (its env.yml and inventories): this file is not read"
                    .into(),
            ));
        }
        [_] => {
            return Err(Misplaced::Error(
                "a YAML file at the top of the SoT is not read: entities go in os/, boot/, workflows/, classes/ or sites/<site>/"
                    .into(),
            ));
        }
        [dir, ..] => match closest_dir(dir) {
            Some(best) => {
                return Err(Misplaced::Error(format!(
                    "unknown directory `{dir}/` (did you mean `{best}/`?): this file is not read"
                )));
            }
            None => {
                return Err(Misplaced::Unread(format!(
                    "not read: `{dir}/` is not part of the SoT layout (os/, boot/, workflows/, classes/, assets/, sites/)"
                )));
            }
        },
        [] => None,
    })
}

/// The layout directory a mistyped top-level directory was meant to be
/// (`site` → `sites`, `workflow` → `workflows`, `OS` → `os`).
pub(super) fn closest_dir(dir: &str) -> Option<&'static str> {
    let lower = dir.to_ascii_lowercase();
    LAYOUT_DIRS
        .iter()
        .map(|d| (crate::yaml::levenshtein(&lower, d), *d))
        // Short names allow one edit: `docs` is not a typo of `os`.
        .filter(|(dist, d)| *dist <= if d.len() <= 4 { 1 } else { 2 })
        .min()
        .map(|(_, d)| d)
}

/// A host from its document: classes merged in, metadata read, typed.
/// `None` when it is broken (reported) or uses a broken class (reported at
/// the class).
/// A host document, loaded.
pub(super) enum LoadedHost {
    /// A host of the site.
    Host(Box<Host>, Node),
    /// Not a host (its errors are reported), but what it says of its
    /// identity can be checked against the others.
    Partial(PartialHost, Node),
    /// Nothing to check.
    Broken,
}

/// What a host document that failed to load says of its identity (unknown
/// keys ignored: they are reported already).
#[derive(Debug, serde::Deserialize)]
pub(super) struct PartialHost {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    uuid: Option<Uuid>,
    #[serde(default)]
    location: Option<Location>,
}

pub(super) fn load_host(
    map: &SourceMap,
    resolver: &ClassResolver<'_>,
    node: Node,
    diags: &mut Diagnostics,
) -> LoadedHost {
    let declared = declared_classes(&node);
    let mut classes_ok = true;
    let mut eff = if declared.is_empty() {
        node
    } else {
        let mut eff = yaml::empty_mapping(*node.span());
        for (i, (c, cnode)) in declared.into_iter().enumerate() {
            match resolver.get(&c) {
                Some(cn) => merge(&mut eff, cn),
                None => {
                    classes_ok = false;
                    if !resolver.exists(&c) {
                        diags.push(map.diag(
                            cnode.span(),
                            &format!("classes[{i}]"),
                            format!(
                                "unknown class `{c}`{}",
                                yaml::did_you_mean(&c, resolver.ids())
                            ),
                        ));
                    }
                }
            }
        }
        merge(&mut eff, &node);
        eff
    };
    let md = take_metadata(map, &mut eff, "", diags);
    let params = yaml::take_bmc_params(map, &mut eff, diags);
    let Some(mut host) = deserialize_all::<Host>(map, &eff, "", diags) else {
        let mut unreported = Diagnostics::default();
        return match deserialize_all::<PartialHost>(map, &eff, "", &mut unreported) {
            Some(p) if classes_ok => LoadedHost::Partial(p, eff),
            _ => LoadedHost::Broken,
        };
    };
    host.metadata = md;
    for (i, p) in params {
        if let Some(b) = host.interfaces.get_mut(i).and_then(|i| i.bmc.as_mut()) {
            b.params = p;
        }
    }
    if classes_ok {
        LoadedHost::Host(Box::new(host), eff)
    } else {
        LoadedHost::Broken
    }
}

type Texts = Vec<(String, Arc<str>)>;

/// What [`Loader::read_files`] sorted out for the passes after it.
pub(super) struct Read {
    /// Classes by id, not yet resolved.
    pub(super) classes: BTreeMap<String, Node>,
    /// Each site's `env.yml`: its path and text.
    pub(super) envs: BTreeMap<String, (String, Arc<str>)>,
    /// Each site's inventory files.
    pub(super) inventories: BTreeMap<String, Texts>,
    /// Directories that hold a `sites/S/env.yml` deeper down: the SoT was
    /// given one level too high.
    pub(super) nested_roots: std::collections::BTreeSet<String>,
}

impl Loader {
    /// Reads every file once: entities that stand alone (operating
    /// systems, boots, workflows, assets) are loaded, the rest sorted
    /// out for the passes that need others first (classes, sites,
    /// inventories).
    pub(super) fn read_files(&mut self, files: SotFiles) -> Read {
        let mut classes_raw: BTreeMap<String, Node> = BTreeMap::new();
        let mut envs: BTreeMap<String, (String, Arc<str>)> = BTreeMap::new();
        let mut inventories: BTreeMap<String, Texts> = BTreeMap::new();

        // `X/sites/S/env.yml`: the SoT was given one level too high.
        let mut nested_roots: std::collections::BTreeSet<String> = Default::default();
        for (path, text) in files {
            if let Some(i) = path.find("/sites/")
                && path.ends_with("/env.yml")
            {
                nested_roots.insert(path[..i].to_owned());
            }
            let kind = match classify(&path) {
                Ok(Some(k)) => k,
                Ok(None) => continue,
                Err(Misplaced::Error(msg)) => {
                    self.file_err(&path, msg);
                    self.misplaced(&path, &text);
                    continue;
                }
                Err(Misplaced::Unread(msg)) => {
                    self.diags
                        .push(Diagnostic::error(&path, 1, 1, "", msg).into_warning());
                    continue;
                }
            };
            match kind {
                Kind::Os => self.load_os(&path, &text),
                Kind::Boot => self.load_boot(&path, &text),
                Kind::Workflow => self.load_workflow(&path, &text),
                Kind::Class(id) => {
                    if let Some(e) = self.single_doc(&path, &text) {
                        classes_raw.insert(id, e.node);
                    }
                }
                Kind::Asset(name) => {
                    self.sot.assets.insert(name.to_owned(), text.clone());
                }
                Kind::SiteEnv(site) => {
                    envs.insert(site.to_owned(), (path.clone(), text));
                }
                Kind::Inventory(site) => inventories
                    .entry(site.to_owned())
                    .or_default()
                    .push((path.clone(), text)),
            }
        }
        Read {
            classes: classes_raw,
            envs,
            inventories,
            nested_roots,
        }
    }

    /// A file that was meant to be read but is misplaced (reported): what
    /// it defines is remembered as broken, so that references to it and
    /// counts that miss it are not reported again.
    pub(super) fn misplaced(&mut self, path: &str, text: &str) {
        let top = path.split('/').next().unwrap_or_default();
        let kind = match LAYOUT_DIRS
            .contains(&top)
            .then_some(top)
            .or(closest_dir(top))
        {
            Some("os") => "os",
            Some("boot") => "boot",
            Some("workflows") => "workflow",
            // Hosts (and whole sites) left out.
            _ => {
                self.hosts_dropped = true;
                return;
            }
        };
        let mut quiet = Diagnostics::default();
        let file: Arc<str> = path.into();
        for d in yaml::parse_file(&mut SourceMap::default(), &file, text, &mut quiet) {
            self.mark_broken(kind, &d.node);
        }
    }

    pub(super) fn single_doc(&mut self, path: &str, text: &str) -> Option<Entity> {
        let file: Arc<str> = path.into();
        let mut docs = yaml::parse_file(&mut self.map, &file, text, &mut self.diags);
        match docs.len() {
            0 => {
                if !self.diags.0.iter().any(|d| d.file == path) {
                    self.file_err(path, "the file is empty");
                }
                None
            }
            1 => docs.pop().map(|d| Entity { node: d.node }),
            _ => {
                let n = docs[1].node.clone();
                self.err(&n, "", "expected one document in this file, found several");
                None
            }
        }
    }

    /// A one-document entity file, typed; `metadata` says whether the
    /// entity has a metadata map (read from the tree, see `yaml.rs`).
    pub(super) fn load_entity<T: serde::de::DeserializeOwned>(
        &mut self,
        kind: &'static str,
        path: &str,
        text: &str,
        metadata: bool,
    ) -> Option<(T, crate::types::Metadata, Entity)> {
        let mut e = self.single_doc(path, text)?;
        let md = if metadata {
            take_metadata(&self.map, &mut e.node, "", &mut self.diags)
        } else {
            Default::default()
        };
        match deserialize_all::<T>(&self.map, &e.node, "", &mut self.diags) {
            Some(v) => Some((v, md, e)),
            None => {
                self.mark_broken(kind, &e.node);
                None
            }
        }
    }

    pub(super) fn load_os(&mut self, path: &str, text: &str) {
        let Some((os, _, e)) = self.load_entity::<Os>("os", path, text, false) else {
            return;
        };
        for (i, entry) in os.cmdline.iter().enumerate() {
            if entry.len() != 1 {
                self.err(
                    &e.node,
                    &format!("cmdline[{i}]"),
                    "each cmdline entry must be a map with exactly one key",
                );
            }
            for v in entry.values() {
                if matches!(v, CmdlineValue::Many(l) if l.is_empty()) {
                    self.err(
                        &e.node,
                        &format!("cmdline[{i}]"),
                        "an empty list would drop this parameter; use \"\" for a bare flag",
                    );
                }
            }
        }
        if self.unique("os", &os.id, &e.node, "id") {
            let paths = std::iter::once("boot.kernel".to_owned())
                .chain((0..os.boot.initrd.len()).map(|i| format!("boot.initrd[{i}]")));
            for path in paths {
                if let Some(l) = self.loc_of(&e.node, &path) {
                    let origin = self.origin(l);
                    self.sot.origins.insert((os.id.clone(), path), origin);
                }
            }
            self.os_nodes.insert(os.id.clone(), e.node);
            self.sot.os.insert(os.id.clone(), os);
        }
    }

    pub(super) fn load_boot(&mut self, path: &str, text: &str) {
        let Some((mut boot, md, e)) = self.load_entity::<Boot>("boot", path, text, true) else {
            return;
        };
        boot.metadata = md;
        for (list, jobs) in [
            ("before_shutdown", &boot.before_shutdown),
            ("validate", &boot.validate),
        ] {
            for (i, j) in jobs.iter().enumerate() {
                let p = format!("{list}[{i}]");
                match j.kind {
                    crate::types::JobType::Http if j.url.is_none() => {
                        self.err(&e.node, &p, "an http job needs a `url`");
                    }
                    crate::types::JobType::Exec | crate::types::JobType::Ssh
                        if j.command.is_empty() =>
                    {
                        self.err(&e.node, &p, "this job needs a `command`");
                    }
                    _ => {}
                }
            }
        }
        if self.unique("boot", &boot.id, &e.node, "id") {
            self.boot_nodes.insert(boot.id.clone(), e.node);
            self.sot.boots.insert(boot.id.clone(), boot);
        }
    }

    pub(super) fn load_workflow(&mut self, path: &str, text: &str) {
        let Some((wf, _, e)) = self.load_entity::<Workflow>("workflow", path, text, false) else {
            return;
        };
        if wf.stages.is_empty() {
            self.err(&e.node, "stages", "a workflow needs at least one stage");
        }
        if self.unique("workflow", &wf.id, &e.node, "id") {
            self.workflow_nodes.insert(wf.id.clone(), e.node);
            self.sot.workflows.insert(wf.id.clone(), wf);
        }
    }

    pub(super) fn load_site(&mut self, dir: &str, path: &str, text: &str) {
        let Some(mut e) = self.single_doc(path, text) else {
            return;
        };
        let md = take_metadata(&self.map, &mut e.node, "", &mut self.diags);
        let mut subnet_md = Vec::new();
        let count = node_at(&e.node, "subnets")
            .and_then(|n| n.as_sequence())
            .map_or(0, |s| s.len());
        for i in 0..count {
            let mut sub = match node_at(&e.node, &format!("subnets[{i}]")) {
                Some(n) => n.clone(),
                None => break,
            };
            subnet_md.push(take_metadata(
                &self.map,
                &mut sub,
                &format!("subnets[{i}]"),
                &mut self.diags,
            ));
            if let Some(seq) = e
                .node
                .as_mapping_mut()
                .and_then(|m| m.get_mut("subnets"))
                .and_then(|n| n.as_sequence_mut())
            {
                seq[i] = sub;
            }
        }
        let Some(mut site) = deserialize_all::<Site>(&self.map, &e.node, "", &mut self.diags)
        else {
            return;
        };
        site.metadata = md;
        for (s, m) in site.subnets.iter_mut().zip(subnet_md) {
            s.metadata = m;
        }
        let n = &e.node;
        if site.id != dir {
            self.err(
                n,
                "id",
                format!(
                    "site id `{}` does not match its directory `sites/{dir}`",
                    site.id
                ),
            );
        }
        if site.agents.is_empty() {
            self.err(n, "agents", "a site needs at least one agent");
        }
        if site.subnets.is_empty() {
            self.err(n, "subnets", "a site needs at least one subnet");
        }
        let mut ids = HashSet::new();
        for (i, a) in site.agents.iter().enumerate() {
            if !ids.insert(a.id.clone()) {
                self.err(
                    n,
                    &format!("agents[{i}].id"),
                    format!("duplicate agent `{}`", a.id),
                );
            }
            if a.ssh_container.is_some() {
                self.err(
                    n,
                    &format!("agents[{i}].ssh_container"),
                    "the original format's SSH container is not supported: Vaquero runs SSH itself (jobs of `type: ssh`, and `bmc: {type: ssh}` for power); remove the key",
                );
            }
            if a.ipmi_container.is_some() {
                self.err(
                    n,
                    &format!("agents[{i}].ipmi_container"),
                    "the original format's IPMI container is not supported: Vaquero speaks IPMI itself (`bmc: {type: ipmi}` on the host's BMC interface); remove the key",
                );
            }
            let url = a.asset_server.as_ref().and_then(|s| s.url.as_deref());
            if url.is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
                self.err(
                    n,
                    &format!("agents[{i}].asset_server.url"),
                    "the asset server URL must start with http:// or https://",
                );
            } else if url.is_some_and(|u| u.starts_with("https://")) {
                self.err(
                    n,
                    &format!("agents[{i}].asset_server.url"),
                    "https:// is refused: the boot service has no TLS, and would serve plain HTTP on this URL's port; write http://",
                );
            }
            if a.asset_server
                .as_ref()
                .and_then(|s| s.max_client_connections)
                == Some(0)
            {
                self.err(
                    n,
                    &format!("agents[{i}].asset_server.max_client_connections"),
                    "0 would refuse every connection: give at least 1, or leave it out for the default (64)",
                );
            }
            let links = [
                (
                    "asset_server",
                    a.asset_server.as_ref().map(|s| &s.allow_links_to),
                ),
                (
                    "tftp_server",
                    a.tftp_server.as_ref().map(|s| &s.allow_links_to),
                ),
            ];
            for (what, dirs) in links {
                for (j, d) in dirs.into_iter().flatten().enumerate() {
                    if !d.starts_with('/') || d.split('/').any(|c| c == "..") || d == "/" {
                        self.err(
                            n,
                            &format!("agents[{i}].{what}.allow_links_to[{j}]"),
                            format!(
                                "`{d}` must be an absolute directory other than `/`, without `..`"
                            ),
                        );
                    }
                }
            }
        }
        let mut ids = HashSet::new();
        for (i, s) in site.subnets.iter().enumerate() {
            let p = format!("subnets[{i}]");
            if !ids.insert(s.id.clone()) {
                self.err(
                    n,
                    &format!("{p}.id"),
                    format!("duplicate subnet `{}`", s.id),
                );
            }
            if let Some(gw) = s.gateway.filter(|gw| !s.cidr.contains(gw)) {
                self.err(
                    n,
                    &format!("{p}.gateway"),
                    format!("gateway {gw} is outside {}", s.cidr),
                );
            }
            if s.dns.is_empty() {
                self.err(
                    n,
                    &format!("{p}.dns"),
                    "at least one DNS server is required",
                );
            }
            for (j, o) in s.dhcp_options.iter().enumerate() {
                let op = format!("{p}.dhcp_options[{j}]");
                if matches!(o.option, 0 | 255) {
                    self.err(
                        n,
                        &format!("{op}.option"),
                        format!("option {} is reserved: use 1 to 254", o.option),
                    );
                }
                if let Err(msg) = o.encoded() {
                    self.err(n, &format!("{op}.value"), msg);
                }
            }
        }
        for (i, w) in site.policy.windows.iter().enumerate() {
            if let Err(msg) = w.minutes() {
                self.err(n, &format!("policy.windows[{i}]"), msg);
            }
        }
        self.site_nodes.insert(site.id.clone(), e.node);
        self.sot.sites.insert(
            dir.to_owned(),
            SiteSot {
                site,
                hosts: Vec::new(),
            },
        );
    }

    /// Loads the hosts of a site's inventory files. Documents are parsed,
    /// class-merged and deserialized in parallel batches (pure work); the
    /// checks that need the whole SoT so far run in order afterwards, so
    /// "first defined at" always names the earlier document.
    pub(super) fn load_inventories(
        &mut self,
        site_id: &str,
        files: Vec<(String, Arc<str>)>,
        resolver: &ClassResolver<'_>,
    ) {
        const BATCH: usize = 1024;
        let mut batch: Vec<(usize, String)> = Vec::new();
        for (path, text) in files {
            let file: Arc<str> = path.into();
            batch.extend(self.map.prepare_file(&file, &text));
            // The documents are copied out: the file's text can go now,
            // unless the caller still holds it.
            drop(text);
            if batch.len() >= BATCH {
                self.load_hosts(site_id, std::mem::take(&mut batch), resolver);
            }
        }
        self.load_hosts(site_id, batch, resolver);
        if let Some(s) = self.sot.sites.get_mut(site_id) {
            s.hosts.shrink_to_fit();
        }
    }

    pub(super) fn load_hosts(
        &mut self,
        site_id: &str,
        docs: Vec<(usize, String)>,
        resolver: &ClassResolver<'_>,
    ) {
        use rayon::prelude::*;
        let map = &self.map;
        let loaded: Vec<(Diagnostics, LoadedHost)> = docs
            .into_par_iter()
            .map(|(source, text)| {
                let mut diags = Diagnostics::default();
                let host = match map.parse_doc(source, &text) {
                    Ok(node) => load_host(map, resolver, node, &mut diags),
                    Err(d) => {
                        diags.push(d);
                        LoadedHost::Broken
                    }
                };
                (diags, host)
            })
            .collect();
        let Some(site) = self.sot.sites.get(site_id).map(|s| s.site.clone()) else {
            return;
        };
        for (diags, host) in loaded {
            self.diags.0.extend(diags.0);
            match host {
                LoadedHost::Host(host, node) => {
                    self.check_host(&site, &host, &node);
                    if let Some(s) = self.sot.sites.get_mut(site_id) {
                        s.hosts.push(*host);
                    }
                }
                LoadedHost::Partial(p, node) => {
                    // Its own errors are reported; what can still be
                    // checked against the others is checked now, not on
                    // the next run. It is not a host of the site.
                    self.hosts_dropped = true;
                    let si = self.site_index(&site.id);
                    if let Some(name) = &p.name {
                        self.first(
                            |s| &mut s.hosts,
                            (si, name.as_str().into()),
                            &node,
                            "name",
                            || format!("duplicate host `{name}` in site `{}`", site.id),
                        );
                    }
                    self.check_identity(&site, &p.interfaces, p.uuid, p.location.as_ref(), &node);
                }
                LoadedHost::Broken => self.hosts_dropped = true,
            }
        }
    }
}
