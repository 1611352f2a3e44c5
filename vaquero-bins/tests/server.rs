//! `vaquero server` and two `vaquero agent`s as real processes over TLS on
//! loopback: two sites, one agent each; exec BMCs log every power action
//! to a file, and the test plays the machines, fetching what the agent's
//! boot service serves (script, unattended config) and calling the
//! checkpoint URL in it.
//!
//! In order:
//! 1. enrolment with join tokens (the CA pinned by fingerprint), and the
//!    auth matrix (no, wrong and revoked tokens 401; a read token 403 on
//!    approve; a join token and an agent's certificate 403 on the user
//!    API; a used join token refused for another key);
//! 2. a reprovision at site s1 goes through the agent: power actions run
//!    by the agent, the machine boots from the agent and checks in, the
//!    host is done;
//! 3. a site whose agent is silent starts no new host; it starts once the
//!    agent is back;
//! 4. `kill -9` of the server while the agent power-cycles a host: the
//!    power task finishes and its result is kept on the agent's disk;
//!    the agent serves the host's boot from its boot table and records
//!    its checkpoint;
//!    `kill -9` of the agent, restarted with the server still down: it
//!    serves boots from its cache; the server restarted: the spooled
//!    checkpoint arrives and the host is done, its power cycled once.
//!
//! Only loopback; every process is stopped by its PID.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use vaquero_test_support as support;

use vaquero_test_support::free_tcp_port as free_port;

fn vaquero() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vaquero"))
}

/// A process killed (SIGKILL) and reaped when dropped.
struct Proc(Child, PathBuf);

impl Proc {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} (last lines, newest first):", self.1.display());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

struct Lab {
    dir: tempfile::TempDir,
    api: String,
    port: u16,
    http: [u16; 2],
}

const SITES: [&str; 2] = ["s1", "s2"];

