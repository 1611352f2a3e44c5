//! `vaquero standalone` in-process on a directory SoT (no DHCP, no TFTP:
//! the boot service and the API on loopback): a change to the SoT's files
//! is noticed through file-change notification, with polling pushed out
//! to an hour, and an invalid change is refused while the previous
//! revision keeps serving.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use vaquero_engine::standalone::{StandaloneConfig, run};

use vaquero_test_support::copy_dir;

use vaquero_test_support::free_tcp_port as free_port;

/// Polls `GET /v1/status` until `ok` holds (bounded).
async fn status_until(
    api: &str,
    token: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Ok(r) = client
            .get(format!("{api}/v1/status"))
            .bearer_auth(token)
            .send()
            .await
            && let Ok(v) = r.json::<serde_json::Value>().await
        {
            if ok(&v) {
                return v;
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 30 s; last status: {last:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sot_changes_are_noticed_without_polling_and_bad_ones_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sot = tmp.path().join("sot");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab"),
        &sot,
    );
    let env = sot.join("sites/lab/env.yml");
    let text = std::fs::read_to_string(&env)
        .unwrap()
        .replace(
            "dhcp_mode: server\n    interfaces: [vq-lab0]",
            "dhcp_mode: off",
        )
        .replace("/var/lib/vaquero/files", tmp.path().to_str().unwrap());
    std::fs::write(&env, &text).unwrap();

    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let data = tmp.path().join("data");
    let mut config = StandaloneConfig::new(sot.to_str().unwrap());
    config.data = data.clone();
    config.api = ([127, 0, 0, 1], port).into();
    config.ports.http = Some(([127, 0, 0, 1], 0).into());
    config.tick = Duration::from_millis(50);
    // Only notification can notice a change within the test.
    config.poll = Duration::from_secs(3600);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(config, async {
        let _ = stopped.await;
    }));

    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        if let Ok(t) = std::fs::read_to_string(data.join("admin.token"))
            && !t.trim().is_empty()
        {
            break t.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no admin token within 30 s");
        assert!(
            !server.is_finished(),
            "standalone stopped: {:?}",
            server.await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first = status_until(&api, &token, "the first revision", |s| {
        s["revision"].is_string()
    })
    .await;
    let first = first["revision"].as_str().unwrap().to_owned();

    // A request head past 16 KiB: 431, before any token is looked at.
    let client = reqwest::Client::new();
    let big = "a".repeat(20 * 1024);
    let r = client
        .get(format!("{api}/v1/status"))
        .bearer_auth(&token)
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 431);
    let r = client
        .get(format!("{api}/v1/status"))
        .bearer_auth(&token)
        .header("x-small", &big[..10 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A valid change: the lab's env gets a new metadata key.
    std::fs::write(
        &env,
        text.replace("\nmetadata:\n", "\nmetadata:\n  added_by_test: yes\n"),
    )
    .unwrap();
    let s = status_until(&api, &token, "the changed revision", |s| {
        s["revision"].as_str().is_some_and(|r| r != first)
    })
    .await;
    let second = s["revision"].as_str().unwrap().to_owned();
    assert!(s["refused"].is_null(), "{s:#}");

    // An invalid change: refused with its errors; the second keeps serving.
    std::fs::write(
        &env,
        text.replace("cidr: 10.99.0.0/24", "cidr: 10.99.0.0/33"),
    )
    .unwrap();
    let s = status_until(&api, &token, "the refusal", |s| !s["refused"].is_null()).await;
    assert_eq!(s["revision"], second.as_str(), "{s:#}");
    let errors = s["refused"]["errors"].to_string();
    assert!(errors.contains("env.yml"), "{errors}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("standalone stops within 30 s")
        .unwrap()
        .unwrap();
}
