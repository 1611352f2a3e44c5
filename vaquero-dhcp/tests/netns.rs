//! The server against a real DHCP client in network namespaces this test
//! creates: our server (`testkit-dhcp-server`) in one namespace, busybox
//! `udhcpc` in the other, a veth pair between them. Nothing leaves the
//! pair. Needs root and `ip`; scripts/setup installs busybox-static.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use locate::testkit;
use vaquero_test_support as locate;

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

/// The server process (`testkit-dhcp-server`) in namespace `ns`, with the
/// interface and mode in its environment.
fn server_command(ns: &str, iface: &str, mode: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .arg(testkit("testkit-dhcp-server"))
        .env("VAQUERO_DHCP_TEST_SERVE", iface)
        .env("VAQUERO_DHCP_TEST_MODE", mode);
    c
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
    let (ns, iface) = (lab.server_ns.clone(), lab.server_if.clone());
    start_server_in(&mut lab.children, &ns, &iface, "server");
}

/// Starts the lab's DHCP server in `ns` on `iface`, waits (bounded) until
/// it has bound its sockets, and returns the lines it prints after that.
fn start_server_in(
    children: &mut Vec<Child>,
    ns: &str,
    iface: &str,
    mode: &str,
) -> std::sync::mpsc::Receiver<String> {
    let logs = tempfile::tempdir().unwrap();
    let err_path = logs.path().join("server.err");
    let mut server = server_command(ns, iface, mode)
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
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("serving site") => {
                ready = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let exited = server.try_wait().unwrap();
    children.push(server);
    assert!(
        ready && exited.is_none(),
        "the DHCP server did not start: {}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    rx
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

/// Two DHCP servers on one segment hand out conflicting answers: a second
/// server on an interface one already serves fails to start, saying the
/// address is in use; on another interface of the same machine it starts.
#[test]
fn a_second_server_on_a_served_interface_fails_to_start() {
    let mut lab = Lab::new("t");
    start_server(&mut lab);
    for mode in ["server", "proxy"] {
        let out = server_command(&lab.server_ns, &lab.server_if, mode)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_bounded(out, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(3), "{mode}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot bind") && err.contains("in use"),
            "{mode}: {err}"
        );
    }
    // Another interface (loopback of the same namespace) is another segment.
    lab.exec_s(&["ip", "link", "set", "lo", "up"]);
    let (ns, children) = (lab.server_ns.clone(), &mut lab.children);
    start_server_in(children, &ns, "lo", "server");
}

/// Waits for `child` to exit, killing it (by PID) after `limit`.
fn wait_bounded(mut child: Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A lossy provisioning network: nftables in the server's namespace drops
/// the first DHCP request it receives and every 20th after (5 %, input
/// hook), and the second reply it sends and every 20th after (output hook:
/// the server's `send` fails with EPERM, as with a firewall or a full
/// queue). The reply counts as lost, the client's retransmission brings
/// the request again, and both exchanges complete.
#[test]
fn leases_under_loss_on_both_hooks() {
    let mut lab = Lab::new("l");
    start_server(&mut lab);
    let rules = "table inet loss {\n\
         chain in { type filter hook input priority 0; udp dport 67 numgen inc mod 20 == 0 counter drop; }\n\
         chain out { type filter hook output priority 0; udp sport 67 numgen inc mod 20 == 1 counter drop; }\n\
         }\n";
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &lab.server_ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft (scripts/setup installs nftables)");
    {
        use std::io::Write;
        nft.stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
    }
    assert!(nft.wait().unwrap().success(), "nft refused the rules");
    for round in 0..2 {
        let env = udhcpc(&lab, &[]);
        assert_eq!(
            env.get("ip").map(String::as_str),
            Some("10.99.0.11"),
            "round {round}: {env:?}"
        );
    }
    // A request was dropped on the way in, and a reply's send failed on
    // the way out: both hooks' counters moved.
    let listed = Command::new("ip")
        .args(["netns", "exec", &lab.server_ns, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    let dropped: Vec<u64> = text
        .split("counter packets ")
        .skip(1)
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        dropped.len() == 2 && dropped.iter().all(|n| *n >= 1),
        "{text}"
    );
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

#[test]
fn relayed_request_is_answered_to_the_relay_by_switch_port() {
    let mut lab = Lab::new("c");
    lab.exec_c(&["ip", "addr", "add", "10.99.0.1/24", "dev", &lab.client_if]);
    start_server(&mut lab);
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.client_ns])
        .arg(testkit("testkit-dhcp-relay"))
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

/// A switched segment: a bridge in a namespace of its own and one
/// namespace per member, each cabled to the bridge by a veth pair — a
/// server, another server and a client can all hear each other's
/// broadcasts. Removed (processes by PID, then the namespaces, which takes
/// the links with them) when dropped.
struct Segment {
    switch: String,
    members: Vec<(String, String)>,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Segment {
    fn new(tag: &str, n: usize) -> Segment {
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let mut seg = Segment {
            switch: format!("vqd-sw-{id}"),
            members: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        sh(&["ip", "netns", "add", &seg.switch]);
        let sw = |args: &[&str]| {
            let mut v = vec!["ip", "-n", &seg.switch];
            v.extend_from_slice(args);
            sh(&v);
        };
        sw(&["link", "add", "br0", "type", "bridge"]);
        sw(&["link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("vqd-m{i}-{id}");
            let (inner, outer) = (format!("vq{id}m{i}"), format!("vq{id}p{i}"));
            sh(&["ip", "netns", "add", &ns]);
            seg.members.push((ns.clone(), inner.clone()));
            sh(&[
                "ip", "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            sh(&["ip", "link", "set", &inner, "netns", &ns]);
            sh(&["ip", "link", "set", &outer, "netns", &seg.switch]);
            let sw = |args: &[&str]| {
                let mut v = vec!["ip", "-n", &seg.switch];
                v.extend_from_slice(args);
                sh(&v);
            };
            sw(&["link", "set", &outer, "master", "br0"]);
            sw(&["link", "set", &outer, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", &inner, "up"]);
        }
        seg
    }

    /// What dnsmasq in member `i` logged (for failure messages).
    fn dnsmasq_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("dnsmasq{i}.err"))).unwrap_or_default()
    }

    fn ns(&self, i: usize) -> &str {
        &self.members[i].0
    }

    fn iface(&self, i: usize) -> &str {
        &self.members[i].1
    }

    fn ip(&self, i: usize, args: &[&str]) {
        let mut v = vec!["ip", "-n", self.ns(i)];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// Starts dnsmasq (DHCP only, no DNS) in member `i` with `conf` added
    /// to a base configuration, and waits (bounded) until it listens.
    fn dnsmasq(&mut self, i: usize, conf: &str) {
        let path = self.dir.path().join(format!("dnsmasq{i}.conf"));
        let leases = self.dir.path().join(format!("dnsmasq{i}.leases"));
        std::fs::write(
            &path,
            format!(
                "port=0\ninterface={}\nbind-interfaces\ndhcp-leasefile={}\nno-ping\nuser=root\nlog-dhcp\n{conf}",
                self.iface(i),
                leases.display()
            ),
        )
        .unwrap();
        let err = self.dir.path().join(format!("dnsmasq{i}.err"));
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns(i), "dnsmasq", "--no-daemon"])
            .arg(format!("--conf-file={}", path.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("dnsmasq: {e} (scripts/setup installs dnsmasq-base)"));
        self.children.push(child);
        // dnsmasq logs "DHCP, IP range …" once its socket is bound.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&err).unwrap_or_default();
            if log.contains("DHCP, ") {
                break;
            }
            let exited = self.children.last_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "dnsmasq did not start: {log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the test client (`testkit-dhcp-client`) in member `i`: sends each
    /// request from `bind` to `dest` and collects every reply for
    /// `wait_ms`, as (request index, reply bytes).
    fn client(
        &self,
        i: usize,
        bind: &str,
        dest: &str,
        wait_ms: u64,
        requests: &[Vec<u8>],
    ) -> Vec<(usize, Vec<u8>)> {
        let reqs: Vec<String> = requests.iter().map(|r| hex(r)).collect();
        let out = Command::new("ip")
            .args(["netns", "exec", self.ns(i)])
            .arg(testkit("testkit-dhcp-client"))
            .env(
                "VAQUERO_DHCP_TEST_CLIENT",
                format!("{}|{bind}|{dest}|{wait_ms}", self.iface(i)),
            )
            .env("VAQUERO_DHCP_TEST_REQUESTS", reqs.join(","))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("CLIENT DONE"),
            "the test client failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .filter_map(|l| l.split_once("REPLY ").map(|(_, r)| r))
            .map(|l| {
                let (i, h) = l.split_once(' ').unwrap();
                (i.parse().unwrap(), unhex(h))
            })
            .collect()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (ns, _) in &self.members {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch])
            .status();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

/// DHCP options as (code, value).
type Options = Vec<(u8, Vec<u8>)>;

/// A broadcast request (flag set, as PXE ROMs do) from `mac`.
fn broadcast_request(
    mac: &str,
    xid: u32,
    t: vaquero_dhcp::MessageType,
    opts: &[(u8, Vec<u8>)],
) -> Vec<u8> {
    let mut d = vaquero_dhcp::wire::encode_request(mac.parse().unwrap(), xid, t, opts);
    d[10] = 0x80;
    d
}

fn pxe_options(arch: u16, class: &str) -> Vec<(u8, Vec<u8>)> {
    vec![
        (93, arch.to_be_bytes().to_vec()),
        (60, class.as_bytes().to_vec()),
        (97, vec![0; 17]),
        (
            55,
            vec![1, 3, 6, 12, 15, 28, 42, 43, 51, 54, 60, 66, 67, 7, 97],
        ),
    ]
}

fn decode(b: &[u8]) -> vaquero_dhcp::Reply {
    vaquero_dhcp::wire::decode_reply(b).unwrap().0
}

fn server_id(r: &vaquero_dhcp::Reply) -> String {
    r.option(54)
        .map(|v| std::net::Ipv4Addr::new(v[0], v[1], v[2], v[3]).to_string())
        .unwrap_or_default()
}

fn boot_file(r: &vaquero_dhcp::Reply) -> Option<String> {
    r.option(67)
        .map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_owned())
        .or_else(|| r.file.clone())
}

#[test]
fn a_rogue_server_on_the_segment_is_reported() {
    // 0: us (server mode), 1: a stray dnsmasq handing out addresses, 2: a client.
    let mut seg = Segment::new("r", 3);
    seg.ip(0, &["addr", "add", "10.99.0.2/24", "dev", seg.iface(0)]);
    seg.ip(1, &["addr", "add", "10.99.0.3/24", "dev", seg.iface(1)]);
    seg.ip(2, &["addr", "add", "169.254.7.7/16", "dev", seg.iface(2)]);
    let (ns, iface) = (seg.ns(0).to_owned(), seg.iface(0).to_owned());
    let lines = start_server_in(&mut seg.children, &ns, &iface, "server");
    seg.dnsmasq(1, "dhcp-range=10.99.0.100,10.99.0.150,255.255.255.0,1h\n");

    let replies = seg.client(
        2,
        "0.0.0.0:68",
        "255.255.255.255:67",
        1500,
        &[broadcast_request(
            "52:54:00:00:01:01",
            0xbad,
            vaquero_dhcp::MessageType::Discover,
            &[],
        )],
    );
    let servers: Vec<String> = replies.iter().map(|(_, b)| server_id(&decode(b))).collect();

    assert!(
        servers.contains(&"10.99.0.3".to_owned()),
        "dnsmasq answered: {servers:?}"
    );
    assert!(
        servers.contains(&"10.99.0.2".to_owned()),
        "we answered: {servers:?}"
    );
    // Our server saw dnsmasq's OFFER and reported it (and not its own).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(l) if l.starts_with("ROGUE ") => {
                seen.push(l);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(seen, ["ROGUE 10.99.0.3 52:54:00:00:01:01"]);
}

#[test]
fn proxy_mode_beside_dnsmasq_boot_info_from_us_address_from_dnsmasq() {
    // 0: us (proxy), 1: dnsmasq as the site's address server, 2: a PXE client.
    let mut seg = Segment::new("p", 3);
    seg.ip(0, &["addr", "add", "10.99.0.2/24", "dev", seg.iface(0)]);
    seg.ip(1, &["addr", "add", "10.99.0.3/24", "dev", seg.iface(1)]);
    seg.ip(2, &["addr", "add", "169.254.7.7/16", "dev", seg.iface(2)]);
    let (ns, iface) = (seg.ns(0).to_owned(), seg.iface(0).to_owned());
    let _lines = start_server_in(&mut seg.children, &ns, &iface, "proxy");
    seg.dnsmasq(
        1,
        "dhcp-range=10.99.0.100,10.99.0.150,255.255.255.0,1h\ndhcp-option=option:router,10.99.0.1\n",
    );

    // A UEFI x64 PXE ROM: DISCOVER, collecting every OFFER.
    let mac = "52:54:00:00:01:02"; // k8s-02
    let opts = pxe_options(7, "PXEClient:Arch:00007:UNDI:003016");
    let replies = seg.client(
        2,
        "0.0.0.0:68",
        "255.255.255.255:67",
        2000,
        &[broadcast_request(
            mac,
            0x1001,
            vaquero_dhcp::MessageType::Discover,
            &opts,
        )],
    );
    let offers: Vec<_> = replies.iter().map(|(_, b)| decode(b)).collect();
    let ours = offers
        .iter()
        .find(|r| server_id(r) == "10.99.0.2")
        .unwrap_or_else(|| panic!("no proxy offer from us: {offers:?}"));
    let theirs = offers
        .iter()
        .find(|r| server_id(r) == "10.99.0.3")
        .unwrap_or_else(|| panic!("no offer from dnsmasq: {offers:?}\n{}", seg.dnsmasq_log(1)));
    // dnsmasq gives the address; we give no address, only boot information.
    let addr = theirs.yiaddr;
    assert!(
        (100..=150).contains(&addr.octets()[3]) && addr.octets()[..3] == [10, 99, 0],
        "{addr}"
    );
    assert_eq!(boot_file(theirs), None, "dnsmasq was given no boot file");
    assert!(ours.yiaddr.is_unspecified(), "a proxy gives no address");
    assert_eq!(ours.option(60), Some(&b"PXEClient"[..]));
    assert_eq!(ours.option(1), None, "a proxy sends no subnet options");
    assert_eq!(boot_file(ours).as_deref(), Some("ipxe.efi"));
    assert_eq!(ours.siaddr.to_string(), "10.99.0.2");

    // The ROM takes dnsmasq's address, then asks our boot server (4011).
    seg.ip(
        2,
        &["addr", "add", &format!("{addr}/24"), "dev", seg.iface(2)],
    );
    let mut req_opts = opts.clone();
    req_opts.push((54, vec![10, 99, 0, 2]));
    let mut req = vaquero_dhcp::wire::encode_request(
        mac.parse().unwrap(),
        0x1002,
        vaquero_dhcp::MessageType::Request,
        &req_opts,
    );
    req[12..16].copy_from_slice(&addr.octets()); // ciaddr
    let replies = seg.client(2, &format!("{addr}:68"), "10.99.0.2:4011", 2000, &[req]);
    let acks: Vec<_> = replies.iter().map(|(_, b)| decode(b)).collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0].msg_type, vaquero_dhcp::MessageType::Ack);
    assert_eq!(boot_file(&acks[0]).as_deref(), Some("ipxe.efi"));
    assert_eq!(server_id(&acks[0]), "10.99.0.2");
}

#[test]
fn differential_against_dnsmasq_configured_from_the_same_hosts() {
    // 0: us, 1: dnsmasq from the same model, 2: a client asking both.
    let mut seg = Segment::new("d", 3);
    seg.ip(0, &["addr", "add", "10.99.0.2/24", "dev", seg.iface(0)]);
    seg.ip(1, &["addr", "add", "10.99.0.3/24", "dev", seg.iface(1)]);
    seg.ip(2, &["addr", "add", "169.254.7.7/16", "dev", seg.iface(2)]);
    let model = {
        let sot = vaquero_model::Sot::load_dir(&lab_sot()).unwrap();
        vaquero_model::SiteModel::compile(&sot, "lab").unwrap()
    };
    let (ns, iface) = (seg.ns(0).to_owned(), seg.iface(0).to_owned());
    let _lines = start_server_in(&mut seg.children, &ns, &iface, "server");
    // dnsmasq answers broadcast, as we do for clients without an address.
    let conf = vaquero_dhcp::export::dnsmasq(&model, "prov", "10.99.0.2".parse().unwrap()).unwrap();
    seg.dnsmasq(1, &format!("{conf}dhcp-broadcast\n"));

    // Every provisioning-subnet MAC (and one unknown), as a plain client,
    // a BIOS PXE ROM, a UEFI x64 PXE ROM and iPXE.
    let params = (
        55,
        vec![1, 3, 6, 7, 12, 15, 42, 51, 54, 66, 67, 150, 224, 252],
    );
    let kinds: Vec<(&str, Options)> = vec![
        ("plain", vec![params.clone()]),
        ("bios", {
            let mut o = pxe_options(0, "PXEClient:Arch:00000:UNDI:002001");
            o.push(params.clone());
            o
        }),
        ("uefi", {
            let mut o = pxe_options(7, "PXEClient:Arch:00007:UNDI:003016");
            o.push(params.clone());
            o
        }),
        ("ipxe", {
            let mut o = pxe_options(7, "PXEClient:Arch:00007:UNDI:003016");
            o.push((77, b"iPXE".to_vec()));
            o.push(params.clone());
            o
        }),
    ];
    let mut macs: Vec<String> = model
        .hosts()
        .iter()
        .flat_map(|h| &h.interfaces)
        .filter(|i| i.subnet == "prov" && !i.ignore_dhcp)
        .map(|i| i.mac.to_string())
        .collect();
    macs.push("02:00:00:00:99:99".into());
    let mut requests = Vec::new();
    let mut labels = Vec::new();
    for mac in &macs {
        for (kind, opts) in &kinds {
            // pxe_options carries its own 55; a later 55 would be a second
            // copy — keep one, the wider list.
            let opts: Vec<_> = opts
                .iter()
                .filter(|(c, v)| *c != 55 || v.len() > 15)
                .cloned()
                .collect();
            let xid = 0xd1f0_0000 + requests.len() as u32;
            requests.push(broadcast_request(
                mac,
                xid,
                vaquero_dhcp::MessageType::Discover,
                &opts,
            ));
            labels.push(format!("{mac} {kind}"));
        }
    }
    let replies = seg.client(2, "0.0.0.0:68", "255.255.255.255:67", 300, &requests);

    let mut compared = 0;
    for (i, label) in labels.iter().enumerate() {
        let by = |server: &str| {
            let v: Vec<_> = replies
                .iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, b)| decode(b))
                .filter(|r| server_id(r) == server)
                .collect();
            assert!(v.len() <= 1, "{label}: several replies from {server}");
            v.into_iter().next()
        };
        let (ours, theirs) = (by("10.99.0.2"), by("10.99.0.3"));
        let (Some(ours), Some(theirs)) = (ours, theirs) else {
            // Both silent (the unknown MAC) is agreement too.
            assert!(
                by("10.99.0.2").is_none() && by("10.99.0.3").is_none(),
                "{label}: only one server answered\n{}",
                seg.dnsmasq_log(1)
            );
            assert!(
                label.starts_with("02:00:00:00:99:99"),
                "{label}: nobody answered"
            );
            continue;
        };
        assert_eq!(ours.yiaddr, theirs.yiaddr, "{label}: address");
        for code in [1, 3, 6, 7, 12, 15, 42, 51, 150, 224, 252] {
            assert_eq!(
                ours.option(code),
                theirs.option(code),
                "{label}: option {code}"
            );
        }
        assert_eq!(boot_file(&ours), boot_file(&theirs), "{label}: boot file");
        if boot_file(&ours).is_some() {
            assert_eq!(ours.siaddr, theirs.siaddr, "{label}: next server");
        }
        compared += 1;
    }
    assert_eq!(compared, (macs.len() - 1) * kinds.len());
}
