//! The server against a real DHCP client in network namespaces this test
//! creates: our server (the `serve` example) in one namespace, busybox
//! `udhcpc` in the other, a veth pair between them. Nothing leaves the
//! pair. Needs root and `ip`; scripts/setup installs busybox-static.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces and a veth pair; removed (with every process started in
/// them, by PID) when dropped, also when the test fails.
struct Lab {
    server_ns: String,
    client_ns: String,
    server_if: String,
    client_if: String,
    children: Vec<Child>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let lab = Lab {
            server_ns: format!("vqd-s-{id}"),
            client_ns: format!("vqd-c-{id}"),
            server_if: format!("vqs{id}"),
            client_if: format!("vqc{id}"),
            children: Vec::new(),
        };
        sh(&["ip", "netns", "add", &lab.server_ns]);
        sh(&["ip", "netns", "add", &lab.client_ns]);
        sh(&[
            "ip",
            "link",
            "add",
            &lab.server_if,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
        ]);
        sh(&["ip", "link", "set", &lab.server_if, "netns", &lab.server_ns]);
        sh(&["ip", "link", "set", &lab.client_if, "netns", &lab.client_ns]);
        lab.exec_s(&["ip", "addr", "add", "10.99.0.2/24", "dev", &lab.server_if]);
        lab.exec_s(&["ip", "link", "set", &lab.server_if, "up"]);
        lab.exec_c(&[
            "ip",
            "link",
            "set",
            &lab.client_if,
            "address",
            "52:54:00:00:01:01",
        ]);
        lab.exec_c(&["ip", "link", "set", &lab.client_if, "up"]);
        lab
    }

    fn exec_s(&self, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", &self.server_ns];
        v.extend_from_slice(args);
        sh(&v);
    }

    fn exec_c(&self, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", &self.client_ns];
        v.extend_from_slice(args);
        sh(&v);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.server_ns])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.client_ns])
            .status();
    }
}

/// The server process: this test binary again, running only
/// `server_process` with the interface in the environment. (Not the
/// `serve` example: vaquero-tftp has one of the same name, and both build
/// to the same path.)
fn server_command(ns: &str, iface: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "server_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("VAQUERO_DHCP_TEST_SERVE", iface);
    c
}

/// Not a test of its own: the server process of the tests above, when
/// they start this binary with `VAQUERO_DHCP_TEST_SERVE` set. Serves the
/// lab until killed.
#[test]
fn server_process() {
    let Ok(iface) = std::env::var("VAQUERO_DHCP_TEST_SERVE") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sot = vaquero_model::Sot::load_dir(&lab_sot()).unwrap();
        let model = std::sync::Arc::new(vaquero_model::SiteModel::compile(&sot, "lab").unwrap());
        let (_tx, rx) = tokio::sync::watch::channel(model);
        let config = vaquero_dhcp::ServerConfig::new(
            Some(iface),
            "10.99.0.2".parse().unwrap(),
            vaquero_model::DhcpMode::Server,
        );
        let server = vaquero_dhcp::Server::bind(config, rx, None).unwrap();
        println!("serving site lab");
        server.run(std::future::pending()).await.unwrap();
    });
}

fn lab_sot() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab")
}

