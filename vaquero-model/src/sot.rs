//! Loading and validating a whole SoT tree.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use marked_yaml::Node;

use crate::diag::{Diagnostic, Diagnostics};
use crate::files::SotFiles;
use crate::types::{Boot, Class, Host, MacAddr, Os, Site, Workflow};
use crate::yaml::{SourceMap, node_at, span_at};

mod check;
mod load;

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

    /// Whether a reference to `kind` `id` dangles (and is not a reference
    /// to something already reported broken).
    fn dangles(&self, kind: &'static str, id: &str, exists: bool) -> bool {
        !exists && !self.broken.contains(&(kind, id.to_owned()))
    }

    fn run(&mut self) {
        let files = std::mem::take(&mut self.files);
        let load::Read {
            classes: classes_raw,
            envs,
            inventories,
            nested_roots,
        } = self.read_files(files);

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
