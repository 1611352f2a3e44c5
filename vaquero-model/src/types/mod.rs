//! The SoT entities, as written in YAML (see `docs/sot-reference.md`).
//!
//! Every struct denies unknown fields, so a typo is an error rather than a
//! silently ignored key. The loader reads `metadata` maps from the YAML
//! tree itself (they keep YAML's scalar types: `true`, `3`, `"3"`) before
//! the rest goes through serde; the same types also (de)serialize as JSON,
//! which is how compiled models travel.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

mod dhcp_option;
mod scalars;
mod window;

pub use dhcp_option::{DhcpOption, DhcpOptionType, OneOrMany};
pub use scalars::{Duration, MacAddr, Uuid};
pub use window::Window;

use scalars::string_serde;

/// Free-form metadata: a map of YAML values, available to templates as `md`.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// A site (`sites/<site>/env.yml`): one datacenter or lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// The site's id; must equal its directory name.
    pub id: String,
    /// A human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    /// The agents serving this site.
    pub agents: Vec<Agent>,
    /// The site's subnets.
    pub subnets: Vec<Subnet>,
    /// Site metadata, merged under class, host and boot metadata in `md`.
    #[serde(default)]
    pub metadata: Metadata,
    /// A Git tag or commit the site follows instead of the branch head.
    #[serde(default)]
    pub release_tag: Option<String>,
    /// Site-wide rollout policy.
    #[serde(default)]
    pub policy: SitePolicy,
    /// Override of the architecture → boot file map.
    #[serde(default)]
    pub boot_files: BootFiles,
}

/// Site-wide rollout policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitePolicy {
    /// Reboot hosts newly added to the SoT (default: leave them alone).
    #[serde(default)]
    pub force_provision: bool,
    /// Reboot windows, each `"HH:MM-HH:MM"`.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// The time zone the windows are written in (IANA name).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Apply plans without waiting for approval.
    #[serde(default)]
    pub auto_apply: bool,
}

/// The architecture → boot file map (file names served over TFTP, or URLs
/// for HTTP boot). Unset entries use Vaquero's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFiles {
    /// Legacy BIOS PXE (arch 0); default `undionly.kpxe`.
    #[serde(default)]
    pub bios: Option<String>,
    /// UEFI x64 PXE (arch 6, 7, 9); default `ipxe.efi`.
    #[serde(default)]
    pub uefi_x64: Option<String>,
    /// UEFI x64 HTTP boot (arch 15, 16); default: the agent's `ipxe.efi` URL.
    #[serde(default)]
    pub uefi_x64_http: Option<String>,
    /// UEFI ARM64 PXE (arch 11); default `ipxe-arm64.efi`.
    #[serde(default)]
    pub arm64: Option<String>,
    /// UEFI ARM64 HTTP boot (arch 19); default: the agent's ARM64 URL.
    #[serde(default)]
    pub arm64_http: Option<String>,
}

impl BootFiles {
    /// This map with every entry `over` sets replaced by `over`'s (a
    /// host's override on top of its site's map).
    pub fn overlay(&self, over: &BootFiles) -> BootFiles {
        let pick = |a: &Option<String>, b: &Option<String>| b.clone().or_else(|| a.clone());
        BootFiles {
            bios: pick(&self.bios, &over.bios),
            uefi_x64: pick(&self.uefi_x64, &over.uefi_x64),
            uefi_x64_http: pick(&self.uefi_x64_http, &over.uefi_x64_http),
            arm64: pick(&self.arm64, &over.arm64),
            arm64_http: pick(&self.arm64_http, &over.arm64_http),
        }
    }
}

