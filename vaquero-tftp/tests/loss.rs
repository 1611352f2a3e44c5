//! The server on a lossy provisioning network: it runs in a network
//! namespace of the test's own where nftables drops every 20th DATA it
//! sends (5 %, on the output hook) and every 20th ACK it receives (on the
//! input hook; `numgen inc`, so every run loses the same packets). A drop on the
//! output path makes the server's `send` fail with EPERM, as a firewall or
//! a full queue does on a real server: the transfer must count it as a
//! lost datagram and retransmit, not end. The client, atftp, runs in a
//! second namespace over a veth pair and never sees a failed send.
//!
//! The server runs in this process: its runtime's threads are started
//! from a thread that has entered the namespace. Needs root, `ip`, `nft`
//! and atftp (scripts/setup installs them).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use vaquero_tftp::{Directory, Server, ServerConfig, Stats};

use support::{sh, wait_bounded};
use vaquero_test_support as support;

const SERVER_IP: &str = "10.77.0.1";

/// Two namespaces joined by a veth pair, the server's with the loss
/// rules; both deleted when dropped (the server thread is stopped first).
struct Lab {
    server_ns: String,
    client_ns: String,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let lab = Lab {
            server_ns: format!("vqt-s-{id}"),
            client_ns: format!("vqt-c-{id}"),
        };
        let (s_if, c_if) = (format!("vts{id}"), format!("vtc{id}"));
        sh(&["ip", "netns", "add", &lab.server_ns], None);
        sh(&["ip", "netns", "add", &lab.client_ns], None);
        sh(
            &[
                "ip", "link", "add", &s_if, "type", "veth", "peer", "name", &c_if,
            ],
            None,
        );
        sh(&["ip", "link", "set", &s_if, "netns", &lab.server_ns], None);
        sh(&["ip", "link", "set", &c_if, "netns", &lab.client_ns], None);
        let ip = |ns: &str, args: &[&str]| {
            let mut v = vec!["ip", "-n", ns];
            v.extend_from_slice(args);
            sh(&v, None);
        };
        ip(
            &lab.server_ns,
            &["addr", "add", &format!("{SERVER_IP}/24"), "dev", &s_if],
        );
        ip(&lab.server_ns, &["link", "set", &s_if, "up"]);
        ip(
            &lab.client_ns,
            &["addr", "add", "10.77.0.2/24", "dev", &c_if],
        );
        ip(&lab.client_ns, &["link", "set", &c_if, "up"]);
        // Every 20th DATA the server sends (opcode 3 at the TFTP header's
        // start), and every 20th ACK it receives (opcode 4), but ACK 0:
        // atftp aborts a transfer on a repeated OACK ("unexpected OACK")
        // instead of acknowledging it again, so the negotiation is spared.
        let rules = "table inet loss {\n\
             chain in { type filter hook input priority 0; udp dport != 69 @th,64,16 == 4 @th,80,16 != 0 numgen inc mod 20 == 0 drop; }\n\
             chain out { type filter hook output priority 0; @th,64,16 == 3 numgen inc mod 20 == 0 drop; }\n\
             }\n";
        sh(
            &["ip", "netns", "exec", &lab.server_ns, "nft", "-f", "-"],
            Some(rules),
        );
        lab
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Our server in the server namespace; stopped when dropped.
struct Running {
    stats: Arc<Stats>,
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

fn serve(ns: &str, root: &Path) -> Running {
    let config = {
        let mut c = ServerConfig::default();
        c.listen = SocketAddr::from(([10, 77, 0, 1], 69));
        // Quick retransmission keeps the test short; the loss is what is
        // tested, not the timer.
        c.transfer.default_timeout = Duration::from_millis(200);
        c.transfer.max_retries = 10;
        c
    };
    let source = Directory::new(root).unwrap();
    let path = format!("/var/run/netns/{ns}");
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&ns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(config, source).await.unwrap();
            tx.send(server.stats()).unwrap();
            server
                .run(async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
    });
    let stats = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    Running {
        stats,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

/// atftp in the client namespace fetches `name` with `options`; bounded.
fn atftp(lab: &Lab, name: &str, out: &Path, options: &[&str]) {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &lab.client_ns,
        "atftp",
        "-g",
        "-r",
        name,
        "-l",
    ])
    .arg(out)
    .args(["--tftp-timeout", "1"]);
    for o in options {
        c.args(["--option", o]);
    }
    c.args([SERVER_IP, "69"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("atftp (scripts/setup installs it)");
    let status = wait_bounded(&mut child, Duration::from_secs(120), "atftp");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "atftp {options:?}: {status}: {err}");
}

#[test]
fn transfers_complete_under_loss_on_both_hooks() {
    let lab = Lab::new("a");
    let dir = tempfile::tempdir().unwrap();
    // 512 KiB of varied bytes: 358 blocks of 1468.
    let data: Vec<u8> = (0..512 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("ipxe.efi"), &data).unwrap();
    let server = serve(&lab.server_ns, dir.path());
    for window in ["1", "4"] {
        let out = dir.path().join(format!("got-{window}"));
        atftp(
            &lab,
            "ipxe.efi",
            &out,
            &["blksize 1468", &format!("windowsize {window}")],
        );
        assert!(
            std::fs::read(&out).unwrap() == data,
            "windowsize {window}: the file arrived changed"
        );
    }
    // The clients have the whole file: that is the test. The server's
    // own count may miss one, when the client's last ACK is what was
    // dropped (it cannot know that the client is done).
    let s = &server.stats;
    assert!(
        s.send_lost() > 0,
        "the output hook's drops reached the server as failed sends"
    );
    assert!(s.retransmits() > 0, "losses were retransmitted");
}
