//! Running an operator's program (exec driver) or `ssh` (ssh driver):
//! bounded in time, killed when it overruns, output captured.

use std::process::Stdio;
use std::time::Duration;

use crate::driver::LomError;

/// What a finished program left.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// `exit code N` or `signal N`.
    pub status: String,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl Finished {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout then stderr, trimmed and capped at 2,000 bytes, for logs and
    /// error messages.
    pub fn output(&self) -> String {
        let mut s = self.stdout.trim().to_owned();
        let err = self.stderr.trim();
        if !err.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(err);
        }
        if s.len() > 2000 {
            let mut cut = 2000;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push('…');
        }
        s
    }

    /// The error of a program that did not succeed.
    pub fn failed(&self) -> LomError {
        LomError::CommandFailed {
            status: self.status.clone(),
            output: self.output(),
        }
    }
}

/// Runs `argv` with `env` added, stdin closed, output captured; kills it
/// after `timeout` ([`LomError::Timeout`]). A program that cannot be started
/// is a [`LomError::Config`].
pub async fn run(
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Finished, LomError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| LomError::Config("an empty command".into()))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // A program written a moment ago can still be open for writing in a
    // process another thread has forked but not yet exec'd (ETXTBSY);
    // that passes within milliseconds, so spawning is retried briefly.
    let mut tries = 0;
    let child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 6 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10 << tries)).await;
            }
            Err(e) => {
                return Err(match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                        LomError::Config(format!("{program}: {e}"))
                    }
                    _ => LomError::Protocol(format!("{program}: {e}")),
                });
            }
        }
    };
    // On timeout the future (and with it the child) is dropped, which
    // kills it (kill_on_drop).
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| LomError::Timeout(timeout))?
        .map_err(|e| LomError::Protocol(format!("{program}: {e}")))?;
    let status = match out.status.code() {
        Some(c) => format!("exit code {c}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            format!("signal {}", out.status.signal().unwrap_or(0))
        }
    };
    Ok(Finished {
        code: out.status.code(),
        status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
