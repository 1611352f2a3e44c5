//! The tokio server in-process, on loopback only: every reply is unicast
//! to a relay address on 127.0.0.0/8 (the test's "relay" binds 127.0.0.2
//! on the server's port), so nothing is broadcast. Model swap without
//! dropping packets, events, counters, malformed datagrams, and rogue
//! replies seen on the client port.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use vaquero_dhcp::wire::{Reply, decode_reply, encode, encode_request};
use vaquero_dhcp::{DhcpEvent, MessageType, Server, ServerConfig, Silence};
use vaquero_model::{DhcpMode, SiteModel, Sot, SotFiles};

/// A one-host site on 127.0.0.0/8; `gateway` varies the model's version.
fn model(mac: &str, gateway: &str) -> Arc<SiteModel> {
    let mut f = SotFiles::new();
    f.insert(
        "os/os.yml",
        "id: os\nos_family: debian\nmajor_version: \"12\"\nboot:\n  kernel: k\n  initrd: [i]\n",
    );
    f.insert("boot/b.yml", "id: b\noperating_system: os\n");
    f.insert("workflows/w.yml", "id: w\nstages:\n  - boot: b\n");
    f.insert(
        "sites/s/env.yml",
        format!("id: s\nagents:\n  - id: a\nsubnets:\n  - id: lo\n    cidr: 127.0.0.0/8\n    gateway: {gateway}\n    dns: [127.0.0.1]\n"),
    );
    f.insert(
        "sites/s/h.yml",
        format!("name: h\nworkflow: w\ninterfaces:\n  - {{type: physical, mac: \"{mac}\", subnet: lo, ipv4: 127.0.0.50}}\n"),
    );
    let sot = Sot::load(&f).unwrap();
    Arc::new(SiteModel::compile(&sot, "s").unwrap())
}

const MAC: &str = "02:00:00:00:00:01";

use vaquero_test_support::free_udp_port as free_port;

/// The test's relay agent: 127.0.0.2 on the server's port (a more
/// specific bind than the server's wildcard, so replies come here).
fn relay(port: u16) -> UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 2], port)).into())
        .unwrap();
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

fn relayed_discover(xid: u32) -> Vec<u8> {
    let mut d = encode_request(MAC.parse().unwrap(), xid, MessageType::Discover, &[]);
    d[3] = 1; // hops
    d[24..28].copy_from_slice(&[127, 0, 0, 2]); // giaddr
    d
}

struct Running {
    port: u16,
    client_port: u16,
    swap: watch::Sender<Arc<SiteModel>>,
    events: mpsc::Receiver<DhcpEvent>,
    stats: Arc<vaquero_dhcp::Stats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a server on its own runtime thread, answering from `m`.
fn start(m: Arc<SiteModel>) -> Running {
    let (port, client_port) = (free_port(), free_port());
    let (swap, rx) = watch::channel(m);
    let (etx, events) = mpsc::channel(1024);
    let mut config = ServerConfig::new(None, Ipv4Addr::LOCALHOST, DhcpMode::Server);
    config.port = port;
    config.client_port = client_port;
    // The test's relay shares the server's port on another address.
    config.exclusive = false;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = {
        let _in_runtime = rt.enter();
        Server::bind(config, rx, Some(etx)).unwrap()
    };
    let stats = server.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        rt.block_on(server.run(async {
            let _ = stopped.await;
        }))
        .unwrap();
    });
    Running {
        port,
        client_port,
        swap,
        events,
        stats,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// The next event, waiting at most 5 s.
fn next_event(r: &mut Running) -> DhcpEvent {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match r.events.try_recv() {
            Ok(e) => return e,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("no event in 5 s: {e}"),
        }
    }
}

