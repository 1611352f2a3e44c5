//! `vaquero standalone` provisions real QEMU VMs (TCG) end to end, in the
//! lab of `scripts/lab`: a private network namespace with a bridge, two
//! BIOS VMs (SeaBIOS, iPXE ROM on e1000) behind `ipmi_sim`, one UEFI VM
//! (OVMF's own PXE → `ipxe.efi` over TFTP, virtio) behind
//! `sushy-emulator`; each BMC really starts and stops its VM. The SoT is
//! `examples/demo` in a real Git repository: a two-stage workflow under
//! `max_concurrent: 1`.
//!
//! One lab, one test, in order:
//! 1. the first rollout: every VM through both stages, one at a time; the
//!    API (every endpoint, 401s, OpenAPI) and the CLI against it;
//! 2. a VM that is done netboots again and gets exit-to-disk;
//! 3. an invalid commit is refused, its errors show in the API, and the
//!    previous revision keeps serving;
//! 4. a commit that changes all three VMs waits for approval (the plan in
//!    the API), is approved with the CLI, and rolls out one VM at a time;
//!    standalone is killed with SIGKILL mid-rollout and restarted: the
//!    rollout finishes, and no VM is power-cycled twice for one stage.
//!
//! Needs root and the lab's packages (scripts/setup). Nothing leaves the
//! namespace; every process is stopped by its PID and the namespace is
//! deleted, also when the test fails.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const HOSTS: [&str; 3] = ["vm-bios-1", "vm-bios-2", "vm-uefi-1"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn git(dir: &Path, args: &[&str]) {
    run(Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@vaquero.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@vaquero.invalid")
        .env("GIT_CONFIG_GLOBAL", "/dev/null"));
}

