//! The IPMI driver on a lossy BMC network: `ipmi_sim` in a network
//! namespace of the test's own, where nftables drops every 20th (5 %) or
//! every 5th (20 %) datagram each way (`numgen inc`, so every run loses
//! the same packets); and on loopback behind a forwarder that delays every
//! answer past the driver's retransmission time, so the BMC answers most
//! requests twice.
//!
//! The driver runs in this process: its runtime's threads are started from
//! a thread that has entered the namespace. Needs root, `ip` and `nft`
//! (scripts/setup installs nftables).
#![allow(clippy::unwrap_used)]

use support::sh;
use vaquero_test_support as common;
use vaquero_test_support as support;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::ipmi::{PASSWORD, Sim, USER};
use vaquero_lom::{
    BootDevice, BootOverride, IpmiConfig, IpmiDriver, Lom, LomConfig, PowerAction, PowerDriver,
};

/// A network namespace with only loopback; deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let ns = Netns(format!("vql-{}-{tag}", std::process::id()));
        sh(&["ip", "netns", "add", &ns.0], None);
        sh(&["ip", "-n", &ns.0, "link", "set", "lo", "up"], None);
        ns
    }

    /// Drop every `n`th datagram to port 623 and every `n`th from it.
    fn drop_every(&self, n: u32) {
        let rules = format!(
            "table inet loss {{\n\
             chain in {{ type filter hook input priority 0; udp dport 623 numgen inc mod {n} == 0 drop; }}\n\
             chain out {{ type filter hook output priority 0; udp sport 623 numgen inc mod {n} == 0 drop; }}\n\
             }}\n"
        );
        sh(
            &["ip", "netns", "exec", &self.0, "nft", "-f", "-"],
            Some(&rules),
        );
    }

    /// Run `f` on a runtime whose threads all live in this namespace.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = T> + Send>> + Send + 'static,
    ) -> T {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The sequence: status, PXE, on, cycle, off, ten times, through
/// the wrapper as the engine uses it. Returns the operations that failed.
async fn fifty_operations(config: IpmiConfig) -> Vec<String> {
    let lom = Lom::new({
        let mut c = LomConfig::default();
        c.backoff = Duration::from_millis(200);
        c
    });
    let bmc = lom.manage(Arc::new(IpmiDriver::new(config)));
    let mut failed = Vec::new();
    for round in 0..10 {
        let results = [
            ("status", bmc.power_state().await.map(drop)),
            (
                "pxe",
                bmc.set_boot_device(BootOverride::once(BootDevice::Pxe))
                    .await,
            ),
            ("on", bmc.power(PowerAction::On).await),
            ("cycle", bmc.power(PowerAction::Cycle).await),
            ("off", bmc.power(PowerAction::Off).await),
        ];
        for (op, r) in results {
            if let Err(e) = r {
                failed.push(format!("round {round} {op}: {e}"));
            }
        }
    }
    failed
}

/// No Chassis Control was applied twice: the BMC's `set power` calls
/// alternate (the driver never powers on a machine that is on, nor off
/// one that is off, so a repeat can only be a duplicate).
fn assert_no_power_action_twice(sim: &Sim) {
    let calls = sim.read("calls");
    let sets: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("set power"))
        .collect();
    for pair in sets.windows(2) {
        assert_ne!(pair[0], pair[1], "a power action applied twice: {sets:?}");
    }
    assert!(sets.len() >= 20, "too few power actions: {sets:?}");
}

/// A quick schedule for a test: copies after 0.1, 0.2, 0.3 s more.
fn lossy_config(port: u16) -> IpmiConfig {
    let mut c = IpmiConfig::new("127.0.0.1", USER, PASSWORD);
    c.port = port;
    c.retransmit = Duration::from_millis(100);
    c.tries = 4;
    c
}

#[test]
fn every_operation_succeeds_at_5_percent_loss() {
    let ns = Netns::new("5");
    let sim = Sim::start_in(&ns.0);
    ns.drop_every(20);
    let failed = ns.run(|| Box::pin(fifty_operations(lossy_config(623))));
    assert!(failed.is_empty(), "failed at 5 % loss: {failed:#?}");
    assert_no_power_action_twice(&sim);
    // Sessions left open are not checked: where an Open Session answer is
    // lost, the BMC answers the copy with a second session, which only it
    // can time out (ipmitool leaves the same).
}

#[test]
fn nearly_every_operation_succeeds_at_20_percent_loss() {
    let ns = Netns::new("20");
    let sim = Sim::start_in(&ns.0);
    ns.drop_every(5);
    let failed = ns.run(|| Box::pin(fifty_operations(lossy_config(623))));
    assert!(failed.len() <= 2, "failed at 20 % loss: {failed:#?}");
    assert_no_power_action_twice(&sim);
}

/// Forwards datagrams between a client and `to`, holding each answer back
/// for `delay`. Stops when `stop` is set.
fn delaying_forwarder(to: SocketAddr, delay: Duration, stop: Arc<AtomicBool>) -> u16 {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(to).unwrap();
    let port = front.local_addr().unwrap().port();
    front
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    back.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let (front2, client2, stop2) = (front.try_clone().unwrap(), client.clone(), stop.clone());
    let back2 = back.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = front2.recv_from(&mut buf) {
                *client2.lock().unwrap() = Some(from);
                let _ = back2.send(&buf[..n]);
            }
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = back.recv(&mut buf) {
                let packet = buf[..n].to_vec();
                let (front, client) = (front.try_clone().unwrap(), *client.lock().unwrap());
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    if let Some(c) = client {
                        let _ = front.send_to(&packet, c);
                    }
                });
            }
        }
    });
    port
}

/// Every answer comes 250 ms late while copies go out every 100–300 ms:
/// the BMC answers most requests two or three times. Exactly one answer
/// per request reaches the session, late answers to earlier requests are
/// dropped, and Chassis Control is still applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_repeated_answers_are_matched_to_their_request() {
    let sim = Sim::start();
    let stop = Arc::new(AtomicBool::new(false));
    let bmc: SocketAddr = format!("127.0.0.1:{}", sim.port).parse().unwrap();
    let port = delaying_forwarder(bmc, Duration::from_millis(250), stop.clone());
    let d = IpmiDriver::new({
        let mut c = IpmiConfig::new("127.0.0.1", USER, PASSWORD);
        c.port = port;
        c.retransmit = Duration::from_millis(100);
        c.tries = 4;
        c
    });
    for _ in 0..3 {
        assert_eq!(d.power_state().await.unwrap(), vaquero_lom::PowerState::Off);
        d.set_boot_device(BootOverride::once(BootDevice::Pxe))
            .await
            .unwrap();
        d.power(PowerAction::On).await.unwrap();
        d.power(PowerAction::Cycle).await.unwrap();
        d.power(PowerAction::Off).await.unwrap();
    }
    let inv = d.inventory().await.unwrap();
    assert!(inv.uuid.is_some(), "{inv:?}");
    stop.store(true, Ordering::Relaxed);
    let calls = sim.read("calls");
    let sets: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("set power"))
        .collect();
    assert_eq!(
        sets,
        ["set power 1", "set power 0", "set power 1", "set power 0"].repeat(3),
        "each power action applied exactly once"
    );
    // Not checked here: sessions left open. The BMC opens a session for
    // each copy of Open Session it answers, and only one of them is the
    // driver's (which it closes); the BMC times the others out.
}
