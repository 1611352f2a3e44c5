//! OpenIPMI's `ipmi_sim` for tests, with `ipmitool -I lanplus` as the
//! reference client.
//!
//! The simulator only accepts Chassis Control and Set System Boot Options
//! when its LAN config names a `chassis_control` program; ours keeps the
//! power state and boot device in files of the test's directory and logs
//! every call (`calls`), so a test sees what the BMC was asked to do.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vaquero_lom::{IpmiConfig, IpmiDriver};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "s3cret-pw";

const CHASSIS_CONTROL: &str = r#"#!/bin/sh
# ipmi_sim chassis control: <device> get|set [parm [val]]...
dir=$(dirname "$0")
shift
op=$1
shift
echo "$op $*" >> "$dir/calls"
case $op in
get)
    for p in "$@"; do
        case $p in
        power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)" ;;
        boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
        *) echo "unknown parameter $p"; exit 1 ;;
        esac
    done ;;
set)
    while [ $# -ge 2 ]; do
        case $1 in
        power) echo "$2" > "$dir/power" ;;
        reset) echo "reset" >> "$dir/resets" ;;
        boot) echo "$2" > "$dir/boot" ;;
        shutdown) echo 0 > "$dir/power" ;;
        *) echo "unknown parameter $1"; exit 1 ;;
        esac
        shift 2
    done ;;
esac
"#;

/// An `ipmi_sim` process; killed by PID on drop.
pub struct Sim {
    _peer: super::Peer,
    dir: tempfile::TempDir,
    /// Its port (on 127.0.0.1, in `netns` where it has one).
    pub port: u16,
    netns: Option<String>,
}

impl Sim {
    /// On a free port of 127.0.0.1.
    pub fn start() -> Sim {
        Sim::start_on(None, super::free_udp_port())
    }

    /// On 127.0.0.1:623 inside the network namespace `ns`.
    pub fn start_in(ns: &str) -> Sim {
        Sim::start_on(Some(ns.to_owned()), 623)
    }

    fn start_on(netns: Option<String>, port: u16) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("chassis-control");
        super::write_exec(&control, CHASSIS_CONTROL);
        let lan = format!(
            r#"name "vaquero-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{control} 0x20"
  user 1 true  ""      "unused" user  10 none md2 md5 straight
  user 2 true  "{USER}" "{PASSWORD}" admin 10 none md2 md5 straight
  user 3 true  "viewer" "viewer-pw" user 10 none md2 md5 straight
"#,
            control = control.display()
        );
        std::fs::write(dir.path().join("lan.conf"), lan).unwrap();
        std::fs::write(
            dir.path().join("sim.emu"),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             mc_enable 0x20\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let mut command = match &netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "ipmi_sim"]);
                c
            }
            None => Command::new("ipmi_sim"),
        };
        let child = command
            .current_dir(dir.path())
            .args(["-c", "lan.conf", "-f", "sim.emu", "-s", "state", "-n"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ipmi_sim (Debian package openipmi) must be installed: run scripts/setup");
        let sim = Sim {
            _peer: super::Peer(child),
            dir,
            port,
            netns,
        };
        // Ready when ipmitool can open a session (bounded).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = sim.ipmitool(&["chassis", "power", "status"]);
            if out.contains("Chassis Power is") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ipmi_sim did not answer within 15 s: {out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        sim
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// ipmitool exits 0 even when the BMC answered an error: callers check
    /// its text (stdout; stderr has its retry chatter).
    pub fn ipmitool(&self, args: &[&str]) -> String {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "ipmitool"]);
                c
            }
            None => Command::new("ipmitool"),
        };
        let out = command
            .args(["-I", "lanplus", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", USER, "-P", PASSWORD, "-R", "1", "-N", "2"])
            .args(args)
            .output()
            .expect("ipmitool must be installed: run scripts/setup");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Active sessions as the BMC counts them, minus ipmitool's own.
    pub fn other_sessions(&self) -> usize {
        let out = self.ipmitool(&["session", "info", "active"]);
        let line = out
            .lines()
            .find(|l| l.starts_with("active sessions"))
            .unwrap_or_else(|| panic!("no session count in {out}"));
        let n: usize = line.rsplit(':').next().unwrap().trim().parse().unwrap();
        n - 1
    }

    pub fn config(&self, password: &str) -> IpmiConfig {
        let mut c = IpmiConfig::new("127.0.0.1", USER, password);
        c.port = self.port;
        c
    }

    pub fn driver(&self) -> IpmiDriver {
        IpmiDriver::new(self.config(PASSWORD))
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}
