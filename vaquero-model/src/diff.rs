//! Diffs between two compiled models of a site.
//!
//! A host *needs reprovisioning* when what it would install changes: its
//! workflow, the boot ids or OS of its stages, or anything its stages render
//! (kernel, initrds, command line, unattended config). Those are compared
//! after rendering, so a metadata change that no template reads changes
//! nothing that matters, and one that a template reads does.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::compiled::{HostRef, SiteModel};

/// One changed field of a host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// Key path, e.g. `interfaces[0].ipv4`, `metadata.rack`,
    /// `stages[1].cmdline`.
    pub path: String,
    /// The old value (`null` when added, or for rendered configs).
    pub from: Value,
    /// The new value (`null` when removed, or for rendered configs).
    pub to: Value,
    /// Whether this change alone requires reprovisioning.
    pub reprovision: bool,
}

/// A host present in both revisions that changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostChange {
    /// The host's name.
    pub host: String,
    /// Whether the host must be reprovisioned.
    pub reprovision: bool,
    /// What changed.
    pub fields: Vec<FieldChange>,
}

/// The difference between two models of one site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelDiff {
    /// The site.
    pub site: String,
    /// Version of the old model.
    pub from_version: String,
    /// Version of the new model.
    pub to_version: String,
    /// Hosts only in the new model.
    pub added: Vec<String>,
    /// Hosts only in the old model.
    pub removed: Vec<String>,
    /// Hosts in both that changed.
    pub changed: Vec<HostChange>,
}

impl ModelDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Hosts that need reprovisioning.
    pub fn reprovision(&self) -> impl Iterator<Item = &str> {
        self.changed
            .iter()
            .filter(|c| c.reprovision)
            .map(|c| c.host.as_str())
    }
}

impl std::fmt::Display for ModelDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "site {}: {} → {}",
            self.site,
            short(&self.from_version),
            short(&self.to_version)
        )?;
        if self.is_empty() {
            return writeln!(f, "  no changes");
        }
        for h in &self.added {
            writeln!(f, "  + {h} (new host)")?;
        }
        for h in &self.removed {
            writeln!(f, "  - {h} (removed)")?;
        }
        for c in &self.changed {
            let tag = if c.reprovision {
                "reprovision"
            } else {
                "update in place"
            };
            writeln!(f, "  ~ {} ({tag})", c.host)?;
            for fc in &c.fields {
                let mark = if fc.reprovision { " [reprovision]" } else { "" };
                if fc.from.is_null() && fc.to.is_null() {
                    writeln!(f, "      {}: changed{mark}", fc.path)?;
                } else {
                    writeln!(
                        f,
                        "      {}: {} → {}{mark}",
                        fc.path,
                        show(&fc.from),
                        show(&fc.to)
                    )?;
                }
            }
        }
        let n = self.reprovision().count();
        writeln!(
            f,
            "  {} added, {} removed, {} changed ({n} to reprovision)",
            self.added.len(),
            self.removed.len(),
            self.changed.len()
        )
    }
}

fn short(v: &str) -> &str {
    v.get(..12).unwrap_or(v)
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "(none)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The diffs of every site between two sets of compiled models (by site
/// id), as [`diff_sites`] makes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SiteDiffs {
    /// Sites only in the new models.
    pub sites_added: Vec<String>,
    /// Sites only in the old models.
    pub sites_removed: Vec<String>,
    /// One diff per site in both.
    pub sites: Vec<ModelDiff>,
}

impl SiteDiffs {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.sites_added.is_empty()
            && self.sites_removed.is_empty()
            && self.sites.iter().all(ModelDiff::is_empty)
    }
}