struct Lab {
    dir: tempfile::TempDir,
    ns: String,
    password: String,
    standalone: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill();
        let _ = Command::new(root().join("scripts/lab"))
            .args(["down"])
            .arg(self.dir.path())
            .status();
        if std::thread::panicking() {
            // What happened, for the failure report.
            let log = std::fs::read_to_string(self.path("standalone.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- standalone.log (last lines, newest first):");
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

impl Lab {
    fn up() -> Lab {
        run(Command::new(root().join("scripts/guest")).arg(root().join("target/guest")));
        let dir = tempfile::tempdir().unwrap();
        run(Command::new(root().join("scripts/lab"))
            .arg("up")
            .arg(dir.path()));
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        let var = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap()
                .to_owned()
        };
        let lab = Lab {
            ns: var("NS"),
            password: var("DEMO_BMC_PASSWORD"),
            dir,
            standalone: None,
        };
        // The demo SoT as a Git repository.
        let sot = lab.path("sot");
        copy_dir(&root().join("examples/demo"), &sot);
        let env_yml = sot.join("sites/demo/env.yml");
        let text = std::fs::read_to_string(&env_yml).unwrap().replace(
            "@GUEST@",
            root()
                .join("target/guest")
                .canonicalize()
                .unwrap()
                .to_str()
                .unwrap(),
        );
        std::fs::write(&env_yml, text).unwrap();
        git(&sot, &["init", "-q", "-b", "main"]);
        git(&sot, &["add", "-A"]);
        git(&sot, &["commit", "-qm", "demo"]);
        lab
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("standalone.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_vaquero"))
            .args(["standalone", "--sot"])
            .arg(self.path("sot"))
            .arg("--data")
            .arg(self.path("data"))
            .env("DEMO_BMC_PASSWORD", &self.password)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.standalone = Some(child);
        self.wait("the API answers", Duration::from_secs(60), || {
            self.try_cli(&["status", "--format", "json"]).is_some()
        });
    }

    /// SIGKILL, by PID (`ip netns exec` execs the binary: the PID is
    /// vaquero's).
    fn kill(&mut self) {
        if let Some(mut c) = self.standalone.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn cli_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_vaquero"))
            .args(args)
            .arg("--token-file")
            .arg(self.path("data/admin.token"));
        c
    }

    fn try_cli(&self, args: &[&str]) -> Option<Value> {
        let out = self.cli_cmd(args).output().ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn cli(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&run(&mut self.cli_cmd(args)).stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.cli(&a)).unwrap()
    }

    /// An HTTP request to the API from inside the namespace (curl).
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = run(Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "curl",
                "-s",
                "-w",
                "\n%{http_code}",
            ])
            .args(args));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_owned())
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.path("data/admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn phases(&self) -> Vec<(String, String)> {
        self.try_cli(&["hosts", "--format", "json"])
            .map(|v| {
                v["hosts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        (
                            h["name"].as_str().unwrap().to_owned(),
                            h["phase"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wait(&self, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !f() {
            if let Some(c) = &self.standalone
                && let Ok(out) = Command::new("kill")
                    .arg("-0")
                    .arg(c.id().to_string())
                    .output()
            {
                assert!(
                    out.status.success(),
                    "standalone exited while waiting for {what}"
                );
            }
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn all_done(&self) -> bool {
        let p = self.phases();
        assert!(
            p.iter().all(|(_, ph)| ph != "failed"),
            "a host failed: {p:?}"
        );
        p.len() == HOSTS.len() && p.iter().all(|(_, ph)| ph == "done")
    }

    /// The power log of the lab's BMC hooks: (seconds, VM, on|off).
    fn power_log(&self) -> Vec<(f64, String, String)> {
        std::fs::read_to_string(self.path("power.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut w = l.split_whitespace();
                (
                    w.next().unwrap().parse().unwrap(),
                    w.next().unwrap().to_owned(),
                    w.next().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Each host's boot window in this rollout: from its first power-on
    /// after `from` (a power log index) to its last checkpoint.
    fn one_at_a_time(&self, from: usize) {
        let log = self.power_log();
        let mut windows = Vec::new();
        for h in HOSTS {
            let first_on = log[from..]
                .iter()
                .find(|(_, n, op)| n == h && op == "on")
                .map(|(t, _, _)| *t)
                .unwrap_or_else(|| panic!("{h} was never powered on: {log:?}"));
            let v = self.json(&["host", h]);
            let last = v["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|a| a["events"].as_array().unwrap().iter())
                .filter(|e| e["kind"] == "checkpoint" && e["ok"] == true)
                .filter_map(|e| e["at"].as_str())
                .filter_map(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_millisecond() as f64 / 1000.0)
                .fold(f64::MIN, f64::max);
            windows.push((first_on, last, h));
        }
        windows.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in windows.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "max_concurrent 1: {} ran until {} but {} was powered on at {}",
                w[0].2,
                w[0].1,
                w[1].2,
                w[1].0
            );
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn standalone_provisions_qemu_vms_end_to_end() {
    let mut lab = Lab::up();
    lab.start();

    // 1. The first rollout: new hosts, force_provision, auto_apply.
    lab.wait("the first rollout", Duration::from_secs(600), || {
        lab.all_done()
    });
    lab.one_at_a_time(0);
    let log = lab.power_log();
    for h in HOSTS {
        let ons = log.iter().filter(|(_, n, op)| n == h && op == "on").count();
        assert_eq!(ons, 2, "{h}: one power-on per stage: {log:?}");
    }
    // Each stage: a boot of its own, DHCP → script → files → config →
    // checkpoint; the UEFI VM fetched ipxe.efi over TFTP first.
    let uefi = lab.json(&["host", "vm-uefi-1"]);
    let attempts = uefi["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{uefi}");
    for (i, a) in attempts.iter().enumerate() {
        let kinds: Vec<&str> = a["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ok"] == true)
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        for k in [
            "dhcp",
            "tftp",
            "chain",
            "script",
            "file",
            "config",
            "checkpoint",
        ] {
            assert!(kinds.contains(&k), "attempt {i} lacks {k}: {kinds:?}");
        }
        assert_eq!(kinds.last(), Some(&"checkpoint"), "{kinds:?}");
        // What the acting half did for this boot is in its timeline too.
        let actions: Vec<&str> = a["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "action")
            .filter_map(|e| e["detail"].as_str())
            .collect();
        assert!(
            actions.contains(&"set_boot_network: ok") && actions.contains(&"power_cycle: ok"),
            "attempt {i}: {actions:?}"
        );
    }
    let text = lab.cli(&["host", "vm-uefi-1"]);
    assert!(text.contains("checkpoint stage2 body: kernel"), "{text}");
    let hosts = lab.cli(&["hosts"]);
    assert!(hosts.starts_with("HOST"), "{hosts}");
    // Execution records: boot device, power cycle, per stage.
    let ex = lab.json(&["executions", "--host", "vm-bios-1"]);
    let actions: Vec<&str> = ex["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "set_boot_network",
            "power_cycle",
            "set_boot_network",
            "power_cycle"
        ]
    );

    // The API: tokens, every endpoint, the OpenAPI document.
    let api = "http://127.0.0.1:9090";
    assert_eq!(lab.curl(&[&format!("{api}/v1/status")]).0, 401);
    let (code, body) = lab.curl(&[
        "-H",
        "Authorization: Bearer wrong",
        &format!("{api}/v1/hosts"),
    ]);
    assert_eq!(code, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["kind"],
        "unauthorized"
    );
    let auth = format!("Authorization: Bearer {}", lab.token());
    for path in [
        "/v1/status",
        "/v1/hosts",
        "/v1/hosts/vm-bios-2",
        "/v1/plans",
        "/v1/executions",
        "/v1/openapi.json",
    ] {
        let (code, body) = lab.curl(&["-H", &auth, &format!("{api}{path}")]);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let (_, doc) = lab.curl(&["-H", &auth, &format!("{api}/v1/openapi.json")]);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/hosts/{name}"]["get"].is_object());
    assert_eq!(lab.curl(&[&format!("{api}/live")]).0, 200);
    assert_eq!(lab.curl(&[&format!("{api}/ready")]).0, 200);
    let (code, metrics) = lab.curl(&[&format!("{api}/metrics")]);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("engine_hosts{phase=\"done\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    let (code, _) = lab.curl(&["-H", &auth, &format!("{api}/v1/nope")]);
    assert_eq!(code, 404);
    // Pause and resume through the CLI.
    assert!(lab.cli(&["pause"]).contains("paused"));
    assert_eq!(lab.json(&["status"])["paused"], true);
    assert!(lab.cli(&["resume"]).contains("resumed"));

    // 2. A VM that is done netboots again: exit to disk.
    let before = lab.power_log().len();
    run(Command::new("ip")
        .args(["netns", "exec", &lab.ns])
        .arg(root().join("scripts/lab"))
        .arg("vm")
        .arg(lab.dir.path())
        .args(["vm-bios-1", "on"]));
    lab.wait(
        "vm-bios-1's exit-to-disk script",
        Duration::from_secs(120),
        || {
            lab.json(&["host", "vm-bios-1"])["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|a| a["events"].as_array().unwrap().iter())
                .any(|e| {
                    e["kind"] == "script"
                        && e["detail"]
                            .as_str()
                            .unwrap_or("")
                            .contains("workflow finished")
                })
        },
    );
    run(Command::new("ip")
        .args(["netns", "exec", &lab.ns])
        .arg(root().join("scripts/lab"))
        .arg("vm")
        .arg(lab.dir.path())
        .args(["vm-bios-1", "off"]));
    assert_eq!(lab.json(&["host", "vm-bios-1"])["host"]["phase"], "done");

    // 3. An invalid commit is refused; the previous revision keeps serving.
    let sot = lab.path("sot");
    let served = lab.json(&["status"])["revision"].clone();
    edit(
        &sot.join("sites/demo/vms.yml"),
        "workflow: demo",
        "workflow: nope",
    );
    git(&sot, &["commit", "-qam", "broken"]);
    lab.wait("the refusal", Duration::from_secs(30), || {
        !lab.json(&["status"])["refused"].is_null()
    });
    let status = lab.json(&["status"]);
    let errors = status["refused"]["errors"].to_string();
    assert!(errors.contains("unknown workflow `nope`"), "{status}");
    assert_eq!(status["revision"], served);
    assert!(lab.cli(&["status"]).contains("REFUSED"));
    git(&sot, &["revert", "--no-edit", "HEAD"]);

    // 4. A change of all three VMs, approved, with a crash mid-rollout.
    edit(
        &sot.join("sites/demo/env.yml"),
        "auto_apply: true",
        "auto_apply: false",
    );
    edit(
        &sot.join("os/tiny.yml"),
        "  - quiet: \"\"",
        "  - quiet: \"\"\n  - vaquero.release: \"2\"",
    );
    git(&sot, &["commit", "-qam", "release 2"]);
    lab.wait("the plan", Duration::from_secs(30), || {
        lab.json(&["plans"])["plans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["status"] == "pending")
    });
    let plans = lab.cli(&["plans"]);
    assert!(plans.contains("3 to reprovision"), "{plans}");
    assert!(lab.cli(&["status"]).contains("waits for approval"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        lab.phases().iter().all(|(_, p)| p == "queued"),
        "nothing starts before approval: {:?}",
        lab.phases()
    );
    let from = lab.power_log().len();
    assert!(from > before);
    assert!(lab.cli(&["approve"]).contains("approved"));
    lab.wait(
        "the first host installing",
        Duration::from_secs(120),
        || lab.phases().iter().any(|(_, p)| p == "installing"),
    );
    lab.kill();
    lab.start();
    lab.wait("the second rollout", Duration::from_secs(600), || {
        lab.all_done()
    });
    lab.one_at_a_time(from);
    let log = lab.power_log();
    for h in HOSTS {
        let ons = log[from..]
            .iter()
            .filter(|(_, n, op)| n == h && op == "on")
            .count();
        assert_eq!(
            ons, 2,
            "{h}: one power-on per stage after the crash: {log:?}"
        );
    }
    let status = lab.json(&["status"]);
    assert!(status["refused"].is_null(), "{status}");
    assert_eq!(status["rollout"]["approval"], "approved");
}
