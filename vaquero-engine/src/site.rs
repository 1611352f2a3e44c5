//! The site services of one agent: DHCP, TFTP and the HTTP boot service,
//! answering from one model and the engine's [`BootState`], and reporting
//! what they see as [`Observation`]s.
//!
//! For one `agents` entry of a site:
//! - DHCP on each of the agent's `interfaces` in its `dhcp_mode` (a
//!   server must name them; a proxy that names none answers on all but
//!   loopback); the server address is the interface's own IPv4 address;
//! - TFTP on UDP 69 of those addresses, from `tftp_server.base_dir`; iPXE
//!   binaries missing there (`undionly.kpxe`, `ipxe.efi`, `snponly.efi`)
//!   are served from the distribution's build (Debian's `ipxe` package,
//!   `/usr/lib/ipxe`), and start-up fails naming the file when neither has
//!   it;
//! - the HTTP boot service on the port of `asset_server.url`.
//!
//! [`SiteServices::swap`] gives all three a new model at once; requests in
//! flight finish on the model they started with.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use vaquero_ipxe::{BootEvent, BootService, BootState, Listeners, Route, ServiceConfig, TokenKey};
use vaquero_model::{Agent, DhcpMode, SiteModel};

use crate::observe::{Kept, Observation, ObservationKind, Observed};

/// The iPXE binaries the DHCP responder hands out over TFTP.
pub const IPXE_FILES: [&str; 3] = ["undionly.kpxe", "ipxe.efi", "snponly.efi"];

/// Where the distribution keeps its iPXE builds (Debian's `ipxe`).
pub const DISTRIBUTION_IPXE: &str = "/usr/lib/ipxe";

/// How the site services run, beyond what the SoT says.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SiteOptions {
    /// The agent entry to serve (`None`: the site's only one).
    pub agent: Option<String>,
    /// Where missing iPXE binaries are looked for.
    pub ipxe_dirs: Vec<PathBuf>,
    /// Signs checkpoint tokens (keep it across restarts: tokens in
    /// flight stay valid).
    pub token_key: TokenKey,
    /// HTTP event loops.
    pub http_threads: NonZeroUsize,
    /// The DHCP server port (67; tests use others).
    pub dhcp_port: u16,
    /// The TFTP port (69).
    pub tftp_port: u16,
    /// The HTTP address (default: all addresses, on the port of the
    /// agent's `asset_server.url`).
    pub http_listen: Option<SocketAddr>,
}

impl SiteOptions {
    /// Defaults: the only agent, Debian's iPXE, standard ports.
    pub fn new(token_key: TokenKey) -> Self {
        SiteOptions {
            agent: None,
            ipxe_dirs: vec![PathBuf::from(DISTRIBUTION_IPXE)],
            token_key,
            http_threads: NonZeroUsize::MIN,
            dhcp_port: 67,
            tftp_port: 69,
            http_listen: None,
        }
    }
}

/// Where the site services listen, when not where the SoT says.
#[derive(Debug, Clone)]
pub struct Ports {
    /// DHCP (67).
    pub dhcp: u16,
    /// TFTP (69).
    pub tftp: u16,
    /// The HTTP boot service (default: the port of `asset_server.url`).
    pub http: Option<SocketAddr>,
    /// Where missing iPXE binaries are looked for.
    pub ipxe_dirs: Vec<PathBuf>,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            dhcp: 67,
            tftp: 69,
            http: None,
            ipxe_dirs: vec![PathBuf::from(DISTRIBUTION_IPXE)],
        }
    }
}

