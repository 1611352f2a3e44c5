//! The responder: a request and the compiled site model in, a reply (and
//! where to send it) or silence out. Pure: no sockets, no clock.
//!
//! - **server** mode answers hosts in the model (by MAC; by relay location
//!   when the SoT gives one) with their static address and the subnet's
//!   options; DISCOVER → OFFER, REQUEST → ACK (NAK for a wrong address),
//!   INFORM → ACK without a lease; RELEASE and DECLINE are noted, not
//!   answered.
//! - **proxy** mode answers PXE clients in the model with boot information
//!   only, beside another DHCP server: OFFER on port 67, ACK on 4011.
//! - **relayed** requests (`giaddr` set) must come from the host's subnet;
//!   replies go to the relay and echo option 82.
//!
//! Static reservations need no ping check, so an OFFER goes out at once.

use std::net::Ipv4Addr;

use vaquero_model::{BootFiles, DhcpMode, HostRef, InterfaceType, SiteModel, Subnet};

use crate::wire::{MessageType, Reply, Request};

/// What the firmware is told to load next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootTarget {
    /// A file over TFTP from the server.
    Tftp(String),
    /// A URL over HTTP (UEFI HTTP boot, or iPXE's script).
    Http(String),
}

/// Where a reply goes (RFC 2131 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// To the relay, port 67.
    Relay(Ipv4Addr),
    /// To the client's address, port 68.
    Unicast(Ipv4Addr),
    /// To 255.255.255.255:68 on the interface.
    Broadcast,
    /// Back to where the request came from (proxyDHCP on port 4011).
    Source,
}

/// Why a request gets no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// The MAC (and relay location) is not in the model.
    UnknownClient,
    /// The interface says `ignore_dhcp`.
    Ignored,
    /// The relay is on another subnet than the host's.
    WrongSubnet,
    /// The client chose another server.
    OtherServer,
    /// RELEASE or DECLINE: noted, not answered.
    Noted(MessageType),
    /// Proxy mode: not a PXE client, or nothing to do on this port.
    NotForProxy,
    /// The agent's DHCP is off, or the message type is not answered.
    NotAnswered,
}

impl Silence {
    /// A short name for metrics labels and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Silence::UnknownClient => "unknown_client",
            Silence::Ignored => "ignored",
            Silence::WrongSubnet => "wrong_subnet",
            Silence::OtherServer => "other_server",
            Silence::Noted(MessageType::Decline) => "decline",
            Silence::Noted(MessageType::Release) => "release",
            Silence::Noted(_) => "noted",
            Silence::NotForProxy => "not_for_proxy",
            Silence::NotAnswered => "not_answered",
        }
    }
}

/// The responder's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send `reply` to `to`; `boot` says what was offered (for events).
    Reply {
        /// The reply.
        reply: Reply,
        /// Where it goes.
        to: Destination,
        /// The boot target offered, if any.
        boot: Option<BootTarget>,
        /// The host it is for.
        host: String,
    },
    /// No reply.
    Silence(Silence),
}

/// Where the request came in and who answers it.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// How the agent answers.
    pub mode: DhcpMode,
    /// The agent's address on this link: server id (54) and TFTP server.
    pub server_ip: Ipv4Addr,
    /// The request arrived on the PXE boot-server port 4011.
    pub pxe_port: bool,
}

/// PXE architecture types (RFC 4578, IANA registry).
const ARCH_BIOS: u16 = 0;
const ARCH_EFI_X64: [u16; 3] = [6, 7, 9];
const ARCH_EFI_HTTP: [u16; 2] = [15, 16];
const ARCH_ARM64: u16 = 11;
const ARCH_ARM64_HTTP: u16 = 19;

/// The boot target for a client, or `None` when it is not a network-boot
/// client. iPXE gets the HTTP URL of `boot.ipxe` (never its own binary:
/// no chain-load loop).
pub fn select_boot(req: &Request, files: &BootFiles, agent: Option<&str>) -> Option<BootTarget> {
    let agent = agent.map(|a| a.trim_end_matches('/'));
    if req.is_ipxe() {
        return agent.map(|a| BootTarget::Http(format!("{a}/boot.ipxe")));
    }
    let http_client = req.class_starts_with("HTTPClient");
    if !(req.class_starts_with("PXEClient") || http_client) {
        return None;
    }
    let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_owned());
    let url = |v: &Option<String>, file: &str| match (v, agent) {
        (Some(u), _) => Some(BootTarget::Http(u.clone())),
        (None, Some(a)) => Some(BootTarget::Http(format!("{a}/files/{file}"))),
        (None, None) => None,
    };
    match req.arch {
        Some(a) if a == ARCH_ARM64_HTTP => url(&files.arm64_http, "ipxe-arm64.efi"),
        Some(a) if ARCH_EFI_HTTP.contains(&a) || http_client => {
            url(&files.uefi_x64_http, "ipxe.efi")
        }
        Some(a) if a == ARCH_BIOS => Some(BootTarget::Tftp(or(&files.bios, "undionly.kpxe"))),
        Some(a) if ARCH_EFI_X64.contains(&a) => {
            Some(BootTarget::Tftp(or(&files.uefi_x64, "ipxe.efi")))
        }
        Some(a) if a == ARCH_ARM64 => Some(BootTarget::Tftp(or(&files.arm64, "ipxe-arm64.efi"))),
        // A PXE client that sends no architecture is a BIOS one.
        None => Some(BootTarget::Tftp(or(&files.bios, "undionly.kpxe"))),
        Some(_) => None,
    }
}