/// Waits (at most 5 s) until `cond` holds.
fn eventually(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met in 5 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_swapped_model_answers_the_next_packet() {
    let mut r = start(model("02:00:00:00:00:02", "127.0.0.1"));
    let relay = relay(r.port);
    let server = SocketAddr::from(([127, 0, 0, 1], r.port));
    let mut buf = [0u8; 1500];

    // Not in this model: silence, and an event that says why.
    relay.send_to(&relayed_discover(1), server).unwrap();
    match next_event(&mut r) {
        DhcpEvent::Decided(d) => {
            assert_eq!(d.silence, Some(Silence::UnknownClient));
            assert_eq!(d.mac.to_string(), MAC);
        }
        e => panic!("{e:?}"),
    }
    assert!(
        relay.recv_from(&mut buf).is_err(),
        "no reply for an unknown MAC"
    );

    // The agent reloads: the host is known from the next packet on.
    r.swap.send(model(MAC, "127.0.0.1")).unwrap();
    relay.send_to(&relayed_discover(2), server).unwrap();
    let (n, _) = relay.recv_from(&mut buf).unwrap();
    let (reply, _) = decode_reply(&buf[..n]).unwrap();
    assert_eq!(reply.msg_type, MessageType::Offer);
    assert_eq!(reply.yiaddr, Ipv4Addr::new(127, 0, 0, 50));
    match next_event(&mut r) {
        DhcpEvent::Decided(d) => {
            assert_eq!(d.host.as_deref(), Some("h"));
            assert_eq!(d.offered.map(|o| o.0), Some(Ipv4Addr::new(127, 0, 0, 50)));
        }
        e => panic!("{e:?}"),
    }
    eventually(|| r.stats.requests() == 2 && r.stats.replies() == 1 && r.stats.silent() == 1);
}

#[test]
fn no_request_is_lost_while_models_are_swapped() {
    let r = start(model(MAC, "127.0.0.1"));
    let relay = relay(r.port);
    relay
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let server = SocketAddr::from(([127, 0, 0, 1], r.port));
    let (a, b) = (model(MAC, "127.0.0.1"), model(MAC, "127.0.0.254"));
    assert_ne!(a.version(), b.version());
    let mut buf = [0u8; 1500];
    let mut gateways = std::collections::BTreeSet::new();
    for xid in 0..200u32 {
        // Swap on every other request: the server always answers from
        // one whole model or the other.
        if xid % 2 == 0 {
            r.swap
                .send(if xid % 4 == 0 { b.clone() } else { a.clone() })
                .unwrap();
        }
        relay.send_to(&relayed_discover(xid), server).unwrap();
        let (n, _) = relay
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("request {xid} unanswered: {e}"));
        let (reply, _) = decode_reply(&buf[..n]).unwrap();
        assert_eq!(reply.xid, xid);
        gateways.insert(reply.option(3).unwrap().to_vec());
    }
    assert_eq!(gateways.len(), 2, "both models answered");
    // The counter moves just after the send: wait (bounded) for it.
    eventually(|| r.stats.replies() == 200);
}

#[test]
fn malformed_datagrams_are_dropped_and_counted() {
    let r = start(model(MAC, "127.0.0.1"));
    let relay = relay(r.port);
    let server = SocketAddr::from(([127, 0, 0, 1], r.port));
    let mut bad_cookie = relayed_discover(5);
    bad_cookie[236] ^= 0xff;
    for d in [&b"\x01\x01\x06"[..], &bad_cookie, &[0u8; 400]] {
        relay.send_to(d, server).unwrap();
    }
    // Still serving: a good request after the bad ones is answered.
    relay.send_to(&relayed_discover(6), server).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = relay.recv_from(&mut buf).unwrap();
    assert_eq!(decode_reply(&buf[..n]).unwrap().0.xid, 6);
    eventually(|| r.stats.malformed() == 3);
}

fn offer_from(server_id: Ipv4Addr) -> Vec<u8> {
    encode(
        &Reply {
            msg_type: MessageType::Offer,
            xid: 77,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(127, 0, 0, 99),
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: MAC.parse().unwrap(),
            file: None,
            options: vec![(53, vec![2]), (54, server_id.octets().to_vec())],
        },
        &[],
        None,
    )
}

#[test]
fn another_servers_offer_on_the_client_port_is_reported() {
    let mut r = start(model(MAC, "127.0.0.1"));
    let other = UdpSocket::bind("127.0.0.9:0").unwrap();
    let client_port = SocketAddr::from(([127, 0, 0, 1], r.client_port));
    // Our own reply looping back is not rogue; another server's is.
    other
        .send_to(&offer_from(Ipv4Addr::LOCALHOST), client_port)
        .unwrap();
    other
        .send_to(&offer_from(Ipv4Addr::new(127, 0, 0, 9)), client_port)
        .unwrap();
    match next_event(&mut r) {
        DhcpEvent::Rogue(rogue) => {
            assert_eq!(rogue.server_id, Ipv4Addr::new(127, 0, 0, 9));
            assert_eq!(rogue.yiaddr, Ipv4Addr::new(127, 0, 0, 99));
            assert_eq!(rogue.client.to_string(), MAC);
        }
        e => panic!("{e:?}"),
    }
    eventually(|| r.stats.rogue() == 1);
}

/// By default a server holds its port alone: a second one (or any other
/// program) on the same port and interface cannot bind it.
#[tokio::test]
async fn a_second_server_on_the_same_port_cannot_bind() {
    let (port, client_port) = (free_port(), free_port());
    let config = || {
        let mut c = ServerConfig::new(None, Ipv4Addr::LOCALHOST, DhcpMode::Server);
        c.port = port;
        c.client_port = client_port;
        c
    };
    let (_swap, rx) = watch::channel(model(MAC, "127.0.0.1"));
    let first = Server::bind(config(), rx.clone(), None).unwrap();
    let second = Server::bind(config(), rx.clone(), None).map(|_| ());
    assert_eq!(
        second.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::AddrInUse)
    );
    // Nor can a program that asks to share the port.
    let mut sharing = config();
    sharing.exclusive = false;
    assert!(Server::bind(sharing, rx.clone(), None).is_err());
    drop(first);
    assert!(Server::bind(config(), rx, None).is_ok(), "free again");
}