/// Why the site services cannot start: each says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SiteFailure {
    /// The site has no such agent, or several and none was named.
    #[error(transparent)]
    Agent(#[from] vaquero_model::AgentLookupFailure),
    /// The agent has no `asset_server.url`, which the boot service
    /// needs to listen on and to write into scripts.
    #[error("agent `{0}` has no asset_server.url: the boot service needs it")]
    NoAssetUrl(String),
    /// The agent would be the DHCP server (`dhcp_mode: server`) without
    /// naming the interfaces to serve on.
    #[error(
        "agent `{0}` is a DHCP server (dhcp_mode: server) on no named interface: name the provisioning network's interfaces in its `interfaces` (a DHCP server answering on every interface would hand out leases on networks that have their own), or set dhcp_mode to proxy or off"
    )]
    NoInterfaces(String),
    /// An interface the agent names does not exist or has no IPv4 address.
    #[error(
        "interface `{0}` does not exist or has no IPv4 address: fix the agent's `interfaces` in the SoT, or bring the interface up"
    )]
    Interface(String),
    /// An iPXE binary is neither in the TFTP root nor in the distribution's.
    #[error(
        "TFTP: `{file}` is neither in {root} nor in {dirs}: install Debian's `ipxe` package, or put the file in the TFTP root"
    )]
    MissingIpxe {
        /// The file.
        file: String,
        /// The TFTP root.
        root: String,
        /// Where else it was looked for.
        dirs: String,
    },
    /// A port is taken.
    #[error("{service}: {addr} is in use by another program: stop it, or serve on another port")]
    InUse {
        /// DHCP, TFTP or HTTP.
        service: &'static str,
        /// The address.
        addr: String,
    },
    /// Another DHCP server already serves an interface of the agent.
    #[error(
        "DHCP: {addr} is already served by another DHCP server on this machine (another vaquero, dnsmasq, isc-dhcp-server, kea): two DHCP servers on one segment give conflicting answers; stop the other one, or set the agent's dhcp_mode to proxy or off"
    )]
    DhcpTaken {
        /// The interface, address and port.
        addr: String,
    },
    /// Not allowed to bind a privileged port or an interface.
    #[error(
        "{service}: not allowed to bind {addr}: run as root, or grant CAP_NET_BIND_SERVICE and CAP_NET_RAW (setcap cap_net_bind_service,cap_net_raw+ep vaquero)"
    )]
    Privileges {
        /// DHCP, TFTP or HTTP.
        service: &'static str,
        /// The address.
        addr: String,
    },
    /// Another I/O error.
    #[error("{service}: {addr}: {source}")]
    Io {
        /// DHCP, TFTP or HTTP.
        service: &'static str,
        /// The address.
        addr: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The boot service cannot be set up.
    #[error("HTTP boot service: {0}")]
    Service(String),
}

fn bind_error(
    service: &'static str,
    addr: impl std::fmt::Display,
    e: std::io::Error,
) -> SiteFailure {
    let addr = addr.to_string();
    match e.kind() {
        std::io::ErrorKind::AddrInUse => SiteFailure::InUse { service, addr },
        std::io::ErrorKind::PermissionDenied => SiteFailure::Privileges { service, addr },
        _ => SiteFailure::Io {
            service,
            addr,
            source: e,
        },
    }
}

/// The IPv4 address of each interface the agent serves on: those it names,
/// or every interface but loopback.
pub fn interface_addresses(agent: &Agent) -> Result<BTreeMap<String, Ipv4Addr>, SiteFailure> {
    let all = if_addrs::get_if_addrs().map_err(|e| SiteFailure::Io {
        service: "DHCP",
        addr: "interfaces".into(),
        source: e,
    })?;
    let v4 = |name: &str| {
        all.iter().find_map(|i| match i.ip() {
            IpAddr::V4(ip) if i.name == name => Some(ip),
            _ => None,
        })
    };
    let mut out = BTreeMap::new();
    if agent.interfaces.is_empty() {
        for i in &all {
            if let IpAddr::V4(ip) = i.ip()
                && !i.is_loopback()
            {
                out.entry(i.name.clone()).or_insert(ip);
            }
        }
    } else {
        for name in &agent.interfaces {
            let ip = v4(name).ok_or_else(|| SiteFailure::Interface(name.clone()))?;
            out.insert(name.clone(), ip);
        }
    }
    Ok(out)
}

