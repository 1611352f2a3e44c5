//! The boot service on 127.0.0.1 against a real client, `curl`: scripts,
//! configs, files (ranges, validators, HEAD, 404s, path escapes) and
//! checkpoints (recorded once; forged, expired, stale or another host's
//! tokens refused).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{KEY, Server, Via, lab, start, start_custom, start_via};
use vaquero_ipxe::{BootEvent, Claims, Current, MemoryBootState, Route, ServiceConfig, TokenKey};
use vaquero_model::{SiteModel, Sot, SotFiles};

/// `len` pseudo-random bytes from `seed` (a linear congruential generator:
/// the same bytes on every run).
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

/// Files to serve: a 1 MiB pseudo-random file, a small text file, a
/// subdirectory, and a symlink that points out of the root.
fn files(dir: &Path) -> PathBuf {
    let root = dir.join("files");
    std::fs::create_dir_all(root.join("alpine-3.20")).unwrap();
    std::fs::write(root.join("alpine-3.20/vmlinuz-lts"), noise(1 << 20, 12345)).unwrap();
    std::fs::write(root.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("secret"), "outside the root\n").unwrap();
    std::os::unix::fs::symlink(dir.join("secret"), root.join("escape")).unwrap();
    root
}

fn lab_server() -> Server {
    lab_server_via(Via::Serve)
}

fn lab_server_via(via: Via) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let root = files(dir.path());
    start_via(lab(), Some(root), dir, via)
}

/// A test of every way of serving: `vaquero_ipxe::serve` (which answers
/// scripts and files without the router), the router under plain axum,
/// and `vaquero_ipxe::Listeners` (event loops on threads of their own).
macro_rules! every_way {
    ($name:ident) => {
        mod $name {
            #[test]
            fn served() {
                super::$name(super::Via::Serve);
            }

            #[test]
            fn routed() {
                super::$name(super::Via::Router);
            }

            #[test]
            fn event_loops() {
                super::$name(super::Via::Loops);
            }
        }
    };
}

