//! What the integration tests of every crate share, in one place: the
//! peers they test against (`ipmi_sim`, OpenSSH's `sshd`, a `git-daemon`,
//! an etcd cluster), processes stopped by PID, free ports on loopback,
//! copying a SoT fixture, and the testkit's helper binaries. Not
//! published; each test uses what it needs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a panic is a test failure
#![allow(missing_docs)]

#[cfg(feature = "lom")]
pub mod ipmi;
#[cfg(feature = "lom")]
pub mod sshd;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `args` (with `stdin` written to it) and panics with its standard
/// error unless it succeeds.
pub fn sh(args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (run scripts/setup)"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .expect("writing the command's input");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("waiting for the command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for `child` at most `limit`; past it, stops the child by its PID
/// and panics naming `what`.
pub fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("polling a child") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `git-daemon` serving the repositories under a directory on a free
/// loopback port; stopped by its PID when dropped. It runs `git-daemon`
/// itself, not `git daemon`: the `git` wrapper would run the daemon as a
/// child that outlives the wrapper's PID.
pub struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    /// Serves every repository under `base` (`git://127.0.0.1:PORT/NAME`).
    pub fn serve(base: &Path) -> GitDaemon {
        let exec = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("the git CLI (scripts/setup installs it)");
        let exec = String::from_utf8_lossy(&exec.stdout).trim().to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new(Path::new(&exec).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
                &base.display().to_string(),
            ])
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git-daemon (part of the git package)");
        let d = GitDaemon { child, port };
        // Bounded wait until it accepts connections.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("git-daemon did not listen on 127.0.0.1:{port}");
    }

    /// The URL of the repository `name` under the base.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Bounded wait until the port refuses connections.
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// A real etcd cluster (Debian's `etcd-server`) of `n` members on free
/// loopback ports, data under a directory the caller owns. Members can be
/// killed, stopped (SIGSTOP), continued and restarted by index; every
/// process is stopped by its PID when the cluster is dropped.
pub struct EtcdCluster {
    dir: std::path::PathBuf,
    members: Vec<EtcdMember>,
    /// The members' certificate, key and the CA clients trust: HTTPS on
    /// the client URLs.
    tls: Option<[std::path::PathBuf; 3]>,
}

struct EtcdMember {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl EtcdCluster {
    /// Starts `n` members under `dir` and waits (bounded) until the
    /// cluster has a leader and answers.
    pub fn start(dir: &Path, n: usize) -> EtcdCluster {
        Self::start_with(dir, n, None)
    }

    /// [`EtcdCluster::start`], with HTTPS on the client URLs when `tls`
    /// (the members' certificate and key, and the CA that signed them)
    /// is given.
    pub fn start_with(dir: &Path, n: usize, tls: Option<[std::path::PathBuf; 3]>) -> EtcdCluster {
        std::fs::create_dir_all(dir).expect("the cluster's directory");
        let members = (0..n)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut c = EtcdCluster {
            dir: dir.to_owned(),
            members,
            tls,
        };
        for i in 0..n {
            c.spawn(i, "new");
        }
        c.wait_healthy(Duration::from_secs(60));
        c
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let scheme = self.scheme();
        let tls: Vec<String> = match &self.tls {
            // Server TLS only: with --trusted-ca-file etcd would also
            // demand client certificates.
            Some([cert, key, _]) => vec![
                "--cert-file".into(),
                cert.display().to_string(),
                "--key-file".into(),
                key.display().to_string(),
            ],
            None => Vec::new(),
        };
        let m = &mut self.members[i];
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name)))
            .expect("the member's log file");
        let child = Command::new("etcd")
            .args([
                "--name",
                &m.name,
                "--data-dir",
                &self.dir.join(&m.name).display().to_string(),
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                "vaquero-test",
                "--max-txn-ops",
                "100000",
                "--max-request-bytes",
                "33554432",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ])
            .args(&tls)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .expect("etcd (scripts/setup installs etcd-server)");
        m.child = Some(child);
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client))
            .collect()
    }

    /// The PID of member `i`, when it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Whether member `i` answers `/health` as healthy (it has a leader).
    pub fn healthy(&self, i: usize) -> bool {
        let url = format!(
            "{}://127.0.0.1:{}/health",
            self.scheme(),
            self.members[i].client
        );
        let mut curl = Command::new("curl");
        curl.args(["-s", "--max-time", "1", &url]);
        if let Some([_, _, ca]) = &self.tls {
            curl.arg("--cacert").arg(ca);
        }
        curl.output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("\"health\":\"true\""))
            .unwrap_or(false)
    }

    /// Waits, at most `limit`, until every running member is healthy.
    pub fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let running: Vec<usize> = (0..self.members.len())
                .filter(|&i| self.members[i].child.is_some())
                .collect();
            if running.iter().all(|&i| self.healthy(i)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd members {running:?} not healthy in {} s (logs in {})",
                limit.as_secs(),
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts member `i` (killed before) on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
    }

    /// Sends `signal` (`STOP`, `CONT`) to member `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        if let Some(pid) = self.pid(i) {
            sh(&["kill", &format!("-{signal}"), &pid.to_string()], None);
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            // A stopped member must run again to die of SIGKILL promptly.
            self.signal(i, "CONT");
            self.kill(i);
        }
    }
}

/// A peer process (simulator, emulator, daemon), killed by its PID and
/// reaped when dropped — also when the test fails.
pub struct Peer(pub Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Write an executable script.
pub fn write_exec(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Copies the directory tree `from` into `to` (a SoT fixture a test then
/// changes).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &p);
        } else {
            std::fs::copy(e.path(), &p).unwrap();
        }
    }
}

/// The path of the testkit binary `bin`, built first in this test's own
/// target directory and profile: a no-op after `cargo test --workspace`,
/// which builds it; a lone test run gets it fresh, never stale.
pub fn testkit(bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // <target>/<profile>/deps/<test>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("a test binary under <target>/<profile>/deps");
    let target = profile_dir.parent().expect("a target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(p) => p,
    };
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--locked", "-p", "vaquero-testkit"])
        .args(["--bin", bin, "--profile", profile, "--target-dir"])
        .arg(target)
        .status()
        .unwrap_or_else(|e| panic!("cargo build of {bin}: {e}"));
    assert!(status.success(), "cargo build of {bin} failed");
    profile_dir.join(bin)
}