/// The TFTP file source: the agent's root, and the distribution's iPXE
/// binaries where the root lacks them. Says which came from where.
fn tftp_source(
    root: Option<&Path>,
    links_to: &[String],
    ipxe_dirs: &[PathBuf],
) -> Result<(TftpRoot, Vec<String>), SiteFailure> {
    let dir = match root {
        Some(r) => Some(
            vaquero_tftp::Directory::new(r)
                .and_then(|d| d.allow_links_to(links_to))
                .map_err(|e| SiteFailure::Io {
                    service: "TFTP",
                    addr: format!("{} (or its allow_links_to)", r.display()),
                    source: e,
                })?,
        ),
        None => None,
    };
    let mut fallback = vaquero_tftp::Memory::new();
    let mut notes = Vec::new();
    for file in IPXE_FILES {
        if root.is_some_and(|r| r.join(file).is_file()) {
            continue;
        }
        let found = ipxe_dirs.iter().map(|d| d.join(file)).find(|p| p.is_file());
        let Some(path) = found else {
            return Err(SiteFailure::MissingIpxe {
                file: file.into(),
                root: root.map_or("(no tftp_server.base_dir)".into(), |r| {
                    r.display().to_string()
                }),
                dirs: ipxe_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let bytes = std::fs::read(&path).map_err(|e| SiteFailure::Io {
            service: "TFTP",
            addr: path.display().to_string(),
            source: e,
        })?;
        fallback
            .insert(file, bytes)
            .map_err(|e| SiteFailure::Service(e.to_string()))?;
        notes.push(format!("{file} from {}", path.display()));
    }
    Ok((TftpRoot { dir, fallback }, notes))
}

/// The agent's TFTP root, then the iPXE binaries it lacks.
struct TftpRoot {
    dir: Option<vaquero_tftp::Directory>,
    fallback: vaquero_tftp::Memory,
}

impl vaquero_tftp::FileSource for TftpRoot {
    fn open(
        &self,
        name: &str,
        client: SocketAddr,
    ) -> Result<Box<dyn vaquero_tftp::FileHandle>, vaquero_tftp::OpenFailure> {
        match &self.dir {
            Some(d) => match d.open(name, client) {
                Err(vaquero_tftp::OpenFailure::NotFound) => self.fallback.open(name, client),
                other => other,
            },
            None => self.fallback.open(name, client),
        }
    }
}

/// The running site services.
pub struct SiteServices {
    model: watch::Sender<Arc<SiteModel>>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), SiteFailure>>,
    http: SocketAddr,
    tftp: Vec<SocketAddr>,
}

impl std::fmt::Debug for SiteServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteServices")
            .field("http", &self.http)
            .field("tftp", &self.tftp)
            .finish_non_exhaustive()
    }
}

impl SiteServices {
    /// Starts the services of one agent of `model`'s site. What they see
    /// goes to `observer`. Fails, saying what to fix, when an interface is
    /// missing, a port is taken, privileges are lacking or an iPXE binary
    /// is nowhere.
    pub async fn start(
        model: Arc<SiteModel>,
        state: Arc<dyn BootState>,
        options: SiteOptions,
        observer: mpsc::UnboundedSender<Observed>,
    ) -> Result<SiteServices, SiteFailure> {
        let agent = model.agent(options.agent.as_deref())?.clone();
        if agent.dhcp_mode == DhcpMode::Server && agent.interfaces.is_empty() {
            return Err(SiteFailure::NoInterfaces(agent.id.clone()));
        }
        let addresses = if agent.dhcp_mode == DhcpMode::Off && agent.interfaces.is_empty() {
            BTreeMap::new()
        } else {
            interface_addresses(&agent)?
        };
        let (model_tx, model_rx) = watch::channel(model.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut tasks = JoinSet::new();

        // The events of all three, as observations.
        let (dhcp_tx, mut dhcp_rx) = mpsc::channel::<vaquero_dhcp::DhcpEvent>(4096);
        let (tftp_tx, mut tftp_rx) = mpsc::channel::<vaquero_tftp::TftpEvent>(4096);
        let (http_tx, mut http_rx) = mpsc::channel::<BootEvent>(16384);
        {
            let model = model_rx.clone();
            let observer = observer.clone();
            let stop = stopped();
            tasks.spawn(async move {
                tokio::pin!(stop);
                // Drained every few milliseconds, as the engine takes them
                // once per step: a request never wakes this task.
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut refused = Refusals::default();
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tick.tick() => {}
                    }
                    let mut out = Vec::new();
                    let dhcp = drain(&mut dhcp_rx, |e| {
                        out.extend(from_dhcp(&e).map(|o| (o, None)))
                    });
                    let tftp = {
                        let model = model.borrow();
                        drain(&mut tftp_rx, |e| {
                            refused.tftp(&e);
                            out.extend(from_tftp(&model, &e).map(|o| (o, None)));
                        })
                    };
                    let http = drain(&mut http_rx, |e| {
                        refused.http(&e);
                        out.extend(from_http(e));
                    });
                    for o in out {
                        if observer.send(o).is_err() {
                            return Ok(());
                        }
                    }
                    if !(dhcp || tftp || http) {
                        break;
                    }
                }
                Ok(())
            });
        }

