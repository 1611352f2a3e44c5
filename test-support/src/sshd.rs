//! OpenSSH `sshd` on 127.0.0.1 for tests: its own config, host key and
//! authorized keys in a temporary directory; killed by PID on drop.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vaquero_lom::SshConfig;

/// An sshd of the test's own; killed by PID on drop.
pub struct Sshd {
    _peer: super::Peer,
    dir: tempfile::TempDir,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client) must be installed: run scripts/setup");
    assert!(ok.success());
}

impl Sshd {
    /// Starts it; waits (bounded) until it listens.
    pub fn start() -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd (openssh-server) must be installed: run scripts/setup"
        );
        assert!(
            Path::new("/run/sshd").is_dir(),
            "sshd needs its privilege-separation directory /run/sshd: run scripts/setup"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        keygen(&p("host_key"));
        keygen(&p("client_key"));
        keygen(&p("other_key"));
        std::fs::copy(p("client_key.pub"), p("authorized_keys")).unwrap();
        let port = super::free_tcp_port();
        std::fs::write(
            p("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nPidFile none\nPermitRootLogin prohibit-password\n",
                p("host_key").display(),
                p("authorized_keys").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(p("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen within 15 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sshd {
            _peer: super::Peer(child),
            dir,
            port,
        }
    }

    /// A file in its directory (keys: `client_key`, `other_key`).
    pub fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    /// The user running the tests.
    pub fn user() -> String {
        String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned()
    }

    /// An SSH driver config logging in with `key`.
    pub fn config(&self, key: &str) -> SshConfig {
        let mut c = SshConfig::new("127.0.0.1", Self::user(), self.path(key));
        c.port = self.port;
        c.timeout = Duration::from_secs(10);
        c.reboot_command = format!("echo reboot >> {}", self.path("reboots").display());
        c.poweroff_command = format!("echo poweroff >> {}", self.path("poweroffs").display());
        c
    }
}
