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
//!    API (every endpoint, 401s, OpenAPI without a token) and the CLI
//!    against it;
//! 2. a VM that is done netboots again and gets exit-to-disk;
//! 3. an invalid commit is refused, its errors show in the API, and the
//!    previous revision keeps serving;
//! 4. a commit that changes all three VMs waits for approval (the plan in
//!    the API); standalone is killed with SIGKILL while it waits, and the
//!    plan (id, text), the timelines and the waiting survive; the plan is
//!    approved with the CLI, and rolls out one VM at a time;
//!    standalone is killed with SIGKILL mid-rollout and restarted: the
//!    rollout finishes, and no VM is power-cycled twice for one stage;
//! 5. the same site under `vaquero server` and `vaquero agent` (mTLS, a
//!    join token): two VMs reprovisioned; the server is killed with
//!    SIGKILL as the first is powered on: that VM netboots from the agent
//!    alone and checks in (the agent keeps the checkpoint on disk), and
//!    no other VM starts; the server restarted, the checkpoint arrives and
//!    the rollout completes, each VM powered on once per stage. Then the
//!    agent is killed too and started with the server down: a VM that is
//!    done netboots from the agent's cache and gets exit-to-disk, which
//!    the server learns when it is back.
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
    server: Option<Child>,
    agent: Option<Child>,
    /// The CLI talks to `vaquero server` (over HTTPS), not standalone.
    remote: bool,
}

/// `vaquero server`'s address inside the namespace.
const SERVER: &str = "127.0.0.1:9443";