/// An agent: the process serving DHCP, TFTP and HTTP boot for a site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// The agent's id (its token is scoped to it); the original format's
    /// `name` is accepted.
    #[serde(alias = "name")]
    pub id: String,
    /// How the agent answers DHCP.
    #[serde(default)]
    pub dhcp_mode: DhcpMode,
    /// Interface names to serve on (required with `dhcp_mode: server`;
    /// otherwise empty means all but loopback).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// The HTTP boot service.
    #[serde(default)]
    pub asset_server: Option<AssetServer>,
    /// The TFTP service.
    #[serde(default)]
    pub tftp_server: Option<TftpServer>,
    /// The original format's SSH helper container: not supported
    /// (validation says what replaces it).
    #[serde(default, skip_serializing)]
    pub ssh_container: Option<serde::de::IgnoredAny>,
    /// The original format's IPMI helper container: not supported
    /// (validation says what replaces it).
    #[serde(default, skip_serializing)]
    pub ipmi_container: Option<serde::de::IgnoredAny>,
}

/// How an agent answers DHCP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// The agent is the DHCP server for its hosts.
    #[default]
    Server,
    /// proxyDHCP: boot information only, beside another DHCP server.
    Proxy,
    /// No DHCP at all.
    Off,
}

/// The agent's HTTP boot service. The original format's `addr`, `port`,
/// `scheme` (→ `url`), `cdn_addr`, `cdn_port`, `cdn_scheme` (→ `cdn`) and
/// `save_path` (→ `base_dir`) are accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AssetServerSpec", into = "AssetServerSpec")]
pub struct AssetServer {
    /// Base URL hosts use to reach this agent, e.g. `http://10.0.0.2:8080`.
    pub url: Option<String>,
    /// Directory served under `/files/`.
    pub base_dir: Option<String>,
    /// Upstream base URL proxied and cached under `/files/`.
    pub cdn: Option<String>,
    /// In DHCP server mode, serve a host's per-host script and unattended
    /// config only to the address the SoT gives it (403 to any other).
    /// Default `true`; turn it off when requests reach the agent through
    /// NAT or a proxy, where the source address is not the host's.
    pub check_client_address: bool,
    /// How many connections one client address may hold open at once
    /// (default 64); past it new ones are closed at once.
    pub max_client_connections: Option<u32>,
    /// Directories that symbolic links inside `base_dir` may resolve
    /// into (default none: a link that leaves `base_dir` is refused).
    /// Every file under them becomes readable by anyone who can reach
    /// the boot service.
    pub allow_links_to: Vec<String>,
}

/// An asset server as written, in either format.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssetServerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "save_path")]
    base_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cdn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    check_client_address: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_client_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allow_links_to: Vec<String>,
    #[serde(default, skip_serializing)]
    addr: Option<String>,
    #[serde(default, skip_serializing)]
    port: Option<u16>,
    #[serde(default, skip_serializing)]
    scheme: Option<String>,
    #[serde(default, skip_serializing)]
    cdn_addr: Option<String>,
    #[serde(default, skip_serializing)]
    cdn_port: Option<u16>,
    #[serde(default, skip_serializing)]
    cdn_scheme: Option<String>,
}

/// `scheme://addr:port` from the original format's parts.
fn url_of(
    what: &str,
    addr: Option<String>,
    port: Option<u16>,
    scheme: Option<String>,
) -> Result<Option<String>, String> {
    match (addr, port, scheme) {
        (None, None, None) => Ok(None),
        (None, _, _) => Err(format!(
            "`{what}port` or `{what}scheme` without `{what}addr`: give `{what}addr` too, or write the URL"
        )),
        (Some(a), p, s) => {
            let s = s.unwrap_or_else(|| "http".into());
            Ok(Some(match p {
                Some(p) => format!("{s}://{a}:{p}"),
                None => format!("{s}://{a}"),
            }))
        }
    }
}

