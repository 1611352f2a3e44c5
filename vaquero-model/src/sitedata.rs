//! The plain data of one site, which a compiled [`SiteModel`](crate::SiteModel)
//! is built from and which templates see: what is hashed and shipped to
//! agents.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::types::{Boot, Host, MacAddr, Os, Site, Workflow};

/// Everything one site needs, as plain data (what is hashed and shipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteData {
    /// The site.
    pub site: Site,
    /// Its hosts, effective (classes merged), in SoT order.
    pub hosts: Vec<Host>,
    /// The workflows its hosts use.
    pub workflows: BTreeMap<String, Workflow>,
    /// The boots those workflows use.
    pub boots: BTreeMap<String, Boot>,
    /// The operating systems those boots use.
    pub os: BTreeMap<String, Os>,
    /// Asset templates (`cloud-config/base.yml` → text), snippets included.
    pub assets: BTreeMap<String, Arc<str>>,
}

/// The URLs a host's templates see as `urls.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Urls {
    /// The agent's base URL.
    pub agent: String,
    /// Base URL of `/files`.
    pub assets: String,
    /// The host's unattended config for this boot.
    pub config: String,
    /// The host's checkpoint URL for this boot attempt.
    pub checkpoint: String,
    /// The host's per-host iPXE script.
    pub ipxe: String,
}

impl Urls {
    /// The URLs of `mac` booting `boot` through the agent at `agent`, with a
    /// checkpoint `token`.
    pub fn new(agent: &str, mac: &MacAddr, boot: &str, token: &str) -> Self {
        let agent = agent.trim_end_matches('/');
        let mac = mac.hyphenated();
        // Built for every render of every host: concatenation, not `format!`.
        let join = |parts: &[&str]| {
            let mut s =
                String::with_capacity(agent.len() + parts.iter().map(|p| p.len()).sum::<usize>());
            s.push_str(agent);
            parts.iter().for_each(|p| s.push_str(p));
            s
        };
        Urls {
            assets: join(&["/files"]),
            config: join(&["/config/", &mac, "?boot=", boot]),
            checkpoint: join(&["/checkpoint/", token]),
            ipxe: join(&["/ipxe?mac=", &mac]),
            agent: agent.to_owned(),
        }
    }
}