struct Got {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs curl (bounded by --max-time) and returns status, headers, body.
fn curl(s: &Server, path: &str, extra: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let (h, b) = (dir.path().join("h"), dir.path().join("b"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o"])
        .arg(&b)
        .arg("-D")
        .arg(&h)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(format!("http://{}{path}", s.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Got {
        status: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
        headers: std::fs::read_to_string(&h).unwrap_or_default(),
        body: std::fs::read(&b).unwrap_or_default(),
    }
}

fn events(s: &mut Server, n: usize) -> Vec<BootEvent> {
    let mut v = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while v.len() < n && Instant::now() < deadline {
        match s.events.try_recv() {
            Ok(e) => v.push(e),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    v
}

fn stage0(s: &Server, host: &str, boot: &str, attempt: u64) {
    s.state.set(
        host,
        Current::Stage {
            stage: 0,
            boot: boot.into(),
            attempt,
        },
    );
}

#[test]
fn chain_script_points_at_the_per_host_script() {
    let s = lab_server();
    let g = curl(&s, "/boot.ipxe", &[]);
    assert_eq!(g.status, 200);
    assert!(g.text().starts_with("#!ipxe\n"));
    assert!(
        g.text().contains("chain --autofree --replace http://10.99.0.2:8080/ipxe?mac=${netX/mac:hexhyp}&uuid=${uuid}"),
        "{}",
        g.text()
    );
}

every_way!(per_host_scripts_follow_the_boot_state);
fn per_host_scripts_follow_the_boot_state(via: Via) {
    let mut s = lab_server_via(via);
    // Nothing scheduled: exit to disk.
    let g = curl(
        &s,
        "/ipxe?mac=52-54-00-00-01-01&arch=x86_64&platform=efi",
        &[],
    );
    assert_eq!(g.status, 200);
    assert!(
        g.text()
            .contains("nothing scheduled: booting from local disk"),
        "{}",
        g.text()
    );
    assert!(g.text().contains("sanboot") && !g.text().contains("kernel "));

    // Its first stage: kernel, initrd and command line of that stage.
    stage0(&s, "k8s-01", "burnin", 7);
    let g = curl(
        &s,
        "/ipxe?mac=52-54-00-00-01-01&arch=x86_64&platform=efi",
        &[],
    );
    let t = g.text();
    assert!(
        t.contains("echo Vaquero: k8s-01 stage 1/2 (burnin, alpine-3.20), attempt 7"),
        "{t}"
    );
    assert!(t.contains("kernel --name kernel http://10.99.0.2:8080/files/alpine-3.20/vmlinuz-lts"));
    assert!(t.contains("imgargs kernel initrd=initrd0 alpine_repo="));
    // By SMBIOS UUID when the MAC is not known (another NIC).
    let g = curl(
        &s,
        "/ipxe?mac=02-00-00-00-00-99&uuid=4C4C4544-0042-3510-8052-B4C04F384D01",
        &[],
    );
    assert!(g.text().contains("k8s-01 stage 1/2"), "{}", g.text());

    // Unknown machine, a BMC's MAC, a never-provisioned host: disk.
    for (q, why) in [
        (
            "mac=02-00-00-00-00-99",
            "02-00-00-00-00-99 is not in the model",
        ),
        ("mac=52-54-00-00-02-01", "is a BMC interface of k8s-01"),
        ("mac=52-54-00-00-01-22", "storage-02 is never provisioned"),
    ] {
        stage0(&s, "storage-02", "rocky-install", 1);
        let g = curl(&s, &format!("/ipxe?{q}"), &[]);
        assert_eq!(g.status, 200);
        assert!(g.text().contains(why), "{q}: {}", g.text());
        assert!(g.text().contains("booting from local disk"));
    }
    // One event per request, tied to the host and attempt where known.
    let ev = events(&mut s, 6);
    assert_eq!(ev.len(), 6);
    assert!(ev.iter().all(|e| e.route == Route::Script));
    assert_eq!(ev[1].host.as_deref(), Some("k8s-01"));
    assert_eq!(ev[1].attempt, Some(7));
    assert_eq!(ev[3].host, None);
}

#[test]
fn configs_have_their_type_and_a_working_checkpoint() {
    let mut s = lab_server();
    stage0(&s, "storage-01", "rocky-install", 2);
    let g = curl(&s, "/config/52-54-00-00-01-21?boot=rocky-install", &[]);
    assert_eq!(g.status, 200);
    assert_eq!(
        g.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    let ks = g.text();
    assert!(ks.contains("network"), "{ks}");
    // The kickstart's %post calls the checkpoint URL minted for this attempt.
    let url = ks
        .split_whitespace()
        .find(|w| w.contains("/checkpoint/"))
        .unwrap_or_else(|| panic!("no checkpoint URL in {ks}"));
    let token = url.rsplit('/').next().unwrap();
    let claims = TokenKey::new(KEY).verify(token, 0).unwrap();
    assert_eq!((claims.host.as_str(), claims.attempt), ("storage-01", 2));

    // What the installer sends along is kept in the timeline.
    let ok = curl(
        &s,
        &format!("/checkpoint/{token}?status=ok"),
        &["-X", "POST", "--data-binary", "installed 42 packages"],
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.text().starts_with("recorded"));
    // A retry is fine but is not recorded twice.
    let again = curl(&s, &format!("/checkpoint/{token}"), &["-X", "POST"]);
    assert_eq!(again.status, 200);
    assert!(again.text().starts_with("already recorded"));
    assert!(s.state.checkpointed("storage-01", 2));
    // Config, checkpoint — and nothing for the repeat.
    let ev = events(&mut s, 2);
    assert_eq!(ev[0].route, Route::Config);
    let ev: Vec<_> = ev
        .into_iter()
        .filter(|e| e.route == Route::Checkpoint)
        .collect();
    assert_eq!(ev.len(), 1, "{ev:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(s.events.try_recv().is_err(), "the repeat is not an event");
    assert_eq!(ev[0].attempt, Some(2));
    assert_eq!(
        ev[0].detail,
        "rocky-install query: status=ok body: installed 42 packages"
    );

    // Ignition is JSON with its media type; a boot outside the workflow 404s.
    stage0(&s, "k8s-01", "burnin", 1);
    let g = curl(&s, "/config/52:54:00:00:01:01?boot=flatcar-install", &[]);
    assert_eq!(g.status, 200);
    assert_eq!(
        g.header("content-type").as_deref(),
        Some("application/vnd.coreos.ignition+json")
    );
    assert_eq!(
        curl(&s, "/config/52-54-00-00-01-01?boot=rocky-install", &[]).status,
        404
    );
    assert_eq!(
        curl(&s, "/config/02-00-00-00-00-99?boot=burnin", &[]).status,
        404
    );
}

/// The installer is told "recorded" only once its event is kept: an
/// event its keeper drops gets 503, is not recorded, and the retry is a
/// new checkpoint.
#[test]
fn a_checkpoint_not_kept_is_answered_503_and_its_retry_is_recorded() {
    let mut s = lab_server();
    stage0(&s, "storage-01", "rocky-install", 4);
    let token = TokenKey::new(KEY).mint(&Claims {
        host: "storage-01".into(),
        boot: "rocky-install".into(),
        attempt: 4,
        expires: u64::MAX / 2,
    });
    s.keep.store(false, std::sync::atomic::Ordering::SeqCst);
    let lost = curl(&s, &format!("/checkpoint/{token}"), &["-X", "POST"]);
    assert_eq!(lost.status, 503, "{}", lost.text());
    assert!(lost.text().starts_with("not recorded"), "{}", lost.text());
    assert!(!s.state.checkpointed("storage-01", 4));
    s.keep.store(true, std::sync::atomic::Ordering::SeqCst);
    let retry = curl(&s, &format!("/checkpoint/{token}"), &["-X", "POST"]);
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert!(retry.text().starts_with("recorded"), "{}", retry.text());
    assert!(s.state.checkpointed("storage-01", 4));
    let ev = events(&mut s, 2);
    assert!(ev.iter().all(|e| e.route == Route::Checkpoint), "{ev:?}");
}

#[test]
fn checkpoint_tokens_that_are_refused() {
    let s = lab_server();
    stage0(&s, "k8s-01", "burnin", 3);
    let key = TokenKey::new(KEY);
    let claims = |attempt: u64, expires: u64| Claims {
        host: "k8s-01".into(),
        boot: "burnin".into(),
        attempt,
        expires,
    };
    let far = u64::MAX / 2;
    // Forged (another key), expired, malformed: 401.
    let forged = TokenKey::new(*b"not the agent's key.............").mint(&claims(3, far));
    let expired = key.mint(&claims(3, 1));
    for t in [forged.as_str(), expired.as_str(), "garbage"] {
        let g = curl(&s, &format!("/checkpoint/{t}"), &["-X", "POST"]);
        assert_eq!(g.status, 401, "{t}: {}", g.text());
    }
    // An earlier attempt's token: 409, nothing recorded.
    let stale = key.mint(&claims(2, far));
    assert_eq!(curl(&s, &format!("/checkpoint/{stale}"), &[]).status, 409);
    assert!(!s.state.checkpointed("k8s-01", 2));
}

/// A two-host site on 127.0.0.0/8, so curl can speak as either host
/// (`--interface 127.0.0.X`).
fn loopback_site() -> SiteModel {
    let mut f = SotFiles::new();
    f.insert(
        "os/os.yml",
        "id: os\nos_family: debian\nmajor_version: \"12\"\nboot:\n  kernel: \"{{ urls.assets }}/k\"\n  initrd: [\"{{ urls.assets }}/i\"]\n",
    );
    f.insert("boot/b.yml", "id: b\noperating_system: os\n");
    f.insert("workflows/w.yml", "id: w\nstages:\n  - boot: b\n");
    f.insert(
        "sites/s/env.yml",
        "id: s\nagents:\n  - id: a\n    asset_server: {url: \"http://127.0.0.1:1\"}\nsubnets:\n  - id: lo\n    cidr: 127.0.0.0/8\n    dns: [127.0.0.1]\n",
    );
    f.insert(
        "sites/s/h.yml",
        "name: a\nworkflow: w\ninterfaces:\n  - {type: physical, mac: \"02:00:00:00:00:0a\", subnet: lo, ipv4: 127.0.0.10}\n---\nname: b\nworkflow: w\ninterfaces:\n  - {type: physical, mac: \"02:00:00:00:00:0b\", subnet: lo, ipv4: 127.0.0.11}\n",
    );
    SiteModel::compile(&Sot::load(&f).unwrap(), "s").unwrap()
}

#[test]
fn a_host_cannot_report_with_another_hosts_token() {
    let s = start(loopback_site(), None, tempfile::tempdir().unwrap());
    for (h, a) in [("a", 1), ("b", 1)] {
        s.state.set(
            h,
            Current::Stage {
                stage: 0,
                boot: "b".into(),
                attempt: a,
            },
        );
    }
    let token = TokenKey::new(KEY).mint(&Claims {
        host: "a".into(),
        boot: "b".into(),
        attempt: 1,
        expires: u64::MAX / 2,
    });
    // Host b (127.0.0.11) presents a's token: refused.
    let g = curl(
        &s,
        &format!("/checkpoint/{token}"),
        &["--interface", "127.0.0.11"],
    );
    assert_eq!(g.status, 403, "{}", g.text());
    assert!(!s.state.checkpointed("a", 1));
    // Host a itself: recorded.
    let g = curl(
        &s,
        &format!("/checkpoint/{token}"),
        &["--interface", "127.0.0.10"],
    );
    assert_eq!(g.status, 200, "{}", g.text());
    assert!(s.state.checkpointed("a", 1));
}

every_way!(scripts_and_configs_only_to_the_hosts_address);
/// With `check_client_address` (DHCP server mode), a host's script and
/// config go to its own address only: another host, or anyone else,
/// gets 403, counted and reported as the host's event.
fn scripts_and_configs_only_to_the_hosts_address(via: Via) {
    let mut s = start_custom(
        loopback_site(),
        None,
        tempfile::tempdir().unwrap(),
        via,
        |c| c.check_client_address = true,
    );
    stage0(&s, "a", "b", 3);
    let script = "/ipxe?mac=02:00:00:00:00:0a";
    let config = "/config/02:00:00:00:00:0a?boot=b";
    for (path, route) in [(script, Route::Script), (config, Route::Config)] {
        for from in ["127.0.0.11", "127.0.0.1"] {
            let g = curl(&s, path, &["--interface", from]);
            assert_eq!(g.status, 403, "{path} from {from}: {}", g.text());
            assert!(!g.text().contains("checkpoint"), "no token leaks");
            let ev = events(&mut s, 1);
            assert_eq!(ev.len(), 1, "{path} from {from}");
            assert_eq!(ev[0].route, route);
            assert_eq!(ev[0].host.as_deref(), Some("a"));
            assert_eq!(ev[0].status, 403);
            assert!(ev[0].detail.contains(from), "{}", ev[0].detail);
        }
    }
    // The host itself gets its script; the config route answers it too
    // (404: this OS has no unattended config, not 403).
    let g = curl(&s, script, &["--interface", "127.0.0.10"]);
    assert_eq!(g.status, 200, "{}", g.text());
    assert!(g.text().contains("attempt 3"), "{}", g.text());
    let g = curl(&s, config, &["--interface", "127.0.0.10"]);
    assert_eq!(g.status, 404, "{}", g.text());
    // Off (the default): anyone may ask, as behind NAT.
    let open = start_via(loopback_site(), None, tempfile::tempdir().unwrap(), via);
    stage0(&open, "a", "b", 3);
    assert_eq!(
        curl(&open, script, &["--interface", "127.0.0.11"]).status,
        200
    );
}

/// A refused file says why in its event (for the timeline and the log):
/// where the link leads and what to do; `allow_links_to` lets links lead
/// into the directories named, and nowhere else.
#[test]
fn refused_files_say_why_and_links_may_lead_where_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let root = files(dir.path());
    let kernels = dir.path().join("kernels");
    std::fs::create_dir(&kernels).unwrap();
    std::fs::write(kernels.join("vmlinuz"), "a kernel\n").unwrap();
    std::os::unix::fs::symlink(kernels.join("vmlinuz"), root.join("vmlinuz")).unwrap();
    let mut s = start(lab(), Some(root.clone()), dir);
    let g = curl(&s, "/files/vmlinuz", &[]);
    assert_eq!(g.status, 403);
    assert!(
        !g.text().contains("kernels"),
        "the client is not told where"
    );
    let ev = events(&mut s, 1);
    let d = &ev[0].detail;
    assert!(
        d.contains("leaves the root")
            && d.contains("kernels/vmlinuz")
            && d.contains("allow_links_to"),
        "{d}"
    );
    assert_eq!(curl(&s, "/files/nothing-here", &[]).status, 404);
    let ev = events(&mut s, 1);
    assert!(ev[0].detail.contains("does not exist"), "{}", ev[0].detail);
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let root = files(dir.path());
    std::fs::create_dir(dir.path().join("kernels")).unwrap();
    std::fs::write(dir.path().join("kernels/vmlinuz"), "a kernel\n").unwrap();
    std::os::unix::fs::symlink(dir.path().join("kernels/vmlinuz"), root.join("vmlinuz")).unwrap();
    let allowed = dir.path().join("kernels");
    let s = start_custom(lab(), Some(root), dir, Via::Serve, |c| {
        c.allow_links_to = vec![allowed];
    });
    let g = curl(&s, "/files/vmlinuz", &[]);
    assert_eq!((g.status, g.text().as_str()), (200, "a kernel\n"));
    assert_eq!(
        curl(&s, "/files/escape", &[]).status,
        403,
        "other links still refused"
    );
}

/// One client address holds at most `max_client_connections`; past it,
/// new connections are closed at once, and freed slots are given back.
#[test]
fn connections_per_client_are_capped() {
    use std::io::{Read, Write};
    let s = start_custom(lab(), None, tempfile::tempdir().unwrap(), Via::Serve, |c| {
        c.max_client_connections = std::num::NonZeroUsize::new(2);
    });
    let get = |c: &mut std::net::TcpStream| -> String {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = [0u8; 4096];
        match c.read(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(_) => String::new(),
        }
    };
    let mut one = std::net::TcpStream::connect(s.addr).unwrap();
    let mut two = std::net::TcpStream::connect(s.addr).unwrap();
    assert!(get(&mut one).starts_with("HTTP/1.1 200"));
    assert!(get(&mut two).starts_with("HTTP/1.1 200"));
    let mut three = std::net::TcpStream::connect(s.addr).unwrap();
    assert_eq!(
        get(&mut three),
        "",
        "a third connection is closed unanswered"
    );
    // Another address of the same machine is another client.
    let g = curl(&s, "/boot.ipxe", &["--interface", "127.0.0.2"]);
    assert_eq!(g.status, 200);
    drop(one);
    // Closed by the server once it sees the close: bounded retries.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = std::net::TcpStream::connect(s.addr).unwrap();
        if get(&mut again).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(two);
}

every_way!(files_ranges_validators_and_head);
fn files_ranges_validators_and_head(via: Via) {
    let s = lab_server_via(via);
    let dir = s._dir.path().join("files");
    let want = std::fs::read(dir.join("alpine-3.20/vmlinuz-lts")).unwrap();
    let g = curl(&s, "/files/alpine-3.20/vmlinuz-lts", &[]);
    assert_eq!(g.status, 200);
    assert_eq!(g.body, want);
    assert_eq!(g.header("accept-ranges").as_deref(), Some("bytes"));
    let etag = g.header("etag").unwrap();
    let modified = g.header("last-modified").unwrap();

    // HEAD: the same headers, no body.
    let h = curl(&s, "/files/alpine-3.20/vmlinuz-lts", &["-I"]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length").as_deref(), Some("1048576"));
    assert_eq!(h.header("etag").as_deref(), Some(etag.as_str()));

    // One range, a suffix range, and several (multipart/byteranges).
    let r = curl(&s, "/files/alpine-3.20/vmlinuz-lts", &["-r", "100-199"]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, want[100..200]);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 100-199/1048576")
    );
    let r = curl(&s, "/files/alpine-3.20/vmlinuz-lts", &["-r", "-10"]);
    assert_eq!(r.body, want[want.len() - 10..]);
    let r = curl(
        &s,
        "/files/alpine-3.20/vmlinuz-lts",
        &["-r", "0-9,1000-1019"],
    );
    assert_eq!(r.status, 206);
    let ctype = r.header("content-type").unwrap();
    let boundary = ctype.split("boundary=").nth(1).unwrap();
    let body = r.body.clone();
    let parts: Vec<&[u8]> = split(&body, format!("--{boundary}").as_bytes());
    // preamble, two parts, the closing "--".
    assert_eq!(parts.len(), 4, "{}", r.text());
    for (part, range, want_bytes) in [
        (parts[1], "bytes 0-9/1048576", &want[0..10]),
        (parts[2], "bytes 1000-1019/1048576", &want[1000..1020]),
    ] {
        let text = String::from_utf8_lossy(part);
        assert!(text.contains(&format!("Content-Range: {range}")), "{text}");
        let payload = &part[find(part, b"\r\n\r\n").unwrap() + 4..part.len() - 2];
        assert_eq!(payload, want_bytes);
    }
    assert_eq!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        body.len()
    );
    // Beyond the end: 416 with the size.
    let r = curl(
        &s,
        "/files/alpine-3.20/vmlinuz-lts",
        &["-r", "2000000-2000010"],
    );
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes */1048576")
    );

    // Conditional requests.
    let c = curl(
        &s,
        "/files/alpine-3.20/vmlinuz-lts",
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(c.status, 304);
    assert!(c.body.is_empty());
    let c = curl(
        &s,
        "/files/alpine-3.20/vmlinuz-lts",
        &["-H", &format!("If-Modified-Since: {modified}")],
    );
    assert_eq!(c.status, 304);
    let c = curl(
        &s,
        "/files/alpine-3.20/vmlinuz-lts",
        &["-H", "If-None-Match: \"other\""],
    );
    assert_eq!(c.status, 200);
    // If-Range with a stale validator: the whole file, not the range.
    let c = curl(
        &s,
        "/files/alpine-3.20/vmlinuz-lts",
        &["-r", "0-9", "-H", "If-Range: \"stale\""],
    );
    assert_eq!(c.status, 200);
    assert_eq!(c.body.len(), want.len());
    let c = curl(
        &s,
        "/files/alpine-3.20/vmlinuz-lts",
        &["-r", "0-9", "-H", &format!("If-Range: {etag}")],
    );
    assert_eq!(c.status, 206);

    // A small file (served from memory) slices the same way.
    let r = curl(&s, "/files/hello.txt", &["-r", "1-2"]);
    assert_eq!((r.status, r.text().as_str()), (206, "el"));
    let r = curl(&s, "/files/hello.txt", &["-r", "0-1,3-4"]);
    assert_eq!(r.status, 206);
    let t = r.text();
    assert!(
        t.contains("Content-Range: bytes 0-1/6\r\n\r\nhe\r\n"),
        "{t}"
    );
    assert!(
        t.contains("Content-Range: bytes 3-4/6\r\n\r\nlo\r\n"),
        "{t}"
    );
    assert_eq!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        r.body.len()
    );

    assert_eq!(curl(&s, "/files/nope", &[]).status, 404);
    assert_eq!(
        curl(&s, "/files/alpine-3.20", &[]).status,
        404,
        "a directory is not a file"
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut hay: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = find(hay, sep) {
        out.push(&hay[..i]);
        hay = &hay[i + sep.len()..];
    }
    out.push(hay);
    out
}

every_way!(no_path_escapes);
fn no_path_escapes(via: Via) {
    let s = lab_server_via(via);
    for (path, extra) in [
        ("/files/../secret", vec!["--path-as-is"]),
        ("/files/alpine-3.20/../../secret", vec!["--path-as-is"]),
        ("/files/%2e%2e/secret", vec![]),
        ("/files/%2E%2E%2Fsecret", vec![]),
        ("/files/alpine-3.20/%2e%2e/%2e%2e/secret", vec![]),
        ("/files//etc/passwd", vec!["--path-as-is"]),
        ("/files/%2Fetc%2Fpasswd", vec![]),
        ("/files/escape", vec![]),
        ("/files/..%00/secret", vec![]),
    ] {
        let g = curl(&s, path, &extra);
        assert!(
            [400, 403, 404].contains(&g.status),
            "{path}: {} {}",
            g.status,
            g.text()
        );
        assert!(!g.text().contains("outside the root"), "{path} escaped");
        assert!(!g.text().contains("root:"), "{path} escaped");
    }
    // A plain file next to them is served.
    assert_eq!(curl(&s, "/files/hello.txt", &[]).text(), "hello\n");
}

/// Zero-copy bodies are queued per connection and sent in the order
/// hyper writes them: files larger than one placeholder (9 MiB: 4 + 4 +
/// 1), a range, a small file and HEAD interleaved on one keep-alive
/// connection, and the same on several connections at once, all give
/// exactly the file's bytes.
fn large_files_back_to_back_on_one_connection(via: Via) {
    let s = lab_server_via(via);
    let dir = s._dir.path().join("files");
    let big = noise(9 << 20, 7);
    std::fs::write(dir.join("big"), &big).unwrap();
    let run = |tag: usize| {
        let out = tempfile::tempdir().unwrap();
        let url = |p: &str| format!("http://{}{p}", s.addr);
        // One curl: one connection, requests in order (`-:` between
        // them), each writing how many connections it opened.
        let requests: [(&str, &[&str], &str); 5] = [
            ("a", &[], "/files/big"),
            ("b", &["-r", "5000000-9000000"], "/files/big"),
            ("c", &[], "/files/hello.txt"),
            ("d", &["-I"], "/files/big"),
            ("e", &[], "/files/big"),
        ];
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "60"]);
        for (i, (file, extra, path)) in requests.iter().enumerate() {
            if i > 0 {
                cmd.arg("-:");
            }
            cmd.arg("-o").arg(out.path().join(file)).args(*extra);
            cmd.args(["-w", "%{num_connects} "]).arg(url(path));
        }
        let st = cmd.output().unwrap();
        assert!(
            st.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let connects: usize = String::from_utf8_lossy(&st.stdout)
            .split_whitespace()
            .map(|n| n.parse::<usize>().unwrap())
            .sum();
        assert_eq!(connects, 1, "{tag}: one connection for every request");
        let read = |f: &str| std::fs::read(out.path().join(f)).unwrap();
        assert!(read("a") == big, "{tag}: the whole file");
        assert!(read("b") == big[5_000_000..=9_000_000], "{tag}: the range");
        assert_eq!(read("c"), b"hello\n");
        assert!(String::from_utf8_lossy(&read("d")).contains("9437184"));
        assert!(read("e") == big, "{tag}: the whole file again");
    };
    run(0);
    std::thread::scope(|sc| {
        for tag in 1..=4 {
            sc.spawn(move || run(tag));
        }
    });
}

every_way!(large_files_back_to_back_on_one_connection);

#[test]
fn served_by_plain_axum_files_are_real_bytes() {
    // Not through vaquero_ipxe::serve: no sendfile placeholders may leak.
    let dir = tempfile::tempdir().unwrap();
    let root = files(dir.path());
    let want = std::fs::read(root.join("alpine-3.20/vmlinuz-lts")).unwrap();
    let (_swap, rx) = tokio::sync::watch::channel(Arc::new(lab()));
    let router = vaquero_ipxe::router(
        rx,
        Arc::new(MemoryBootState::new()),
        ServiceConfig::new(Some(root), TokenKey::new(KEY)),
        None,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg(format!("http://{addr}/files/alpine-3.20/vmlinuz-lts"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, want);
    rt.shutdown_background();
}

/// Reads from `c` until the server closes it (bounded by a read timeout):
/// whether it did, and the bytes read.
fn read_to_close(c: &mut std::net::TcpStream) -> (bool, Vec<u8>) {
    use std::io::Read;
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (true, got),
            Err(_) => return (false, got),
        }
    }
}

/// The lab's files served with connections closed after `idle` without
/// progress.
fn idle_server(idle: Duration) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let root = files(dir.path());
    start_custom(lab(), Some(root), dir, Via::Serve, |c| {
        c.idle_timeout = idle
    })
}

#[test]
fn stalled_connections_are_closed_active_ones_kept() {
    use std::io::Write;
    let s = idle_server(Duration::from_secs(2));
    let connect = || std::net::TcpStream::connect(s.addr).unwrap();

    // Connected, nothing sent.
    let mut idle = connect();
    // Half a request, then nothing.
    let mut half = connect();
    half.write_all(b"GET /files/hello.txt HTTP/1.1\r\nHo")
        .unwrap();
    // One request answered, then idle on keep-alive.
    let mut kept = connect();
    kept.write_all(b"GET /files/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();

    // A connection that keeps asking stays open meanwhile (progress at
    // least every 100 ms; the timeout is two seconds).
    let mut active = connect();
    active
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    for _ in 0..35 {
        active
            .write_all(b"GET /files/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"hello\n") {
            use std::io::Read;
            let n = active.read(&mut buf).unwrap();
            assert!(n > 0, "an active connection was closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(100));
    }

    let (closed, got) = read_to_close(&mut idle);
    assert!(closed && got.is_empty(), "an idle connection stays open");
    let (closed, _) = read_to_close(&mut half);
    assert!(closed, "a half-sent request holds its connection");
    let (closed, got) = read_to_close(&mut kept);
    assert!(closed, "an idle keep-alive connection stays open");
    assert!(String::from_utf8_lossy(&got).ends_with("hello\n"));
}

#[test]
fn shutdown_waits_for_no_stalled_connection() {
    use std::io::Write;
    let s = idle_server(Duration::from_secs(1));
    // A request that never finishes arriving, and a connection that
    // never reads its (large) response.
    let mut half = std::net::TcpStream::connect(s.addr).unwrap();
    half.write_all(b"GET /files/hello.txt HTTP/1.1\r\nHo")
        .unwrap();
    let mut unread = std::net::TcpStream::connect(s.addr).unwrap();
    for _ in 0..64 {
        unread
            .write_all(b"GET /files/alpine-3.20/vmlinuz-lts HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    // Dropping the server shuts it down and waits for its connections.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(s);
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "shutdown waited on stalled connections"
    );
    drop((half, unread));
}

/// A request head past 16 KiB gets 431 and nothing else; one under it is
/// served. (Under plain axum, `Via::Router`, the embedder's own server
/// sets the limit.)
fn large_request_heads_get_431(via: Via) {
    let s = lab_server_via(via);
    let small = format!("X-Small: {}", "a".repeat(10 * 1024));
    assert_eq!(curl(&s, "/boot.ipxe", &["-H", &small]).status, 200);
    let big = format!("X-Big: {}", "a".repeat(20 * 1024));
    assert_eq!(curl(&s, "/boot.ipxe", &["-H", &big]).status, 431);
}

#[test]
fn large_request_heads_get_431_served() {
    large_request_heads_get_431(Via::Serve);
}

#[test]
fn large_request_heads_get_431_on_event_loops() {
    large_request_heads_get_431(Via::Loops);
}
