//! Loading and validating a whole SoT tree.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use marked_yaml::Node;

use crate::class::{ClassResolver, declared_classes, merge};
use crate::compiled::{Build, SiteModel};
use crate::diag::{Diagnostic, Diagnostics};
use crate::files::SotFiles;
use crate::render::{Renderer, TemplateError, check_unattended};
use crate::types::{
    AssetType, BmcType, Boot, Class, CmdlineValue, Host, Interface, InterfaceType, Location,
    MacAddr, Os, Site, Uuid, Workflow,
};
use crate::yaml::{self, SourceMap, deserialize_all, node_at, span_at, take_metadata};

/// A site and its hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteSot {
    /// The site (`env.yml`).
    pub site: Site,
    /// Its hosts, classes merged, in file and document order.
    pub hosts: Vec<Host>,
}

/// A loaded, validated SoT.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sot {
    /// The revision it was read from (a commit id, or a directory's content
    /// hash), when known.
    pub revision: Option<String>,
    /// Operating systems by id.
    pub os: BTreeMap<String, Os>,
    /// Boots by id.
    pub boots: BTreeMap<String, Boot>,
    /// Workflows by id.
    pub workflows: BTreeMap<String, Workflow>,
    /// Classes by id (`rack.a` for `classes/rack/a.yml`).
    pub classes: BTreeMap<String, Class>,
    /// Asset templates by `<type>/<path>` (snippets included).
    pub assets: BTreeMap<String, Arc<str>>,
    /// Sites by id.
    pub sites: BTreeMap<String, SiteSot>,
    /// Warnings found while loading (the SoT is usable).
    pub warnings: Diagnostics,
    /// Where each operating system's kernel and initrds are written, by
    /// `(os id, key path)` (`boot.kernel`, `boot.initrd[0]`, …).
    pub origins: BTreeMap<(String, String), crate::diag::Origin>,
    /// Where each custom BMC (`type: custom`) names its `driver`, by
    /// `(site id, host name)`: the driver's checks report there.
    pub bmc_origins: BTreeMap<(String, String), crate::diag::Origin>,
}

impl Sot {
    /// Loads and validates a SoT; on any error returns **all** diagnostics.
    pub fn load(files: &SotFiles) -> Result<Sot, Diagnostics> {
        Self::load_owned(files.clone())
    }

    /// Like [`Self::load`], taking the files: each file's text is freed as
    /// soon as it is parsed (a big SoT is not held twice).
    pub fn load_owned(files: SotFiles) -> Result<Sot, Diagnostics> {
        let mut l = Loader::new(files);
        l.run();
        let mut diags = l.diags;
        diags.sort();
        if diags.has_errors() {
            Err(diags)
        } else {
            l.sot.warnings = diags;
            Ok(l.sot)
        }
    }

    /// Compiles every site.
    pub fn compile(&self) -> Result<BTreeMap<String, SiteModel>, crate::Error> {
        self.sites
            .keys()
            .map(|id| Ok((id.clone(), SiteModel::compile(self, id)?)))
            .collect()
    }

