//! The tokio server: one socket bound to one interface (SO_BINDTODEVICE,
//! so replies leave the link the request came in on, with that link's
//! server id), the responder behind it, and a model that can be swapped
//! while packets keep flowing.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use vaquero_model::{DhcpMode, SiteModel};

use crate::responder::{BootTarget, Decision, Destination, Link, Silence, respond};
use crate::wire::{MessageType, encode, parse};

/// How the server runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The interface to serve (bound with SO_BINDTODEVICE); `None` binds
    /// to all interfaces (tests, single-homed hosts).
    pub interface: Option<String>,
    /// The agent's address on that link: server id and TFTP server.
    pub server_ip: Ipv4Addr,
    /// Server or proxy.
    pub mode: DhcpMode,
    /// The DHCP server port (67).
    pub port: u16,
    /// The PXE boot-server port for proxy mode (4011), if served.
    pub pxe_port: Option<u16>,
    /// The client port replies go to (68).
    pub client_port: u16,
    /// Watch the client port for other servers' replies (rogue DHCP);
    /// on by default in server mode, where this server owns the segment.
    pub watch_rogue: bool,
    /// Hold the server ports alone (no `SO_REUSEADDR`), so that a second
    /// DHCP server on the same interface — another Vaquero, dnsmasq —
    /// fails to bind instead of answering beside this one. On by default;
    /// off only to share a port on purpose (a test's relay on loopback).
    pub exclusive: bool,
}

impl ServerConfig {
    /// Defaults for an interface and address.
    pub fn new(interface: Option<String>, server_ip: Ipv4Addr, mode: DhcpMode) -> Self {
        ServerConfig {
            interface,
            server_ip,
            mode,
            port: 67,
            pxe_port: (mode == DhcpMode::Proxy).then_some(4011),
            client_port: 68,
            watch_rogue: mode == DhcpMode::Server,
            exclusive: true,
        }
    }
}

/// What the server reports, for the boot timeline and for operators.
#[derive(Debug, Clone)]
pub enum DhcpEvent {
    /// A request was answered or met with silence.
    Decided(Decided),
    /// Another DHCP server answered a client on this segment.
    Rogue(crate::rogue::RogueReply),
}

/// What happened to a request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Decided {
    /// When the request was received: the time it was seen at the site,
    /// which an agent that uploads late still reports truly.
    pub at: std::time::SystemTime,
    /// Client hardware address.
    pub mac: vaquero_model::MacAddr,
    /// Transaction id.
    pub xid: u32,
    /// Message type.
    pub msg_type: Option<MessageType>,
    /// Client architecture (option 93).
    pub arch: Option<u16>,
    /// The host, when known.
    pub host: Option<String>,
    /// What was offered: address and boot target; `None` for silence.
    pub offered: Option<(Ipv4Addr, Option<BootTarget>)>,
    /// Why there was no answer.
    pub silence: Option<crate::responder::Silence>,
}

/// Counters of a server (also exported through `metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests decoded.
    pub(crate) requests: AtomicU64,
    /// Replies sent.
    pub(crate) replies: AtomicU64,
    /// Datagrams dropped as malformed.
    pub(crate) malformed: AtomicU64,
    /// Requests answered with silence.
    pub(crate) silent: AtomicU64,
    /// Replies of other servers seen on the segment.
    pub(crate) rogue: AtomicU64,
    /// Replies whose send failed transiently: counted as lost.
    pub(crate) send_lost: AtomicU64,
}

impl Stats {
    /// Requests decoded.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Replies sent.
    pub fn replies(&self) -> u64 {
        self.replies.load(Ordering::Relaxed)
    }

    /// Datagrams dropped as malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Requests answered with silence.
    pub fn silent(&self) -> u64 {
        self.silent.load(Ordering::Relaxed)
    }

    /// Replies of other servers seen on the segment.
    pub fn rogue(&self) -> u64 {
        self.rogue.load(Ordering::Relaxed)
    }

    /// Replies whose send failed transiently (a firewall's drop on the
    /// output path, a full queue, a route gone for a moment): lost as on
    /// the wire; the client's retransmission brings the request again.
    pub fn send_lost(&self) -> u64 {
        self.send_lost.load(Ordering::Relaxed)
    }
}

