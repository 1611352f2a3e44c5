//! `decide`, the one decision the boot service (fast path and router) and
//! `vaquero preview` share, on `examples/lab`: who asks, from where, and
//! what the boot state says.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use vaquero_ipxe::{Current, Decision, Identity, address_refused, decide, host_of_ip};
use vaquero_model::{SiteModel, Sot};

fn lab() -> SiteModel {
    let sot =
        Sot::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab")).unwrap();
    SiteModel::compile(&sot, "lab").unwrap()
}

const STORAGE_01: &str = "mac=52-54-00-00-01-21";
const STORAGE_01_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 21));
const STORAGE_02_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 22));

fn stage0(m: &SiteModel, host: &str) -> Current {
    let h = m.by_name(host).unwrap();
    Current::Stage {
        stage: 0,
        boot: m.stages(h.host)[0].to_owned(),
        attempt: 7,
    }
}

fn local_why(d: Decision<'_>) -> (Option<String>, String) {
    match d {
        Decision::LocalDisk { host, why, stale } => {
            assert_eq!(stale, why.contains("is not in its workflow"), "{why}");
            (host.map(|h| h.host.name.clone()), why)
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn a_host_in_a_stage_gets_that_stage_found_by_mac_or_by_uuid() {
    let m = lab();
    let id = Identity::parse(Some(STORAGE_01));
    match decide(&m, &id, Some(STORAGE_01_IP), true, |n| stage0(&m, n)) {
        Decision::Script {
            host,
            stage,
            boot,
            attempt,
        } => {
            assert_eq!(host.host.name, "storage-01");
            assert_eq!((stage, attempt), (0, 7));
            assert_eq!(boot, m.stages(host.host)[0]);
        }
        d => panic!("{d:?}"),
    }
    // By SMBIOS UUID when the MAC is unknown (or absent).
    let with_uuid = m.hosts().iter().find(|h| h.uuid.is_some()).unwrap();
    let q = format!(
        "mac=00-00-5e-00-53-01&uuid={}",
        with_uuid.uuid.as_ref().unwrap()
    );
    let d = decide(&m, &Identity::parse(Some(&q)), None, false, |n| {
        stage0(&m, n)
    });
    assert!(
        matches!(&d, Decision::Script { host, .. } if host.host.name == with_uuid.name),
        "{d:?}"
    );
}

#[test]
fn unknown_machines_bmcs_and_never_provisioned_hosts_boot_their_disk() {
    let m = lab();
    let never = |_: &str| -> Current { panic!("the boot state is not asked") };
    let (host, why) = local_why(decide(
        &m,
        &Identity::parse(Some("mac=00-00-5e-00-53-01")),
        None,
        true,
        never,
    ));
    assert_eq!(host, None);
    assert_eq!(why, "00-00-5e-00-53-01 is not in the model");
    let (_, why) = local_why(decide(&m, &Identity::parse(None), None, true, never));
    assert_eq!(why, "an unidentified machine is not in the model");
    // storage-01's BMC NIC, asking from the BMC's own address.
    let bmc = Identity::parse(Some("mac=52-54-00-00-02-21"));
    let bmc_ip = IpAddr::V4(Ipv4Addr::new(10, 99, 1, 21));
    let (host, why) = local_why(decide(&m, &bmc, Some(bmc_ip), true, never));
    assert_eq!(host.as_deref(), Some("storage-01"));
    assert!(why.contains("is a BMC interface of storage-01"), "{why}");
    let (host, why) = local_why(decide(
        &m,
        &Identity::parse(Some("mac=52-54-00-00-01-22")),
        Some(STORAGE_02_IP),
        true,
        never,
    ));
    assert_eq!(host.as_deref(), Some("storage-02"));
    assert_eq!(why, "storage-02 is never provisioned");
}

#[test]
fn the_boot_state_decides_and_a_stage_outside_the_workflow_is_not_booted() {
    let m = lab();
    let id = Identity::parse(Some(STORAGE_01));
    let (_, why) = local_why(decide(&m, &id, Some(STORAGE_01_IP), true, |_| {
        Current::LocalDisk("workflow finished".into())
    }));
    assert_eq!(why, "storage-01: workflow finished");
    let (_, why) = local_why(decide(&m, &id, Some(STORAGE_01_IP), true, |_| {
        Current::Stage {
            stage: 0,
            boot: "no-such-boot".into(),
            attempt: 1,
        }
    }));
    assert_eq!(
        why,
        "storage-01: stage 0 (no-such-boot) is not in its workflow"
    );
}

#[test]
fn with_the_address_check_only_the_host_s_own_address_is_answered() {
    let m = lab();
    let id = Identity::parse(Some(STORAGE_01));
    for from in [Some(STORAGE_02_IP), None] {
        let d = decide(&m, &id, from, true, |n| stage0(&m, n));
        assert!(
            matches!(&d, Decision::Refused { host } if host.host.name == "storage-01"),
            "{from:?}: {d:?}"
        );
    }
    // An IPv4-mapped IPv6 address is the IPv4 address.
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 99, 0, 21).to_ipv6_mapped());
    assert_eq!(
        host_of_ip(&m, Some(mapped)).map(|h| h.host.name.clone()),
        Some("storage-01".into())
    );
    let d = decide(&m, &id, Some(mapped), true, |n| stage0(&m, n));
    assert!(matches!(d, Decision::Script { .. }), "{d:?}");
    // Without the check, anyone is answered.
    let d = decide(&m, &id, Some(STORAGE_02_IP), false, |n| stage0(&m, n));
    assert!(matches!(d, Decision::Script { .. }), "{d:?}");
    let h = m.by_name("storage-01").unwrap();
    assert!(address_refused(&m, h, Some(STORAGE_02_IP), true));
    assert!(!address_refused(&m, h, Some(STORAGE_01_IP), true));
    assert!(!address_refused(&m, h, Some(STORAGE_02_IP), false));
}
