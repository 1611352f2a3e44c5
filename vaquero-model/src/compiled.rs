//! The compiled per-site model: what an agent serves from.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use minijinja::Value;
use serde::{Deserialize, Serialize};

use crate::render::{Renderer, TemplateError};
use crate::sitedata::{SiteData, Urls};
use crate::tplvalue::{
    ContextObject, HostObject, InterfaceObject, MetadataObject, UrlsObject, to_value,
};
use crate::types::{Agent, AssetType, Host, Interface, Job, MacAddr, Site, Uuid};
use crate::{Error, Sot};

/// What a model is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    /// Everything: version, lookups, templates.
    Full,
    /// Templates only (no version, no lookups): validation renders every
    /// host and throws the model away.
    RenderOnly,
}

/// A compiled site model: the data, O(1) lookups, compiled templates and a
/// content hash as its version.
#[derive(Debug)]
pub struct SiteModel {
    data: Arc<SiteData>,
    version: String,
    revision: Option<String>,
    by_mac: HashMap<MacAddr, (u32, u16)>,
    by_ipv4: HashMap<std::net::Ipv4Addr, (u32, u16)>,
    by_uuid: HashMap<Uuid, u32>,
    by_location: HashMap<(Option<String>, Option<String>), u32>,
    by_name: HashMap<String, u32>,
    renderer: Renderer,
    values: Values,
}

#[derive(Debug, Default)]
struct Values {
    site: Value,
    subnets: HashMap<String, Value>,
    boots: HashMap<String, Value>,
    os: HashMap<String, Value>,
}

/// The boot-independent part of a host's template context.
#[derive(Debug, Clone)]
pub struct HostContext {
    host: Value,
    interface: Value,
    subnet: Value,
    md: HostMetadata,
}

/// Where a context's `md` comes from.
#[derive(Debug, Clone)]
enum HostMetadata {
    /// A host of the model itself: looked up in the model's data.
    Model(usize),
    /// A host from elsewhere: site and host metadata merged.
    Owned(crate::types::Metadata),
}

/// A boot stage rendered for one host: what the iPXE script loads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedBoot {
    /// The boot id.
    pub boot: String,
    /// The OS id.
    pub os: String,
    /// Kernel URL.
    pub kernel: String,
    /// Initrd URLs, in order.
    pub initrds: Vec<String>,
    /// The kernel command line (values with spaces double-quoted).
    pub cmdline: String,
}

/// A host's view for rendering: which host, which interface booted.
#[derive(Debug, Clone, Copy)]
pub struct HostRef<'a> {
    /// The host.
    pub host: &'a Host,
    /// Index of the host in the model.
    pub index: usize,
    /// The interface that booted (or the primary one).
    pub interface: &'a Interface,
}

// Here rather than in sot.rs: a loaded SoT knows nothing of what is
// compiled from it (sot.rs does not import this file).
impl Sot {
    /// Compiles every site.
    pub fn compile(&self) -> Result<BTreeMap<String, SiteModel>, Error> {
        self.sites
            .keys()
            .map(|id| Ok((id.clone(), SiteModel::compile(self, id)?)))
            .collect()
    }
}

impl SiteModel {
    /// Compiles site `id` of a loaded SoT.
    pub fn compile(sot: &Sot, id: &str) -> Result<Self, Error> {
        let s = sot
            .sites
            .get(id)
            .ok_or_else(|| Error::UnknownSite(id.to_owned()))?;
        Self::compile_with(sot, &s.site, s.hosts.clone(), Build::Full)
    }

    /// Compiles a site from its hosts (taken, not cloned). Validation
    /// builds a [`Build::RenderOnly`] model, renders from it, and takes it
    /// apart again with [`Self::into_data`].
    pub(crate) fn compile_with(
        sot: &Sot,
        site: &Site,
        hosts: Vec<Host>,
        build: Build,
    ) -> Result<Self, Error> {
        let mut workflows = BTreeMap::new();
        for h in &hosts {
            if let Some(w) = sot.workflows.get(&h.workflow) {
                workflows.insert(w.id.clone(), w.clone());
            }
        }
        let mut boots = BTreeMap::new();
        for w in workflows.values() {
            for st in &w.stages {
                if let Some(b) = sot.boots.get(&st.boot) {
                    boots.insert(b.id.clone(), b.clone());
                }
            }
        }
        let mut os = BTreeMap::new();
        let mut kinds = Vec::new();
        for b in boots.values() {
            if let Some(o) = sot.os.get(&b.operating_system) {
                os.insert(o.id.clone(), o.clone());
            }
            if let Some(u) = &b.unattended {
                kinds.push(u.kind);
            }
        }
        let assets = sot
            .assets
            .iter()
            .filter(|(p, _)| {
                kinds
                    .iter()
                    .any(|k| p.starts_with(&format!("{}/", k.dir())))
            })
            .map(|(p, t)| (p.clone(), t.clone()))
            .collect();
        let data = SiteData {
            site: site.clone(),
            hosts,
            workflows,
            boots,
            os,
            assets,
        };
        let mut m = SiteModel::build(data, build)?;
        m.revision = sot.revision.clone();
        Ok(m)
    }

