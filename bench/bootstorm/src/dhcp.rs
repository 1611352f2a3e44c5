//! DHCP as firmware and iPXE speak it: one socket on port 68 for every
//! machine (bound to the clients' interface, as each NIC listens on its
//! own wire), replies routed to the machine by their transaction ID.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use vaquero_dhcp::{MessageType, Reply};
use vaquero_model::MacAddr;

/// What the clients' socket saw that was not for a waiting machine.
#[derive(Default)]
pub struct Unrouted {
    /// Datagrams that did not decode as a reply.
    pub malformed: std::sync::atomic::AtomicU64,
    /// Replies with no machine waiting on their xid (late answers to an
    /// exchange already retransmitted and answered).
    pub stray: std::sync::atomic::AtomicU64,
}

/// The shared client socket and who waits on which xid.
pub struct Dhcp {
    sock: UdpSocket,
    waiting: Mutex<HashMap<u32, mpsc::UnboundedSender<Reply>>>,
    /// What could not be routed.
    pub unrouted: Unrouted,
}

/// How a machine identifies itself in DHCP.
pub struct Client {
    /// Its NIC's MAC.
    pub mac: MacAddr,
    /// SMBIOS UUID, 16 bytes (option 97).
    pub uuid: [u8; 16],
    /// UEFI x64 firmware (arch 7), else BIOS (arch 0).
    pub uefi: bool,
}

/// What a DHCP exchange gave.
pub struct Lease {
    /// Address leased.
    pub yiaddr: Ipv4Addr,
    /// Where the boot file is (next-server, else the server identifier).
    pub next_server: Ipv4Addr,
    /// The boot file (TFTP name for firmware, URL for iPXE).
    pub file: Option<String>,
    /// Retransmissions it took.
    pub retries: u32,
}

impl Dhcp {
    /// Binds `0.0.0.0:68` on `interface` with a receive buffer that holds
    /// a whole storm's replies.
    pub fn bind(interface: &str) -> Result<Arc<Dhcp>> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(interface.as_bytes()))
            .with_context(|| format!("binding to {interface}"))?;
        // Root may exceed rmem_max: 1,000 broadcast replies at once are
        // several MiB of socket buffer.
        rustix::net::sockopt::set_socket_recv_buffer_size_force(&s, 64 << 20)
            .context("SO_RCVBUFFORCE")?;
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())
            .context("binding port 68")?;
        s.set_nonblocking(true)?;
        let sock = UdpSocket::from_std(s.into())?;
        let d = Arc::new(Dhcp {
            sock,
            waiting: Mutex::new(HashMap::new()),
            unrouted: Unrouted::default(),
        });
        tokio::spawn(route(d.clone()));
        Ok(d)
    }

    fn register(&self, xid: u32) -> mpsc::UnboundedReceiver<Reply> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(xid, tx);
        }
        rx
    }

    fn unregister(&self, xid: u32) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&xid);
        }
    }

    /// DISCOVER → OFFER → REQUEST → ACK, retransmitting after each of
    /// `timeouts` (a NAK starts over). `ipxe`: as iPXE asks (user class
    /// `iPXE`, option 175, no broadcast flag); else as a PXE ROM does
    /// (broadcast flag set).
    pub async fn exchange(
        &self,
        c: &Client,
        xid: u32,
        ipxe: bool,
        timeouts: &[Duration],
    ) -> Result<Lease> {
        let mut rx = self.register(xid);
        let out = self.dora(c, xid, ipxe, timeouts, &mut rx).await;
        self.unregister(xid);
        out
    }

    async fn dora(
        &self,
        c: &Client,
        xid: u32,
        ipxe: bool,
        timeouts: &[Duration],
        rx: &mut mpsc::UnboundedReceiver<Reply>,
    ) -> Result<Lease> {
        let mut retries = 0;
        for _restart in 0..3 {
            let discover = request(c, xid, MessageType::Discover, ipxe, None);
            let Some(offer) = self
                .ask(&discover, MessageType::Offer, timeouts, rx, &mut retries)
                .await?
            else {
                bail!("no OFFER after {} DISCOVERs", timeouts.len());
            };
            let server = offer
                .option(54)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(Ipv4Addr::from)
                .context("OFFER without a server identifier")?;
            let req = request(
                c,
                xid,
                MessageType::Request,
                ipxe,
                Some((offer.yiaddr, server)),
            );
            let Some(ack) = self
                .ask(&req, MessageType::Ack, timeouts, rx, &mut retries)
                .await?
            else {
                bail!("no ACK after {} REQUESTs", timeouts.len());
            };
            if ack.msg_type == MessageType::Nak {
                continue;
            }
            let file = ack.file.clone().or_else(|| {
                ack.option(67)
                    .map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_owned())
            });
            let next_server = if ack.siaddr.is_unspecified() {
                server
            } else {
                ack.siaddr
            };
            return Ok(Lease {
                yiaddr: ack.yiaddr,
                next_server,
                file,
                retries,
            });
        }
        bail!("NAKed three times")
    }

    /// Sends `pkt` and waits for a reply of type `want` (or a NAK),
    /// resending after each timeout.
    async fn ask(
        &self,
        pkt: &[u8],
        want: MessageType,
        timeouts: &[Duration],
        rx: &mut mpsc::UnboundedReceiver<Reply>,
        retries: &mut u32,
    ) -> Result<Option<Reply>> {
        let to = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
        for (n, t) in timeouts.iter().enumerate() {
            if n > 0 {
                *retries += 1;
            }
            self.sock.send_to(pkt, to).await.context("sending")?;
            let deadline = tokio::time::Instant::now() + *t;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) if r.msg_type == want || r.msg_type == MessageType::Nak => {
                        return Ok(Some(r));
                    }
                    // Another server's answer, or a duplicate: keep waiting.
                    Ok(Some(_)) => {}
                    Ok(None) => bail!("the router stopped"),
                    Err(_) => break,
                }
            }
        }
        Ok(None)
    }
}