fn ip(a: Ipv4Addr) -> Vec<u8> {
    a.octets().to_vec()
}

fn find_host<'m>(model: &'m SiteModel, req: &Request) -> Option<HostRef<'m>> {
    model.by_mac(&req.chaddr).or_else(|| {
        let r = req.relay.as_ref()?;
        model.by_location(r.circuit_id.as_deref(), r.remote_id.as_deref())
    })
}

fn subnet<'m>(model: &'m SiteModel, h: &HostRef<'_>) -> Option<&'m Subnet> {
    model
        .site()
        .subnets
        .iter()
        .find(|s| s.id == h.interface.subnet)
}

/// Decides what to answer.
pub fn respond(req: &Request, model: &SiteModel, link: &Link) -> Decision {
    use Decision::Silence as S;
    if link.mode == DhcpMode::Off {
        return S(Silence::NotAnswered);
    }
    let Some(h) = find_host(model, req) else {
        return S(Silence::UnknownClient);
    };
    if h.interface.ignore_dhcp {
        return S(Silence::Ignored);
    }
    let Some(sub) = subnet(model, &h) else {
        return S(Silence::UnknownClient);
    };
    if !req.giaddr.is_unspecified() && !sub.cidr.contains(&req.giaddr) {
        return S(Silence::WrongSubnet);
    }
    let boot = if h.interface.kind == InterfaceType::Bmc {
        None
    } else {
        let site = &model.site().boot_files;
        match &h.host.boot_files {
            Some(own) => select_boot(req, &site.overlay(own), model.agent_url()),
            None => select_boot(req, site, model.agent_url()),
        }
    };
    match link.mode {
        DhcpMode::Server => server(req, link, h, sub, boot),
        DhcpMode::Proxy => proxy(req, link, h, boot),
        DhcpMode::Off => S(Silence::NotAnswered),
    }
}

fn destination(req: &Request, msg: MessageType) -> Destination {
    if !req.giaddr.is_unspecified() {
        Destination::Relay(req.giaddr)
    } else if msg == MessageType::Nak {
        Destination::Broadcast
    } else if !req.ciaddr.is_unspecified() {
        Destination::Unicast(req.ciaddr)
    } else {
        // Unicasting to an address the client does not have yet needs an
        // ARP entry we cannot add from a UDP socket: broadcast instead.
        Destination::Broadcast
    }
}

fn base(req: &Request, msg: MessageType, link: &Link) -> Reply {
    let mut options = vec![(53, vec![msg.code()]), (54, ip(link.server_ip))];
    if let Some(r) = &req.relay {
        options.push((82, r.raw.clone()));
    }
    Reply {
        msg_type: msg,
        xid: req.xid,
        broadcast: req.broadcast,
        ciaddr: req.ciaddr,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        siaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: req.giaddr,
        chaddr: req.chaddr,
        file: None,
        options,
    }
}

/// Adds the boot file to a reply: siaddr, the file field, 66 and 67 agree;
/// HTTP boot echoes `HTTPClient` in option 60; iPXE is told not to wait
/// for ProxyDHCP offers (175.176 = 1) when this server is the only one.
fn add_boot(reply: &mut Reply, req: &Request, link: &Link, boot: &BootTarget, no_pxedhcp: bool) {
    match boot {
        BootTarget::Tftp(file) => {
            reply.siaddr = link.server_ip;
            reply.file = Some(file.clone());
            reply
                .options
                .push((66, link.server_ip.to_string().into_bytes()));
            reply.options.push((67, file.clone().into_bytes()));
        }
        BootTarget::Http(url) => {
            reply.siaddr = link.server_ip;
            reply.file = Some(url.clone());
            reply.options.push((67, url.clone().into_bytes()));
            if !req.is_ipxe() {
                reply.options.push((60, b"HTTPClient".to_vec()));
            }
        }
    }
    if req.is_ipxe() && no_pxedhcp {
        reply.options.push((175, vec![176, 1, 1]));
    }
}

