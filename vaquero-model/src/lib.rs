//! The source-of-truth (SoT) model of Vaquero: the hub every other crate
//! reads.
//!
//! A SoT is a directory (usually a Git repository) of YAML files describing
//! sites, subnets, hosts, operating systems, boots, workflows and classes,
//! plus asset templates for unattended installs. This crate
//!
//! - reads it ([`SotFiles`], or a [`SotSource`]: a directory or a Git
//!   repository),
//! - loads and validates it ([`Sot::load`]), reporting **every** problem as
//!   `file:line:col: key.path: message` ([`Diagnostic`]),
//! - resolves reclass-style class inheritance,
//! - compiles one [`SiteModel`] per site with O(1) lookups by MAC, SMBIOS
//!   UUID and relay location, template rendering, and a content hash as its
//!   version,
//! - and diffs two models ([`diff()`]), saying which hosts need reprovisioning.
//!
//! It does no network I/O and needs no async runtime.
//!
//! ```
//! use vaquero_model::{Sot, SotFiles, SiteModel};
//!
//! let mut files = SotFiles::new();
//! files.insert("os/debian.yml", "id: debian-12\nos_family: debian\nmajor_version: 12\n\
//!     boot:\n  kernel: \"{{ urls.assets }}/debian/linux\"\n  initrd: [\"{{ urls.assets }}/debian/initrd.gz\"]\n\
//!     cmdline:\n  - console: ttyS0\n");
//! files.insert("boot/install.yml", "id: install\noperating_system: debian-12\n");
//! files.insert("workflows/web.yml", "id: web\nstages:\n  - boot: install\n");
//! files.insert("sites/lab/env.yml", "id: lab\nagents:\n  - id: agent-1\n    asset_server: {url: \"http://10.0.0.2:8080\"}\n\
//!     subnets:\n  - id: prov\n    cidr: 10.0.0.0/24\n    dns: [10.0.0.1]\n");
//! files.insert("sites/lab/hosts.yml", "name: web-01\nworkflow: web\ninterfaces:\n\
//!   - {type: physical, mac: \"52:54:00:00:00:01\", subnet: prov, ipv4: 10.0.0.11}\n");
//!
//! let sot = Sot::load(&files).expect("valid SoT");
//! let model = SiteModel::compile(&sot, "lab").unwrap();
//! let host = model.by_mac(&"52:54:00:00:00:01".parse().unwrap()).unwrap();
//! let urls = model.urls(host, "install", "token");
//! let boot = model.render_boot("install", &model.context(host, "install", urls.as_ref())).unwrap();
//! assert_eq!(boot.kernel, "http://10.0.0.2:8080/files/debian/linux");
//! assert_eq!(boot.cmdline, "console=ttyS0");
//! ```

mod class;
mod compiled;
mod diag;
pub mod diff;
mod files;
mod render;
mod sitedata;
mod sot;
pub mod source;
mod tplvalue;
pub mod types;
mod yaml;

use std::path::{Path, PathBuf};

/// Re-exported: a subnet's `cidr` is an `ipnet::Ipv4Net`.
pub use ipnet;
/// Re-exported: the values templates render ([`SiteModel::context`],
/// [`SiteModel::render_boot`]) are `minijinja::Value`s.
pub use minijinja;
/// Re-exported: diffs carry `serde_json::Value`s (old and new values).
pub use serde_json;

pub use compiled::{
    AgentLookupFailure, HostContext, HostRef, RenderFailure, RenderedBoot, SiteModel,
};
pub use diag::{Diagnostic, Diagnostics, Origin, Severity};
pub use diff::{HostChange, ModelDiff, SiteDiffs, diff, diff_sites};
pub use files::SotFiles;
pub use render::{FormatProblem, TemplateError, check_unattended};
pub use sitedata::{SiteData, Urls};
pub use sot::{HostLookupFailure, SiteSot, Sot};
pub use source::{
    DirSource, GitRemote, GitSource, LoadedSot, SotSource, compile_pinned, load_revision,
    load_source,
};
pub use types::*;

/// The crate's one error: what can go wrong outside of validation
/// (reading, compiling, sources, looking up and rendering hosts). Where one
/// thing can fail in one way only, it returns that way's own type
/// ([`HostLookupFailure`], [`RenderFailure`]), which converts into this
/// one with `?`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file or directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The SoT root is not a directory.
    #[error("{0}: not a directory (give the SoT's top directory)")]
    NotADirectory(PathBuf),
    /// The SoT root does not exist.
    #[error("{0}: no such directory")]
    NotFound(PathBuf),
    /// A file in the SoT is not UTF-8 text.
    #[error("{0}: not UTF-8 text")]
    NotUtf8(PathBuf),
    /// The SoT did not validate.
    #[error("the SoT has {n} error(s):\n{0}", n = .0.errors().count())]
    Invalid(Diagnostics),
    /// The revision a site's `release_tag` pins it to does not validate.
    #[error("site `{site}` is pinned to revision {revision}, which has {n} error(s):\n{diagnostics}", n = .diagnostics.errors().count())]
    Pinned {
        /// The site.
        site: String,
        /// The pinned revision.
        revision: String,
        /// Its problems.
        diagnostics: Diagnostics,
    },
    /// No such site.
    #[error("unknown site `{0}`")]
    UnknownSite(String),
    /// A template failed to compile.
    #[error("{0}")]
    Template(TemplateError),
    /// Serializing the model failed.
    #[error("serializing the model: {0}")]
    Serialize(String),
    /// A Git operation failed.
    #[error("git: {0}")]
    Git(String),
    /// A revision (branch, tag or commit) does not exist.
    #[error("unknown revision `{0}`")]
    UnknownRevision(String),
    /// A host name does not name one host.
    #[error(transparent)]
    HostLookup(#[from] HostLookupFailure),
    /// An agent id does not name one agent of the site.
    #[error(transparent)]
    AgentLookup(#[from] AgentLookupFailure),
    /// A host's boot could not be rendered.
    #[error(transparent)]
    Render(#[from] RenderFailure),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Sot {
    /// Reads and loads the SoT in a directory.
    pub fn load_dir(root: &Path) -> Result<Sot, Error> {
        let files = SotFiles::read_dir(root)?;
        let revision = files.content_hash();
        let mut sot = Sot::load_owned(files).map_err(Error::Invalid)?;
        sot.revision = Some(revision);
        Ok(sot)
    }
}

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
