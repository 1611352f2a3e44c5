//! The server against real TFTP clients from Debian (tftp-hpa, atftp,
//! curl) over loopback: every file size that matters (empty, one byte
//! short of / exactly / one byte over a block, 1 MiB, and 40 MiB, which
//! rolls the block counter over at 512-byte blocks) with every option set
//! the clients speak. Plus escape attempts and junk over a real socket
//! while a transfer runs.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use vaquero_tftp::server::get;
use vaquero_tftp::{Directory, Packet, Server, ServerConfig, Stats};

const SIZES: &[(&str, usize)] = &[
    ("empty", 0),
    ("f511", 511),
    ("f512", 512),
    ("f513", 513),
    ("f1m", 1 << 20),
    ("f40m", 40 << 20),
];

/// Deterministic bytes (xorshift), different per file.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Running {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    root: PathBuf,
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

fn start(single_port: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    for (i, (name, len)) in SIZES.iter().enumerate() {
        std::fs::write(root.join(name), content(i as u64 + 1, *len)).unwrap();
    }
    std::fs::write(dir.path().join("secret"), b"outside the root").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        single_port,
        rate_per_second: 1000.0,
        rate_burst: 1000.0,
        ..ServerConfig::default()
    };
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let source = Directory::new(&root).unwrap();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(config, source).await.unwrap();
            addr_tx
                .send((server.local_addr().unwrap(), server.stats()))
                .unwrap();
            server
                .run(async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
    });
    let (addr, stats) = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    Running {
        addr,
        stats,
        stop: Some(stop_tx),
        thread: Some(thread),
        _dir: dir,
        root,
    }
}

/// Runs a client command with a time limit; the file it wrote.
fn run(mut cmd: Command, out: &Path, stdout_to_out: bool) -> Vec<u8> {
    let _ = std::fs::remove_file(out);
    if stdout_to_out {
        cmd.stdout(Stdio::from(std::fs::File::create(out).unwrap()));
    } else {
        cmd.stdout(Stdio::null());
    }
    cmd.stderr(Stdio::piped());
    let program = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/setup installs the TFTP clients)"));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            assert!(status.success(), "{program} failed: {status}: {err}");
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::read(out).unwrap_or_default()
}

#[derive(Clone, Copy, Debug)]
enum Client {
    TftpHpa,
    Atftp(&'static [&'static str]),
    Curl(&'static [&'static str]),
}

fn fetch(client: Client, addr: SocketAddr, name: &str, out: &Path) -> Vec<u8> {
    let host = addr.ip().to_string();
    let port = addr.port().to_string();
    match client {
        Client::TftpHpa => {
            let mut c = Command::new("tftp");
            c.args(["-m", "binary", &host, &port, "-c", "get", name])
                .arg(out);
            run(c, out, false)
        }
        Client::Atftp(opts) => {
            let mut c = Command::new("atftp");
            c.args(["-g", "-r", name, "-l"]).arg(out);
            for o in opts {
                c.args(["--option", o]);
            }
            c.args([&host, &port]);
            run(c, out, false)
        }
        Client::Curl(opts) => {
            let mut c = Command::new("curl");
            c.args(["-sS", "--max-time", "110"]).args(opts);
            c.arg(format!("tftp://{host}:{port}/{name}"));
            run(c, out, true)
        }
    }
}

const CLIENTS: &[Client] = &[
    Client::TftpHpa,
    Client::Atftp(&[]),
    Client::Atftp(&["blksize 1468"]),
    Client::Atftp(&["blksize 1468", "windowsize 4"]),
    Client::Atftp(&["blksize 1468", "windowsize 16", "tsize 0"]),
    Client::Curl(&["--tftp-no-options"]),
    Client::Curl(&[]),
    Client::Curl(&["--tftp-blksize", "1468"]),
];

fn every_client_every_file(single_port: bool) {
    let server = start(single_port);
    let out_dir = tempfile::tempdir().unwrap();
    let mut n = 0u64;
    for client in CLIENTS {
        for (i, (name, len)) in SIZES.iter().enumerate() {
            let out = out_dir.path().join(format!("out-{n}"));
            n += 1;
            let got = fetch(*client, server.addr, name, &out);
            let want = content(i as u64 + 1, *len);
            assert!(
                got == want,
                "{client:?} fetched {name}: {} bytes, wanted {} (contents differ)",
                got.len(),
                want.len()
            );
        }
    }
    assert_eq!(
        get(&server.stats.completed),
        n,
        "every transfer completed on the server's side too"
    );
    assert_eq!(get(&server.stats.timed_out), 0);
}

#[test]
fn real_clients_fetch_every_file_with_every_option_set() {
    every_client_every_file(false);
}

#[test]
fn single_port_mode_serves_real_clients_too() {
    every_client_every_file(true);
}

/// Sends one datagram from a fresh socket; the first reply, if any.
fn ask(server: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.send_to(datagram, server).unwrap();
    let mut buf = [0u8; 1024];
    s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

fn rrq(name: &str) -> Vec<u8> {
    let mut v = vec![0, 1];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(b"\0octet\0");
    v
}

fn error_code(reply: Option<Vec<u8>>) -> Option<u16> {
    match Packet::decode(&reply?).ok()? {
        Packet::Error { code, .. } => Some(code.code()),
        _ => None,
    }
}

#[test]
fn escapes_and_junk_are_refused_while_a_transfer_runs() {
    let server = start(false);
    let addr = server.addr;
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("big");
    let big =
        std::thread::spawn(move || fetch(Client::Atftp(&["blksize 1468"]), addr, "f40m", &out));

    // Path escapes: access violation (2), never the file.
    for name in [
        "../secret",
        "..\\secret",
        "a/../../secret",
        "escape",
        "/../secret",
    ] {
        assert_eq!(error_code(ask(addr, &rrq(name))), Some(2), "{name}");
    }
    // Absolute paths are taken relative to the root: not found (1).
    let secret = server.root.parent().unwrap().join("secret");
    assert_eq!(
        error_code(ask(addr, &rrq(secret.to_str().unwrap()))),
        Some(1)
    );
    // Writes are refused (2).
    let mut wrq = rrq("new");
    wrq[1] = 2;
    assert_eq!(error_code(ask(addr, &wrq)), Some(2));
    // Junk is dropped without an answer, and counted.
    let before = get(&server.stats.malformed);
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x09abc",
        b"\x00\x01no-terminator",
        b"\x00\x01f\x00mail\x00",
        b"\x00\x01f\x00octet\x00blksize\x002\x00",
        b"\x00\x04\x00\x01",
        &[0xff; 600],
    ] {
        assert_eq!(ask(addr, junk), None, "{junk:?} got an answer");
    }
    assert_eq!(get(&server.stats.malformed) - before, 8);
    assert!(get(&server.stats.refused) >= 6);

    // The transfer running all along is intact.
    let got = big.join().unwrap();
    assert!(
        got == content(6, 40 << 20),
        "the 40 MiB transfer was disturbed"
    );
    // And the server still serves.
    let f = out_dir.path().join("after");
    assert_eq!(fetch(Client::TftpHpa, addr, "f513", &f), content(4, 513));
}