impl TryFrom<AssetServerSpec> for AssetServer {
    type Error = String;
    fn try_from(s: AssetServerSpec) -> Result<Self, String> {
        if s.url.is_some() && (s.addr.is_some() || s.port.is_some() || s.scheme.is_some()) {
            return Err("set `url`, or the original `addr`/`port`/`scheme`, not both".into());
        }
        if s.cdn.is_some()
            && (s.cdn_addr.is_some() || s.cdn_port.is_some() || s.cdn_scheme.is_some())
        {
            return Err(
                "set `cdn`, or the original `cdn_addr`/`cdn_port`/`cdn_scheme`, not both".into(),
            );
        }
        let joined = url_of("", s.addr, s.port, s.scheme)?;
        let cdn_joined = url_of("cdn_", s.cdn_addr, s.cdn_port, s.cdn_scheme)?;
        Ok(AssetServer {
            url: s.url.or(joined),
            base_dir: s.base_dir,
            cdn: s.cdn.or(cdn_joined),
            check_client_address: s.check_client_address.unwrap_or(true),
            max_client_connections: s.max_client_connections,
            allow_links_to: s.allow_links_to,
        })
    }
}

impl From<AssetServer> for AssetServerSpec {
    fn from(a: AssetServer) -> Self {
        AssetServerSpec {
            url: a.url,
            base_dir: a.base_dir,
            cdn: a.cdn,
            check_client_address: (!a.check_client_address).then_some(false),
            max_client_connections: a.max_client_connections,
            allow_links_to: a.allow_links_to,
            ..AssetServerSpec::default()
        }
    }
}

/// The agent's TFTP service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TftpServer {
    /// Directory served over TFTP.
    #[serde(default)]
    pub base_dir: Option<String>,
    /// Directories that symbolic links inside `base_dir` may resolve
    /// into (default none), as `asset_server.allow_links_to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_links_to: Vec<String>,
    /// Answer every transfer from port 69 itself, instead of from one
    /// ephemeral port per transfer (RFC 1350's way): a firewall then
    /// needs UDP 69 open and nothing else. Some old PXE ROMs insist on
    /// the RFC's way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_port: bool,
}

/// A subnet of a site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// The subnet's id, referenced by interfaces.
    pub id: String,
    /// The IPv4 network, e.g. `10.0.0.0/24`.
    #[serde(deserialize_with = "cidr")]
    pub cidr: Ipv4Net,
    /// Default router (option 3).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<IpAddr>,
    /// NTP servers (option 42).
    #[serde(default)]
    pub ntp: Vec<String>,
    /// Domain name (option 15); Vaquero's spelling `domain` is accepted.
    #[serde(default, alias = "domain")]
    pub domain_name: Option<String>,
    /// The VLAN id.
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Lease time (option 51), e.g. `1h`, `30m`, `86400`.
    #[serde(default)]
    pub lease_time: Option<Duration>,
    /// Log server (option 7).
    #[serde(default)]
    pub log_server: Option<Ipv4Addr>,
    /// Custom DHCP options.
    #[serde(default)]
    pub dhcp_options: Vec<DhcpOption>,
    /// Subnet metadata (available to templates as `subnet.metadata`).
    #[serde(default)]
    pub metadata: Metadata,
}

/// An IPv4 network `a.b.c.d/len`, with an error that says which part is
/// wrong.
fn cidr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
    use serde::de::Error;
    let s = String::deserialize(d)?;
    let t = s.trim();
    let Some((addr, len)) = t.split_once('/') else {
        return Err(D::Error::custom(format!(
            "`{t}` is not a CIDR: write the network and its prefix length, e.g. `10.0.0.0/24`"
        )));
    };
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| D::Error::custom(format!("`{t}`: `{addr}` is not an IPv4 address")))?;
    let len: u8 = match len.parse() {
        Ok(l @ 0..=32) => l,
        _ => {
            return Err(D::Error::custom(format!(
                "`{t}`: the prefix length must be 0 to 32, not `{len}`"
            )));
        }
    };
    Ipv4Net::new(addr, len).map_err(|e| D::Error::custom(format!("`{t}`: {e}")))
}

