//! The IPMI driver against OpenIPMI's `ipmi_sim` on 127.0.0.1, with
//! `ipmitool -I lanplus` as the reference client.
//!
//! The simulator only accepts Chassis Control and Set System Boot Options
//! when its LAN config names a `chassis_control` program; ours keeps the
//! power state and boot device in files of the test's directory and logs
//! every call, so the test sees what the BMC was asked to do.
#![allow(clippy::unwrap_used)]

use vaquero_test_support as common;

use common::ipmi::{PASSWORD, Sim, USER};

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use vaquero_lom::{
    BootDevice, BootMode, BootOverride, IpmiConfig, IpmiDriver, Lom, LomConfig, LomError,
    PowerAction, PowerDriver, PowerState,
};

fn power_from_ipmitool(sim: &Sim) -> String {
    sim.ipmitool(&["chassis", "power", "status"])
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_and_boot_device_against_ipmi_sim() {
    let sim = Sim::start();
    let d = sim.driver();

    assert_eq!(d.power_state().await.unwrap(), PowerState::Off);

    d.power(PowerAction::On).await.unwrap();
    assert_eq!(d.power_state().await.unwrap(), PowerState::On);
    assert_eq!(power_from_ipmitool(&sim), "Chassis Power is on");
    assert_eq!(sim.read("power"), "1");

    d.power(PowerAction::Off).await.unwrap();
    assert_eq!(d.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(power_from_ipmitool(&sim), "Chassis Power is off");

    // Cycle of a machine that is off powers it on.
    d.power(PowerAction::Cycle).await.unwrap();
    assert_eq!(d.power_state().await.unwrap(), PowerState::On);

    // Cycle of a machine that is on: off, then on again.
    let before = sim.read("calls").lines().count();
    d.power(PowerAction::Cycle).await.unwrap();
    // The BMC powers off at once and on again after its cycle interval:
    // watch the state come back (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim
        .read("calls")
        .lines()
        .skip(before)
        .all(|l| l != "set power 1")
    {
        assert!(Instant::now() < deadline, "no power-on after the cycle");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let calls = sim.read("calls");
    let new: Vec<&str> = calls.lines().skip(before).collect();
    let off = new.iter().position(|l| *l == "set power 0");
    let on = new.iter().position(|l| *l == "set power 1");
    assert!(
        matches!((off, on), (Some(a), Some(b)) if a < b),
        "a power cycle is off then on at the chassis: {new:?}"
    );
    assert_eq!(d.power_state().await.unwrap(), PowerState::On);

    d.power(PowerAction::Reset).await.unwrap();
    assert!(
        sim.read("resets").contains("reset"),
        "{}",
        sim.read("calls")
    );

    // Soft off: ipmi_sim hands it to the chassis control program.
    d.power(PowerAction::SoftOff).await.unwrap();
    assert!(
        sim.read("calls").contains("set shutdown 1"),
        "{}",
        sim.read("calls")
    );

    // Next boot from PXE, once, legacy: read back by ipmitool.
    d.set_boot_device(BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Legacy,
    })
    .await
    .unwrap();
    let param = sim.ipmitool(&["chassis", "bootparam", "get", "5"]);
    assert!(
        param.contains("Boot Device Selector : Force PXE"),
        "{param}"
    );
    assert!(param.contains("Options apply to only next boot"), "{param}");
    assert_eq!(sim.read("boot"), "pxe");

    // Persistent UEFI disk. ipmi_sim keeps only the device selector (data
    // byte 2) of parameter 5 and reads byte 1 (valid, persistent, EFI)
    // back as 0, so only the device is read back here; the flag bits are
    // checked by the unit tests of `boot_flags`.
    let disk = BootOverride {
        device: BootDevice::Disk,
        persistent: true,
        mode: BootMode::Uefi,
    };
    d.set_boot_device(disk).await.unwrap();
    let param = sim.ipmitool(&["chassis", "bootparam", "get", "5"]);
    assert!(
        param.contains("Force Boot from default Hard-Drive"),
        "{param}"
    );
    assert!(param.contains("Boot parameter data: 0008"), "{param}");
    // The driver reads the same parameter: not valid, so no override.
    assert_eq!(d.boot_device().await.unwrap(), None);

    // HTTP boot does not exist in IPMI: a typed refusal, nothing sent.
    assert!(matches!(
        d.set_boot_device(BootOverride::once(BootDevice::Http))
            .await,
        Err(LomError::Unsupported(_))
    ));

    let inv = d.inventory().await.unwrap();
    assert!(inv.vendor.is_some() && inv.uuid.is_some(), "{inv:?}");

    // Every session this test opened was closed.
    assert_eq!(sim.other_sessions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_and_privilege_leak_no_session() {
    let sim = Sim::start();
    let wrong = IpmiDriver::new(sim.config("not-the-password"));
    let started = Instant::now();
    match wrong.power_state().await {
        Err(LomError::AuthFailed(_)) => {}
        other => panic!("wrong password must be AuthFailed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    let unknown = IpmiDriver::new({
        let mut c = sim.config(PASSWORD);
        c.username = "nobody".into();
        c
    });
    assert!(matches!(
        unknown.power_state().await,
        Err(LomError::AuthFailed(_))
    ));

    // A user whose channel limit is User cannot be raised to
    // Administrator: refused, and the half-made session is closed.
    let viewer = IpmiDriver::new({
        let mut c = sim.config("viewer-pw");
        c.username = "viewer".into();
        c
    });
    match viewer.power(PowerAction::On).await {
        Err(LomError::AuthFailed(_)) => {}
        other => panic!("a User-level account must be refused, got {other:?}"),
    }
    assert_eq!(sim.read("power"), "", "nothing was powered");
    assert_eq!(sim.other_sessions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_operations_leak_no_session() {
    let sim = Sim::start();
    let lom = Lom::new(LomConfig::default());
    let d = std::sync::Arc::new(sim.driver());
    // Concurrent callers on one BMC are serialized by the wrapper.
    let managed = std::sync::Arc::new(lom.manage(d));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let m = managed.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                m.power(PowerAction::On).await.map(drop)
            } else {
                m.power_state().await.map(drop)
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(sim.other_sessions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_unreachable_and_a_silent_bmc_times_out() {
    // Nothing listens: the kernel answers ICMP port unreachable.
    let closed = IpmiDriver::new(closed_config(common::free_udp_port()));
    let started = Instant::now();
    match closed.power_state().await {
        Err(LomError::Unreachable(_)) => {}
        other => panic!("a closed port must be Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // A socket that reads and never answers: Timeout within the bound.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let stalled = IpmiDriver::new({
        let mut c = closed_config(port);
        c.port = port;
        c
    });
    let started = Instant::now();
    match stalled.power_state().await {
        Err(LomError::Timeout(_)) => {}
        other => panic!("a silent BMC must be Timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // Through the wrapper: retried (transient), still typed, still bounded.
    let lom = Lom::new({
        let mut c = LomConfig::default();
        c.attempts = 2;
        c.backoff = Duration::from_millis(50);
        c.timeout = Duration::from_secs(3);
        c
    });
    let managed = lom.manage(std::sync::Arc::new(stalled));
    assert!(matches!(
        managed.power_state().await,
        Err(LomError::Timeout(_))
    ));
    drop(silent);
}

/// Copies after 0.5 s and 1 s more: a silent BMC is given up on after
/// 1.5 s.
fn closed_config(port: u16) -> IpmiConfig {
    let mut c = IpmiConfig::new("127.0.0.1", USER, PASSWORD);
    c.port = port;
    c.retransmit = Duration::from_millis(500);
    c.tries = 2;
    c
}