fn server(
    req: &Request,
    link: &Link,
    h: HostRef<'_>,
    sub: &Subnet,
    boot: Option<BootTarget>,
) -> Decision {
    use Decision::Silence as S;
    let msg = match req.msg_type {
        Some(MessageType::Discover) => MessageType::Offer,
        Some(MessageType::Request) => {
            if req.server_id.is_some_and(|s| s != link.server_ip) {
                return S(Silence::OtherServer);
            }
            let asked = req
                .requested_ip
                .or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr));
            if asked.is_some_and(|a| a != h.interface.ipv4) {
                let mut nak = base(req, MessageType::Nak, link);
                nak.ciaddr = Ipv4Addr::UNSPECIFIED;
                nak.broadcast = true;
                nak.options
                    .push((56, b"that address belongs to another host".to_vec()));
                return Decision::Reply {
                    reply: nak,
                    to: destination(req, MessageType::Nak),
                    boot: None,
                    host: h.host.name.clone(),
                };
            }
            MessageType::Ack
        }
        Some(MessageType::Inform) => MessageType::Ack,
        Some(m @ (MessageType::Release | MessageType::Decline)) => return S(Silence::Noted(m)),
        _ => return S(Silence::NotAnswered),
    };
    let inform = req.msg_type == Some(MessageType::Inform);
    let mut reply = base(req, msg, link);
    if !inform {
        reply.yiaddr = h.interface.ipv4;
        let lease = sub
            .lease_time
            .map_or(3600, |d| d.as_secs().min(u64::from(u32::MAX)) as u32);
        reply.options.push((51, lease.to_be_bytes().to_vec()));
    }
    reply.options.push((1, ip(sub.cidr.netmask())));
    if let Some(gw) = sub.gateway {
        reply.options.push((3, ip(gw)));
    }
    let dns: Vec<u8> = sub
        .dns
        .iter()
        .filter_map(|a| match a {
            std::net::IpAddr::V4(v) => Some(v.octets()),
            std::net::IpAddr::V6(_) => None,
        })
        .flatten()
        .collect();
    if !dns.is_empty() {
        reply.options.push((6, dns));
    }
    let hostname = h.interface.hostname.as_deref().unwrap_or(&h.host.name);
    reply.options.push((12, hostname.as_bytes().to_vec()));
    if let Some(d) = &sub.domain_name {
        reply.options.push((15, d.as_bytes().to_vec()));
    }
    let ntp: Vec<u8> = sub
        .ntp
        .iter()
        .filter_map(|n| n.parse::<Ipv4Addr>().ok())
        .flat_map(|a| a.octets())
        .collect();
    if !ntp.is_empty() {
        reply.options.push((42, ntp));
    }
    if let Some(l) = sub.log_server {
        reply.options.push((7, ip(l)));
    }
    for o in &sub.dhcp_options {
        if let Ok(v) = o.encoded() {
            reply.options.retain(|(c, _)| *c != o.option);
            reply.options.push((o.option, v.to_vec()));
        }
    }
    if let Some(b) = &boot {
        add_boot(&mut reply, req, link, b, true);
    }
    Decision::Reply {
        to: destination(req, msg),
        reply,
        boot,
        host: h.host.name.clone(),
    }
}

fn proxy(req: &Request, link: &Link, h: HostRef<'_>, boot: Option<BootTarget>) -> Decision {
    use Decision::Silence as S;
    let Some(b) = boot else {
        return S(Silence::NotForProxy);
    };
    let (msg, to) = match (req.msg_type, link.pxe_port) {
        (Some(MessageType::Discover), false) => {
            (MessageType::Offer, destination(req, MessageType::Offer))
        }
        (Some(MessageType::Request), true) => (MessageType::Ack, Destination::Source),
        _ => return S(Silence::NotForProxy),
    };
    let mut reply = base(req, msg, link);
    reply.options.push((
        60,
        if req.class_starts_with("HTTPClient") {
            b"HTTPClient".to_vec()
        } else {
            b"PXEClient".to_vec()
        },
    ));
    if let Some(g) = req.guid {
        let mut v = vec![0u8];
        v.extend_from_slice(&g);
        reply.options.push((97, v));
    }
    // Legacy PXE ROMs want option 43 (discovery control: use the boot file
    // in this packet); UEFI firmware is better off without it.
    if req.arch.is_none_or(|a| a == ARCH_BIOS) && !req.is_ipxe() {
        reply.options.push((43, vec![6, 1, 8, 255]));
    }
    add_boot(&mut reply, req, link, &b, false);
    Decision::Reply {
        reply,
        to,
        boot: Some(b),
        host: h.host.name.clone(),
    }
}