/// A host: one machine, a document in an inventory file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The host's name, unique in its site.
    pub name: String,
    /// The workflow (ordered boot stages) the host follows.
    pub workflow: String,
    /// The host's network interfaces; the first `physical` one is primary.
    pub interfaces: Vec<Interface>,
    /// Classes the host inherits from, in order (later wins).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Host metadata (classes merged in).
    #[serde(default)]
    pub metadata: Metadata,
    /// Never reprovision this host, whatever changes.
    #[serde(default)]
    pub never_provision: bool,
    /// SMBIOS UUID (lowercase, hyphenated).
    #[serde(default)]
    pub uuid: Option<Uuid>,
    /// Serial number.
    #[serde(default)]
    pub serial: Option<String>,
    /// Where the host is cabled: the relay's option 82 identifiers.
    #[serde(default)]
    pub location: Option<Location>,
    /// Per-host override of the site's architecture → boot file map
    /// (extension): an entry set here wins over the site's.
    #[serde(default)]
    pub boot_files: Option<BootFiles>,
}

impl Host {
    /// The primary interface: the first `physical` one.
    pub fn primary_interface(&self) -> Option<&Interface> {
        self.interfaces
            .iter()
            .find(|i| i.kind == InterfaceType::Physical)
    }

    /// The BMC of the host (on its first `bmc` interface), with the address
    /// defaulted to that interface's IPv4 address.
    pub fn bmc(&self) -> Option<(&Interface, &Bmc)> {
        self.interfaces
            .iter()
            .filter(|i| i.kind == InterfaceType::Bmc)
            .find_map(|i| i.bmc.as_deref().map(|b| (i, b)))
    }
}

/// A host's place on the network: option 82 sub-options 1 and 2.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Relay agent circuit id (sub-option 1), usually the switch port.
    #[serde(default)]
    pub circuit_id: Option<String>,
    /// Relay agent remote id (sub-option 2), usually the switch.
    #[serde(default)]
    pub remote_id: Option<String>,
}

/// A network interface of a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// `physical` or `bmc`.
    #[serde(rename = "type")]
    pub kind: InterfaceType,
    /// The MAC address, unique across the whole SoT.
    pub mac: MacAddr,
    /// The subnet id (in the host's site).
    pub subnet: String,
    /// The static IPv4 address, inside the subnet and unique.
    pub ipv4: Ipv4Addr,
    /// An IPv6 address.
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    /// Hostname handed out in option 12 (default: the host's name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// The NIC's name in the OS, e.g. `eno1`.
    #[serde(default)]
    pub identifier: Option<String>,
    /// Do not answer DHCP for this interface.
    #[serde(default)]
    pub ignore_dhcp: bool,
    /// The BMC reachable on this interface.
    #[serde(default)]
    pub bmc: Option<Box<Bmc>>,
}

/// The kind of a network interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceType {
    /// A data NIC, netbooted.
    Physical,
    /// A BMC's NIC, never netbooted.
    Bmc,
}

/// A baseboard management controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bmc {
    /// The protocol the BMC speaks.
    #[serde(rename = "type")]
    pub kind: BmcType,
    /// Address or (Redfish) base URL; default: the interface's IPv4 address.
    #[serde(default)]
    pub address: Option<String>,
    /// Port, when not the protocol's default.
    #[serde(default)]
    pub port: Option<u16>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<String>,
    /// Redfish: accept any TLS certificate.
    #[serde(default)]
    pub insecure_tls: bool,
    /// Redfish: a PEM file with the CA certificate to trust for this BMC
    /// (and no other CA).
    #[serde(default)]
    pub ca_cert: Option<String>,
    /// Exec: the program and its arguments (templated).
    #[serde(default)]
    pub command: Vec<String>,
    /// Try an OS-level soft reboot before a hard power cycle.
    #[serde(default)]
    pub soft_reboot: bool,
    /// How long to wait for a soft reboot.
    #[serde(default)]
    pub soft_timeout: Option<Duration>,
    /// IPMI: how long to wait for an answer before a request is sent
    /// again (each further copy waits once more as long); default 1 s.
    #[serde(default)]
    pub retransmit: Option<Duration>,
    /// IPMI: copies of each request, the first included (1–10); default 4.
    #[serde(default)]
    pub tries: Option<u32>,
    /// Custom: the name of the power driver the running process registered
    /// (`type: custom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Custom: the driver's parameters, checked by the driver itself.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub params: Metadata,
}

