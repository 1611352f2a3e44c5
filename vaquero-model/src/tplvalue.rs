//! Hosts, interfaces and metadata as templates see them, read field by
//! field when a template asks instead of serialized whole for every render.
//!
//! A host's context used to be built by serializing the host, its interface
//! and its merged metadata into template values: most of the cost of
//! rendering a one-line job command. These objects point into the model's
//! shared data and convert only the fields a template reads, each exactly
//! as serde would (same keys, same order, same values: see the tests).

use std::fmt;
use std::sync::Arc;

use minijinja::Value;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde::Serialize;

use crate::sitedata::SiteData;
use crate::types::Metadata;

/// A template value from any serializable value.
pub(crate) fn to_value<T: Serialize + ?Sized>(v: &T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

/// `host`: one host of the model's data.
pub(crate) struct HostObject {
    pub(crate) data: Arc<SiteData>,
    pub(crate) host: usize,
}

/// The keys of `host`, in the order serde writes `Host`'s fields.
const HOST_KEYS: &[&str] = &[
    "name",
    "workflow",
    "interfaces",
    "classes",
    "metadata",
    "never_provision",
    "uuid",
    "serial",
    "location",
    "boot_files",
];

impl Object for HostObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        let h = self.data.hosts.get(self.host)?;
        Some(match key {
            "name" => Value::from(h.name.as_str()),
            "workflow" => Value::from(h.workflow.as_str()),
            "interfaces" => to_value(&h.interfaces),
            "classes" => to_value(&h.classes),
            "metadata" => to_value(&h.metadata),
            "never_provision" => Value::from(h.never_provision),
            "uuid" => to_value(&h.uuid),
            "serial" => to_value(&h.serial),
            "location" => to_value(&h.location),
            "boot_files" => to_value(&h.boot_files),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(HOST_KEYS)
    }
}

/// `interface`: one interface of one host of the model's data.
pub(crate) struct InterfaceObject {
    pub(crate) data: Arc<SiteData>,
    pub(crate) host: usize,
    pub(crate) interface: usize,
}

/// The keys of `interface`, in the order serde writes `Interface`'s fields.
const INTERFACE_KEYS: &[&str] = &[
    "type",
    "mac",
    "subnet",
    "ipv4",
    "ipv6",
    "hostname",
    "identifier",
    "ignore_dhcp",
    "bmc",
];

impl Object for InterfaceObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        let i = self
            .data
            .hosts
            .get(self.host)?
            .interfaces
            .get(self.interface)?;
        Some(match key {
            "type" => to_value(&i.kind),
            "mac" => to_value(&i.mac),
            "subnet" => Value::from(i.subnet.as_str()),
            "ipv4" => to_value(&i.ipv4),
            "ipv6" => to_value(&i.ipv6),
            "hostname" => to_value(&i.hostname),
            "identifier" => to_value(&i.identifier),
            "ignore_dhcp" => Value::from(i.ignore_dhcp),
            "bmc" => to_value(&i.bmc),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(INTERFACE_KEYS)
    }
}

/// `md`: the site's metadata, overridden by the host's, overridden by the
/// boot's; a key is looked up in the three layers, the merged map is built
/// only when a template iterates it.
pub(crate) struct MetadataObject {
    pub(crate) data: Arc<SiteData>,
    pub(crate) host: usize,
    /// The boot whose metadata overrides, when it has any.
    pub(crate) boot: Option<String>,
}

impl MetadataObject {
    fn layers(&self) -> [Option<&Metadata>; 3] {
        let boot = self
            .boot
            .as_deref()
            .and_then(|b| self.data.boots.get(b))
            .map(|b| &b.metadata);
        let host = self.data.hosts.get(self.host).map(|h| &h.metadata);
        [boot, host, Some(&self.data.site.metadata)]
    }

    /// The merged map, as the eager context built it.
    fn merged(&self) -> Metadata {
        let [boot, host, site] = self.layers();
        let mut md = site.cloned().unwrap_or_default();
        if let Some(h) = host {
            md.extend(h.clone());
        }
        if let Some(b) = boot {
            md.extend(b.clone());
        }
        md
    }
}

impl Object for MetadataObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.layers()
            .into_iter()
            .flatten()
            .find_map(|m| m.get(key))
            .map(to_value)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys: Vec<Value> = self
            .merged()
            .keys()
            .map(|k| Value::from(k.as_str()))
            .collect();
        Enumerator::Values(keys)
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.merged().len())
    }

    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }
}

// Debug names the host, not the whole site data every object points into.
impl fmt::Debug for HostObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostObject")
            .field("host", &self.host)
            .finish()
    }
}

impl fmt::Debug for InterfaceObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterfaceObject")
            .field("host", &self.host)
            .field("interface", &self.interface)
            .finish()
    }
}

impl fmt::Debug for MetadataObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataObject")
            .field("host", &self.host)
            .field("boot", &self.boot)
            .finish()
    }
}

/// The whole context of one render: what `SiteModel::context_for` builds
/// for every template, so built without a map (its keys are fixed).
pub(crate) struct ContextObject {
    pub(crate) boot: Value,
    pub(crate) host: Value,
    pub(crate) interface: Value,
    pub(crate) md: Value,
    pub(crate) os: Value,
    pub(crate) site: Value,
    pub(crate) subnet: Value,
    /// `urls`, when the site has an agent URL.
    pub(crate) urls: Option<Value>,
}

/// The keys of a context, sorted (as the map it replaces iterated them).
const CONTEXT_KEYS: &[&str] = &[
    "boot",
    "host",
    "interface",
    "md",
    "os",
    "site",
    "subnet",
    "urls",
];

impl Object for ContextObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        Some(match key {
            "boot" => self.boot.clone(),
            "host" => self.host.clone(),
            "interface" => self.interface.clone(),
            "md" => self.md.clone(),
            "os" => self.os.clone(),
            "site" => self.site.clone(),
            "subnet" => self.subnet.clone(),
            "urls" => self.urls.clone()?,
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.urls {
            Some(_) => Enumerator::Str(CONTEXT_KEYS),
            None => Enumerator::Str(&CONTEXT_KEYS[..CONTEXT_KEYS.len() - 1]),
        }
    }
}

impl fmt::Debug for ContextObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextObject")
            .field("host", &self.host)
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

/// `urls`: a host's URLs, each converted when a template reads it.
#[derive(Debug)]
pub(crate) struct UrlsObject(pub(crate) crate::sitedata::Urls);

/// The keys of `urls`, in the order serde writes `Urls`'s fields.
const URLS_KEYS: &[&str] = &["agent", "assets", "config", "checkpoint", "ipxe"];

impl Object for UrlsObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        let u = &self.0;
        Some(Value::from(match key {
            "agent" => u.agent.as_str(),
            "assets" => u.assets.as_str(),
            "config" => u.config.as_str(),
            "checkpoint" => u.checkpoint.as_str(),
            "ipxe" => u.ipxe.as_str(),
            _ => return None,
        }))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(URLS_KEYS)
    }
}