/// Runs udhcpc once in the client namespace; the environment its script
/// saw on `bound`.
fn udhcpc(lab: &Lab, extra: &[&str]) -> std::collections::HashMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let script = dir.path().join("script");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    sh(&["chmod", "+x", script.to_str().unwrap()]);
    let mut args = vec![
        "ip",
        "netns",
        "exec",
        &lab.client_ns,
        "busybox",
        "udhcpc",
        "-i",
        &lab.client_if,
        "-f",
        "-q",
        "-n",
        "-t",
        "8",
        "-T",
        "1",
        "-A",
        "1",
        "-s",
        script.to_str().unwrap(),
        "-O",
        "ntpsrv",
        "-O",
        "domain",
        "-O",
        "hostname",
        "-O",
        "150",
        "-O",
        "224",
        "-O",
        "252",
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("udhcpc did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "udhcpc got no lease");
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// Starts the lab's DHCP server in the server namespace and waits
/// (bounded) until it has bound its sockets.
fn start_server(lab: &mut Lab) {
    let logs = tempfile::tempdir().unwrap();
    let err_path = logs.path().join("server.err");
    let mut server = server_command(&lab.server_ns, &lab.server_if)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();
    // Bounded wait for "serving site …": the sockets are bound by then.
    let stdout = server.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("serving site") {
                let _ = tx.send(());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    let exited = server.try_wait().unwrap();
    lab.children.push(server);
    assert!(
        ready && exited.is_none(),
        "the DHCP server did not start: {}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
}

#[test]
fn udhcpc_gets_exactly_what_the_sot_says() {
    let mut lab = Lab::new("a");
    start_server(&mut lab);

    let env = udhcpc(&lab, &[]);
    let get = |k: &str| {
        env.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("udhcpc saw no `{k}`: {env:?}"))
    };
    assert_eq!(get("ip"), "10.99.0.11");
    assert_eq!(get("subnet"), "255.255.255.0");
    assert_eq!(get("router"), "10.99.0.1");
    assert_eq!(get("dns"), "10.99.0.1");
    assert_eq!(get("domain"), "lab.vaquero.test");
    assert_eq!(get("hostname"), "k8s-01");
    assert_eq!(get("ntpsrv"), "10.99.0.1");
    assert_eq!(get("serverid"), "10.99.0.2");
    assert_eq!(get("lease"), "3600");
    assert_eq!(get("opt150"), "0a630002", "custom option 150 (addresses)");
    assert_eq!(get("opt224"), "00000e10", "custom option 224 (uint32 3600)");
    // udhcpc knows option 252 by its name.
    assert_eq!(
        get("wpad"),
        "http://10.99.0.2:8080/wpad.dat",
        "custom option 252 (string)"
    );
    assert_eq!(get("opt7"), "0a630002", "log server");

    // As a BIOS PXE client: the boot file and next server too.
    let env = udhcpc(
        &lab,
        &["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "93:0000"],
    );
    assert_eq!(
        env.get("boot_file").map(String::as_str),
        Some("undionly.kpxe")
    );
    assert_eq!(env.get("siaddr").map(String::as_str), Some("10.99.0.2"));
}

/// Runs ISC dhclient once in the client namespace; the environment its
/// script saw on BOUND. dhclient stays in the foreground (`-d`) and is
/// stopped by its PID once it has bound.
fn dhclient(lab: &mut Lab) -> std::collections::HashMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let script = dir.path().join("script");
    let conf = dir.path().join("dhclient.conf");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$reason\" = BOUND ] && env > {}.tmp && mv {0}.tmp {0}\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    sh(&["chmod", "+x", script.to_str().unwrap()]);
    std::fs::write(
        &conf,
        "request subnet-mask, routers, domain-name-servers, domain-name, host-name, ntp-servers, log-servers;\n",
    )
    .unwrap();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns,
            "dhclient",
            "-d",
            "-1",
            "-4",
        ])
        .arg("-sf")
        .arg(&script)
        .arg("-cf")
        .arg(&conf)
        .arg("-lf")
        .arg(dir.path().join("leases"))
        .arg("-pf")
        .arg(dir.path().join("pid"))
        .arg(&lab.client_if)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.children.push(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.exists() {
        assert!(Instant::now() < deadline, "dhclient got no lease in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        })
        .collect()
}

#[test]
fn dhclient_gets_exactly_what_the_sot_says() {
    let mut lab = Lab::new("b");
    start_server(&mut lab);
    let env = dhclient(&mut lab);
    let get = |k: &str| {
        env.get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("dhclient saw no `{k}`: {env:?}"))
    };
    assert_eq!(get("new_ip_address"), "10.99.0.11");
    assert_eq!(get("new_subnet_mask"), "255.255.255.0");
    assert_eq!(get("new_routers"), "10.99.0.1");
    assert_eq!(get("new_domain_name_servers"), "10.99.0.1");
    assert_eq!(get("new_domain_name"), "lab.vaquero.test");
    assert_eq!(get("new_host_name"), "k8s-01");
    assert_eq!(get("new_ntp_servers"), "10.99.0.1");
    assert_eq!(get("new_log_servers"), "10.99.0.2");
    assert_eq!(get("new_dhcp_server_identifier"), "10.99.0.2");
    assert_eq!(get("new_dhcp_lease_time"), "3600");
}

/// Not a test of its own: a relay agent for `relayed_request_…`, run in
/// the client namespace with `VAQUERO_DHCP_TEST_RELAY` set. It sends one
/// relayed DISCOVER from 10.99.0.1:67 and prints the reply as hex.
#[test]
fn relay_process() {
    if std::env::var("VAQUERO_DHCP_TEST_RELAY").is_err() {
        return;
    }
    let sock = std::net::UdpSocket::bind("10.99.0.1:67").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // An unknown MAC on a known switch port: option 82 says where it is.
    let mut relay = vec![1, 8];
    relay.extend_from_slice(b"ge-0/0/1");
    relay.extend_from_slice(&[2, 5]);
    relay.extend_from_slice(b"tor-a");
    let mut d = vaquero_dhcp::wire::encode_request(
        "02:00:00:00:00:99".parse().unwrap(),
        0x5eed,
        vaquero_dhcp::MessageType::Discover,
        &[(82, relay)],
    );
    d[3] = 1; // hops
    d[24..28].copy_from_slice(&[10, 99, 0, 1]); // giaddr
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        sock.send_to(&d, "10.99.0.2:67").unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let hex: String = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
            println!("REPLY {hex}");
            return;
        }
    }
    println!("REPLY none");
}

#[test]
fn relayed_request_is_answered_to_the_relay_by_switch_port() {
    let mut lab = Lab::new("c");
    lab.exec_c(&["ip", "addr", "add", "10.99.0.1/24", "dev", &lab.client_if]);
    start_server(&mut lab);
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.client_ns])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "relay_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("VAQUERO_DHCP_TEST_RELAY", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hex = stdout
        .split("REPLY ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("the relay printed no reply: {stdout}"));
    assert_ne!(hex, "none", "the server did not answer the relay");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let (reply, order) = vaquero_dhcp::wire::decode_reply(&bytes).unwrap();
    assert_eq!(reply.msg_type, vaquero_dhcp::MessageType::Offer);
    assert_eq!(reply.xid, 0x5eed);
    assert_eq!(
        reply.yiaddr.to_string(),
        "10.99.0.11",
        "k8s-01, found by its switch port"
    );
    assert_eq!(reply.giaddr.to_string(), "10.99.0.1");
    let mut echoed = vec![1, 8];
    echoed.extend_from_slice(b"ge-0/0/1");
    echoed.extend_from_slice(&[2, 5]);
    echoed.extend_from_slice(b"tor-a");
    assert_eq!(reply.option(82), Some(&echoed[..]), "option 82 echoed");
    assert_eq!(order.last(), Some(&82));
}