/// The protocol a BMC speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BmcType {
    /// IPMI over LAN (RMCP+).
    Ipmi,
    /// DMTF Redfish over HTTPS.
    Redfish,
    /// SSH to the host's OS.
    Ssh,
    /// An operator-supplied program.
    Exec,
    /// A driver the embedding program registered, named by `driver`.
    Custom,
}

/// An operating system (`os/*.yml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Os {
    /// The OS id, referenced by boots.
    pub id: String,
    /// A human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    /// Family, e.g. `debian`, `rhel`, `flatcar`.
    pub os_family: String,
    /// Major version.
    pub major_version: String,
    /// Minor version.
    #[serde(default)]
    pub minor_version: Option<String>,
    /// Release name, e.g. `bookworm`.
    #[serde(default)]
    pub release_name: Option<String>,
    /// Kernel and initrd URL templates.
    pub boot: OsBoot,
    /// Kernel command line, as one-key maps.
    #[serde(default)]
    pub cmdline: Vec<BTreeMap<String, CmdlineValue>>,
}

/// An OS's kernel and initrds (URL templates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsBoot {
    /// Kernel URL template.
    pub kernel: String,
    /// Initrd URL templates, in order.
    pub initrd: Vec<String>,
}

/// The value of a kernel command-line entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CmdlineValue {
    /// `{k: ""}` → `k`; `{k: v}` → `k=v`.
    One(String),
    /// `{k: [a, b]}` → `k=a k=b`.
    Many(Vec<String>),
}

/// A boot stage definition (`boot/*.yml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// The boot id, referenced by workflow stages.
    pub id: String,
    /// A title for people (the original Vaquero's `name`).
    #[serde(default)]
    pub name: Option<String>,
    /// The OS id booted in this stage.
    pub operating_system: String,
    /// The unattended config served to the installer.
    #[serde(default)]
    pub unattended: Option<Unattended>,
    /// Boot metadata (wins over site, class and host metadata in `md`).
    #[serde(default)]
    pub metadata: Metadata,
    /// Jobs run before the host is shut down for this stage.
    #[serde(default)]
    pub before_shutdown: Vec<Job>,
    /// Jobs run after the host checks in.
    #[serde(default)]
    pub validate: Vec<Job>,
}

/// Which asset is a boot's unattended config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unattended {
    /// The asset type.
    #[serde(rename = "type")]
    pub kind: AssetType,
    /// The file under `assets/<type>/`.
    #[serde(rename = "use")]
    pub asset: String,
}

/// The type of an asset template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssetType {
    /// cloud-init: YAML starting with `#cloud-config`.
    CloudConfig,
    /// Ignition: JSON with `ignition.version`.
    Ignition,
    /// Anaconda kickstart.
    Kickstart,
    /// Anything else; not checked.
    Untyped,
}

impl AssetType {
    /// All asset types.
    pub const ALL: [AssetType; 4] = [
        AssetType::CloudConfig,
        AssetType::Ignition,
        AssetType::Kickstart,
        AssetType::Untyped,
    ];

    /// The directory name under `assets/`.
    pub fn dir(self) -> &'static str {
        match self {
            AssetType::CloudConfig => "cloud-config",
            AssetType::Ignition => "ignition",
            AssetType::Kickstart => "kickstart",
            AssetType::Untyped => "untyped",
        }
    }

    /// The asset type whose directory is `dir`.
    pub fn from_dir(dir: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.dir() == dir)
    }

    /// The HTTP content type an installer expects.
    pub fn content_type(self) -> &'static str {
        match self {
            AssetType::CloudConfig => "text/cloud-config; charset=utf-8",
            AssetType::Ignition => "application/vnd.coreos.ignition+json",
            AssetType::Kickstart | AssetType::Untyped => "text/plain; charset=utf-8",
        }
    }
}