    /// Builds the model (indexes, templates, version) from its data.
    pub fn from_data(data: SiteData) -> Result<Self, Error> {
        Self::build(data, Build::Full)
    }

    fn build(data: SiteData, build: Build) -> Result<Self, Error> {
        let full = build == Build::Full;
        let version = if full {
            content_hash(&data)?
        } else {
            String::new()
        };
        let n = if full { data.hosts.len() } else { 0 };
        let mut by_mac = HashMap::with_capacity(n * 2);
        let mut by_ipv4 = HashMap::with_capacity(n * 2);
        let mut by_uuid = HashMap::new();
        let mut by_location = HashMap::new();
        let mut by_name = HashMap::with_capacity(n);
        for (i, h) in data.hosts.iter().enumerate().take(n) {
            let hi = i as u32;
            by_name.insert(h.name.clone(), hi);
            for (j, iface) in h.interfaces.iter().enumerate() {
                by_mac.insert(iface.mac, (hi, j as u16));
                by_ipv4.insert(iface.ipv4, (hi, j as u16));
            }
            if let Some(u) = h.uuid {
                by_uuid.insert(u, hi);
            }
            if let Some(l) = &h.location {
                by_location.insert((l.circuit_id.clone(), l.remote_id.clone()), hi);
            }
        }
        let (renderer, errors) =
            Renderer::build(data.os.values(), data.boots.values(), &data.assets);
        if let Some(e) = errors.into_iter().next() {
            return Err(Error::Template(e));
        }
        let values = Values {
            site: to_value(&data.site),
            subnets: data
                .site
                .subnets
                .iter()
                .map(|s| (s.id.clone(), subnet_value(s)))
                .collect(),
            boots: data
                .boots
                .values()
                .map(|b| (b.id.clone(), to_value(b)))
                .collect(),
            os: data
                .os
                .values()
                .map(|o| (o.id.clone(), to_value(o)))
                .collect(),
        };
        Ok(SiteModel {
            data: Arc::new(data),
            version,
            revision: None,
            by_mac,
            by_ipv4,
            by_uuid,
            by_location,
            by_name,
            renderer,
            values,
        })
    }

    /// The model's data.
    pub fn data(&self) -> &SiteData {
        &self.data
    }

    /// Takes the model apart into its data.
    pub fn into_data(self) -> SiteData {
        Arc::try_unwrap(self.data).unwrap_or_else(|d| (*d).clone())
    }

    /// The site.
    pub fn site(&self) -> &Site {
        &self.data.site
    }

    /// The agent entry to serve as: the one named, else the site's only
    /// one. The error says what to fix.
    pub fn agent(&self, id: Option<&str>) -> Result<&Agent, AgentLookupFailure> {
        let site = &self.data.site;
        let ids = |agents: &[Agent]| agents.iter().map(|a| a.id.clone()).collect();
        match (id, site.agents.as_slice()) {
            (Some(id), agents) => {
                agents
                    .iter()
                    .find(|a| a.id == id)
                    .ok_or_else(|| AgentLookupFailure::NotFound {
                        site: site.id.clone(),
                        agent: id.to_owned(),
                        agents: ids(agents),
                    })
            }
            (None, [one]) => Ok(one),
            (None, []) => Err(AgentLookupFailure::None {
                site: site.id.clone(),
            }),
            (None, many) => Err(AgentLookupFailure::Several {
                site: site.id.clone(),
                agents: ids(many),
            }),
        }
    }

    /// The hosts, in SoT order.
    pub fn hosts(&self) -> &[Host] {
        &self.data.hosts
    }