impl std::fmt::Display for SiteDiffs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.sites_added {
            writeln!(f, "site {s}: new site")?;
        }
        for s in &self.sites_removed {
            writeln!(f, "site {s}: removed")?;
        }
        for d in &self.sites {
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The diffs from `old` to `new`, site by site.
pub fn diff_sites(
    old: &std::collections::BTreeMap<String, SiteModel>,
    new: &std::collections::BTreeMap<String, SiteModel>,
) -> SiteDiffs {
    let mut out = SiteDiffs::default();
    for (id, b) in new {
        match old.get(id) {
            Some(a) => out.sites.push(diff(a, b)),
            None => out.sites_added.push(id.clone()),
        }
    }
    out.sites_removed = old
        .keys()
        .filter(|id| !new.contains_key(*id))
        .cloned()
        .collect();
    out
}

/// The diff from `old` to `new` (two models of the same site).
pub fn diff(old: &SiteModel, new: &SiteModel) -> ModelDiff {
    let mut out = ModelDiff {
        site: new.site().id.clone(),
        from_version: old.version().to_owned(),
        to_version: new.version().to_owned(),
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
    };
    if old.version() == new.version() {
        return out;
    }
    let old_names: HashMap<&str, usize> = old
        .hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.as_str(), i))
        .collect();
    for h in new.hosts() {
        if !old_names.contains_key(h.name.as_str()) {
            out.added.push(h.name.clone());
        }
    }
    for h in old.hosts() {
        if new.by_name(&h.name).is_none() {
            out.removed.push(h.name.clone());
        }
    }
    let same = Same::new(old, new);
    use rayon::prelude::*;
    out.changed = new
        .hosts()
        .par_iter()
        .with_min_len(256)
        .filter_map(|nh| {
            let (a, b) = (old.by_name(&nh.name)?, new.by_name(&nh.name)?);
            let mut fields = Vec::new();
            let host_same = a.host == b.host;
            if !host_same {
                let av = serde_json::to_value(a.host).unwrap_or(Value::Null);
                let bv = serde_json::to_value(b.host).unwrap_or(Value::Null);
                json_diff("", &av, &bv, &mut fields);
                for f in &mut fields {
                    f.reprovision = f.path == "workflow";
                }
            }
            stage_diff(old, a, new, b, &same, host_same, &mut fields);
            (!fields.is_empty()).then(|| HostChange {
                host: nh.name.clone(),
                reprovision: fields.iter().any(|f| f.reprovision),
                fields,
            })
        })
        .collect();
    out
}

/// What did not change between the two models, so that hosts whose
/// rendering inputs are all equal are not rendered at all.
struct Same<'a> {
    /// Site (with subnets and agents: the `site`, `subnet` and `urls`
    /// of the context).
    site: bool,
    /// Per boot id present in both: whether its definition is equal, and
    /// which of its rendered parts have equal templates and inputs.
    boots: HashMap<&'a str, (bool, Parts)>,
}

/// Rendered parts of a stage: kernel, initrds, cmdline, unattended.
type Parts = [bool; 4];

impl<'a> Same<'a> {
    fn new(old: &SiteModel, new: &'a SiteModel) -> Self {
        let (od, nd) = (old.data(), new.data());
        let assets_same = |dir: &str| {
            let prefix = format!("{dir}/");
            let pick = |m: &'_ SiteModel| {
                m.data()
                    .assets
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            };
            pick(old) == pick(new)
        };
        let boots = nd
            .boots
            .iter()
            .filter_map(|(id, nb)| {
                let ob = od.boots.get(id)?;
                // Templates read any OS field: a part is unchanged when its
                // own template and every other OS field are.
                let (oo, no) = (
                    od.os.get(&ob.operating_system),
                    nd.os.get(&nb.operating_system),
                );
                let (kernel, initrd, cmdline) = match (oo, no) {
                    (Some(x), Some(y)) if ob.operating_system == nb.operating_system => {
                        let rest = |o: &crate::types::Os| {
                            let mut o = o.clone();
                            o.boot.kernel.clear();
                            o.boot.initrd.clear();
                            o.cmdline.clear();
                            o
                        };
                        let rest_same = rest(x) == rest(y);
                        (
                            rest_same && x.boot.kernel == y.boot.kernel,
                            rest_same && x.boot.initrd == y.boot.initrd,
                            rest_same && x.cmdline == y.cmdline,
                        )
                    }
                    _ => (false, false, false),
                };
                let assets = match (&ob.unattended, &nb.unattended) {
                    (None, None) => true,
                    (Some(x), Some(y)) => x == y && assets_same(y.kind.dir()),
                    _ => false,
                };
                Some((id.as_str(), (ob == nb, [kernel, initrd, cmdline, assets])))
            })
            .collect();
        Same {
            site: od.site == nd.site,
            boots,
        }
    }

    /// Which parts of `boot` must be rendered on both sides for a host
    /// (`host_same`: the host itself is equal).
    fn parts(&self, boot: &str, host_same: bool) -> Parts {
        match self.boots.get(boot) {
            Some(&(boot_same, same)) if self.site && host_same && boot_same => same.map(|s| !s),
            _ => [true; 4],
        }
    }
}

