//! The exec driver with a real program, the SSH driver against a real
//! OpenSSH `sshd` on 127.0.0.1 (its own config, host key and authorized
//! keys in the test's directory), and drivers made from `examples/lab`.
#![allow(clippy::unwrap_used)]

use vaquero_test_support as common;

use common::sshd::Sshd;

use std::net::TcpListener;
use std::path::Path;

use std::time::{Duration, Instant};

use serde_json::json;
use vaquero_lom::{
    BootDevice, BootMode, BootOverride, DriverOptions, ExecConfig, ExecDriver, LomError,
    PowerAction, PowerDriver, PowerState, SshDriver, driver_for,
};

const PDU: &str = r#"#!/bin/sh
# A PDU: state in files next to this script; every call logged.
dir=$(dirname "$0")
echo "$* | $VAQUERO_ACTION $VAQUERO_HOST ${VAQUERO_BMC_PASSWORD:-none} ${VAQUERO_BOOT_DEVICE:-}" >> "$dir/log"
case "$VAQUERO_ACTION" in
status) cat "$dir/state" 2>/dev/null || echo off ;;
on|cycle|reset) echo on > "$dir/state" ;;
off|soft) echo off > "$dir/state" ;;
boot) [ "$VAQUERO_BOOT_DEVICE" = bios ] && { echo "no BIOS setup on a PDU"; exit 64; }
      echo "$VAQUERO_BOOT_DEVICE" > "$dir/boot" ;;
inventory) echo vendor=Acme; echo model=PDU-9; echo uuid=4C4C4544-0042-3510-8052-B4C04F384D01 ;;
esac
"#;

fn exec_config(program: &Path) -> ExecConfig {
    let mut c = ExecConfig::new(
        vec![
            program.display().to_string(),
            "--outlet".into(),
            "{{ host.name }}".into(),
        ],
        "storage-01",
        json!({"name": "storage-01"}),
    );
    c.address = Some("10.99.1.21".into());
    c.password = Some("pdu-secret".into());
    c.timeout = Duration::from_secs(10);
    c
}

#[tokio::test]
async fn exec_driver_runs_the_operators_program() {
    let dir = tempfile::tempdir().unwrap();
    let pdu = dir.path().join("pdu");
    common::write_exec(&pdu, PDU);
    let d = ExecDriver::new(exec_config(&pdu)).unwrap();

    assert_eq!(d.power_state().await.unwrap(), PowerState::Off);
    d.power(PowerAction::On).await.unwrap();
    assert_eq!(d.power_state().await.unwrap(), PowerState::On);
    d.power(PowerAction::Off).await.unwrap();
    assert_eq!(d.power_state().await.unwrap(), PowerState::Off);
    d.set_boot_device(BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Uefi,
    })
    .await
    .unwrap();
    assert!(matches!(
        d.set_boot_device(BootOverride::once(BootDevice::BiosSetup))
            .await,
        Err(LomError::Unsupported(m)) if m.contains("no BIOS setup")
    ));
    let inv = d.inventory().await.unwrap();
    assert_eq!(inv.vendor.as_deref(), Some("Acme"));
    assert_eq!(
        inv.uuid.as_deref(),
        Some("4c4c4544-0042-3510-8052-b4c04f384d01")
    );

    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    // argv: the template rendered, the operation appended; the password
    // only in the environment.
    assert_eq!(
        lines[0],
        "--outlet storage-01 status | status storage-01 pdu-secret "
    );
    assert_eq!(
        lines[1],
        "--outlet storage-01 on | on storage-01 pdu-secret "
    );
    assert!(
        lines.contains(&"--outlet storage-01 boot pxe once uefi | boot storage-01 pdu-secret pxe"),
        "{log}"
    );
    assert!(
        !log.split('|')
            .any(|argv| argv.contains("pdu-secret") && argv.starts_with("--"))
    );
}