impl Drop for Lab {
    fn drop(&mut self) {
        for c in [&mut self.standalone, &mut self.server, &mut self.agent] {
            stop(c);
        }
        let _ = Command::new(root().join("scripts/lab"))
            .args(["down"])
            .arg(self.dir.path())
            .status();
        if std::thread::panicking() {
            // What happened, for the failure report.
            for name in ["standalone.log", "server.log", "agent.log"] {
                let log = std::fs::read_to_string(self.path(name)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!("--- {name} (last lines, newest first):");
                for l in tail {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// SIGKILL, by PID (`ip netns exec` execs the binary: the PID is
/// vaquero's).
fn stop(c: &mut Option<Child>) {
    if let Some(mut c) = c.take() {
        let _ = c.kill();
        let _ = c.wait();
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
            server: None,
            agent: None,
            remote: false,
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

    /// `vaquero ARGS…` inside the namespace, its output appended to
    /// `LOG`.
    fn spawn(&self, log: &str, args: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(log))
            .unwrap();
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_vaquero"))
            .args(args)
            .env("DEMO_BMC_PASSWORD", &self.password)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn p(&self, p: &str) -> String {
        self.path(p).to_str().unwrap().to_owned()
    }

    fn start(&mut self) {
        let (sot, data) = (self.p("sot"), self.p("data"));
        let child = self.spawn(
            "standalone.log",
            &["standalone", "--sot", &sot, "--data", &data],
        );
        self.standalone = Some(child);
        self.wait("the API answers", Duration::from_secs(60), || {
            self.try_cli(&["status", "--format", "json"]).is_some()
        });
    }

    /// `vaquero server` on the namespace's loopback, its state in
    /// `server/`; waits for its API.
    fn start_server(&mut self) {
        let (sot, data) = (self.p("sot"), self.p("server"));
        let (cert, key) = (self.p("certs/server.pem"), self.p("certs/server.key"));
        let child = self.spawn(
            "server.log",
            &[
                "server",
                "--sot",
                &sot,
                "--data",
                &data,
                "--listen",
                SERVER,
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ],
        );
        self.server = Some(child);
        self.remote = true;
        self.wait("the server's API answers", Duration::from_secs(60), || {
            self.try_cli(&["status", "--format", "json"]).is_some()
        });
    }

    /// `vaquero agent` of site `demo`, enrolling with `join` the first
    /// time; it serves the lab's network from inside the namespace.
    fn start_agent(&mut self, join: Option<&str>) {
        let cache = self.p("agent");
        let mut args = vec!["agent", "--site", "demo", "--cache", &cache];
        if let Some(j) = join {
            args.extend(["--join", j]);
        }
        let child = self.spawn("agent.log", &args);
        self.agent = Some(child);
    }

    /// Observations in the agent's spool (on disk, not yet taken by the
    /// server): (host, kind, detail).
    fn spooled(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let mut dirs = vec![self.path("agent")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "jsonl") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    for l in text.lines() {
                        let Ok(v) = serde_json::from_str::<Value>(l) else {
                            continue;
                        };
                        let o = &v["observation"];
                        if o["ok"] == true {
                            out.push((
                                o["host"].as_str().unwrap_or("").to_owned(),
                                o["kind"].as_str().unwrap_or("").to_owned(),
                                o["detail"].as_str().unwrap_or("").to_owned(),
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    fn phase(&self, host: &str) -> String {
        self.json(&["host", host])["host"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// How often `host` was powered on since power log entry `from`.
    fn ons(&self, host: &str, from: usize) -> usize {
        self.power_log()[from..]
            .iter()
            .filter(|(_, n, op)| n == host && op == "on")
            .count()
    }

    /// Powers a VM on or off as its BMC would.
    fn vm(&self, name: &str, op: &str) {
        run(Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(root().join("scripts/lab"))
            .arg("vm")
            .arg(self.dir.path())
            .args([name, op]));
    }

    fn cli_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_vaquero"))
            .args(args);
        if self.remote {
            c.args(["--api", &format!("https://{SERVER}")])
                .arg("--token-file")
                .arg(self.path("server/admin.token"))
                .arg("--ca-cert")
                .arg(self.path("certs/ca.pem"));
        } else {
            c.arg("--token-file").arg(self.path("data/admin.token"));
        }
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
            for (name, c) in [
                ("standalone", &self.standalone),
                ("server", &self.server),
                ("agent", &self.agent),
            ] {
                if let Some(c) = c
                    && let Ok(out) = Command::new("kill")
                        .arg("-0")
                        .arg(c.id().to_string())
                        .output()
                {
                    assert!(
                        out.status.success(),
                        "{name} exited while waiting for {what}"
                    );
                }
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

use vaquero_test_support::copy_dir;

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
    for h in HOSTS {
        let log = lab.power_log();
        assert_eq!(lab.ons(h, 0), 2, "{h}: one power-on per stage: {log:?}");
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
    ] {
        let (code, body) = lab.curl(&["-H", &auth, &format!("{api}{path}")]);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    // The OpenAPI document needs no token.
    let (code, doc) = lab.curl(&[&format!("{api}/v1/openapi.json")]);
    assert_eq!(code, 200, "{doc}");
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/hosts/{name}"]["get"].is_object());
    assert_eq!(lab.curl(&[&format!("{api}/live")]).0, 200);
    assert_eq!(lab.curl(&[&format!("{api}/ready")]).0, 200);
    let (code, metrics) = lab.curl(&[&format!("{api}/metrics")]);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("vaquero_hosts{site=\"demo\",phase=\"done\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("vaquero_http_requests_total"), "{metrics}");
    let (code, _) = lab.curl(&["-H", &auth, &format!("{api}/v1/nope")]);
    assert_eq!(code, 404);
    // Pause and resume through the CLI.
    assert!(lab.cli(&["pause"]).contains("paused"));
    assert_eq!(lab.json(&["status"])["paused"], true);
    assert!(lab.cli(&["resume"]).contains("resumed"));

    // 2. A VM that is done netboots again: exit to disk.
    let before = lab.power_log().len();
    lab.vm("vm-bios-1", "on");
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
    lab.vm("vm-bios-1", "off");
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
    // A kill -9 while the plan waits loses nothing an operator relies on:
    // the plan (id, text, JSON), the host timelines, and the waiting.
    let pending = |lab: &Lab| {
        lab.json(&["plans"])["plans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["status"] == "pending")
            .cloned()
            .unwrap_or(Value::Null)
    };
    let plan = pending(&lab);
    let timeline = lab.json(&["host", "vm-bios-1"])["attempts"].clone();
    assert!(!timeline.as_array().unwrap().is_empty(), "{timeline}");
    stop(&mut lab.standalone);
    lab.start();
    assert_eq!(pending(&lab), plan, "the waiting plan after kill -9");
    assert!(lab.cli(&["plans"]).contains("3 to reprovision"));
    let after = lab.json(&["host", "vm-bios-1"])["attempts"].clone();
    let (was, is) = (timeline.as_array().unwrap(), after.as_array().unwrap());
    assert!(
        is.len() >= was.len() && is[..was.len()] == was[..],
        "the timeline after kill -9: {after} (was {timeline})"
    );
    assert!(
        lab.phases().iter().all(|(_, p)| p == "queued"),
        "still nothing starts before approval: {:?}",
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
    stop(&mut lab.standalone);
    lab.start();
    lab.wait("the second rollout", Duration::from_secs(600), || {
        lab.all_done()
    });
    lab.one_at_a_time(from);
    for h in HOSTS {
        let log = lab.power_log();
        assert_eq!(
            lab.ons(h, from),
            2,
            "{h}: one power-on per stage after the crash: {log:?}"
        );
    }
    let status = lab.json(&["status"]);
    assert!(status["refused"].is_null(), "{status}");
    assert_eq!(status["rollout"]["approval"], "approved");

    // 5. The site under `vaquero server` and `vaquero agent`, through
    // outages. New hosts wait for their own netboot; two are named.
    stop(&mut lab.standalone);
    edit(
        &sot.join("sites/demo/env.yml"),
        "force_provision: true",
        "force_provision: false",
    );
    git(&sot, &["commit", "-qam", "no force"]);
    run(Command::new(env!("CARGO_BIN_EXE_vaquero"))
        .args(["certs", "init", "--out"])
        .arg(lab.path("certs"))
        .args(["--host", "127.0.0.1"]));
    lab.start_server();
    let join = lab.cli(&["token", "create", "--role", "agent", "--site", "demo"]);
    lab.start_agent(Some(join.trim()));
    lab.wait("the agent heard", Duration::from_secs(60), || {
        lab.json(&["status"])["held"].is_null()
    });
    let (first, second) = ("vm-bios-1", "vm-bios-2");
    let from = lab.power_log().len();
    assert!(
        lab.cli(&["reprovision", first, second])
            .contains("reprovision")
    );
    // Killed as the first VM is powered on: whichever it is.
    let mut started = None;
    lab.wait("a VM powered on", Duration::from_secs(120), || {
        started = [first, second].into_iter().find(|h| lab.ons(h, from) > 0);
        started.is_some()
    });
    stop(&mut lab.server);
    let down = lab.power_log().len();
    let started = started.unwrap();
    let other = if started == first { second } else { first };
    lab.wait(
        "the VM's checkpoint in the agent's spool, the server down",
        Duration::from_secs(300),
        || {
            lab.spooled()
                .iter()
                .any(|(h, k, _)| h == started && k == "checkpoint")
        },
    );
    assert_eq!(
        lab.ons(other, down),
        0,
        "no new host starts while the server is down"
    );
    let back = jiff::Timestamp::now();
    lab.start_server();
    lab.wait(
        "the rollout after the outage",
        Duration::from_secs(600),
        || [first, second].iter().all(|h| lab.phase(h) == "done"),
    );
    for h in [first, second] {
        assert_eq!(
            lab.ons(h, from),
            2,
            "{h}: one power-on per stage: {:?}",
            lab.power_log()
        );
    }
    // The checkpoint seen during the outage is in the timeline, with the
    // time the agent saw it.
    let v = lab.json(&["host", started]);
    let seen = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["events"].as_array().unwrap().iter())
        .filter(|e| e["kind"] == "checkpoint" && e["ok"] == true)
        .filter_map(|e| e["at"].as_str()?.parse::<jiff::Timestamp>().ok())
        .min()
        .unwrap();
    assert!(seen < back, "{seen} {back}: {v}");
    let executions = lab.json(&["executions", "--host", started])["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "power_cycle" && r["status"] == "done")
        .count();
    assert_eq!(
        executions, 2,
        "the power task in flight at the kill was kept"
    );

    // The agent killed and started with the server down: a VM that is
    // done netboots from its cache alone.
    stop(&mut lab.agent);
    stop(&mut lab.server);
    lab.start_agent(None);
    lab.vm(first, "on");
    lab.wait(
        "exit-to-disk from the agent alone",
        Duration::from_secs(180),
        || {
            lab.spooled()
                .iter()
                .any(|(h, k, d)| h == first && k == "script" && d.contains("workflow finished"))
        },
    );
    lab.vm(first, "off");
    lab.start_server();
    lab.wait(
        "the spooled boot in the timeline",
        Duration::from_secs(60),
        || {
            lab.json(&["host", first])["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|a| a["events"].as_array().unwrap().iter())
                .any(|e| {
                    e["kind"] == "script"
                        && e["at"]
                            .as_str()
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                            .is_some_and(|t| t > back)
                        && e["detail"]
                            .as_str()
                            .unwrap_or("")
                            .contains("workflow finished")
                })
        },
    );
    assert_eq!(lab.phase(first), "done");
}