    /// Finds a host by name. Host names are unique within a site only, so
    /// the name may be qualified as `SITE/HOST`, or `site` may be given;
    /// a bare name that several sites use is refused (with those sites),
    /// so that an operation never reaches another site's machine.
    pub fn find_host(
        &self,
        name: &str,
        site: Option<&str>,
    ) -> Result<(&str, &Host), HostLookupFailure> {
        let (site, name) = match name.split_once('/') {
            Some((s, n)) => match site {
                Some(given) if given != s => {
                    return Err(HostLookupFailure::SiteMismatch {
                        name: format!("{s}/{n}"),
                        site: given.to_owned(),
                    });
                }
                _ => (Some(s), n),
            },
            None => (site, name),
        };
        fn in_site<'s>(s: &'s SiteSot, name: &str) -> Option<&'s Host> {
            s.hosts.iter().find(|h| h.name == name)
        }
        if let Some(id) = site {
            let (id, s) = self
                .sites
                .get_key_value(id)
                .ok_or_else(|| HostLookupFailure::UnknownSite(id.to_owned()))?;
            return in_site(s, name).map(|h| (id.as_str(), h)).ok_or_else(|| {
                HostLookupFailure::NotFound {
                    name: name.to_owned(),
                    sites: vec![id.clone()],
                }
            });
        }
        let found: Vec<(&str, &Host)> = self
            .sites
            .iter()
            .filter_map(|(id, s)| in_site(s, name).map(|h| (id.as_str(), h)))
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(HostLookupFailure::NotFound {
                name: name.to_owned(),
                sites: self.sites.keys().cloned().collect(),
            }),
            many => Err(HostLookupFailure::Ambiguous {
                name: name.to_owned(),
                sites: many.iter().map(|(s, _)| (*s).to_owned()).collect(),
            }),
        }
    }

    /// The site a MAC address belongs to, with the host's name.
    pub fn find_mac(&self, mac: &MacAddr) -> Option<(&str, &Host)> {
        self.sites.iter().find_map(|(id, s)| {
            s.hosts
                .iter()
                .find(|h| h.interfaces.iter().any(|i| i.mac == *mac))
                .map(|h| (id.as_str(), h))
        })
    }
}

/// Why [`Sot::find_host`] found no single host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostLookupFailure {
    /// No host of that name (in the sites searched).
    #[error("no host named `{name}` in {}", sites_text(.sites))]
    NotFound {
        /// The name looked for.
        name: String,
        /// The sites searched.
        sites: Vec<String>,
    },
    /// Several sites have a host of that name.
    #[error("host name `{name}` is used in several sites ({}): name one as SITE/HOST or with --site", .sites.join(", "))]
    Ambiguous {
        /// The name looked for.
        name: String,
        /// The sites that have it.
        sites: Vec<String>,
    },
    /// No such site.
    #[error("unknown site `{0}`")]
    UnknownSite(String),
    /// `SITE/HOST` names another site than the one given.
    #[error("`{name}` names another site than --site {site}")]
    SiteMismatch {
        /// The qualified name.
        name: String,
        /// The site given.
        site: String,
    },
}

fn sites_text(sites: &[String]) -> String {
    match sites {
        [one] => format!("site `{one}`"),
        many => format!("sites {}", many.join(", ")),
    }
}