impl fmt::Display for AssetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir())
    }
}

/// A job run before shutdown or to validate a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// How the job runs.
    #[serde(rename = "type")]
    pub kind: JobType,
    /// `exec` / `ssh`: the program and its arguments (templated).
    #[serde(default)]
    pub command: Vec<String>,
    /// `http`: the URL (templated).
    #[serde(default)]
    pub url: Option<String>,
    /// `http`: the expected status code.
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// How long one attempt may take.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// How many times a failed attempt is retried.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Extra environment (templated values).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// How a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// A program on the agent.
    Exec,
    /// An HTTP request.
    Http,
    /// A command over SSH on the host.
    Ssh,
}

/// A workflow (`workflows/*.yml`): the ordered boot stages of its hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// The workflow id, referenced by hosts.
    pub id: String,
    /// The stages, in order; Vaquero's spelling `workflow` is accepted.
    #[serde(alias = "workflow")]
    pub stages: Vec<Stage>,
    /// Rollout policy; Vaquero's spelling `deps` is accepted.
    #[serde(default, alias = "deps")]
    pub policy: WorkflowPolicy,
}

/// One stage of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// The boot id.
    pub boot: String,
}

/// A workflow's rollout policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowPolicy {
    /// How many hosts may be in progress at once (count or percent).
    #[serde(default)]
    pub max_concurrent: Concurrency,
    /// Hosts that must stay done (standing) during a rollout.
    #[serde(default)]
    pub min_standing: Option<u32>,
    /// Workflows that must have `min_standing` hosts done first.
    #[serde(default)]
    pub block_deps: Vec<String>,
    /// Failures before the rollout halts.
    #[serde(default)]
    pub max_fail: Option<u32>,
    /// Events that trigger validation jobs.
    #[serde(default)]
    pub validate_on: Vec<String>,
}

/// A concurrency limit: a host count (0 = unlimited) or a percentage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Concurrency {
    /// No limit.
    #[default]
    Unlimited,
    /// At most this many hosts.
    Count(u32),
    /// At most this percentage of the workflow's hosts (rounded up, ≥ 1).
    Percent(u8),
}

impl Concurrency {
    /// The limit for a workflow of `hosts` hosts; `None` when unlimited.
    pub fn limit(self, hosts: usize) -> Option<usize> {
        match self {
            Concurrency::Unlimited => None,
            Concurrency::Count(n) => Some(n as usize),
            Concurrency::Percent(p) => Some((hosts * p as usize).div_ceil(100).max(1)),
        }
    }
}

impl FromStr for Concurrency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            match p.trim().parse::<u8>() {
                Ok(p @ 1..=100) => Ok(Concurrency::Percent(p)),
                _ => Err(format!("invalid percentage `{s}`: expected 1% to 100%")),
            }
        } else {
            match s.parse::<u32>() {
                Ok(0) => Ok(Concurrency::Unlimited),
                Ok(n) => Ok(Concurrency::Count(n)),
                Err(_) => Err(format!(
                    "invalid concurrency `{s}`: expected a count or a percentage like \"25%\""
                )),
            }
        }
    }
}

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Concurrency::Unlimited => f.write_str("0"),
            Concurrency::Count(n) => write!(f, "{n}"),
            Concurrency::Percent(p) => write!(f, "{p}%"),
        }
    }
}

string_serde!(Concurrency, "a count or a percentage like \"25%\"");