#[tokio::test]
async fn exec_driver_failures_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    // Exit codes by contract.
    for (code, label) in [
        (69, "unreachable"),
        (75, "busy"),
        (77, "auth"),
        (3, "command"),
    ] {
        let p = dir.path().join(format!("exit{code}"));
        common::write_exec(&p, &format!("#!/bin/sh\necho failing >&2\nexit {code}\n"));
        let d = ExecDriver::new(exec_config(&p)).unwrap();
        let e = d.power(PowerAction::On).await.unwrap_err();
        assert_eq!(e.label(), label, "{e}");
    }
    let p = dir.path().join("exit3");
    let e = ExecDriver::new(exec_config(&p))
        .unwrap()
        .power(PowerAction::On)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, LomError::CommandFailed { status, output } if status == "exit code 3" && output == "failing"),
        "{e:?}"
    );

    // A program that hangs is killed at the timeout.
    let slow = dir.path().join("slow");
    common::write_exec(&slow, "#!/bin/sh\nexec sleep 30\n");
    let d = ExecDriver::new({
        let mut c = exec_config(&slow);
        c.timeout = Duration::from_millis(500);
        c
    })
    .unwrap();
    let started = Instant::now();
    assert!(matches!(
        d.power(PowerAction::On).await,
        Err(LomError::Timeout(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(5));

    // No such program; a template naming something that does not exist.
    let d = ExecDriver::new(exec_config(&dir.path().join("missing"))).unwrap();
    assert!(matches!(
        d.power(PowerAction::On).await,
        Err(LomError::Config(_))
    ));
    let mut bad = exec_config(&slow);
    bad.command.push("{{ host.outlet }}".into());
    assert!(matches!(ExecDriver::new(bad), Err(LomError::Config(_))));
}

#[tokio::test]
async fn ssh_driver_against_openssh() {
    let sshd = Sshd::start();
    let d = SshDriver::new(sshd.config("client_key"));
    assert_eq!(d.power_state().await.unwrap(), PowerState::On);
    d.power(PowerAction::Cycle).await.unwrap();
    d.power(PowerAction::SoftOff).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(sshd.path("reboots")).unwrap(),
        "reboot\n"
    );
    assert_eq!(
        std::fs::read_to_string(sshd.path("poweroffs")).unwrap(),
        "poweroff\n"
    );
    // A real reboot ends the session under the client: still success.
    let mut c = sshd.config("client_key");
    c.reboot_command = format!(
        "echo reboot >> {}; kill -9 $PPID",
        sshd.path("reboots").display()
    );
    SshDriver::new(c).power(PowerAction::Reset).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(sshd.path("reboots")).unwrap(),
        "reboot\nreboot\n"
    );
    // A failing reboot command is a failure, with its output.
    let mut c = sshd.config("client_key");
    c.reboot_command = "echo 'sudo: a password is required' >&2; exit 1".into();
    match SshDriver::new(c).power(PowerAction::Cycle).await {
        Err(LomError::CommandFailed { output, .. }) => {
            assert!(output.contains("password is required"), "{output}")
        }
        other => panic!("{other:?}"),
    }
    // What an OS cannot do.
    assert!(matches!(
        d.power(PowerAction::On).await,
        Err(LomError::Unsupported(_))
    ));
    assert!(matches!(
        d.set_boot_device(BootOverride::once(BootDevice::Pxe)).await,
        Err(LomError::Unsupported(_))
    ));
}

#[tokio::test]
async fn ssh_failures_are_typed_and_bounded() {
    let sshd = Sshd::start();
    // A key the server does not know.
    match SshDriver::new(sshd.config("other_key")).power_state().await {
        Err(LomError::AuthFailed(_)) => {}
        other => panic!("an unknown key must be AuthFailed, got {other:?}"),
    }
    // Nothing listening.
    let mut c = sshd.config("client_key");
    c.port = common::free_tcp_port();
    assert!(matches!(
        SshDriver::new(c).power_state().await,
        Err(LomError::Unreachable(_))
    ));
    // Accepts, never speaks.
    let stall = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = sshd.config("client_key");
    c.port = stall.local_addr().unwrap().port();
    c.timeout = Duration::from_secs(2);
    let started = Instant::now();
    match SshDriver::new(c).power_state().await {
        Err(LomError::Timeout(_)) => {}
        other => panic!("a silent server must be Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(stall);
    // A missing key file is a configuration error, nothing run.
    let mut c = sshd.config("client_key");
    c.key_file = sshd.path("no-such-key");
    assert!(matches!(
        SshDriver::new(c).power_state().await,
        Err(LomError::Config(_))
    ));
}

#[test]
fn drivers_for_the_lab_hosts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
    let sot = vaquero_model::Sot::load_dir(&root).unwrap();
    let models = sot.compile().unwrap();
    let lab = &models["lab"];
    let host = |n: &str| lab.hosts().iter().find(|h| h.name == n).unwrap().clone();
    let opts = DriverOptions::default();

    // The IPMI password is in $LAB_IPMI_PASSWORD: unset is a clear error
    // (the CLI test covers it set).
    let k8s01 = host("k8s-01");
    let e = driver_for(&k8s01, &opts).unwrap_err();
    assert!(
        matches!(&e, LomError::Config(m) if m.contains("LAB_IPMI_PASSWORD")),
        "{e}"
    );
    let e = driver_for(&host("k8s-02"), &opts).unwrap_err();
    assert!(
        matches!(&e, LomError::Config(m) if m.contains("redfish-k8s-02")),
        "{e}"
    );
    let ssh = driver_for(&host("k8s-03"), &opts).unwrap();
    assert_eq!((ssh.kind(), ssh.target()), ("ssh", "10.99.1.13:22".into()));
    let exec = driver_for(&host("storage-01"), &opts).unwrap();
    assert_eq!(exec.kind(), "exec");
    assert!(driver_for(&host("bastion-01"), &opts).is_err());
}