impl Lab {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn new() -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("vq-server")
            .tempdir()
            .unwrap();
        let port = free_port();
        let http = [free_port(), free_port()];
        let lab = Lab {
            api: format!("https://127.0.0.1:{port}"),
            dir,
            port,
            http,
        };
        let w = |p: &str, s: &str| {
            let p = lab.path(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        // The BMC: logs each action; `status` answers on; a power cycle
        // takes 2 s (the server can die while it runs).
        let pdu = lab.path("pdu");
        w(
            "pdu",
            &format!(
                "#!/bin/sh\necho \"$1 $VAQUERO_ACTION\" >> {}\n[ \"$VAQUERO_ACTION\" = status ] && echo on\n[ \"$VAQUERO_ACTION\" = cycle ] && sleep 2\nexit 0\n",
                lab.path("power.log").display()
            ),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pdu, std::fs::Permissions::from_mode(0o755)).unwrap();
        w(
            "sot/os/linux.yml",
            "id: linux\nos_family: debian\nmajor_version: \"12\"\nboot:\n  kernel: \"{{ urls.assets }}/vmlinuz\"\n  initrd: [\"{{ urls.assets }}/initrd.img\"]\n",
        );
        w(
            "sot/assets/untyped/install.sh",
            "#!/bin/sh\ncurl -X POST {{ urls.checkpoint }}\n",
        );
        w(
            "sot/boot/install.yml",
            "id: install\noperating_system: linux\nunattended: {type: untyped, use: install.sh}\n",
        );
        w(
            "sot/workflows/w.yml",
            "id: w\nstages: [{boot: install}]\npolicy: {max_concurrent: 1}\n",
        );
        for (i, site) in SITES.iter().enumerate() {
            w(
                &format!("sot/sites/{site}/env.yml"),
                &format!(
                    "id: {site}\nagents: [{{id: {site}-agent, dhcp_mode: off, asset_server: {{url: \"http://127.0.0.1:{}\", base_dir: {}}}}}]\nsubnets: [{{id: p, cidr: 10.0.{i}.0/24, dns: [10.0.{i}.1]}}]\npolicy: {{force_provision: false, auto_apply: false}}\n",
                    http[i],
                    lab.path("files").display()
                ),
            );
            let mut hosts = String::new();
            for h in 1..=2 {
                hosts.push_str(&format!(
                    "---\nname: {site}-h{h}\nworkflow: w\ninterfaces:\n  - {{type: physical, mac: \"52:54:00:00:0{i}:0{h}\", subnet: p, ipv4: 10.0.{i}.1{h}}}\n  - type: bmc\n    mac: \"52:54:00:01:0{i}:0{h}\"\n    subnet: p\n    ipv4: 10.0.{i}.2{h}\n    bmc: {{type: exec, command: [\"{}\", \"{{{{ host.name }}}}\"]}}\n",
                    pdu.display()
                ));
            }
            w(&format!("sot/sites/{site}/hosts.yml"), &hosts);
        }
        std::fs::create_dir_all(lab.path("files")).unwrap();
        let o = vaquero()
            .args(["validate"])
            .arg(lab.path("sot"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let o = vaquero()
            .args(["certs", "init", "--out"])
            .arg(lab.path("certs"))
            .args(["--host", "localhost", "--host", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        lab
    }

    fn server(&self) -> Proc {
        self.server_with(&[])
    }

    /// [`Lab::server`] with more arguments.
    fn server_with(&self, extra: &[&str]) -> Proc {
        self.server_on(self.path("sot").to_str().unwrap(), extra)
    }

    /// [`Lab::server_with`] on the SoT `sot`.
    fn server_on(&self, sot: &str, extra: &[&str]) -> Proc {
        self.server_at(sot, "data", self.port, "server.log", extra)
    }

    /// A server on the SoT `sot`, with its data in `data` (under the
    /// lab), listening on `port`, logging to `log`.
    fn server_at(&self, sot: &str, data: &str, port: u16, log: &str, extra: &[&str]) -> Proc {
        let log = self.path(log);
        let child = vaquero()
            .args(["server", "--sot", sot])
            .arg("--data")
            .arg(self.path(data))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(self.path("certs/server.pem"))
            .arg("--tls-key")
            .arg(self.path("certs/server.key"))
            .args(["--silence", "3"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        Proc(child, log)
    }

    fn agent(&self, site: &str, join: Option<&str>) -> Proc {
        self.agent_with(site, join, &[])
    }

    /// [`Lab::agent`] with more arguments.
    fn agent_with(&self, site: &str, join: Option<&str>, extra: &[&str]) -> Proc {
        let log = self.path(&format!("agent-{site}.log"));
        let mut c = vaquero();
        c.args(["agent", "--site", site, "--cache"])
            .arg(self.path(&format!("cache-{site}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            );
        if let Some(j) = join {
            c.args(["--join", j]);
        }
        c.args(extra);
        Proc(c.spawn().unwrap(), log)
    }

    /// A CLI client of the API (the admin token).
    fn cli(&self, args: &[&str]) -> Output {
        vaquero()
            .args(args)
            .args(["--api", &self.api, "--token-file"])
            .arg(self.path("data/admin.token"))
            .arg("--ca-cert")
            .arg(self.path("certs/ca.pem"))
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let o = self.cli(&a);
        assert!(o.status.success(), "{args:?}: {o:?}");
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn power_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("power.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn phase(&self, site: &str, host: &str) -> String {
        let v = self.json(&["host", host, "--site", site]);
        v["host"]["phase"].as_str().unwrap_or("").to_owned()
    }

    fn until(&self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A plain HTTP GET or POST on loopback (the machine's side).
fn http(method: &str, url: &str) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let r = match method {
            "POST" => c.post(url),
            _ => c.get(url),
        }
        .send()
        .await
        .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    })
}

/// The machine: fetches its script from the agent; when it is told to
/// install, fetches its config and calls the checkpoint URL in it.
/// Returns the script.
fn boot(http_port: u16, mac: &str, checkpoint: bool) -> String {
    let base = format!("http://127.0.0.1:{http_port}");
    let (status, script) = http("GET", &format!("{base}/ipxe?mac={mac}")).unwrap();
    assert_eq!(status, 200, "{script}");
    if checkpoint && script.contains("vmlinuz") {
        let (status, body) = http("GET", &format!("{base}/config/{mac}?boot=install")).unwrap();
        assert_eq!(status, 200, "{body}");
        let cp = body
            .split_whitespace()
            .find(|w| w.contains("/checkpoint/"))
            .unwrap_or_else(|| panic!("no checkpoint URL in {body}"));
        let (status, body) = http("POST", cp).unwrap();
        assert!(status == 200 || status == 204, "{status} {body}");
    }
    script
}

/// One request to the server with an optional bearer token and client
/// identity; returns the status and body.
fn call(
    lab: &Lab,
    method: &str,
    path: &str,
    token: Option<&str>,
    identity: Option<&str>,
) -> (u16, String) {
    call_with(lab, method, path, token, identity, &[], None)
}

/// [`call`] with more headers and a raw body.
fn call_with(
    lab: &Lab,
    method: &str,
    path: &str,
    token: Option<&str>,
    identity: Option<&str>,
    headers: &[(&str, String)],
    body: Option<&[u8]>,
) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ca = std::fs::read(lab.path("certs/ca.pem")).unwrap();
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .timeout(Duration::from_secs(10));
        if let Some(id) = identity {
            b = b.identity(reqwest::Identity::from_pem(id.as_bytes()).unwrap());
        }
        let c = b.build().unwrap();
        let url = format!("{}{path}", lab.api);
        let mut r = match (method, body) {
            ("POST", Some(b)) => c.post(&url).body(b.to_vec()),
            ("POST", None) => c.post(&url).json(&serde_json::json!({})),
            ("DELETE", _) => c.delete(&url),
            _ => c.get(&url),
        }
        .header("x-vaquero-agent-protocol", "1.0");
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

/// A metric's value from the server's `/metrics` (0 when absent).
fn metric(lab: &Lab, name: &str) -> f64 {
    let (_, text) = call(lab, "GET", "/metrics", None, None);
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A TCP proxy to the server that can lose every reply (the requests
/// still reach the server) and cut its connections.
struct Proxy {
    port: u16,
    lose: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lose = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (l, c) = (lose.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                c.lock().unwrap().push(client.try_clone().unwrap());
                let (mut cr, mut sw) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut cr, &mut sw);
                    let _ = sw.shutdown(std::net::Shutdown::Both);
                });
                let (mut sr, mut cw, lose) = (server, client, l.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = std::io::Read::read(&mut sr, &mut buf) {
                        if n == 0 {
                            break;
                        }
                        if !lose.load(Ordering::SeqCst)
                            && std::io::Write::write_all(&mut cw, &buf[..n]).is_err()
                        {
                            break;
                        }
                    }
                    let _ = cw.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy { port, lose, conns }
    }

    fn lose_replies(&self, on: bool) {
        self.lose.store(on, Ordering::SeqCst);
    }

    /// Closes every connection so far.
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The tests of this binary run one at a time: each starts many
/// processes, and timing under a loaded 2-core machine is what CI has.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn mac(site: usize, host: usize) -> String {
    format!("52-54-00-00-0{site}-0{host}")
}

#[test]
fn two_sites_from_one_server_and_booting_through_outages() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::new();
    let mut server = lab.server();
    lab.until("the server", 60, || {
        lab.cli(&["status", "--site", "s1", "--format", "json"])
            .status
            .success()
    });
    let admin = std::fs::read_to_string(lab.path("data/admin.token"))
        .unwrap()
        .trim()
        .to_owned();

    // Join tokens, one per site.
    let join = |site: &str| {
        let o = lab.cli(&["token", "create", "--role", "agent", "--site", site]);
        assert!(o.status.success(), "{o:?}");
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let (j1, j2) = (join("s1"), join("s2"));
    assert!(j1.starts_with("vqj1."), "{j1}");
    let mut a1 = lab.agent("s1", Some(&j1));
    let mut a2 = lab.agent("s2", Some(&j2));
    lab.until("both agents enrolled and heard", 60, || {
        if !["cache-s1", "cache-s2"]
            .iter()
            .all(|c| lab.path(&format!("{c}/enrolment.json")).exists())
        {
            return false;
        }
        let v = lab.json(&["status", "--site", "s1"]);
        let w = lab.json(&["status", "--site", "s2"]);
        v["held"].is_null() && w["held"].is_null()
    });

    // The auth matrix.
    let enrol = lab.path("cache-s1/enrolment.json");
    let text = std::fs::read_to_string(&enrol).unwrap();
    let doc: Value = serde_json::from_str(&text[text.find('\n').unwrap() + 1..]).unwrap();
    let identity = format!(
        "{}\n{}",
        doc["cert"].as_str().unwrap(),
        doc["key"].as_str().unwrap()
    );
    for (method, path, token, id, want, why) in [
        ("GET", "/v1/sites/s1/status", None, None, 401, "no token"),
        (
            "GET",
            "/v1/sites/s1/status",
            Some("vqt_00000000_00"),
            None,
            401,
            "wrong token",
        ),
        (
            "GET",
            "/v1/sites/s1/status",
            None,
            Some(identity.as_str()),
            403,
            "agent certificate on the user API",
        ),
        (
            "GET",
            "/v1/sites/s1/status",
            Some(admin.as_str()),
            None,
            200,
            "admin",
        ),
        (
            "GET",
            "/v1/agent/model",
            None,
            None,
            401,
            "no client certificate",
        ),
        (
            "GET",
            "/v1/agent/model",
            None,
            Some(identity.as_str()),
            200,
            "its own site's model",
        ),
    ] {
        let (status, body) = call(&lab, method, path, token, id);
        assert_eq!(status, want, "{why}: {body}");
        assert!(!body.contains(&admin), "{why}: the body leaks the token");
    }
    // The agent's model is its own site's, whatever it asks.
    let (_, body) = call(&lab, "GET", "/v1/agent/model", None, Some(&identity));
    assert!(body.contains("s1-h1") && !body.contains("s2-h1"), "{body}");
    // A read token cannot approve; a revoked one is refused at once.
    let o = lab.json(&["token", "create", "--role", "read"]);
    let read = o["token"].as_str().unwrap().to_owned();
    let (status, _) = call(&lab, "POST", "/v1/sites/s1/approve", Some(&read), None);
    assert_eq!(status, 403);
    // With two sites a site's route must name its site: 400 naming them,
    // and 404 for a site the server does not run.
    let (status, body) = call(&lab, "GET", "/v1/status", Some(&read), None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("s1, s2") && body.contains("/v1/sites/"),
        "{body}"
    );
    let (status, _) = call(&lab, "GET", "/v1/sites/s9/status", Some(&read), None);
    assert_eq!(status, 404);
    let id = o["record"]["id"].as_str().unwrap().to_owned();
    assert!(lab.cli(&["token", "revoke", &id]).status.success());
    let (status, _) = call(&lab, "GET", "/v1/sites/s1/status", Some(&read), None);
    assert_eq!(status, 401, "a revoked token");
    // A join token on the user API, and used again for another key.
    let t1 = format!("vqt_{}", j1.split('.').nth(1).unwrap()) + "_" + j1.split('.').nth(2).unwrap();
    let (status, _) = call(&lab, "GET", "/v1/sites/s1/status", Some(&t1), None);
    assert_eq!(status, 403, "a join token on the user API");
    let o = vaquero()
        .args(["agent", "--site", "s1", "--join", &j1, "--cache"])
        .arg(lab.path("cache-thief"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("used already"),
        "{o:?}"
    );

    // 2. A reprovision through the agent of s1.
    assert!(
        lab.cli(&["reprovision", "s1-h1", "--now", "--site", "s1"])
            .status
            .success()
    );
    lab.until("s1-h1 power-cycled by the agent", 60, || {
        lab.power_log()
            .iter()
            .any(|l| l.starts_with("s1-h1 ") && (l.ends_with(" cycle") || l.ends_with(" on")))
    });
    lab.until("s1-h1 installs", 60, || {
        boot(lab.http[0], &mac(0, 1), false).contains("vmlinuz")
    });
    boot(lab.http[0], &mac(0, 1), true);
    lab.until("s1-h1 done", 60, || lab.phase("s1", "s1-h1") == "done");
    // Done: it boots from disk now.
    lab.until("s1-h1 exits to disk", 30, || {
        !boot(lab.http[0], &mac(0, 1), false).contains("vmlinuz")
    });
    assert!(
        lab.power_log().iter().all(|l| !l.starts_with("s2-")),
        "{:?}",
        lab.power_log()
    );

    // 3. A silent site starts no new host.
    a2.kill();
    lab.until("s2 held", 60, || {
        !lab.json(&["status", "--site", "s2"])["held"].is_null()
    });
    assert!(
        lab.cli(&["reprovision", "s2-h1", "--now", "--site", "s2"])
            .status
            .success()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.phase("s2", "s2-h1"), "queued");
    assert!(
        lab.power_log().iter().all(|l| !l.starts_with("s2-")),
        "{:?}",
        lab.power_log()
    );
    let enrolment = || std::fs::read_to_string(lab.path("cache-s2/enrolment.json")).unwrap();
    let before = enrolment();
    // It comes back through a proxy that can lose replies. (Its
    // certificate is renewed in a later start: a renewal opens a new
    // connection, whose TLS handshake a proxy losing replies would starve
    // if it raced the power cycle.)
    let proxy = Proxy::start(lab.port);
    let via = format!("https://127.0.0.1:{}", proxy.port);
    let mut a2 = lab.agent_with("s2", None, &["--server", &via]);
    lab.until("s2-h1 power cycle started once s2 is heard", 60, || {
        lab.power_log().iter().any(|l| l == "s2-h1 cycle")
    });
    // The reply to the power cycle's result is lost: the server has the
    // result, the agent does not know it.
    let ignored = metric(&lab, "vaquero_server_results_ignored_total");
    proxy.lose_replies(true);
    lab.until("s2-h1's power cycle taken by the server", 60, || {
        lab.phase("s2", "s2-h1") == "netbooting"
    });
    // The link heals (the broken connections close): the agent sends the
    // result again, the server ignores the repeat, nothing is redone.
    proxy.lose_replies(false);
    proxy.cut();
    lab.until("the repeated result ignored", 60, || {
        metric(&lab, "vaquero_server_results_ignored_total") > ignored
    });
    let s2h1 = |l: &[String]| l.iter().filter(|l| *l == "s2-h1 cycle").count();
    assert_eq!(s2h1(&lab.power_log()), 1, "{:?}", lab.power_log());
    assert_eq!(lab.phase("s2", "s2-h1"), "netbooting");
    // It comes back with its certificate due for renewal: it renews it
    // over the old one and goes on with the new one.
    a2.kill();
    let mut a2 = lab.agent_with("s2", None, &["--renew-before-days", "91"]);
    // The server counts the certificate when it issues it, a moment
    // before the agent has it: both are waited for.
    lab.until("s2's agent renewed its certificate", 30, || {
        lab.json(&["agents", "list", "--site", "s2"])["agents"][0]["certificates"] == 2
    });
    lab.until("the new certificate is kept", 30, || enrolment() != before);
    a2.kill();

    // 4. The server dies mid-provisioning of s1-h2.
    assert!(
        lab.cli(&["reprovision", "s1-h2", "--now", "--site", "s1"])
            .status
            .success()
    );
    let cycles = |l: &[String]| {
        l.iter()
            .filter(|l| *l == "s1-h2 cycle" || *l == "s1-h2 on")
            .count()
    };
    lab.until("s1-h2 power cycle started", 60, || {
        cycles(&lab.power_log()) == 1
    });
    server.kill();
    // The power task in flight finishes at the agent; its result waits
    // on disk for the server.
    lab.until("the result kept by the agent", 30, || {
        std::fs::read_to_string(lab.path("cache-s1/results.json"))
            .is_ok_and(|t| t.contains("s1-h2"))
    });
    // The machine boots from the agent's boot table, and checks in: the
    // answer comes once the checkpoint is on the agent's disk.
    boot(lab.http[0], &mac(0, 2), true);
    // The agent dies at once too, and starts with the server still down: it
    // serves boots from its cache.
    a1.kill();
    let mut a1 = lab.agent("s1", None);
    lab.until("the agent serving from its cache", 30, || {
        http(
            "GET",
            &format!("http://127.0.0.1:{}/ipxe?mac={}", lab.http[0], mac(0, 1)),
        )
        .is_some()
    });
    assert!(
        !boot(lab.http[0], &mac(0, 1), false).contains("vmlinuz"),
        "s1-h1 is done: disk"
    );
    // The server returns: the spooled checkpoint arrives, s1-h2 is done
    // without another power cycle.
    let mut server = lab.server();
    lab.until("s1-h2 done after the outage", 90, || {
        lab.cli(&["status", "--site", "s1"]).status.success() && lab.phase("s1", "s1-h2") == "done"
    });
    assert_eq!(cycles(&lab.power_log()), 1, "{:?}", lab.power_log());

    // An operator revokes the agent of s1: its certificate is refused at
    // once, and the list says it is no longer enrolled.
    let v = lab.json(&["agents", "list", "--site", "s1"]);
    assert_eq!(v["agents"][0]["agent"], "s1-agent", "{v}");
    assert_eq!(v["agents"][0]["in_sot"], true, "{v}");
    assert!(v["agents"][0]["enrolled"].is_string(), "{v}");
    assert!(
        lab.cli(&["agents", "revoke", "s1-agent", "--site", "s1"])
            .status
            .success()
    );
    let (status, body) = call(&lab, "GET", "/v1/agent/model", None, Some(&identity));
    assert_eq!(status, 401, "a revoked agent: {body}");
    let v = lab.json(&["agents", "list", "--site", "s1"]);
    assert!(v["agents"][0]["enrolled"].is_null(), "{v}");
    assert!(
        !lab.cli(&["agents", "revoke", "s1-agent", "--site", "s1"])
            .status
            .success(),
        "revoked already"
    );
    a1.kill();
    server.kill();

    // 5. The webhook. The server follows a remote Git SoT (served by
    // `git daemon` on loopback, mirrored into the data directory), not
    // polled in this test: only a signed push delivery makes it fetch.
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .arg("-C")
            .arg(lab.path("sot"))
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    std::fs::write(lab.path("webhook.secret"), "s3cret\n").unwrap();
    let daemon = support::GitDaemon::serve(&lab.path(""));
    let _server = lab.server_on(
        &daemon.url("sot"),
        &[
            "--webhook-secret-file",
            lab.path("webhook.secret").to_str().unwrap(),
            "--poll",
            "3600",
        ],
    );
    let revisions = || -> Vec<String> {
        let v = lab.json(&["plans", "--site", "s1"]);
        v["plans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["revision"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let first = git(&["rev-parse", "HEAD"]);
    lab.until("the server on the Git SoT", 60, || {
        lab.cli(&["status", "--site", "s1"]).status.success()
            && (revisions().contains(&first)
                || lab.json(&["status", "--site", "s1"])["revision"] == first.as_str())
    });
    // A change of both sites' hosts, committed; s2 is pinned to the first
    // commit by its `release_tag`, s1 follows the branch.
    git(&["tag", "v1"]);
    let edit = |p: &str, from: &str, to: &str| {
        let p = lab.path(p);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    };
    edit(
        "sot/sites/s1/hosts.yml",
        "ipv4: 10.0.0.11",
        "ipv4: 10.0.0.31",
    );
    edit(
        "sot/sites/s2/hosts.yml",
        "ipv4: 10.0.1.11",
        "ipv4: 10.0.1.31",
    );
    edit(
        "sot/sites/s2/env.yml",
        "id: s2\n",
        "id: s2\nrelease_tag: v1\n",
    );
    git(&[
        "commit",
        "-q",
        "-am",
        "s1-h1 and s2-h1 move; s2 stays at v1",
    ]);
    let second = git(&["rev-parse", "HEAD"]);
    let body: &[u8] = br#"{"ref":"refs/heads/main","before":"0000","after":"ffff"}"#;
    let sign = |b: &[u8]| {
        use hmac::{KeyInit, Mac};
        let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"s3cret").unwrap();
        m.update(b);
        format!("sha256={}", hex::encode(m.finalize().into_bytes()))
    };
    let deliver = |sig: Option<String>, id: &str| {
        let mut h = vec![
            ("x-github-event", "push".to_owned()),
            ("x-github-delivery", id.to_owned()),
            ("content-type", "application/json".to_owned()),
        ];
        if let Some(s) = sig {
            h.push(("x-hub-signature-256", s));
        }
        call_with(
            &lab,
            "POST",
            "/v1/webhook/github",
            None,
            None,
            &h,
            Some(body),
        )
    };
    let (status, _) = deliver(None, "d0");
    assert_eq!(status, 401, "no signature");
    let (status, _) = deliver(Some(sign(b"another body")), "d0");
    assert_eq!(status, 401, "a signature of another body");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!revisions().contains(&second), "nothing looked yet");
    let (status, text) = deliver(Some(sign(body)), "d1");
    assert_eq!(status, 202, "{text}");
    lab.until("a plan of the pushed commit", 30, || {
        revisions().contains(&second)
    });
    // s2 stays where its tag is: its model did not change, so it has no
    // plan of the new commit (both sites were handed the new revision at
    // once; a second is room for s2's loop to have made one).
    std::thread::sleep(Duration::from_secs(1));
    let v = lab.json(&["plans", "--site", "s2"]);
    assert!(!v.to_string().contains(&second), "{v}");
    // The same delivery again is seen as such.
    let (status, text) = deliver(Some(sign(body)), "d1");
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("seen already"), "{text}");
}

/// A TCP load balancer on loopback: each connection goes to the first
/// upstream that accepts it, starting with the next one each time (a
/// dead replica refuses, and is passed over).
fn balancer(upstreams: Vec<u16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (next, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { return };
            let server = (0..upstreams.len()).find_map(|k| {
                let up = upstreams[(next + k) % upstreams.len()];
                TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], up)),
                    Duration::from_secs(1),
                )
                .ok()
            });
            let Some(server) = server else { continue };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    port
}

/// A GET with the CA pinned and no redirect followed: status, `Location`
/// and body (`None` when the server does not answer).
fn probe(lab: &Lab, url: &str) -> Option<(u16, String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ca = std::fs::read(lab.path("certs/ca.pem")).unwrap();
        let c = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let r = c.get(url).send().await.ok()?;
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Some((status, location, r.text().await.ok()?))
    })
}

/// Three `vaquero server` replicas on a real 3-member etcd cluster, one
/// agent reaching them through a load balancer. Exactly one replica leads
/// (`/leader` 200); the others are ready and redirect (307) to it. A host
/// is provisioned through the leader; the leader is killed (`kill -9`),
/// another leads within seconds with a higher fencing number, and the
/// next host is provisioned through it, nothing run twice. The new leader
/// is then paused (SIGSTOP) past its lease: a third replica leads; woken,
/// the paused one stops acting and follows; still nothing runs twice.
#[test]
fn replicated_servers_on_etcd_fail_over() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::new();
    let mut cluster = support::EtcdCluster::start(&lab.path("etcd"), 3);
    let etcd = cluster.endpoints().join(",");
    let ports = [free_port(), free_port(), free_port()];
    let url = |i: usize| format!("https://127.0.0.1:{}", ports[i]);
    // Replica 0's data directory is the lab's, whose admin token the CLI
    // reads: every replica writes the shared token there.
    let data = |i: usize| {
        if i == 0 {
            "data".to_owned()
        } else {
            format!("data-{i}")
        }
    };
    let start = |lab: &Lab, i: usize| {
        let sot = lab.path("sot");
        lab.server_at(
            sot.to_str().unwrap(),
            &data(i),
            ports[i],
            &format!("server-{i}.log"),
            &["--etcd", &etcd, "--advertise", &url(i), "--lease-ttl", "2"],
        )
    };
    let mut replicas: Vec<Proc> = (0..3).map(|i| start(&lab, i)).collect();
    // Who leads: the replicas answering /leader with 200.
    let leaders = |lab: &Lab| -> Vec<usize> {
        (0..3)
            .filter(|&i| probe(lab, &format!("{}/leader", url(i))).is_some_and(|r| r.0 == 200))
            .collect()
    };
    // Waits until one replica other than `not` leads; returns it.
    let other_leader = |lab: &Lab, not: usize, what: &str| -> usize {
        let mut found = usize::MAX;
        lab.until(what, 90, || match leaders(lab)[..] {
            [i] if i != not => {
                found = i;
                true
            }
            _ => false,
        });
        found
    };
    let fence = |lab: &Lab, i: usize| -> u64 {
        let (_, _, body) = probe(lab, &format!("{}/leader", url(i))).unwrap();
        serde_json::from_str::<Value>(&body).unwrap()["fence"]
            .as_u64()
            .unwrap()
    };
    // (usize::MAX: no replica is excluded.)
    let mut leader = other_leader(&lab, usize::MAX, "one replica leads");
    let first = fence(&lab, leader);
    assert!(first > 0);
    // The followers are ready, say who leads, and redirect the rest.
    for i in (0..3).filter(|&i| i != leader) {
        let (status, _, body) = probe(&lab, &format!("{}/ready", url(i))).unwrap();
        assert_eq!(status, 200, "{body}");
        let (status, _, body) = probe(&lab, &format!("{}/leader", url(i))).unwrap();
        assert_eq!(status, 503);
        assert!(body.contains(&url(leader)), "{body}");
        let (status, location, _) =
            probe(&lab, &format!("{}/v1/sites/s1/status?x=1", url(i))).unwrap();
        assert_eq!(status, 307);
        assert_eq!(location, format!("{}/v1/sites/s1/status?x=1", url(leader)));
    }
    lab.api = url(leader);
    // The leader's metrics say so.
    assert_eq!(metric(&lab, "vaquero_server_leader "), 1.0);
    assert_eq!(metric(&lab, "vaquero_server_fence "), first as f64);
    assert!(metric(&lab, "vaquero_server_leader_changes_total ") >= 1.0);
    lab.until("the shared admin token works", 30, || {
        lab.cli(&["status", "--site", "s1", "--format", "json"])
            .status
            .success()
    });

    // One agent, through the balancer.
    let lb = format!("https://127.0.0.1:{}", balancer(ports.to_vec()));
    let o = lab.cli(&["token", "create", "--role", "agent", "--site", "s1"]);
    assert!(o.status.success(), "{o:?}");
    let join = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    let _agent = lab.agent_with("s1", Some(&join), &["--server", &lb]);
    lab.until("the agent heard", 60, || {
        lab.path("cache-s1/enrolment.json").exists()
            && lab.json(&["status", "--site", "s1"])["held"].is_null()
    });
    let cycles = |lab: &Lab, host: &str| {
        lab.power_log()
            .iter()
            .filter(|l| **l == format!("{host} cycle") || **l == format!("{host} on"))
            .count()
    };
    let provision = |lab: &Lab, host: &str, m: &str| {
        assert!(
            lab.cli(&["reprovision", host, "--now", "--site", "s1"])
                .status
                .success()
        );
        lab.until(&format!("{host} power-cycled"), 60, || {
            cycles(lab, host) == 1
        });
        lab.until(&format!("{host} installs"), 60, || {
            boot(lab.http[0], m, false).contains("vmlinuz")
        });
        boot(lab.http[0], m, true);
        lab.until(&format!("{host} done"), 60, || {
            lab.phase("s1", host) == "done"
        });
    };
    provision(&lab, "s1-h1", &mac(0, 1));
    // The agent keeps the fencing number it heard on disk.
    let fencing = lab.path("cache-s1/fencing.json");
    let heard = || std::fs::read_to_string(&fencing).unwrap_or_default();
    assert!(heard().contains(&first.to_string()), "{}", heard());

    // kill -9 of the leader: another leads, with a higher fencing number.
    replicas[leader].kill();
    let killed = leader;
    let t = Instant::now();
    leader = other_leader(&lab, killed, "another replica leads");
    eprintln!("failover after kill -9: {:?}", t.elapsed());
    let second = fence(&lab, leader);
    assert!(second > first, "{second} after {first}");
    lab.api = url(leader);
    provision(&lab, "s1-h2", &mac(0, 2));
    assert!(heard().contains(&second.to_string()), "{}", heard());
    replicas[killed] = start(&lab, killed);

    // SIGSTOP of the leader past its lease: a third leads; woken, the
    // paused one does not act, and follows.
    let paused = leader;
    let pid = replicas[paused].0.id().to_string();
    support::sh(&["kill", "-STOP", &pid], None);
    leader = other_leader(&lab, paused, "a replica leads while the leader is paused");
    assert!(fence(&lab, leader) > second);
    support::sh(&["kill", "-CONT", &pid], None);
    lab.until("the woken replica follows", 30, || {
        probe(&lab, &format!("{}/leader", url(paused))).is_some_and(|r| r.0 == 503)
    });
    lab.api = url(leader);
    assert_eq!(lab.phase("s1", "s1-h1"), "done");
    assert_eq!(lab.phase("s1", "s1-h2"), "done");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(cycles(&lab, "s1-h1"), 1, "{:?}", lab.power_log());
    assert_eq!(cycles(&lab, "s1-h2"), 1, "{:?}", lab.power_log());
    let log = std::fs::read_to_string(lab.path(&format!("server-{paused}.log"))).unwrap();
    assert!(
        log.contains("not acting") || log.contains("stepping down"),
        "the paused leader did not notice it lost its lease"
    );

    // kill -9 of the leader at a random moment of a rollout of both hosts
    // (max_concurrent 1: one at a time), again and again
    // (VAQUERO_HA_KILLS, default 20), the killed replica restarted each
    // time. Every time another replica leads; the second host is not
    // touched before the first is done (max_concurrent holds across the
    // failover); each host's power cycle runs exactly once (an action
    // whose outcome was committed never runs again); their checkpoints,
    // sent during or after the failover, are not lost: both are done.
    let kills: usize = std::env::var("VAQUERO_HA_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20);
    let seed = fastrand::u64(..);
    eprintln!("kills: {kills}, seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut failovers = Vec::new();
    let hosts = [("s1-h1", mac(0, 1)), ("s1-h2", mac(0, 2))];
    for round in 0..kills {
        let before: Vec<usize> = hosts.iter().map(|(h, _)| cycles(&lab, h)).collect();
        assert!(
            lab.cli(&["reprovision", "s1-h1", "s1-h2", "--now", "--site", "s1"])
                .status
                .success()
        );
        std::thread::sleep(Duration::from_millis(rng.u64(0..3000)));
        let killed = leader;
        replicas[killed].kill();
        let t = Instant::now();
        leader = other_leader(&lab, killed, "another replica leads");
        failovers.push(t.elapsed());
        lab.api = url(leader);
        replicas[killed] = start(&lab, killed);
        // The machines, one after the other, as the rollout starts them.
        let mut left = vec![0, 1];
        while !left.is_empty() {
            let mut started = Vec::new();
            lab.until(&format!("round {round}: a host power-cycled"), 60, || {
                started = left
                    .iter()
                    .copied()
                    .filter(|&k| cycles(&lab, hosts[k].0) > before[k])
                    .collect();
                !started.is_empty()
            });
            assert_eq!(
                started.len(),
                1,
                "round {round}: both hosts in flight under max_concurrent 1: {:?}",
                lab.power_log()
            );
            let (host, m) = &hosts[started[0]];
            lab.until(&format!("round {round}: {host} installs"), 60, || {
                boot(lab.http[0], m, false).contains("vmlinuz")
            });
            boot(lab.http[0], m, true);
            lab.until(&format!("round {round}: {host} done"), 60, || {
                lab.phase("s1", host) == "done"
            });
            left.retain(|&k| k != started[0]);
        }
        for (k, (host, _)) in hosts.iter().enumerate() {
            assert_eq!(
                cycles(&lab, host),
                before[k] + 1,
                "round {round}: {host}: {:?}",
                lab.power_log()
            );
        }
    }
    if !failovers.is_empty() {
        failovers.sort();
        let at = |q: f64| failovers[((failovers.len() - 1) as f64 * q).round() as usize];
        eprintln!(
            "failover over {} kills (TTL 2 s): p50 {:?} p95 {:?} max {:?}",
            failovers.len(),
            at(0.5),
            at(0.95),
            failovers[failovers.len() - 1]
        );
    }

    // One etcd member of three lost: the same replica goes on leading.
    let before = leader;
    cluster.kill(0);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        leaders(&lab),
        [before],
        "one etcd member lost changed the leader"
    );
    cluster.restart(0);
    cluster.wait_healthy(Duration::from_secs(60));

    // etcd's quorum lost: every replica stops acting within the TTL (and
    // etcd's own election timeout, see docs/ha.md); the agent serves boots
    // from what it has. Quorum back: a replica leads and the site goes on.
    cluster.kill(0);
    cluster.kill(1);
    let t = Instant::now();
    lab.until("no replica leads without quorum", 30, || {
        leaders(&lab).is_empty()
    });
    eprintln!(
        "every replica stopped acting {:?} after quorum loss",
        t.elapsed()
    );
    // (boot asserts a 200: s1-h1, done, boots from its disk.)
    assert!(!boot(lab.http[0], &mac(0, 1), false).contains("vmlinuz"));
    cluster.restart(0);
    cluster.restart(1);
    cluster.wait_healthy(Duration::from_secs(60));
    leader = other_leader(&lab, usize::MAX, "a replica leads once quorum is back");
    lab.api = url(leader);
    let (h1, h2) = (cycles(&lab, "s1-h1"), cycles(&lab, "s1-h2"));
    assert!(
        lab.cli(&["reprovision", "s1-h1", "--now", "--site", "s1"])
            .status
            .success()
    );
    lab.until("s1-h1 power-cycled after quorum came back", 60, || {
        cycles(&lab, "s1-h1") == h1 + 1
    });
    lab.until("s1-h1 installs after quorum came back", 60, || {
        boot(lab.http[0], &mac(0, 1), false).contains("vmlinuz")
    });
    boot(lab.http[0], &mac(0, 1), true);
    lab.until("s1-h1 done after quorum came back", 60, || {
        lab.phase("s1", "s1-h1") == "done"
    });
    assert_eq!(cycles(&lab, "s1-h2"), h2);
    drop(replicas);

    // vaquero migrate: etcd -> redb -> etcd (another prefix) -> redb, the
    // same keys and bytes at every step (the checksum is over every key
    // and value); a second copy into a store that has the keys is refused.
    let migrate = |from: &str, to: &str, extra: &[&str]| -> Output {
        vaquero()
            .args(["migrate", "--from", from, "--to", to])
            .args(extra)
            .output()
            .unwrap()
    };
    let sum = |o: &Output| -> String {
        assert!(o.status.success(), "{o:?}");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let keys: usize = out
            .split_whitespace()
            .skip_while(|w| *w != "checked:")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(keys > 10, "{out}");
        out.split("sha256 ").nth(1).unwrap().trim().to_owned()
    };
    let (a, b) = (lab.path("a.redb"), lab.path("b.redb"));
    let (a, b) = (
        format!("redb:{}", a.display()),
        format!("redb:{}", b.display()),
    );
    let e = format!("etcd:{etcd}");
    let first = sum(&migrate(&e, &a, &[]));
    assert_eq!(sum(&migrate(&a, &e, &["--etcd-prefix", "/copy/"])), first);
    assert_eq!(sum(&migrate(&e, &b, &["--etcd-prefix", "/copy/"])), first);
    let o = migrate(&a, &b, &[]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already exist"),
        "{o:?}"
    );
}