    /// The content hash of the model (hex SHA-256 of its canonical JSON):
    /// equal models have equal versions, whatever revision they came from.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The SoT revision (commit id) the model was compiled from, if known.
    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }

    /// Sets the revision the model was compiled from.
    pub fn set_revision(&mut self, rev: Option<String>) {
        self.revision = rev;
    }

    /// The host and interface at (host index, interface index).
    fn iface_ref(&self, (h, i): (u32, u16)) -> HostRef<'_> {
        let host = &self.data.hosts[h as usize];
        HostRef {
            host,
            index: h as usize,
            interface: &host.interfaces[i as usize],
        }
    }

    /// The host and interface owning a MAC address.
    pub fn by_mac(&self, mac: &MacAddr) -> Option<HostRef<'_>> {
        Some(self.iface_ref(*self.by_mac.get(mac)?))
    }

    /// The host and interface owning an IPv4 address (to tie a request
    /// from an installer to its host).
    pub fn by_ipv4(&self, ip: &std::net::Ipv4Addr) -> Option<HostRef<'_>> {
        Some(self.iface_ref(*self.by_ipv4.get(ip)?))
    }

    /// The host with an SMBIOS UUID (its primary interface).
    pub fn by_uuid(&self, uuid: &Uuid) -> Option<HostRef<'_>> {
        self.host_ref(*self.by_uuid.get(uuid)? as usize)
    }

    /// The host cabled at a relay location (option 82 circuit / remote id).
    /// A host whose location names only one of the two matches on that one.
    pub fn by_location(
        &self,
        circuit_id: Option<&str>,
        remote_id: Option<&str>,
    ) -> Option<HostRef<'_>> {
        let c = circuit_id.map(str::to_owned);
        let r = remote_id.map(str::to_owned);
        let i = self
            .by_location
            .get(&(c.clone(), r.clone()))
            .or_else(|| {
                c.is_some()
                    .then(|| self.by_location.get(&(c.clone(), None)))
                    .flatten()
            })
            .or_else(|| {
                r.is_some()
                    .then(|| self.by_location.get(&(None, r.clone())))
                    .flatten()
            })?;
        self.host_ref(*i as usize)
    }

    /// The host with a name (its primary interface).
    pub fn by_name(&self, name: &str) -> Option<HostRef<'_>> {
        self.host_ref(*self.by_name.get(name)? as usize)
    }

    fn host_ref(&self, index: usize) -> Option<HostRef<'_>> {
        let host = self.data.hosts.get(index)?;
        Some(HostRef {
            host,
            index,
            interface: host.primary_interface().or(host.interfaces.first())?,
        })
    }

    /// The base URL of the agent serving this site's HTTP boot: the first
    /// agent with an `asset_server.url`.
    pub fn agent_url(&self) -> Option<&str> {
        self.data
            .site
            .agents
            .iter()
            .find_map(|a| a.asset_server.as_ref()?.url.as_deref())
    }

    /// The boot id of stage `i` (0-based) of `host`'s workflow.
    pub fn stage(&self, host: &Host, i: usize) -> Option<&str> {
        let w = self.data.workflows.get(&host.workflow)?;
        w.stages.get(i).map(|s| s.boot.as_str())
    }

    /// How many stages `host`'s workflow has.
    pub fn stage_count(&self, host: &Host) -> usize {
        self.data
            .workflows
            .get(&host.workflow)
            .map_or(0, |w| w.stages.len())
    }

    /// The boot ids of `host`'s workflow stages, in order.
    pub fn stages(&self, host: &Host) -> Vec<&str> {
        self.data
            .workflows
            .get(&host.workflow)
            .map(|w| w.stages.iter().map(|s| s.boot.as_str()).collect())
            .unwrap_or_default()
    }

    /// The template context of a host booting `boot` (see `docs/sot-reference.md`).
    /// `urls` is absent when the site has no agent URL, so a template that
    /// uses it fails to render (strict undefined).
    pub fn context(&self, h: HostRef<'_>, boot: &str, urls: Option<&Urls>) -> Value {
        self.context_for(&self.host_context(h), boot, urls)
    }

    /// The boot-independent part of a host's template context; build it
    /// once to render several boots of the same host.
    pub fn host_context(&self, h: HostRef<'_>) -> HostContext {
        let subnet = self
            .values
            .subnets
            .get(&h.interface.subnet)
            .cloned()
            .unwrap_or(Value::UNDEFINED);
        // A host of this model is read from the shared data on demand;
        // any other is serialized whole.
        let own = self
            .data
            .hosts
            .get(h.index)
            .filter(|m| std::ptr::eq(*m, h.host))
            .and_then(|m| {
                let i = m
                    .interfaces
                    .iter()
                    .position(|i| std::ptr::eq(i, h.interface))?;
                Some((h.index, i))
            });
        match own {
            Some((host, interface)) => HostContext {
                host: Value::from_object(HostObject {
                    data: self.data.clone(),
                    host,
                }),
                interface: Value::from_object(InterfaceObject {
                    data: self.data.clone(),
                    host,
                    interface,
                }),
                subnet,
                md: HostMetadata::Model(host),
            },
            None => {
                let mut md = self.data.site.metadata.clone();
                md.extend(h.host.metadata.clone());
                HostContext {
                    host: to_value(h.host),
                    interface: to_value(h.interface),
                    subnet,
                    md: HostMetadata::Owned(md),
                }
            }
        }
    }

    /// The template context of a host (see [`Self::host_context`]) booting
    /// `boot`.
    pub fn context_for(&self, hc: &HostContext, boot: &str, urls: Option<&Urls>) -> Value {
        let b = self.data.boots.get(boot);
        let os_id = b.map(|b| b.operating_system.as_str()).unwrap_or("");
        let boot_md = b.filter(|b| !b.metadata.is_empty());
        let md = match &hc.md {
            HostMetadata::Model(host) => Value::from_object(MetadataObject {
                data: self.data.clone(),
                host: *host,
                boot: boot_md.map(|b| b.id.clone()),
            }),
            HostMetadata::Owned(md) => match boot_md {
                Some(b) => {
                    let mut md = md.clone();
                    md.extend(b.metadata.clone());
                    to_value(&md)
                }
                None => to_value(md),
            },
        };
        let get =
            |m: &HashMap<String, Value>, k: &str| m.get(k).cloned().unwrap_or(Value::UNDEFINED);
        Value::from_object(ContextObject {
            boot: get(&self.values.boots, boot),
            host: hc.host.clone(),
            interface: hc.interface.clone(),
            md,
            os: get(&self.values.os, os_id),
            site: self.values.site.clone(),
            subnet: hc.subnet.clone(),
            urls: urls.map(|u| Value::from_object(UrlsObject(u.clone()))),
        })
    }

    /// The URLs of a host booting `boot`, with checkpoint `token`, when the
    /// site has an agent URL.
    pub fn urls(&self, h: HostRef<'_>, boot: &str, token: &str) -> Option<Urls> {
        Some(Urls::new(self.agent_url()?, &h.interface.mac, boot, token))
    }

    /// Renders kernel, initrds and command line of `boot` for a host.
    pub fn render_boot(&self, boot: &str, ctx: &Value) -> Result<RenderedBoot, RenderFailure> {
        self.render_boot_parts(boot, ctx, [true; 3])
    }

    /// [`Self::render_boot`] of only some parts (`[kernel, initrds,
    /// cmdline]`); the others are left empty.
    pub(crate) fn render_boot_parts(
        &self,
        boot: &str,
        ctx: &Value,
        [want_kernel, want_initrd, want_cmdline]: [bool; 3],
    ) -> Result<RenderedBoot, RenderFailure> {
        let b = self
            .data
            .boots
            .get(boot)
            .ok_or_else(|| RenderFailure::UnknownBoot(boot.to_owned()))?;
        let t = self
            .renderer
            .os(&b.operating_system)
            .ok_or_else(|| RenderFailure::UnknownOs(b.operating_system.clone()))?;
        let r = &self.renderer;
        let kernel = if want_kernel {
            r.render_tpl(&t.kernel, ctx)?
        } else {
            String::new()
        };
        let initrds = if want_initrd {
            t.initrd
                .iter()
                .map(|i| r.render_tpl(i, ctx))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let mut line = String::new();
        let no_cmdline = Vec::new();
        let cmdline = if want_cmdline {
            &t.cmdline
        } else {
            &no_cmdline
        };
        let mut push = |parts: &[&str]| {
            if !line.is_empty() {
                line.push(' ');
            }
            parts.iter().for_each(|p| line.push_str(p));
        };
        for (k, vals) in cmdline {
            if vals.is_empty() {
                push(&[k]);
            }
            for v in vals {
                let v = r.render_tpl(v, ctx)?;
                if v.contains(char::is_whitespace) {
                    push(&[k, "=\"", &v, "\""]);
                } else {
                    push(&[k, "=", &v]);
                }
            }
        }
        Ok(RenderedBoot {
            boot: b.id.clone(),
            os: b.operating_system.clone(),
            kernel,
            initrds,
            cmdline: line,
        })
    }

    /// Renders the unattended config of `boot` for a host: its type and text.
    /// `Ok(None)` when the boot has no unattended config.
    pub fn render_unattended(
        &self,
        boot: &str,
        ctx: &Value,
    ) -> Result<Option<(AssetType, String)>, RenderFailure> {
        let b = self
            .data
            .boots
            .get(boot)
            .ok_or_else(|| RenderFailure::UnknownBoot(boot.to_owned()))?;
        let Some(u) = &b.unattended else {
            return Ok(None);
        };
        let name = format!("{}/{}", u.kind.dir(), u.asset);
        Ok(Some((u.kind, self.renderer.render(&name, ctx)?)))
    }

    /// One job of `boot` as declared, its templated fields rendered for
    /// the host of `ctx`: `validate[index]`, or `before_shutdown[index]`
    /// when `before_shutdown`. `Ok(None)` when there is no such job.
    pub fn render_job(
        &self,
        boot: &str,
        before_shutdown: bool,
        index: usize,
        ctx: &Value,
    ) -> Result<Option<Job>, RenderFailure> {
        let t = self
            .renderer
            .boot_jobs(boot)
            .ok_or_else(|| RenderFailure::UnknownBoot(boot.to_owned()))?;
        let list = if before_shutdown {
            &t.before_shutdown
        } else {
            &t.validate
        };
        match list.get(index) {
            Some(j) => Ok(Some(self.renderer.render_job(j, ctx)?)),
            None => Ok(None),
        }
    }

    /// The `before_shutdown` and `validate` jobs of `boot`, rendered as
    /// [`SiteModel::render_job`] renders one.
    pub fn render_jobs(
        &self,
        boot: &str,
        ctx: &Value,
    ) -> Result<(Vec<Job>, Vec<Job>), RenderFailure> {
        let t = self
            .renderer
            .boot_jobs(boot)
            .ok_or_else(|| RenderFailure::UnknownBoot(boot.to_owned()))?;
        let r = &self.renderer;
        let bs = t
            .before_shutdown
            .iter()
            .map(|j| r.render_job(j, ctx))
            .collect::<Result<_, _>>()?;
        let va = t
            .validate
            .iter()
            .map(|j| r.render_job(j, ctx))
            .collect::<Result<_, _>>()?;
        Ok((bs, va))
    }
}