        // DHCP.
        if agent.dhcp_mode != DhcpMode::Off {
            for (name, ip) in &addresses {
                let mut config =
                    vaquero_dhcp::ServerConfig::new(Some(name.clone()), *ip, agent.dhcp_mode);
                config.port = options.dhcp_port;
                if agent.dhcp_mode == DhcpMode::Proxy && options.dhcp_port != 67 {
                    config.pxe_port = None;
                }
                let server =
                    vaquero_dhcp::Server::bind(config, model_rx.clone(), Some(dhcp_tx.clone()))
                        .map_err(|e| {
                            let addr = format!("{name} ({ip}) port {}", options.dhcp_port);
                            if e.kind() == std::io::ErrorKind::AddrInUse {
                                SiteFailure::DhcpTaken { addr }
                            } else {
                                bind_error("DHCP", addr, e)
                            }
                        })?;
                let stop = stopped();
                let at = format!("{name} ({ip})");
                tasks.spawn(async move {
                    server.run(stop).await.map_err(|e| SiteFailure::Io {
                        service: "DHCP",
                        addr: at,
                        source: e,
                    })
                });
            }
        }

        // TFTP.
        let root = agent
            .tftp_server
            .as_ref()
            .and_then(|t| t.base_dir.as_deref())
            .map(PathBuf::from);
        let mut tftp = Vec::new();
        let tftp_addrs: Vec<Ipv4Addr> = addresses.values().copied().collect();
        if !tftp_addrs.is_empty() {
            let links = agent
                .tftp_server
                .as_ref()
                .map(|t| t.allow_links_to.as_slice())
                .unwrap_or_default();
            let single_port = agent.tftp_server.as_ref().is_some_and(|t| t.single_port);
            let (source, notes) = tftp_source(root.as_deref(), links, &options.ipxe_dirs)?;
            for n in &notes {
                tracing::info!("TFTP serves {n} (not in the TFTP root)");
            }
            let source = Arc::new(source);
            for ip in tftp_addrs {
                let listen = SocketAddr::from((ip, options.tftp_port));
                let mut config = vaquero_tftp::ServerConfig::new(listen);
                config.single_port = single_port;
                let server = vaquero_tftp::Server::bind(config, SharedSource(source.clone()))
                    .await
                    .map_err(|e| bind_error("TFTP", listen, e))?
                    .with_events(tftp_tx.clone());
                tftp.push(listen);
                let stop = stopped();
                tasks.spawn(async move {
                    server.run(stop).await.map_err(|e| SiteFailure::Io {
                        service: "TFTP",
                        addr: listen.to_string(),
                        source: e,
                    })
                });
            }
        }

