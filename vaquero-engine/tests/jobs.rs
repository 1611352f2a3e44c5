//! Jobs against real programs and a real HTTP server on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vaquero_engine::{JobRunner, JobSpec, Outcome};
use vaquero_model::types::{Job, JobType};

fn declared(kind: JobType) -> Job {
    Job {
        kind,
        command: Vec::new(),
        url: None,
        expect_status: None,
        timeout: None,
        retries: None,
        env: BTreeMap::new(),
    }
}

/// `j` resolved to run, with a 10 s timeout; an ssh job connects to
/// 127.0.0.1.
fn spec(j: &Job) -> JobSpec {
    JobSpec::new(j.clone(), Duration::from_secs(10), Some("127.0.0.1".into()))
}

fn script(dir: &Path, body: &str) -> String {
    let p = dir.join("job.sh");
    // Written to a temporary name and renamed: never exec'd while open.
    let tmp = dir.join(".job.sh");
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p.display().to_string()
}

fn runner() -> JobRunner {
    let mut r = JobRunner::new();
    r.retry_delay = Duration::from_millis(50);
    r
}

#[tokio::test]
async fn exec_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = declared(JobType::Exec);
    s.command = vec![
        script(dir.path(), "echo \"checked $1 with $KUBE_VERSION\""),
        "k8s-01".into(),
    ];
    s.env.insert("KUBE_VERSION".into(), "1.31".into());
    let (o, tries) = runner().run(&spec(&s)).await;
    assert_eq!(
        o,
        Outcome::Ok {
            output: "checked k8s-01 with 1.31".into()
        }
    );
    assert_eq!(tries.len(), 1);

    // A failing job is tried retries + 1 times, then failed for good.
    s.command = vec![script(dir.path(), "echo not ready >&2; exit 3")];
    s.retries = Some(2);
    let (o, tries) = runner().run(&spec(&s)).await;
    assert_eq!(o, Outcome::failed(false, "exit code 3: not ready"));
    assert_eq!(tries.len(), 3);
    assert_eq!(tries[2].result, "exit code 3");

    // Killed at its timeout: it could not finish, worth the engine's retry.
    s.command = vec![script(dir.path(), "sleep 30")];
    s.retries = Some(0);
    let started = std::time::Instant::now();
    let short = JobSpec::new(s.clone(), Duration::from_millis(300), None);
    let (o, _) = runner().run(&short).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(
            o,
            Outcome::Failed {
                transient: true,
                ..
            }
        ),
        "{o:?}"
    );

    // A program that does not exist is not retried.
    s.command = vec![dir.path().join("nope").display().to_string()];
    s.retries = Some(5);
    let (o, tries) = runner().run(&spec(&s)).await;
    assert!(
        matches!(
            o,
            Outcome::Failed {
                transient: false,
                ..
            }
        ),
        "{o:?}"
    );
    assert_eq!(tries.len(), 1);
}

/// An HTTP server on 127.0.0.1 that answers 503 `unready` times, then 200.
async fn server(unready: usize) -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let n = h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            let (status, body) = if n < unready {
                ("503 Service Unavailable", "starting")
            } else {
                ("200 OK", "node_up 1")
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = c.write_all(resp.as_bytes()).await;
        }
    });
    (port, hits)
}

#[tokio::test]
async fn http_jobs_retry_until_ready() {
    let (port, hits) = server(2).await;
    let mut s = declared(JobType::Http);
    s.url = Some(format!("http://127.0.0.1:{port}/metrics"));
    s.retries = Some(3);
    let (o, tries) = runner().run(&spec(&s)).await;
    assert_eq!(
        o,
        Outcome::Ok {
            output: "node_up 1".into()
        }
    );
    assert_eq!(tries.len(), 3);
    assert_eq!(tries[0].result, "HTTP 503 (expected 200)");
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // Never the expected status within the tries: failed for good.
    let (port, _) = server(10).await;
    s.url = Some(format!("http://127.0.0.1:{port}/"));
    s.retries = Some(1);
    let (o, tries) = runner().run(&spec(&s)).await;
    assert_eq!(
        o,
        Outcome::failed(false, "HTTP 503 (expected 200): starting")
    );
    assert_eq!(tries.len(), 2);

    // Another expected status.
    let (port, _) = server(0).await;
    s.url = Some(format!("http://127.0.0.1:{port}/"));
    s.expect_status = Some(204);
    let (o, _) = runner().run(&spec(&s)).await;
    assert!(matches!(
        o,
        Outcome::Failed {
            transient: false,
            ..
        }
    ));

    // Nobody listening: it could not run, the engine may try again.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free.local_addr().unwrap().port();
    drop(free);
    s.url = Some(format!("http://127.0.0.1:{closed}/"));
    s.retries = Some(0);
    let (o, _) = runner().run(&spec(&s)).await;
    assert!(
        matches!(
            o,
            Outcome::Failed {
                transient: true,
                ..
            }
        ),
        "{o:?}"
    );
}

#[tokio::test]
async fn ssh_jobs_need_a_configured_login() {
    let mut s = declared(JobType::Ssh);
    s.command = vec!["true".into()];
    let (o, _) = runner().run(&spec(&s)).await;
    assert_eq!(
        o,
        Outcome::failed(false, "ssh jobs need an SSH user and key: none configured")
    );
}

use vaquero_test_support as common;

#[tokio::test]
async fn ssh_jobs_against_openssh() {
    let sshd = common::sshd::Sshd::start();
    let mut job = vaquero_engine::SshJob::new(&common::sshd::Sshd::user(), sshd.path("client_key"));
    job.port = sshd.port;
    let r = runner().with_ssh(Arc::new(job.clone()));
    let mut s = declared(JobType::Ssh);
    // Arguments with spaces and quotes arrive as they were written.
    let out = sshd.path("ran");
    s.command = vec![
        "sh".into(),
        "-c".into(),
        format!("printf '%s|' \"$@\" > {}; echo done", out.display()),
        "x".into(),
        "a b".into(),
        "it's".into(),
    ];
    let (o, _) = r.run(&spec(&s)).await;
    assert_eq!(
        o,
        Outcome::Ok {
            output: "done".into()
        }
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a b|it's|");

    // A failing command: its exit code and output.
    s.command = vec!["sh".into(), "-c".into(), "echo degraded; exit 1".into()];
    let (o, _) = r.run(&spec(&s)).await;
    assert_eq!(o, Outcome::failed(false, "exit code 1: degraded"));

    // A key the host does not accept: not a transient failure.
    let mut other = job.clone();
    other.key_file = sshd.path("other_key");
    let (o, _) = runner().with_ssh(Arc::new(other)).run(&spec(&s)).await;
    assert!(
        matches!(
            o,
            Outcome::Failed {
                transient: false,
                ..
            }
        ),
        "{o:?}"
    );

    // Nobody listening: transient.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    job.port = free.local_addr().unwrap().port();
    drop(free);
    let (o, _) = runner().with_ssh(Arc::new(job)).run(&spec(&s)).await;
    assert!(
        matches!(
            o,
            Outcome::Failed {
                transient: true,
                ..
            }
        ),
        "{o:?}"
    );
}
