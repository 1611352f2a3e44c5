//! Server policy over real sockets on loopback: the cap on concurrent
//! transfers, the per-client rate limit, retransmission to a silent client,
//! and graceful shutdown.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use vaquero_tftp::{Memory, Packet, Server, ServerConfig, Stats, TransferConfig};

fn rrq(name: &str) -> Vec<u8> {
    let mut v = vec![0, 1];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(b"\0octet\0");
    v
}

async fn start(
    config: ServerConfig,
) -> (
    SocketAddr,
    Arc<Stats>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let mut files = Memory::new();
    files.insert("big", vec![7u8; 1 << 20]).unwrap();
    files.insert("small", b"hello".to_vec()).unwrap();
    files.insert("three", vec![3u8; 1200]).unwrap();
    let server = Server::bind(config, files).await.unwrap();
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (addr, stats, tx, h)
}

fn config() -> ServerConfig {
    let mut c = ServerConfig::default();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// The first datagram within `wait`, if any, and who sent it.
async fn recv(s: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(wait, s.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some((buf, from))
}

/// At capacity a request is not answered (an error would end a PXE ROM's
/// boot); the client's retransmission is served once a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_stays_silent_until_a_slot_frees() {
    let (addr, stats, stop, h) = start({
        let mut c = config();
        c.max_transfers = 1;
        c
    })
    .await;
    // A client that takes its first block and goes quiet holds the only
    // slot until it has acknowledged the whole file.
    let hog = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    hog.send_to(&rrq("three"), addr).await.unwrap();
    let (first, tid) = recv(&hog, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(
        Packet::decode(&first),
        Ok(Packet::Data { block: 1, .. })
    ));
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.send_to(&rrq("small"), addr).await.unwrap();
    assert!(
        recv(&other, Duration::from_millis(500)).await.is_none(),
        "no answer while full"
    );
    assert_eq!(stats.busy(), 1);
    // The hog finishes (1,200 bytes: blocks 1-3), its slot frees.
    for block in 1..=3u16 {
        let mut ack = vec![0, 4];
        ack.extend_from_slice(&block.to_be_bytes());
        hog.send_to(&ack, tid).await.unwrap();
        if block < 3 {
            recv(&hog, Duration::from_secs(5)).await.unwrap();
        }
    }
    // The retransmitted request is served, bounded: the slot frees as the
    // last ACK is handled.
    let deadline = Instant::now() + Duration::from_secs(10);
    let served = loop {
        other.send_to(&rrq("small"), addr).await.unwrap();
        if let Some((reply, _)) = recv(&other, Duration::from_millis(200)).await {
            break reply;
        }
        assert!(
            Instant::now() < deadline,
            "the retransmission was never served"
        );
    };
    assert!(matches!(
        Packet::decode(&served),
        Ok(Packet::Data {
            block: 1,
            data: b"hello"
        })
    ));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), h)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asking_too_fast_is_dropped() {
    let (addr, stats, stop, h) = start({
        let mut c = config();
        c.rate_per_second = 0.01;
        c.rate_burst = 2.0;
        c
    })
    .await;
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..5 {
        // Fresh source ports, same IP: the limit is per client IP.
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&rrq("small"), addr).await.unwrap();
        let _ = recv(&s, Duration::from_millis(300)).await;
    }
    c.send_to(&rrq("small"), addr).await.unwrap();
    assert!(
        recv(&c, Duration::from_millis(500)).await.is_none(),
        "over the limit: no answer at all"
    );
    assert_eq!(stats.rate_limited(), 4);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), h)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_gets_retransmissions_then_an_error() {
    let cfg = {
        let mut c = config();
        c.transfer = {
            let mut c = TransferConfig::default();
            c.max_retries = 2;
            c
        };
        c
    };
    let (addr, stats, stop, h) = start(cfg).await;
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut r = rrq("small");
    r.extend_from_slice(b"timeout\x001\x00");
    c.send_to(&r, addr).await.unwrap();
    let mut got = Vec::new();
    while let Some((d, _)) = recv(&c, Duration::from_secs(3)).await {
        got.push(Packet::decode(&d).map(|p| format!("{p:?}")).unwrap());
    }
    // OACK, two retransmissions of it, then an error.
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got[..3].iter().all(|p| p.starts_with("Oack")), "{got:?}");
    assert!(got[3].starts_with("Error"), "{got:?}");
    assert_eq!(stats.timed_out(), 1);
    assert_eq!(stats.retransmits(), 2);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), h)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_transfers_within_the_grace_period() {
    let (addr, _stats, stop, h) = start({
        let mut c = config();
        c.shutdown_grace = Duration::from_millis(500);
        c
    })
    .await;
    // A transfer stuck on a client that never ACKs.
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.send_to(&rrq("big"), addr).await.unwrap();
    assert!(recv(&c, Duration::from_secs(5)).await.is_some());
    let asked = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), h)
        .await
        .unwrap()
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the grace period bounds shutdown"
    );
    // The stuck client is told (after retransmissions of block 1).
    let mut last = None;
    while let Some((d, _)) = recv(&c, Duration::from_secs(2)).await {
        last = Some(d);
    }
    assert!(matches!(
        Packet::decode(&last.unwrap()),
        Ok(Packet::Error { .. })
    ));
    // Nothing listens any more.
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&rrq("small"), addr).await.unwrap();
    assert!(recv(&s, Duration::from_millis(300)).await.is_none());
}

