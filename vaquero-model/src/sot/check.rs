//! The check pass: what no single file can say — references between
//! entities, uniqueness, identities, policies, templates and every host
//! rendered.

use std::collections::{BTreeMap, HashMap, HashSet};

use marked_yaml::Node;

use crate::class::ClassResolver;
use crate::compiled::{Build, SiteModel};
use crate::diag::Diagnostic;
use crate::render::{Renderer, TemplateError, check_unattended};
use crate::types::{
    AssetType, BmcType, Class, Host, Interface, InterfaceType, Location, Site, Uuid, Workflow,
};
use crate::yaml::{self, deserialize_all, node_at, span_at, take_metadata};

use super::Loader;

impl Loader {
    pub(super) fn check_classes<'r>(
        &mut self,
        raw: &'r BTreeMap<String, Node>,
    ) -> ClassResolver<'r> {
        for (id, node) in raw {
            let mut n = node.clone();
            if node_at(&n, "name").is_some() {
                self.err(node, "name", "a class cannot set `name`");
                yaml::take_key(&mut n, "name");
            }
            let md = take_metadata(&self.map, &mut n, "", &mut self.diags);
            if let Some(mut c) = deserialize_all::<Class>(&self.map, &n, "", &mut self.diags) {
                c.metadata = md;
                self.sot.classes.insert(id.clone(), c);
            }
        }
        let mut resolver = ClassResolver::new(raw);
        resolver.check_all(&self.map, &mut self.diags);
        resolver
    }

    pub(super) fn check_references(&mut self) {
        type BootRefs = (String, String, Option<(AssetType, String)>);
        let boots: Vec<BootRefs> = self
            .sot
            .boots
            .values()
            .map(|b| {
                (
                    b.id.clone(),
                    b.operating_system.clone(),
                    b.unattended.as_ref().map(|u| (u.kind, u.asset.clone())),
                )
            })
            .collect();
        for (id, os, un) in boots {
            let node = self.boot_nodes[&id].clone();
            if self.dangles("os", &os, self.sot.os.contains_key(&os)) {
                self.err(
                    &node,
                    "operating_system",
                    format!(
                        "unknown operating system `{os}`{}",
                        yaml::did_you_mean(&os, self.sot.os.keys().map(String::as_str))
                    ),
                );
            }
            if let Some((kind, asset)) = un {
                let name = format!("{}/{}", kind.dir(), asset);
                if !self.sot.assets.contains_key(&name) {
                    self.err(&node, "unattended.use", format!("no asset `assets/{name}`"));
                }
            }
        }
        let wfs: Vec<Workflow> = self.sot.workflows.values().cloned().collect();
        for wf in &wfs {
            let node = self.workflow_nodes[&wf.id].clone();
            let stages_key = if node_at(&node, "workflow").is_some() {
                "workflow"
            } else {
                "stages"
            };
            for (i, st) in wf.stages.iter().enumerate() {
                if self.dangles("boot", &st.boot, self.sot.boots.contains_key(&st.boot)) {
                    self.err(
                        &node,
                        &format!("{stages_key}[{i}].boot"),
                        format!(
                            "unknown boot `{}`{}",
                            st.boot,
                            yaml::did_you_mean(&st.boot, self.sot.boots.keys().map(String::as_str))
                        ),
                    );
                }
            }
            let pol = if node_at(&node, "deps").is_some() {
                "deps"
            } else {
                "policy"
            };
            for (i, dep) in wf.policy.block_deps.iter().enumerate() {
                let p = format!("{pol}.block_deps[{i}]");
                if dep == &wf.id {
                    self.err(&node, &p, "a workflow cannot block on itself");
                } else if self.dangles("workflow", dep, self.sot.workflows.contains_key(dep)) {
                    let hint =
                        yaml::did_you_mean(dep, self.sot.workflows.keys().map(String::as_str));
                    self.err(&node, &p, format!("unknown workflow `{dep}`{hint}"));
                } else if let Some(cycle) = dep_cycle(&self.sot.workflows, &wf.id, dep) {
                    self.err(
                        &node,
                        &p,
                        format!("block_deps cycle: {}", cycle.join(" → ")),
                    );
                }
            }
        }
    }

    /// Compiles every template once; reports syntax errors.
    pub(super) fn check_template_syntax(&mut self) -> bool {
        let (_, errors) = Renderer::build(
            self.sot.os.values(),
            self.sot.boots.values(),
            &self.sot.assets,
        );
        let ok = errors.is_empty();
        for e in errors {
            let d = self.template_diag(&e, None);
            self.diags.push(d);
        }
        ok
    }

    /// Where a template error points: an asset file, or the YAML value an
    /// inline template came from.
    pub(super) fn template_diag(&self, e: &TemplateError, host: Option<&str>) -> Diagnostic {
        let who = host
            .map(|h| format!(" (rendering for host `{h}`)"))
            .unwrap_or_default();
        let msg = format!("{}{who}", e.message);
        let line = e.line.unwrap_or(1);
        let col = e.column.unwrap_or(1);
        let parts: Vec<&str> = e.origin.split(':').collect();
        let (node, path) = match parts.as_slice() {
            ["os", id, "kernel"] => (self.os_nodes.get(*id), "boot.kernel".to_owned()),
            ["os", id, "initrd", i] => (self.os_nodes.get(*id), format!("boot.initrd[{i}]")),
            ["os", id, "cmdline", i, j] => {
                let node = self.os_nodes.get(*id);
                let key = node
                    .and_then(|n| node_at(n, &format!("cmdline[{i}]")))
                    .and_then(|n| n.as_mapping())
                    .and_then(|m| m.keys().next().map(|k| k.as_str().to_owned()))
                    .unwrap_or_default();
                let base = format!("cmdline[{i}].{key}");
                let is_list = node
                    .and_then(|n| node_at(n, &base))
                    .is_some_and(|n| n.as_sequence().is_some());
                (
                    node,
                    if is_list {
                        format!("{base}[{j}]")
                    } else {
                        base
                    },
                )
            }
            ["boot", id, list, i, "command", j] => (
                self.boot_nodes.get(*id),
                format!("{list}[{i}].command[{j}]"),
            ),
            ["boot", id, list, i, "url"] => (self.boot_nodes.get(*id), format!("{list}[{i}].url")),
            ["boot", id, list, i, "env", k] => {
                (self.boot_nodes.get(*id), format!("{list}[{i}].env.{k}"))
            }
            _ => {
                return Diagnostic::error(&format!("assets/{}", e.origin), line, col, "", msg);
            }
        };
        match node {
            Some(n) => {
                let mut d = self.map.diag(&span_at(n, &path), &path, msg);
                // Multi-line inline templates: move down to the failing line.
                if line > 1 {
                    d.line += line - 1;
                    d.column = col;
                }
                d
            }
            None => Diagnostic::error("<unknown>", 0, 0, &path, msg),
        }
    }

    pub(super) fn check_host(&mut self, site: &Site, host: &Host, n: &Node) {
        let si = self.site_index(&site.id);
        let name = &host.name;
        self.first(
            |s| &mut s.hosts,
            (si, name.as_str().into()),
            n,
            "name",
            || format!("duplicate host `{name}` in site `{}`", site.id),
        );
        if self.dangles(
            "workflow",
            &host.workflow,
            self.sot.workflows.contains_key(&host.workflow),
        ) {
            self.err(
                n,
                "workflow",
                format!(
                    "unknown workflow `{}`{}",
                    host.workflow,
                    yaml::did_you_mean(
                        &host.workflow,
                        self.sot.workflows.keys().map(String::as_str)
                    )
                ),
            );
            // Its workflow's host count misses it: no min_standing noise.
            self.hosts_dropped = true;
        }
        if !host
            .interfaces
            .iter()
            .any(|i| i.kind == InterfaceType::Physical)
        {
            self.err(
                n,
                "interfaces",
                "a host needs at least one `physical` interface",
            );
        }
        self.check_identity(site, &host.interfaces, host.uuid, host.location.as_ref(), n);
        for (i, iface) in host.interfaces.iter().enumerate() {
            if iface
                .bmc
                .as_ref()
                .is_some_and(|b| b.kind == BmcType::Custom)
            {
                let path = format!("interfaces[{i}].bmc.driver");
                if let Some(l) = self.loc_of(n, &path) {
                    let origin = self.origin(l);
                    self.sot
                        .bmc_origins
                        .insert((site.id.clone(), host.name.clone()), origin);
                }
            }
        }
    }

    /// The checks of a host's interfaces, UUID and location, alone and
    /// against the other hosts (uniqueness, subnets).
    pub(super) fn check_identity(
        &mut self,
        site: &Site,
        interfaces: &[Interface],
        uuid: Option<Uuid>,
        location: Option<&Location>,
        n: &Node,
    ) {
        let si = self.site_index(&site.id);
        for (j, iface) in interfaces.iter().enumerate() {
            let p = format!("interfaces[{j}]");
            let mac = iface.mac;
            self.first(
                |s| &mut s.macs,
                mac,
                n,
                &format!("{p}.mac"),
                || format!("duplicate MAC {mac}"),
            );
            match site.subnets.iter().find(|s| s.id == iface.subnet) {
                None => self.err(
                    n,
                    &format!("{p}.subnet"),
                    format!(
                        "unknown subnet `{}` in site `{}`{}",
                        iface.subnet,
                        site.id,
                        yaml::did_you_mean(
                            &iface.subnet,
                            site.subnets.iter().map(|s| s.id.as_str())
                        )
                    ),
                ),
                Some(s) => {
                    if !s.cidr.contains(&iface.ipv4) {
                        self.err(
                            n,
                            &format!("{p}.ipv4"),
                            format!("{} is outside subnet `{}` ({})", iface.ipv4, s.id, s.cidr),
                        );
                    } else if s.cidr.prefix_len() < 31
                        && (iface.ipv4 == s.cidr.network() || iface.ipv4 == s.cidr.broadcast())
                    {
                        self.err(
                            n,
                            &format!("{p}.ipv4"),
                            format!(
                                "{} is the network or broadcast address of {}",
                                iface.ipv4, s.cidr
                            ),
                        );
                    }
                }
            }
            let ip = iface.ipv4;
            self.first(
                |s| &mut s.ips,
                (si, ip),
                n,
                &format!("{p}.ipv4"),
                || format!("duplicate IPv4 address {ip}"),
            );
            if let Some(b) = &iface.bmc {
                if iface.kind != InterfaceType::Bmc {
                    self.err(
                        n,
                        &format!("{p}.bmc"),
                        "only an interface of type `bmc` can have a `bmc` section",
                    );
                }
                if b.password_env.is_some() && b.password_file.is_some() {
                    self.err(
                        n,
                        &format!("{p}.bmc"),
                        "set `password_env` or `password_file`, not both",
                    );
                }
                if b.kind == BmcType::Exec && b.command.is_empty() {
                    self.err(n, &format!("{p}.bmc"), "an exec BMC needs a `command`");
                }
                if b.kind == BmcType::Custom && b.driver.as_deref().is_none_or(str::is_empty) {
                    self.err(
                        n,
                        &format!("{p}.bmc"),
                        "a custom BMC needs `driver`: the name of a power driver the process registered",
                    );
                }
                if b.kind != BmcType::Custom && (b.driver.is_some() || !b.params.is_empty()) {
                    self.err(
                        n,
                        &format!("{p}.bmc"),
                        "`driver` and `params` are for a custom BMC (`type: custom`)",
                    );
                }
                if b.kind != BmcType::Ipmi && (b.retransmit.is_some() || b.tries.is_some()) {
                    self.err(
                        n,
                        &format!("{p}.bmc"),
                        "`retransmit` and `tries` are for an ipmi BMC (other BMCs speak TCP)",
                    );
                }
                if b.tries.is_some_and(|t| !(1..=10).contains(&t)) {
                    self.err(n, &format!("{p}.bmc.tries"), "`tries` must be 1 to 10");
                }
                if b.retransmit
                    .is_some_and(|r| !(1..=30).contains(&r.as_secs()))
                {
                    self.err(
                        n,
                        &format!("{p}.bmc.retransmit"),
                        "`retransmit` must be 1s to 30s",
                    );
                }
            }
        }
        if let Some(u) = uuid {
            self.first(
                |s| &mut s.uuids,
                (si, u),
                n,
                "uuid",
                || format!("duplicate SMBIOS UUID {u}"),
            );
        }
        if let Some(l) = location {
            if l.circuit_id.is_none() && l.remote_id.is_none() {
                self.err(
                    n,
                    "location",
                    "a location needs `circuit_id`, `remote_id` or both",
                );
            } else {
                let k = (si, l.circuit_id.clone(), l.remote_id.clone());
                self.first(
                    |s| &mut s.locations,
                    k,
                    n,
                    "location",
                    || "duplicate location (another host is cabled there)".to_owned(),
                );
            }
        }
    }

    pub(super) fn check_sites_and_policies(&mut self) {
        if self.hosts_dropped {
            // Hosts that failed to load would make these counts wrong; the
            // operator fixes those errors first.
            return;
        }
        let mut per_wf: HashMap<&str, usize> = HashMap::new();
        for s in self.sot.sites.values() {
            for h in &s.hosts {
                *per_wf.entry(h.workflow.as_str()).or_default() += 1;
            }
        }
        let per_wf: HashMap<String, usize> =
            per_wf.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let empty: Vec<String> = self
            .sot
            .sites
            .iter()
            .filter(|(_, s)| s.hosts.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in empty {
            if let Some(n) = self.site_nodes.get(&id).cloned() {
                self.err(&n, "id", format!("site `{id}` has no hosts"));
            }
        }
        let wfs: Vec<Workflow> = self.sot.workflows.values().cloned().collect();
        for wf in wfs {
            let Some(ms) = wf.policy.min_standing else {
                continue;
            };
            let hosts = per_wf.get(&wf.id).copied().unwrap_or(0);
            if ms as usize > hosts {
                let node = self.workflow_nodes[&wf.id].clone();
                let pol = if node_at(&node, "deps").is_some() {
                    "deps"
                } else {
                    "policy"
                };
                self.err(
                    &node,
                    &format!("{pol}.min_standing"),
                    format!("min_standing {ms} is more than the workflow's {hosts} host(s)"),
                );
            }
        }
    }

    /// What fails when rendering every stage of one host.
    pub(super) fn render_problems(
        &self,
        model: &SiteModel,
        i: usize,
        host: &Host,
    ) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        let Some(iface) = host.primary_interface() else {
            return problems;
        };
        let h = crate::compiled::HostRef {
            host,
            index: i,
            interface: iface,
        };
        let hc = model.host_context(h);
        for boot in model.stages(host) {
            let urls = model.urls(h, boot, "checkpoint-token");
            let ctx = model.context_for(&hc, boot, urls.as_ref());
            let mut on_err = |e: crate::RenderFailure| match e {
                crate::RenderFailure::Template(t) => problems.push(self.template_diag(&t, None)),
                other => problems.push(Diagnostic::error("<model>", 0, 0, "", other.to_string())),
            };
            if let Err(e) = model.render_boot(boot, &ctx) {
                on_err(e);
            }
            if let Err(e) = model.render_jobs(boot, &ctx) {
                on_err(e);
            }
            match model.render_unattended(boot, &ctx) {
                Ok(Some((kind, text))) => {
                    if let Err((line, msg)) = check_unattended(kind, &text) {
                        let asset = model.data().boots[boot]
                            .unattended
                            .as_ref()
                            .map(|u| u.asset.as_str())
                            .unwrap_or_default();
                        problems.push(Diagnostic::error(
                            &format!("assets/{}/{asset}", kind.dir()),
                            line.max(1),
                            1,
                            "",
                            format!("rendered {kind} is malformed at its line {line}: {msg}"),
                        ));
                    }
                }
                Ok(None) => {}
                Err(e) => on_err(e),
            }
        }
        problems
    }

    /// Renders every template for every host that uses it and checks the
    /// unattended configs. Identical failures of many hosts are reported
    /// once, with a count.
    pub(super) fn check_rendering(&mut self) {
        if self.diags.has_errors() {
            // References may be broken; rendering would report noise.
            return;
        }
        // (file, line, column, path, message) → (first host, how many hosts)
        type Seen = BTreeMap<(String, usize, usize, String, String), (String, usize)>;
        let mut found: Seen = BTreeMap::new();
        let site_ids: Vec<String> = self.sot.sites.keys().cloned().collect();
        for id in site_ids {
            // The hosts move into the model and back: a SoT of 100,000 hosts
            // is not held twice.
            let Some(s) = self.sot.sites.get_mut(&id) else {
                continue;
            };
            let hosts = std::mem::take(&mut s.hosts);
            let site = s.site.clone();
            let model = match SiteModel::compile_with(&self.sot, &site, hosts, Build::RenderOnly) {
                Ok(m) => m,
                Err(e) => {
                    self.file_err(&format!("sites/{id}/env.yml"), e.to_string());
                    continue;
                }
            };
            use rayon::prelude::*;
            let this = &*self;
            let per_host: Vec<(usize, Vec<Diagnostic>)> = model
                .hosts()
                .par_iter()
                .enumerate()
                .filter_map(|(i, host)| {
                    let p = this.render_problems(&model, i, host);
                    (!p.is_empty()).then_some((i, p))
                })
                .collect();
            for (i, problems) in per_host {
                for d in problems {
                    let e = found
                        .entry((d.file, d.line, d.column, d.path, d.message))
                        .or_insert_with(|| (model.hosts()[i].name.clone(), 0));
                    e.1 += 1;
                }
            }
            if let Some(s) = self.sot.sites.get_mut(&id) {
                s.hosts = model.into_data().hosts;
            }
        }
        for ((file, line, col, path, msg), (first, count)) in found {
            let more = if count > 1 {
                format!(" and {} more", count - 1)
            } else {
                String::new()
            };
            self.diags.push(Diagnostic::error(
                &file,
                line,
                col,
                &path,
                format!("{msg} (for host `{first}`{more})"),
            ));
        }
    }
}

/// A path from `dep` back to `from` through block_deps, if any.
pub(super) fn dep_cycle(
    wfs: &BTreeMap<String, Workflow>,
    from: &str,
    dep: &str,
) -> Option<Vec<String>> {
    let mut stack = vec![(dep.to_owned(), vec![from.to_owned(), dep.to_owned()])];
    let mut seen = HashSet::new();
    while let Some((cur, path)) = stack.pop() {
        if !seen.insert(cur.clone()) {
            continue;
        }
        for next in wfs
            .get(&cur)
            .map(|w| w.policy.block_deps.as_slice())
            .unwrap_or(&[])
        {
            let mut p = path.clone();
            p.push(next.clone());
            if next == from {
                return Some(p);
            }
            stack.push((next.clone(), p));
        }
    }
    None
}