enum Kind<'a> {
    Os,
    Boot,
    Workflow,
    Class(String),
    Asset(&'a str),
    SiteEnv(&'a str),
    Inventory(&'a str),
}

fn is_yaml(p: &str) -> bool {
    p.ends_with(".yml") || p.ends_with(".yaml")
}

/// The top-level directories of the SoT layout.
const LAYOUT_DIRS: [&str; 6] = ["os", "boot", "workflows", "classes", "assets", "sites"];

/// Why a file is not read as part of the SoT.
enum Misplaced {
    /// An error: the file was surely meant to be read (a typo in a
    /// directory name, a nested site directory, a YAML file at the top).
    Error(String),
    /// A warning: a YAML file outside the layout (CI configuration, say).
    Unread(String),
}

fn classify(path: &str) -> Result<Option<Kind<'_>>, Misplaced> {
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
fn closest_dir(dir: &str) -> Option<&'static str> {
    let lower = dir.to_ascii_lowercase();
    LAYOUT_DIRS
        .iter()
        .map(|d| (crate::yaml::levenshtein(&lower, d), *d))
        // Short names allow one edit: `docs` is not a typo of `os`.
        .filter(|(dist, d)| *dist <= if d.len() <= 4 { 1 } else { 2 })
        .min()
        .map(|(_, d)| d)
}

struct Entity {
    node: Node,
}

struct Loader {
    files: SotFiles,
    map: SourceMap,
    diags: Diagnostics,
    sot: Sot,
    os_nodes: HashMap<String, Node>,
    boot_nodes: HashMap<String, Node>,
    workflow_nodes: HashMap<String, Node>,
    site_nodes: HashMap<String, Node>,
    seen: Seen,
    /// Entities whose file failed to load but whose id could be read:
    /// references to them are not reported again as dangling.
    broken: HashSet<(&'static str, String)>,
    /// Whether any host document failed to load (then counts of hosts per
    /// site or workflow would report noise).
    hosts_dropped: bool,
}

impl Loader {
    fn new(files: SotFiles) -> Self {
        Loader {
            files,
            map: SourceMap::default(),
            diags: Diagnostics::default(),
            sot: Sot::default(),
            os_nodes: HashMap::new(),
            boot_nodes: HashMap::new(),
            workflow_nodes: HashMap::new(),
            site_nodes: HashMap::new(),
            seen: Seen::default(),
            broken: HashSet::new(),
            hosts_dropped: false,
        }
    }

    fn err(&mut self, node: &Node, path: &str, msg: impl Into<String>) {
        let span = span_at(node, path);
        let d = self.map.diag(&span, path, msg);
        self.diags.push(d);
    }

    fn file_err(&mut self, file: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(file, 1, 1, "", msg));
    }

    /// Where `path` of `node` is, compactly.
    fn loc_of(&self, node: &Node, path: &str) -> Option<Loc> {
        let m = *span_at(node, path).start()?;
        let p = self.map.pos(&m)?;
        Some(Loc {
            source: u32::try_from(m.source()).ok()?,
            line: u32::try_from(p.line).ok()?,
            column: u32::try_from(p.column).ok()?,
        })
    }

    /// A position, as diagnostics name it.
    fn origin(&self, l: Loc) -> crate::diag::Origin {
        crate::diag::Origin {
            file: self
                .map
                .file(l.source as usize)
                .unwrap_or("<unknown>")
                .to_owned(),
            line: l.line as usize,
            column: l.column as usize,
        }
    }

    /// `file:line:col` of a position.
    fn loc_str(&self, l: Loc) -> String {
        let file = self.map.file(l.source as usize).unwrap_or("<unknown>");
        format!("{file}:{}:{}", l.line, l.column)
    }

    /// Records the first occurrence of `key` in one of the `seen` maps;
    /// on a repeat, reports "`what` (first … at file:line:col)".
    fn first<K: std::hash::Hash + Eq>(
        &mut self,
        pick: fn(&mut Seen) -> &mut HashMap<K, Loc>,
        key: K,
        node: &Node,
        path: &str,
        what: impl FnOnce() -> String,
    ) -> bool {
        let here = self.loc_of(node, path);
        match pick(&mut self.seen).entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let first = *e.get();
                let msg = format!("{} (first defined at {})", what(), self.loc_str(first));
                self.err(node, path, msg);
                false
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                if let Some(l) = here {
                    e.insert(l);
                }
                true
            }
        }
    }

    /// Records the first definition of `kind` `id`; reports a duplicate.
    fn unique(&mut self, kind: &'static str, id: &str, node: &Node, path: &str) -> bool {
        self.first(
            |s| &mut s.ids,
            (kind, id.to_owned()),
            node,
            path,
            || format!("duplicate {kind} `{id}`"),
        )
    }

    /// A small number for a site, for compact keys.
    fn site_index(&mut self, id: &str) -> u16 {
        match self.seen.sites.iter().position(|s| s == id) {
            Some(i) => i as u16,
            None => {
                self.seen.sites.push(id.to_owned());
                (self.seen.sites.len() - 1) as u16
            }
        }
    }

    /// Remembers the id of an entity that failed to load.
    fn mark_broken(&mut self, kind: &'static str, node: &Node) {
        if let Some(id) = node_at(node, "id").and_then(|n| n.as_scalar()) {
            self.broken.insert((kind, id.as_str().to_owned()));
        }
    }

    /// A file that was meant to be read but is misplaced (reported): what
    /// it defines is remembered as broken, so that references to it and
    /// counts that miss it are not reported again.
    fn misplaced(&mut self, path: &str, text: &str) {
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

    /// Whether a reference to `kind` `id` dangles (and is not a reference
    /// to something already reported broken).
    fn dangles(&self, kind: &'static str, id: &str, exists: bool) -> bool {
        !exists && !self.broken.contains(&(kind, id.to_owned()))
    }

    fn single_doc(&mut self, path: &str, text: &str) -> Option<Entity> {
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

    fn run(&mut self) {
        let files = std::mem::take(&mut self.files);
        let mut classes_raw: BTreeMap<String, Node> = BTreeMap::new();
        let mut envs: BTreeMap<String, (String, Arc<str>)> = BTreeMap::new();
        type Texts = Vec<(String, Arc<str>)>;
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

        let resolver = self.check_classes(&classes_raw);
        self.check_references();
        let templates_ok = self.check_template_syntax();

        for (site, (path, text)) in &envs {
            self.load_site(site, path, text);
        }
        for (site, files) in inventories {
            if !envs.contains_key(&site) {
                let first = files.first().map_or("sites", |f| f.0.as_str());
                self.file_err(
                    first,
                    format!("site directory `sites/{site}` has no env.yml"),
                );
            }
            if !self.sot.sites.contains_key(&site) {
                // Its env.yml is broken or missing (reported).
                self.hosts_dropped = true;
                continue;
            }
            self.load_inventories(&site, files, &resolver);
        }
        if envs.is_empty() {
            self.hosts_dropped = true;
            let roots: Vec<String> = nested_roots.iter().map(|r| format!("`{r}/`")).collect();
            let hint = match roots.as_slice() {
                [] => String::new(),
                [one] => format!(" (the SoT seems to be in {one})"),
                many => format!(" (SoTs seem to be in {})", many.join(", ")),
            };
            self.file_err(
                "sites",
                format!("the SoT has no site (no `sites/<site>/env.yml`): is this the SoT's top directory?{hint}"),
            );
        }
        self.check_sites_and_policies();
        if templates_ok {
            self.check_rendering();
        }
    }

    /// A one-document entity file, typed; `metadata` says whether the
    /// entity has a metadata map (read from the tree, see `yaml.rs`).
    fn load_entity<T: serde::de::DeserializeOwned>(
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

    fn load_os(&mut self, path: &str, text: &str) {
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

    fn load_boot(&mut self, path: &str, text: &str) {
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

    fn load_workflow(&mut self, path: &str, text: &str) {
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

    fn check_classes<'r>(&mut self, raw: &'r BTreeMap<String, Node>) -> ClassResolver<'r> {
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

    fn check_references(&mut self) {
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
    fn check_template_syntax(&mut self) -> bool {
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
    fn template_diag(&self, e: &TemplateError, host: Option<&str>) -> Diagnostic {
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

    fn load_site(&mut self, dir: &str, path: &str, text: &str) {
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
    fn load_inventories(
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

    fn load_hosts(
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

    fn check_host(&mut self, site: &Site, host: &Host, n: &Node) {
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
    fn check_identity(
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

    fn check_sites_and_policies(&mut self) {
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
    fn render_problems(&self, model: &SiteModel, i: usize, host: &Host) -> Vec<Diagnostic> {
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
    fn check_rendering(&mut self) {
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

/// A compact source position: a document's source id, absolute line and
/// column (the file comes from the [`SourceMap`]).
#[derive(Debug, Clone, Copy)]
struct Loc {
    source: u32,
    line: u32,
    column: u32,
}

/// First occurrences of everything that must be unique, with small keys:
/// a SoT of 100,000 hosts keeps about six entries per host here.
#[derive(Default)]
struct Seen {
    /// Site ids; keys use their index.
    sites: Vec<String>,
    ids: HashMap<(&'static str, String), Loc>,
    hosts: HashMap<(u16, Box<str>), Loc>,
    macs: HashMap<MacAddr, Loc>,
    ips: HashMap<(u16, std::net::Ipv4Addr), Loc>,
    uuids: HashMap<(u16, crate::types::Uuid), Loc>,
    locations: HashMap<(u16, Option<String>, Option<String>), Loc>,
}

/// A host from its document: classes merged in, metadata read, typed.
/// `None` when it is broken (reported) or uses a broken class (reported at
/// the class).
/// A host document, loaded.
enum LoadedHost {
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
struct PartialHost {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    uuid: Option<Uuid>,
    #[serde(default)]
    location: Option<Location>,
}

fn load_host(
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

/// A path from `dep` back to `from` through block_deps, if any.
fn dep_cycle(wfs: &BTreeMap<String, Workflow>, from: &str, dep: &str) -> Option<Vec<String>> {
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
