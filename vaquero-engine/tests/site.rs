//! The site services refuse to start with one line that names the fix: a
//! missing interface, a port in use, an iPXE binary that is nowhere. And
//! they serve: TFTP falls back to the distribution's iPXE, a model swap
//! reaches the boot service. Loopback only, high ports.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vaquero_engine::site::{SiteFailure, SiteOptions, SiteServices};
use vaquero_ipxe::{MemoryBootState, TokenKey};
use vaquero_model::{SiteModel, Sot};

/// A one-host SoT whose agent serves `interfaces` with `dhcp_mode`.
fn model(dir: &Path, agent: &str) -> Arc<SiteModel> {
    let w = |p: &str, s: &str| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w(
        "os/linux.yml",
        "id: linux\nos_family: debian\nmajor_version: \"12\"\nboot:\n  kernel: \"{{ urls.assets }}/vmlinuz\"\n  initrd: [\"{{ urls.assets }}/initrd\"]\n",
    );
    w("boot/b.yml", "id: b\noperating_system: linux\n");
    w("workflows/w.yml", "id: w\nstages: [{boot: b}]\n");
    w(
        "sites/s/env.yml",
        &format!(
            "id: s\nagents:\n  - {agent}\nsubnets: [{{id: p, cidr: 10.0.0.0/24, dns: [10.0.0.1]}}]\n"
        ),
    );
    w(
        "sites/s/h.yml",
        "name: h\nworkflow: w\ninterfaces: [{type: physical, mac: \"52:54:00:00:00:01\", subnet: p, ipv4: 10.0.0.10}]\n",
    );
    let sot = Sot::load_dir(dir).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(sot.compile().unwrap().remove("s").unwrap())
}

fn options(ipxe: &Path, tftp_port: u16) -> SiteOptions {
    let mut o = SiteOptions::new(TokenKey::new(*b"site test key..."));
    o.ipxe_dirs = vec![ipxe.to_path_buf()];
    o.tftp_port = tftp_port;
    o.http_listen = Some("127.0.0.1:0".parse().unwrap());
    o
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(model: Arc<SiteModel>, o: SiteOptions) -> Result<SiteServices, SiteFailure> {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    SiteServices::start(model, Arc::new(MemoryBootState::new()), o, tx).await
}

#[tokio::test]
async fn start_up_refusals_name_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ipxe = dir.path().join("ipxe");
    std::fs::create_dir_all(&ipxe).unwrap();

    // A missing interface.
    let m = model(
        &dir.path().join("a"),
        "{id: a, dhcp_mode: off, interfaces: [vq-none0], asset_server: {url: \"http://10.0.0.2:8080\"}}",
    );
    let e = start(m, options(&ipxe, free_udp_port())).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "interface `vq-none0` does not exist or has no IPv4 address: fix the agent's `interfaces` in the SoT, or bring the interface up"
    );

    // A DHCP server that names no interface.
    let m = model(
        &dir.path().join("s"),
        "{id: a, asset_server: {url: \"http://10.0.0.2:8080\"}}",
    );
    let e = start(m, options(&ipxe, free_udp_port())).await.unwrap_err();
    assert!(
        e.to_string().starts_with(
            "agent `a` is a DHCP server (dhcp_mode: server) on no named interface: name the provisioning network's interfaces"
        ),
        "{e}"
    );

    // No iPXE binary in the TFTP root nor in the distribution's directory.
    let m = model(
        &dir.path().join("b"),
        "{id: a, dhcp_mode: off, interfaces: [lo], asset_server: {url: \"http://10.0.0.2:8080\"}}",
    );
    let e = start(m.clone(), options(&ipxe, free_udp_port()))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "TFTP: `undionly.kpxe` is neither in (no tftp_server.base_dir) nor in {}: install Debian's `ipxe` package, or put the file in the TFTP root",
            ipxe.display()
        )
    );

    // With the binaries: it starts; a port in use is named.
    for f in vaquero_engine::site::IPXE_FILES {
        std::fs::write(ipxe.join(f), format!("{f} bytes")).unwrap();
    }
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = start(m.clone(), options(&ipxe, port)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "TFTP: 127.0.0.1:{port} is in use by another program: stop it, or serve on another port"
        )
    );
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut o = options(&ipxe, free_udp_port());
    o.http_listen = Some(http.local_addr().unwrap());
    let e = start(m.clone(), o).await.unwrap_err();
    assert!(
        e.to_string().starts_with("HTTP: 127.0.0.1:") && e.to_string().contains("is in use"),
        "{e}"
    );

    // Running: TFTP serves the distribution's iPXE (curl as the client),
    // and a swapped model reaches the boot service.
    let tftp_port = free_udp_port();
    let s = start(m.clone(), options(&ipxe, tftp_port)).await.unwrap();
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("tftp://127.0.0.1:{tftp_port}/ipxe.efi"))
        .output()
        .await
        .expect("curl (scripts/setup)");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ipxe.efi bytes");
    let url = format!("http://{}/ipxe?mac=52-54-00-00-00-01", s.http_addr());
    let get = || async {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "--max-time", "10", &url])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(get().await.contains("exit"), "not scheduled: local disk");
    let other = model(
        &dir.path().join("c"),
        "{id: a, dhcp_mode: off, interfaces: [lo], asset_server: {url: \"http://10.0.0.2:8080\"}}",
    );
    let text = std::fs::read_to_string(dir.path().join("c/sites/s/h.yml"))
        .unwrap()
        .replace("52:54:00:00:00:01", "52:54:00:00:00:02");
    std::fs::write(dir.path().join("c/sites/s/h.yml"), text).unwrap();
    let other = {
        let _ = other;
        let sot = Sot::load_dir(&dir.path().join("c")).unwrap_or_else(|e| panic!("{e}"));
        Arc::new(sot.compile().unwrap().remove("s").unwrap())
    };
    s.swap(other);
    assert!(
        get().await.contains("is not in the model"),
        "after the swap the old MAC is unknown"
    );
    s.stop().await;

    // `tftp_server.single_port`: the transfer answers from the port asked
    // (RFC 1350's way is a port of its own).
    for single in [false, true] {
        let m = model(
            &dir.path().join(format!("single-{single}")),
            &format!(
                "{{id: a, dhcp_mode: off, interfaces: [lo], tftp_server: {{single_port: {single}}}, asset_server: {{url: \"http://10.0.0.2:8080\"}}}}"
            ),
        );
        let tftp_port = free_udp_port();
        let s = start(m, options(&ipxe, tftp_port)).await.unwrap();
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(b"\x00\x01ipxe.efi\x00octet\x00", ("127.0.0.1", tftp_port))
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..4], b"\x00\x03\x00\x01", "DATA block 1");
        assert_eq!(&buf[4..n], b"ipxe.efi bytes");
        assert_eq!(from.port() == tftp_port, single, "answered from {from}");
        // The last block (under 512 bytes), acknowledged: the transfer ends.
        client.send_to(b"\x00\x04\x00\x01", from).await.unwrap();
        s.stop().await;
    }
}