/// Why [`SiteModel::agent`] found no single agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentLookupFailure {
    /// The site has no agent of that id.
    #[error("site `{site}` has no agent `{agent}` (its agents: {})", .agents.join(", "))]
    NotFound {
        /// The site.
        site: String,
        /// The id asked for.
        agent: String,
        /// The site's agents.
        agents: Vec<String>,
    },
    /// The site has no agent at all.
    #[error("site `{site}` has no agent: add one under `agents` in its env.yml")]
    None {
        /// The site.
        site: String,
    },
    /// The site has several agents and none was named.
    #[error("site `{site}` has several agents ({}): name one with --agent", .agents.join(", "))]
    Several {
        /// The site.
        site: String,
        /// Its agents.
        agents: Vec<String>,
    },
}

/// Rendering a host's boot failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderFailure {
    /// The boot id is not in the model.
    #[error("unknown boot `{0}`")]
    UnknownBoot(String),
    /// The OS id is not in the model.
    #[error("unknown operating system `{0}`")]
    UnknownOs(String),
    /// A template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl Serialize for SiteModel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            version: &'a str,
            revision: Option<&'a str>,
            #[serde(flatten)]
            data: &'a SiteData,
        }
        Out {
            version: &self.version,
            revision: self.revision.as_deref(),
            data: &self.data,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SiteModel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct In {
            version: String,
            revision: Option<String>,
            #[serde(flatten)]
            data: SiteData,
        }
        let i = In::deserialize(d)?;
        let mut m = SiteModel::from_data(i.data).map_err(serde::de::Error::custom)?;
        if m.version != i.version {
            return Err(serde::de::Error::custom(format!(
                "model content does not match its version {} (computed {})",
                i.version, m.version
            )));
        }
        m.revision = i.revision;
        Ok(m)
    }
}

/// A subnet as templates see it: its fields plus `netmask`, `network`,
/// `prefix_len` and `broadcast`, which kickstart and network configs need.
fn subnet_value(s: &crate::types::Subnet) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("netmask".into(), s.cidr.netmask().to_string().into());
        o.insert("network".into(), s.cidr.network().to_string().into());
        o.insert("broadcast".into(), s.cidr.broadcast().to_string().into());
        o.insert("prefix_len".into(), s.cidr.prefix_len().into());
    }
    to_value(&v)
}

fn content_hash(data: &SiteData) -> Result<String, Error> {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(data).map_err(|e| Error::Serialize(e.to_string()))?;
    Ok(crate::files::hex(&Sha256::digest(&bytes)))
}