fn json_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                json_diff(
                    &join(k),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                json_diff(
                    &format!("{path}[{i}]"),
                    x.get(i).unwrap_or(&Value::Null),
                    y.get(i).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(FieldChange {
            path: path.to_owned(),
            from: a.clone(),
            to: b.clone(),
            reprovision: false,
        }),
        _ => {}
    }
}

/// What a stage installs, rendered with fixed URLs and token so that only
/// SoT content can make two renderings differ; only the parts asked for.
fn rendered(
    m: &SiteModel,
    h: HostRef<'_>,
    hc: &crate::compiled::HostContext,
    boot: &str,
    [kernel, initrd, cmdline, unattended]: Parts,
) -> Vec<(&'static str, Value)> {
    let urls = m.urls(h, boot, "diff");
    let ctx = m.context_for(hc, boot, urls.as_ref());
    let mut v = Vec::new();
    if kernel || initrd || cmdline {
        match m.render_boot_parts(boot, &ctx, [kernel, initrd, cmdline]) {
            Ok(r) => {
                if kernel {
                    v.push(("kernel", Value::String(r.kernel)));
                }
                if initrd {
                    v.push(("initrd", serde_json::json!(r.initrds)));
                }
                if cmdline {
                    v.push(("cmdline", Value::String(r.cmdline)));
                }
            }
            Err(e) => v.push(("kernel", Value::String(format!("(render error: {e})")))),
        }
    }
    if unattended {
        let un = match m.render_unattended(boot, &ctx) {
            Ok(Some((_, text))) => Value::String(text),
            Ok(None) => Value::Null,
            Err(e) => Value::String(format!("(render error: {e})")),
        };
        v.push(("unattended", un));
    }
    v
}

fn stage_diff(
    old: &SiteModel,
    a: HostRef<'_>,
    new: &SiteModel,
    b: HostRef<'_>,
    same: &Same<'_>,
    host_same: bool,
    out: &mut Vec<FieldChange>,
) {
    let sa = old.stages(a.host);
    let sb = new.stages(b.host);
    if sa != sb {
        out.push(FieldChange {
            path: "stages".into(),
            from: serde_json::json!(sa),
            to: serde_json::json!(sb),
            reprovision: true,
        });
    }
    let os_of = |m: &SiteModel, boot: &str| {
        m.data()
            .boots
            .get(boot)
            .map(|b| b.operating_system.clone())
            .unwrap_or_default()
    };
    let mut contexts = None;
    for (i, (ba, bb)) in sa.iter().zip(&sb).enumerate() {
        let (oa, ob) = (os_of(old, ba), os_of(new, bb));
        if oa != ob {
            out.push(FieldChange {
                path: format!("stages[{i}].os"),
                from: Value::String(oa),
                to: Value::String(ob),
                reprovision: true,
            });
        }
        let parts = if ba == bb {
            same.parts(bb, host_same)
        } else {
            [true; 4]
        };
        if parts == [false; 4] {
            continue;
        }
        let (ca, cb) = contexts.get_or_insert_with(|| (old.host_context(a), new.host_context(b)));
        let ra = rendered(old, a, ca, ba, parts);
        let rb = rendered(new, b, cb, bb, parts);
        for ((what, va), (_, vb)) in ra.into_iter().zip(rb) {
            if va == vb {
                continue;
            }
            let long = what == "unattended";
            out.push(FieldChange {
                path: format!("stages[{i}].{what}"),
                from: if long { Value::Null } else { va },
                to: if long { Value::Null } else { vb },
                reprovision: true,
            });
        }
    }
}