/// A class (`classes/**/*.yml`): a reusable host fragment.
///
/// Any host field but `name`; `classes` names its parents. Used on its own
/// only to check a class file; hosts merge classes as YAML trees.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Class {
    #[serde(default)]
    pub workflow: Option<String>,
    #[serde(default)]
    pub interfaces: Option<Vec<Interface>>,
    #[serde(default)]
    pub classes: Vec<String>,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub never_provision: Option<bool>,
    #[serde(default)]
    pub uuid: Option<Uuid>,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub location: Option<Location>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_dhcp_options_are_parsed_once_and_kept_as_written() {
        let w: Vec<Window> = serde_json::from_str(r#"["22:00-06:00", "9:00-17:00"]"#).unwrap();
        assert_eq!(w[0].minutes(), Ok((22 * 60, 6 * 60)));
        assert_eq!(
            w[1].minutes(),
            Err(r#"invalid window `9:00-17:00`: expected "HH:MM-HH:MM""#)
        );
        assert_eq!(
            Window::new("08:00-08:00").minutes(),
            Err("window `08:00-08:00` is empty")
        );
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"["22:00-06:00","9:00-17:00"]"#
        );
        let o: Vec<DhcpOption> = serde_json::from_str(
            r#"[{"option": 224, "type": "uint16", "value": "3600"},
                {"option": 6, "type": "addresses", "value": ["10.0.0.1", "10.0.0.2"]},
                {"option": 225, "type": "uint8", "value": "300"}]"#,
        )
        .unwrap();
        assert_eq!(o[0].encoded(), Ok(&[0x0e, 0x10][..]));
        assert_eq!(o[1].encoded(), Ok(&[10, 0, 0, 1, 10, 0, 0, 2][..]));
        assert_eq!(o[2].encoded(), Err("`300` is not a valid uint8"));
        let back: serde_json::Value = serde_json::to_value(&o[0]).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"option": 224, "type": "uint16", "value": "3600"})
        );
        assert!(
            serde_json::from_str::<DhcpOption>(
                r#"{"option": 1, "type": "uint8", "value": "1", "x": 1}"#
            )
            .is_err(),
            "unknown keys are still refused"
        );
    }

    #[test]
    fn mac_forms() {
        let m: MacAddr = "52-54-00-AB-cd-01".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:01");
        assert_eq!(m.hyphenated(), "52-54-00-ab-cd-01");
        assert_eq!("5254.00ab.cd01".parse::<MacAddr>().unwrap(), m);
        assert!("52:54:00:ab:cd".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:0g".parse::<MacAddr>().is_err());
        assert!("525400abcd01".parse::<MacAddr>().is_err());
        for good in ["52:54-00:AB-cd:01", "5254.00AB.cd01"] {
            assert_eq!(good.parse::<MacAddr>().unwrap(), m, "{good}");
        }
        for bad in [
            " 52:54:00:ab:cd:01",
            "52:54:00:ab:cd:01 ",
            "52.54.00.ab.cd.01",
            "52:54:00:ab:c:d01",
            "5254:00ab:cd01",
            "5254.00ab.cd0g",
            "5254-00ab-cd01",
            "52:54:00:ab:cd:+1",
            "",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
        for b in [[0u8; 6], [0xff; 6], [0x0a, 0xb0, 0x09, 0x90, 0x5f, 0xf5]] {
            let m = MacAddr(b);
            let expect = b.map(|x| format!("{x:02x}")).join(":");
            assert_eq!(m.to_string(), expect);
            assert_eq!(m.hyphenated(), expect.replace(':', "-"));
        }
    }

    #[test]
    fn uuid_and_duration() {
        let u: Uuid = "4C4C4544-0042-3510-8052-B4C04F384D32".parse().unwrap();
        assert_eq!(u.to_string(), "4c4c4544-0042-3510-8052-b4c04f384d32");
        assert_eq!("1h".parse::<Duration>().unwrap().as_secs(), 3600);
        assert_eq!("90".parse::<Duration>().unwrap().as_secs(), 90);
        assert!("1w".parse::<Duration>().is_err());
        assert_eq!("25%".parse::<Concurrency>().unwrap().limit(10), Some(3));
        assert_eq!("0".parse::<Concurrency>().unwrap(), Concurrency::Unlimited);
        assert!("0%".parse::<Concurrency>().is_err());
    }
}