/// Whether a failed send is one the network heals: the reply is as good
/// as lost, and the client's retransmission covers it. EPERM is a local
/// firewall's drop on the output path; ENOBUFS and EAGAIN a full queue or
/// conntrack table; ENETUNREACH and EHOSTUNREACH a route or a neighbour
/// gone for a moment.
fn transient_send(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::PERM | Errno::NOBUFS | Errno::AGAIN | Errno::NETUNREACH | Errno::HOSTUNREACH)
    )
}

/// A bound DHCP server.
pub struct Server {
    sockets: Vec<(Arc<UdpSocket>, bool)>,
    rogue: Option<Arc<UdpSocket>>,
    config: ServerConfig,
    model: watch::Receiver<Arc<SiteModel>>,
    events: Option<mpsc::Sender<DhcpEvent>>,
    stats: Arc<Stats>,
}

/// A UDP socket on `port` of every address, bound to the configured
/// interface. Serving sockets are exclusive unless configured otherwise
/// ([`ServerConfig::exclusive`]); sockets bound to other interfaces do
/// not conflict. The watch of the client port always shares it (a local
/// DHCP client may hold it).
fn socket(config: &ServerConfig, port: u16, shared: bool) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(shared)?;
    s.set_broadcast(true)?;
    // A boot storm arrives in bursts: room for them while the task is
    // descheduled (best effort; the kernel caps it at rmem_max).
    let _ = s.set_recv_buffer_size(4 << 20);
    if let Some(i) = &config.interface {
        s.bind_device(Some(i.as_bytes()))?;
    }
    s.set_nonblocking(true)?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    UdpSocket::from_std(s.into())
}