/// The boot service listens on the agent's interface addresses, not on
/// every address; a second agent serving DHCP on an interface one already
/// serves fails to start, saying so.
#[tokio::test]
async fn listens_on_the_site_addresses_and_one_dhcp_server_per_interface() {
    let dir = tempfile::tempdir().unwrap();
    let ipxe = dir.path().join("ipxe");
    std::fs::create_dir_all(&ipxe).unwrap();
    for f in vaquero_engine::site::IPXE_FILES {
        std::fs::write(ipxe.join(f), format!("{f} bytes")).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = model(
        dir.path(),
        &format!(
            "{{id: a, dhcp_mode: server, interfaces: [lo], asset_server: {{url: \"http://127.0.0.1:{port}\"}}}}"
        ),
    );
    let options = |dhcp: u16| {
        let mut o = options(&ipxe, free_udp_port());
        o.http_listen = None;
        o.dhcp_port = dhcp;
        o
    };
    let dhcp = free_udp_port();
    let s = start(m.clone(), options(dhcp)).await.unwrap();
    assert_eq!(s.http_addr(), format!("127.0.0.1:{port}").parse().unwrap());
    // Another address of this machine is not listened on.
    let other = std::net::TcpStream::connect(("127.0.0.2", port));
    assert!(other.is_err(), "listening beyond the interface's address");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    let e = start(m.clone(), options(dhcp)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "DHCP: lo (127.0.0.1) port {dhcp} is already served by another DHCP server on this machine (another vaquero, dnsmasq, isc-dhcp-server, kea): two DHCP servers on one segment give conflicting answers; stop the other one, or set the agent's dhcp_mode to proxy or off"
        )
    );
    s.stop().await;
}

/// The files a site's boots need are checked before any machine boots:
/// a kernel linked out of the root and a missing initrd are warnings at
/// the OS file's lines; `allow_links_to` lets the kernel through.
#[test]
fn boot_files_that_would_not_be_served_are_warnings_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    let kernels = dir.path().join("kernels");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::create_dir_all(&kernels).unwrap();
    std::fs::write(kernels.join("vmlinuz"), "kernel").unwrap();
    std::os::unix::fs::symlink(kernels.join("vmlinuz"), files.join("vmlinuz")).unwrap();
    let agent = |links: &str| {
        format!(
            "{{id: a, dhcp_mode: off, asset_server: {{url: \"http://10.0.0.2:8080\", base_dir: {}{links}}}}}",
            files.display()
        )
    };
    let check = |sot_dir: &Path, links: &str| {
        model(sot_dir, &agent(links));
        let sot = Sot::load_dir(sot_dir).unwrap();
        let m = sot.compile().unwrap().remove("s").unwrap();
        let a = m.site().agents[0].clone();
        vaquero_engine::boot_files::check_boot_files(&m, &a, Some(&sot))
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    let got = check(&dir.path().join("a"), "");
    let root = files.canonicalize().unwrap();
    let target = kernels.canonicalize().unwrap().join("vmlinuz");
    assert_eq!(
        got,
        [
            format!(
                "os/linux.yml:5:11: warning: boot.kernel: the kernel `vmlinuz` of boot b (1 host) would not be served (403): `vmlinuz` is a link to `{}`, which leaves the root `{}`: move or copy the file under the root, or list its directory in allow_links_to",
                target.display(),
                root.display()
            ),
            format!(
                "os/linux.yml:6:12: warning: boot.initrd[0]: the initrd `initrd` of boot b (1 host) would not be served (404): `{}` does not exist",
                root.join("initrd").display()
            ),
        ]
    );
    std::fs::write(files.join("initrd"), "initrd").unwrap();
    let links = format!(", allow_links_to: [{}]", kernels.display());
    assert_eq!(check(&dir.path().join("b"), &links), Vec::<String>::new());
}