async fn route(d: Arc<Dhcp>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut buf = vec![0u8; 1500];
    loop {
        let Ok((n, _)) = d.sock.recv_from(&mut buf).await else {
            continue;
        };
        let Some(bytes) = buf.get(..n) else { continue };
        // Requests of other machines come back too (broadcast): replies only.
        if bytes.first() != Some(&2) {
            continue;
        }
        let Ok((reply, _)) = vaquero_dhcp::wire::decode_reply(bytes) else {
            d.unrouted.malformed.fetch_add(1, Relaxed);
            continue;
        };
        let tx = d
            .waiting
            .lock()
            .ok()
            .and_then(|w| w.get(&reply.xid).cloned());
        match tx {
            Some(tx) if tx.send(reply).is_ok() => {}
            _ => {
                d.unrouted.stray.fetch_add(1, Relaxed);
            }
        }
    }
}

/// A request as the firmware or iPXE sends it.
fn request(
    c: &Client,
    xid: u32,
    t: MessageType,
    ipxe: bool,
    requested: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let arch: u16 = if c.uefi { 7 } else { 0 };
    let class = if c.uefi {
        "PXEClient:Arch:00007:UNDI:003016"
    } else {
        "PXEClient:Arch:00000:UNDI:002001"
    };
    let mut guid = vec![0u8];
    guid.extend_from_slice(&c.uuid);
    let mut opts: Vec<(u8, Vec<u8>)> = vec![
        (57, 1472u16.to_be_bytes().to_vec()),
        (93, arch.to_be_bytes().to_vec()),
        (94, vec![1, 3, if c.uefi { 16 } else { 1 }]),
        (60, class.as_bytes().to_vec()),
        (97, guid),
    ];
    if ipxe {
        // iPXE: its user class (bare, as iPXE sends it) and its feature
        // options (HTTP, DNS, PXE extensions).
        opts.push((77, b"iPXE".to_vec()));
        opts.push((175, vec![19, 1, 1, 23, 1, 1, 16, 1, 2]));
        opts.push((
            55,
            vec![1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 175],
        ));
    } else {
        opts.push((
            55,
            vec![
                1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67, 97, 128, 129, 130,
                131, 132, 133, 134, 135,
            ],
        ));
    }
    if let Some((ip, server)) = requested {
        opts.push((50, ip.octets().to_vec()));
        opts.push((54, server.octets().to_vec()));
    }
    let mut pkt = vaquero_dhcp::wire::encode_request(c.mac, xid, t, &opts);
    if !ipxe {
        // Flags: broadcast, as PXE ROMs ask.
        pkt[10] = 0x80;
    }
    pkt
}
