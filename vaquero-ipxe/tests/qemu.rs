//! A real iPXE: QEMU's e1000 option ROM (Debian's `ipxe-qemu`, under TCG)
//! network-boots on a tap device in a namespace this test creates. Our
//! DHCP server (vaquero-dhcp) and this boot service answer it there. The
//! test checks that iPXE ran `boot.ipxe`, reported the MAC of the NIC that
//! booted — the machine has two, and boots from the second — got k8s-01's
//! script for its current stage and started fetching that stage's kernel. Nothing leaves the namespace; QEMU and the agent
//! process are stopped by PID and the namespace deleted, also on failure.
//! Needs root, `ip`, `qemu-system-x86_64` and `ipxe-qemu` (scripts/setup).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use locate::testkit;
use vaquero_test_support as locate;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MAC: &str = "52:54:00:00:01:01"; // k8s-01 in examples/lab
/// The machine's first NIC: in no model, cabled to a network where nothing
/// answers DHCP.
const DEAD_MAC: &str = "52:54:00:00:0f:01";

struct Lab {
    ns: String,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ipxe_in_qemu_runs_the_chain_and_host_scripts() {
    let ns = format!("vqi-{}", std::process::id());
    let tap = format!("vqt{}", std::process::id() % 100_000);
    let dead_tap = format!("vqd{}", std::process::id() % 100_000);
    sh(&["ip", "netns", "add", &ns]);
    let mut lab = Lab {
        ns: ns.clone(),
        children: Vec::new(),
    };
    let ip = |args: &[&str]| {
        let mut v = vec!["ip", "-n", ns.as_str()];
        v.extend_from_slice(args);
        sh(&v);
    };
    ip(&["link", "set", "lo", "up"]);
    ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
    ip(&["addr", "add", "10.99.0.2/24", "dev", &tap]);
    ip(&["link", "set", &tap, "up"]);
    ip(&["tuntap", "add", "dev", &dead_tap, "mode", "tap"]);
    ip(&["link", "set", &dead_tap, "up"]);

    // The stage's kernel and initrd: placeholders (this test stops once
    // iPXE fetches them; booting a real kernel is the lab issue's).
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("alpine-3.20")).unwrap();
    for f in ["vmlinuz-lts", "initramfs-lts"] {
        std::fs::write(files.path().join("alpine-3.20").join(f), vec![0u8; 4096]).unwrap();
    }

    let mut agent = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(testkit("testkit-ipxe-agent"))
        .env(
            "VAQUERO_IPXE_TEST_AGENT",
            format!("{tap}|{}", files.path().display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = agent.stdout.take().unwrap();
    lab.children.push(agent);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let wait_for = |seen: &mut Vec<String>, what: &str, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(what);
                    seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no `{what}` within {secs} s; saw:\n{}", seen.join("\n"));
    };
    wait_for(&mut seen, "READY", 60);

    let qemu = Command::new("ip")
        .args(["netns", "exec", &ns, "qemu-system-x86_64"])
        .args(["-machine", "pc", "-accel", "tcg", "-m", "128"])
        .args(["-display", "none", "-serial", "null", "-monitor", "none"])
        .arg("-no-reboot")
        // Two NICs, both with iPXE ROMs: the BIOS boots the first (DHCP
        // times out, nothing answers there), then the second, whose DHCP
        // answer leads to boot.ipxe. iPXE numbers them net0 and net1 either
        // way: only `${netX/mac}` names the second.
        .arg("-netdev")
        .arg(format!(
            "tap,id=n0,ifname={dead_tap},script=no,downscript=no"
        ))
        .arg("-device")
        .arg(format!("e1000,netdev=n0,mac={DEAD_MAC},bootindex=1"))
        .arg("-netdev")
        .arg(format!("tap,id=n1,ifname={tap},script=no,downscript=no"))
        .arg("-device")
        .arg(format!("e1000,netdev=n1,mac={MAC},bootindex=2"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("qemu-system-x86_64: {e} (scripts/setup installs it)"));
    lab.children.push(qemu);

    // DHCP for iPXE → boot.ipxe → the host's script → the stage's kernel.
    wait_for(&mut seen, "HTTP Chain 200", 240);
    wait_for(&mut seen, "HTTP Script 200 host=k8s-01", 120);
    wait_for(&mut seen, "alpine-3.20/vmlinuz-lts", 120);

    let text = seen.join("\n");
    assert!(
        text.contains(&format!("DHCP {MAC} Some(Request) offered=Some((10.99.0.11, Some(Http(\"http://10.99.0.2:8080/boot.ipxe\"))))")),
        "iPXE was offered boot.ipxe over DHCP:\n{text}"
    );
    // The first NIC was tried first: its DHCP went out, unanswered.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "cat"])
        .arg(format!("/sys/class/net/{dead_tap}/statistics/rx_packets"))
        .output()
        .unwrap();
    let tried: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(tried > 0, "the first NIC sent nothing:\n{text}");
    // The MAC iPXE reported is the booting NIC's — the second NIC's, not
    // net0's — hyphenated (${netX/mac:hexhyp}).
    assert!(
        text.contains("burnin (stage 0) for 52-54-00-00-01-01 (i386 pcbios)")
            || text.contains("burnin (stage 0) for 52-54-00-00-01-01 (x86_64 pcbios)"),
        "the script request carried the booting NIC's MAC:\n{text}"
    );
}