impl Server {
    /// Binds the server's sockets. `model` is the model to answer from;
    /// send a new one through its `watch::Sender` to swap it. Fails with
    /// "address in use" when another DHCP server already listens on the
    /// interface (or on every interface).
    pub fn bind(
        config: ServerConfig,
        model: watch::Receiver<Arc<SiteModel>>,
        events: Option<mpsc::Sender<DhcpEvent>>,
    ) -> std::io::Result<Server> {
        let shared = !config.exclusive;
        let mut sockets = vec![(Arc::new(socket(&config, config.port, shared)?), false)];
        if let Some(p) = config.pxe_port {
            sockets.push((Arc::new(socket(&config, p, shared)?), true));
        }
        // A local DHCP client may hold port 68 without SO_REUSEADDR:
        // serving matters more than watching, so that is a warning.
        let rogue = if config.watch_rogue {
            match socket(&config, config.client_port, true) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    warn!(error = %e, port = config.client_port, "cannot watch for rogue DHCP servers");
                    None
                }
            }
        } else {
            None
        };
        Ok(Server {
            sockets,
            rogue,
            config,
            model,
            events,
            stats: Arc::new(Stats::default()),
        })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
        info!(interface = ?self.config.interface, server_ip = %self.config.server_ip, mode = ?self.config.mode, "DHCP server listening");
        let mut tasks = tokio::task::JoinSet::new();
        let me = Arc::new(self);
        for (i, (_, pxe)) in me.sockets.iter().enumerate() {
            let me = me.clone();
            let pxe = *pxe;
            tasks.spawn(async move { me.serve(i, pxe).await });
        }
        if let Some(sock) = me.rogue.clone() {
            let me = me.clone();
            tasks.spawn(async move { me.watch_rogue(sock).await });
        }
        shutdown.await;
        tasks.abort_all();
        Ok(())
    }

    async fn watch_rogue(&self, sock: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 1500];
        let mut seen = std::collections::HashSet::new();
        loop {
            let (n, from) = match sock.recv_from(&mut buf).await {
                Ok(v) => v,
                Err(e) => {
                    debug!(error = %e, "recv on the client port");
                    continue;
                }
            };
            let Some(r) = crate::rogue::inspect(&buf[..n], from, self.config.server_ip) else {
                continue;
            };
            self.stats.rogue.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("vaquero_dhcp_rogue_replies_total").increment(1);
            // Loud once per server, then quiet: a rogue answers every client.
            if seen.len() < 1024 && seen.insert(r.server_id) {
                warn!(server = %r.server_id, source = %r.source, client = %r.client, offered = %r.yiaddr, boot_file = ?r.boot_file, kind = ?r.msg_type, "another DHCP server is answering on this segment");
            } else {
                debug!(server = %r.server_id, client = %r.client, "rogue DHCP reply");
            }
            if let Some(tx) = &self.events {
                let _ = tx.try_send(DhcpEvent::Rogue(r));
            }
        }
    }

    async fn serve(&self, i: usize, pxe_port: bool) {
        let sock = self.sockets[i].0.clone();
        let mut buf = vec![0u8; 1500];
        loop {
            let (n, from) = match sock.recv_from(&mut buf).await {
                Ok(v) => v,
                Err(e) => {
                    debug!(error = %e, "recv");
                    continue;
                }
            };
            let started = Instant::now();
            let received = std::time::SystemTime::now();
            let req = match parse(&buf[..n]) {
                Ok(r) => r,
                Err(e) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("vaquero_dhcp_dropped_total", "reason" => "malformed")
                        .increment(1);
                    debug!(client = %from, error = %e, "malformed datagram dropped");
                    continue;
                }
            };
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let kind = req.msg_type.unwrap_or(MessageType::Other(0)).name();
            metrics::counter!("vaquero_dhcp_requests_total", "kind" => kind).increment(1);
            // The model of this instant; a swap never stalls a packet.
            let model = self.model.borrow().clone();
            let link = Link {
                mode: self.config.mode,
                server_ip: self.config.server_ip,
                pxe_port,
            };
            let decision = respond(&req, &model, &link);
            metrics::histogram!("vaquero_dhcp_decision_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            let mut event = Decided {
                at: received,
                mac: req.chaddr,
                xid: req.xid,
                msg_type: req.msg_type,
                arch: req.arch,
                host: None,
                offered: None,
                silence: None,
            };
            match decision {
                Decision::Silence(s) => {
                    self.stats.silent.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("vaquero_dhcp_dropped_total", "reason" => s.reason())
                        .increment(1);
                    match s {
                        // A client found its address in use: an operator
                        // must look (a duplicate, a stray static address).
                        Silence::Noted(MessageType::Decline) => {
                            warn!(mac = %req.chaddr, xid = req.xid, address = ?req.requested_ip, "client declined its address: it is in use on the network")
                        }
                        Silence::Noted(_) => {
                            info!(mac = %req.chaddr, xid = req.xid, "client released its lease")
                        }
                        _ => {
                            debug!(mac = %req.chaddr, xid = req.xid, reason = s.reason(), "no answer")
                        }
                    }
                    event.silence = Some(s);
                }
                Decision::Reply {
                    reply,
                    to,
                    boot,
                    host,
                } => {
                    let bytes = encode(&reply, &req.params, req.max_size);
                    let port = self.config.client_port;
                    let dest = match to {
                        Destination::Relay(g) => SocketAddr::from((g, self.config.port)),
                        Destination::Unicast(a) => SocketAddr::from((a, port)),
                        Destination::Broadcast => SocketAddr::from((Ipv4Addr::BROADCAST, port)),
                        Destination::Source => from,
                    };
                    match sock.send_to(&bytes, dest).await {
                        Ok(_) => {
                            self.stats.replies.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("vaquero_dhcp_replies_total").increment(1);
                        }
                        Err(e) if transient_send(&e) => {
                            self.stats.send_lost.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("vaquero_dhcp_send_lost_total").increment(1);
                            debug!(error = %e, %dest, "a reply not sent: counted as lost");
                        }
                        Err(e) => warn!(error = %e, %dest, "sending a reply"),
                    }
                    info!(mac = %req.chaddr, xid = req.xid, host = %host, reply = ?reply.msg_type, yiaddr = %reply.yiaddr, boot = ?boot, "answered");
                    event.host = Some(host);
                    event.offered = Some((reply.yiaddr, boot));
                }
            }
            if let Some(tx) = &self.events {
                let _ = tx.try_send(DhcpEvent::Decided(event));
            }
        }
    }
}