        // HTTP.
        let listen = match options.http_listen {
            Some(a) => vec![a],
            None => {
                let url = agent
                    .asset_server
                    .as_ref()
                    .and_then(|a| a.url.as_deref())
                    .ok_or_else(|| SiteFailure::NoAssetUrl(agent.id.clone()))?;
                http_addresses(url, &addresses)
            }
        };
        let asset = agent.asset_server.clone();
        let mut config = ServiceConfig::new(
            asset
                .as_ref()
                .and_then(|a| a.base_dir.as_deref())
                .map(PathBuf::from),
            options.token_key.clone(),
        );
        if let Some(a) = &asset {
            config.check_client_address =
                agent.dhcp_mode == DhcpMode::Server && a.check_client_address;
            if let Some(n) = a.max_client_connections {
                config.max_client_connections = usize::try_from(n).ok().and_then(NonZeroUsize::new);
            }
            config.allow_links_to = a.allow_links_to.iter().map(PathBuf::from).collect();
        }
        let service = BootService::new(model_rx.clone(), state, config, Some(http_tx))
            .map_err(|e| SiteFailure::Service(e.to_string()))?;
        let listeners = Listeners::bind_all(&listen, options.http_threads).map_err(|e| {
            let at = listen.iter().map(ToString::to_string).collect::<Vec<_>>();
            bind_error("HTTP", at.join(", "), e)
        })?;
        let http = listeners.local_addr();
        let stop = stopped();
        tasks.spawn(async move {
            listeners
                .serve(service, stop)
                .await
                .map_err(|e| SiteFailure::Io {
                    service: "HTTP",
                    addr: http.to_string(),
                    source: e,
                })
        });
        tracing::info!(
            site = %model.site().id,
            agent = %agent.id,
            dhcp = ?agent.dhcp_mode,
            interfaces = ?addresses,
            %http,
            "site services started"
        );
        Ok(SiteServices {
            model: model_tx,
            stop: stop_tx,
            tasks,
            http,
            tftp,
        })
    }

    /// Serves `model` from now on (DHCP, TFTP lookups and HTTP at once).
    pub fn swap(&self, model: Arc<SiteModel>) {
        self.model.send_replace(model);
    }

    /// A handle that swaps the model served (as [`swap`](Self::swap)),
    /// for whoever decides when a new one is served.
    pub fn model_handle(&self) -> watch::Sender<Arc<SiteModel>> {
        self.model.clone()
    }

    /// The HTTP boot service's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The TFTP servers' addresses.
    pub fn tftp_addrs(&self) -> &[SocketAddr] {
        &self.tftp
    }

    /// Waits until a service stops by itself (it failed).
    pub async fn failed(&mut self) -> SiteFailure {
        loop {
            match self.tasks.join_next().await {
                Some(Ok(Err(e))) => return e,
                Some(Ok(Ok(()))) => {}
                Some(Err(e)) => {
                    return SiteFailure::Service(format!("a site service panicked: {e}"));
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Stops every service; requests in flight finish (bounded).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

/// The port of a URL (`http://10.0.0.2:8080/x` → 8080; 80 or 443 by scheme).
/// Where the boot service listens: on the port of `url`, at each address
/// the agent serves DHCP and TFTP on, and at the URL's own address when it
/// is one of this machine's — not on every address. On every address
/// (with a warning) only when that leaves none: an agent with no
/// interfaces and no DHCP whose URL names a host, or an address this
/// machine does not have (NAT).
fn http_addresses(url: &str, interfaces: &BTreeMap<String, Ipv4Addr>) -> Vec<SocketAddr> {
    let port = url_port(url);
    let mut ips: Vec<IpAddr> = interfaces.values().map(|ip| IpAddr::V4(*ip)).collect();
    if let Some(ip) = url_ip(url)
        && !ips.contains(&ip)
    {
        let local = if_addrs::get_if_addrs()
            .map(|all| all.iter().any(|i| i.ip() == ip))
            .unwrap_or(false);
        if local {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        tracing::warn!(
            url,
            "the boot service listens on every address: the agent names no interfaces, and its asset_server.url names no address of this machine"
        );
        ips.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// The address in `url`'s authority, when it is one (not a name).
fn url_ip(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.parse().ok()
}

fn url_port(url: &str) -> u16 {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(if scheme == "https" { 443 } else { 80 })
}

/// One source shared by the TFTP servers of several addresses.
struct SharedSource(Arc<TftpRoot>);

impl vaquero_tftp::FileSource for SharedSource {
    fn open(
        &self,
        name: &str,
        client: SocketAddr,
    ) -> Result<Box<dyn vaquero_tftp::FileHandle>, vaquero_tftp::OpenFailure> {
        self.0.open(name, client)
    }
}

fn now_of(at: std::time::SystemTime) -> Timestamp {
    Timestamp::try_from(at).unwrap_or_else(|_| Timestamp::now())
}

/// A DHCP decision as an observation (of known hosts only).
fn from_dhcp(e: &vaquero_dhcp::DhcpEvent) -> Option<Observation> {
    let vaquero_dhcp::DhcpEvent::Decided(d) = e else {
        return None;
    };
    let host = d.host.clone()?;
    let detail = match (&d.offered, &d.silence) {
        (Some((ip, target)), _) => format!(
            "{} {} → {ip}{}",
            d.msg_type.map_or("request".into(), |m| format!("{m:?}")),
            d.mac,
            target
                .as_ref()
                .map_or(String::new(), |t| format!(", boot {t:?}"))
        ),
        (None, Some(s)) => format!("{} silent: {s:?}", d.mac),
        (None, None) => format!("{} silent", d.mac),
    };
    Some(Observation {
        at: now_of(d.at),
        host,
        attempt: None,
        kind: ObservationKind::Dhcp,
        ok: d.offered.is_some(),
        detail,
    })
}

/// A TFTP transfer as an observation, tied to its host by the client's
/// address (the address DHCP gave it).
/// Files refused to machines, logged at WARN once per file and reason in
/// ten minutes: a machine that cannot load its kernel retries it in a
/// loop, and the operator needs the reason once, not each time.
#[derive(Default)]
struct Refusals {
    logged: std::collections::HashMap<String, std::time::Instant>,
}

impl Refusals {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(600);
    const CAP: usize = 4096;

    /// Whether `key` was not logged within [`Refusals::EVERY`] (and now is).
    fn first(&mut self, key: &str) -> bool {
        let now = std::time::Instant::now();
        if self.logged.len() >= Self::CAP {
            self.logged
                .retain(|_, at| now.duration_since(*at) < Self::EVERY);
            if self.logged.len() >= Self::CAP {
                // A flood of distinct names: forget them all (some lines
                // repeat) rather than grow without bound.
                self.logged.clear();
            }
        }
        match self.logged.get(key) {
            Some(at) if now.duration_since(*at) < Self::EVERY => false,
            _ => {
                self.logged.insert(key.to_owned(), now);
                true
            }
        }
    }

    /// A `/files` request refused (403), or missing (404) for a machine
    /// of the model: the event's detail says which file, why, and the fix.
    fn http(&mut self, e: &BootEvent) {
        let refused = e.status == 403 || (e.status == 404 && e.host.is_some());
        if e.route == Route::Files && refused && self.first(&e.detail) {
            tracing::warn!(
                host = e.host.as_deref().unwrap_or("-"),
                client = ?e.client,
                "HTTP file not served: {}", e.detail
            );
        }
    }

    /// A TFTP read request refused (not merely missing).
    fn tftp(&mut self, e: &vaquero_tftp::TftpEvent) {
        if e.outcome != "refused" {
            return;
        }
        let why = e.reason.as_deref().unwrap_or("access violation");
        if self.first(&format!("tftp {} {why}", e.file)) {
            tracing::warn!(
                client = %e.client,
                "TFTP file not served: `{}`: {why}{}", e.file,
                if why.contains("leaves the root") {
                    ": move or copy the file under the root, or list its directory in tftp_server.allow_links_to"
                } else {
                    ""
                }
            );
        }
    }
}

fn from_tftp(model: &SiteModel, e: &vaquero_tftp::TftpEvent) -> Option<Observation> {
    let IpAddr::V4(ip) = e.client.ip() else {
        return None;
    };
    let host = model.by_ipv4(&ip)?.host.name.clone();
    Some(Observation {
        at: now_of(e.at),
        host,
        attempt: None,
        kind: ObservationKind::Tftp,
        // OVMF asks for the size first and aborts: still a netboot.
        ok: matches!(e.outcome, "completed" | "aborted"),
        detail: match &e.reason {
            Some(why) => format!("{} {}: {why}", e.file, e.outcome),
            None => format!(
                "{} {} ({} bytes, {} ms)",
                e.file,
                e.outcome,
                e.bytes,
                e.duration.as_millis()
            ),
        },
    })
}

/// A request of the boot service as an observation.
/// Takes what `rx` holds now; false once all its senders are gone.
fn drain<T>(rx: &mut mpsc::Receiver<T>, mut take: impl FnMut(T)) -> bool {
    loop {
        match rx.try_recv() {
            Ok(e) => take(e),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

/// A boot service event as an observation, with the acknowledgement a
/// checkpoint's installer waits on.
fn from_http(e: BootEvent) -> Option<Observed> {
    let kind = match e.route {
        Route::Chain => ObservationKind::Chain,
        Route::Script => ObservationKind::Script,
        Route::Config => ObservationKind::Config,
        Route::Files => ObservationKind::File,
        Route::Checkpoint => ObservationKind::Checkpoint,
    };
    let kept = e.ack.map(|a| Kept::new(move || a.kept()));
    let o = Observation {
        at: now_of(e.at),
        host: e.host?,
        attempt: e.attempt,
        kind,
        ok: (200..300).contains(&e.status),
        detail: e.detail,
    };
    Some((o, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_urls() {
        assert_eq!(url_port("http://10.0.0.2:8080"), 8080);
        assert_eq!(url_port("http://10.0.0.2:8080/boot"), 8080);
        assert_eq!(url_port("http://10.0.0.2"), 80);
        assert_eq!(url_port("https://boot.example"), 443);
        assert_eq!(url_ip("http://10.0.0.2:8080/x"), Some([10, 0, 0, 2].into()));
        assert_eq!(url_ip("http://10.0.0.2"), Some([10, 0, 0, 2].into()));
        assert_eq!(
            url_ip("http://[fd00::2]:8080"),
            Some(
                "fd00::2"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            )
        );
        assert_eq!(url_ip("http://boot.example:8080"), None);
    }

    #[test]
    fn a_refused_file_is_logged_once_per_file_and_reason() {
        let mut r = Refusals::default();
        assert!(r.first("vmlinuz 403: a link out of the root"));
        assert!(
            !r.first("vmlinuz 403: a link out of the root"),
            "again: quiet"
        );
        assert!(r.first("vmlinuz 404: missing"), "another reason");
        assert!(
            r.first("initrd 403: a link out of the root"),
            "another file"
        );
        // Past the window, once more.
        let long_ago = std::time::Instant::now()
            .checked_sub(Refusals::EVERY + std::time::Duration::from_secs(1));
        if let Some(t) = long_ago {
            r.logged
                .insert("vmlinuz 403: a link out of the root".into(), t);
            assert!(r.first("vmlinuz 403: a link out of the root"));
        }
        // Bounded: a flood of distinct names does not grow it past its cap.
        for i in 0..10_000 {
            r.first(&format!("scan-{i}"));
        }
        assert!(r.logged.len() <= Refusals::CAP);
    }

    #[test]
    fn the_boot_service_listens_on_the_site_addresses() {
        let lo = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let ifs = BTreeMap::from([("lo".to_owned(), Ipv4Addr::LOCALHOST)]);
        // The interfaces' addresses; the URL's when it is local too.
        assert_eq!(
            http_addresses("http://127.0.0.1:8080", &ifs),
            vec![lo(8080)]
        );
        assert_eq!(http_addresses("http://boot.example:81", &ifs), vec![lo(81)]);
        // A URL address that is not this machine's (behind NAT) is not bound.
        assert_eq!(
            http_addresses("http://192.0.2.1:8080", &ifs),
            vec![lo(8080)]
        );
        // No interfaces: where the URL says; every address when it names
        // a host, or an address that is not this machine's.
        let none = BTreeMap::new();
        assert_eq!(http_addresses("http://127.0.0.1:80", &none), vec![lo(80)]);
        assert_eq!(
            http_addresses("http://boot.example", &none),
            vec![SocketAddr::from(([0, 0, 0, 0], 80))]
        );
        assert_eq!(
            http_addresses("http://192.0.2.1:80", &none),
            vec![SocketAddr::from(([0, 0, 0, 0], 80))]
        );
    }
}
