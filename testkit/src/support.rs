//! Helpers the integration tests of several crates share: running a
//! command that must succeed, waiting for a child within a bound, a
//! `git-daemon` serving test repositories on loopback. Included by the
//! tests with `#[path]` (no dependency on the testkit crate, which depends
//! on theirs); each test uses what it needs.
#![allow(dead_code)]

use std::path::Path;
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