/// In single-port mode the transfers' datagrams come through the
/// listening socket: after shutdown is asked for, they are still routed,
/// so a running transfer finishes within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_port_transfer_finishes_after_shutdown_is_asked() {
    let (addr, _stats, stop, h) = start({
        let mut c = config();
        c.single_port = true;
        c.shutdown_grace = Duration::from_secs(30);
        c
    })
    .await;
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.send_to(&rrq("three"), addr).await.unwrap();
    let (d, from) = recv(&c, Duration::from_secs(5)).await.unwrap();
    assert_eq!(from, addr, "single port: answered from the server's port");
    assert!(matches!(
        Packet::decode(&d),
        Ok(Packet::Data { block: 1, .. })
    ));
    stop.send(()).unwrap();
    let mut got = 512;
    for block in 1u16..=2 {
        c.send_to(&[0, 4, 0, block as u8], from).await.unwrap();
        // Retransmissions of the block just acknowledged may come first.
        loop {
            let (d, _) = recv(&c, Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("no block after ACK {block}"));
            match Packet::decode(&d).unwrap() {
                Packet::Data { block: b, data } if b == block + 1 => {
                    got += data.len();
                    break;
                }
                Packet::Data { .. } => continue,
                other => panic!("after ACK {block}: {other:?}"),
            }
        }
    }
    assert_eq!(got, 1200);
    c.send_to(&[0, 4, 0, 3], from).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), h)
        .await
        .unwrap()
        .unwrap();
}

/// Every read request is reported when it ends: who, which file, how.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_requests_are_reported_as_events() {
    let mut files = Memory::new();
    files.insert("small", b"hello".to_vec()).unwrap();
    let (etx, mut erx) = tokio::sync::mpsc::channel(16);
    let server = Server::bind(config(), files)
        .await
        .unwrap()
        .with_events(etx);
    let addr = server.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&rrq("small"), addr).await.unwrap();
    let (data, from) = recv(&client, Duration::from_secs(5)).await.unwrap();
    assert_eq!(&data[..4], &[0, 3, 0, 1]);
    assert_eq!(&data[4..], b"hello");
    client.send_to(&[0, 4, 0, 1], from).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), erx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.client, e.file.as_str(), e.outcome, e.bytes),
        (client.local_addr().unwrap(), "small", "completed", 5)
    );
    client.send_to(&rrq("nope"), addr).await.unwrap();
    let (err, _) = recv(&client, Duration::from_secs(5)).await.unwrap();
    assert_eq!(&err[..4], &[0, 5, 0, 1], "file not found");
    let e = tokio::time::timeout(Duration::from_secs(5), erx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.file.as_str(), e.outcome, e.bytes),
        ("nope", "not_found", 0)
    );
    let _ = stop.send(());
    h.await.unwrap();
}
