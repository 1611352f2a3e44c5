//! `/files` as a caching proxy to a CDN, against a local upstream server
//! this test starts (it counts what it is asked): one upstream fetch for 50
//! concurrent `curl`s of the same object, cache hits afterwards, 502 and
//! nothing cached when the upstream fails, eviction under the size cap.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use vaquero_ipxe::{CdnConfig, MemoryBootState, ServiceConfig, TokenKey};
use vaquero_model::{SiteModel, Sot};

type Hits = Arc<Mutex<HashMap<String, usize>>>;

fn object(name: &str) -> Vec<u8> {
    let seed = name
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(seed) >> 7) as u8)
        .collect()
}

async fn upstream_handler(
    State(hits): State<Hits>,
    UrlPath(p): UrlPath<String>,
) -> axum::response::Response {
    *hits.lock().unwrap().entry(p.clone()).or_default() += 1;
    // Slow enough that concurrent requests overlap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    match p.as_str() {
        "broken" => (StatusCode::INTERNAL_SERVER_ERROR, "upstream broke").into_response(),
        "missing" => (StatusCode::NOT_FOUND, "no").into_response(),
        name => object(name).into_response(),
    }
}

/// Runs a server on 127.0.0.1 on its own runtime thread until the process
/// ends (the test binary exits after the tests).
fn run<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            serve(l).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

struct Setup {
    ours: SocketAddr,
    hits: Hits,
    cache: tempfile::TempDir,
}

fn setup(max_bytes: u64) -> Setup {
    let hits: Hits = Arc::default();
    let upstream_router = axum::Router::new()
        .route("/cdn/{*p}", axum::routing::get(upstream_handler))
        .with_state(hits.clone());
    let upstream = run(|l| async move { axum::serve(l, upstream_router).await });
    let cache = tempfile::tempdir().unwrap();
    let sot =
        Sot::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab")).unwrap();
    let model = Arc::new(SiteModel::compile(&sot, "lab").unwrap());
    let mut config = ServiceConfig::new(None, TokenKey::new(*b"k"));
    config.cdn = Some(CdnConfig::new(
        format!("http://{upstream}/cdn/"),
        cache.path(),
        max_bytes,
    ));
    let (swap, rx) = tokio::sync::watch::channel(model);
    std::mem::forget(swap); // the model stays for the test's life
    let service =
        vaquero_ipxe::BootService::new(rx, Arc::new(MemoryBootState::new()), config, None).unwrap();
    Setup {
        ours: run(|l| vaquero_ipxe::serve(l, service, std::future::pending())),
        hits,
        cache,
    }
}

fn hits(s: &Setup, p: &str) -> usize {
    s.hits.lock().unwrap().get(p).copied().unwrap_or(0)
}

fn cached_objects(s: &Setup) -> usize {
    std::fs::read_dir(s.cache.path().join("objects"))
        .unwrap()
        .count()
}

/// `curl` of `/files/{p}`: (status, body).
fn get(s: &Setup, p: &str, extra: &[&str]) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("b");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "%{http_code}", "-o"])
        .arg(&body)
        .args(extra)
        .arg(format!("http://{}/files/{p}", s.ours))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

#[test]
fn fifty_concurrent_requests_make_one_upstream_fetch() {
    let s = setup(64 << 20);
    let want = object("images/kernel");
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..50)
        .map(|i| {
            Command::new("curl")
                .args(["-sS", "--max-time", "60", "-w", "%{http_code}", "-o"])
                .arg(dir.path().join(format!("b{i}")))
                .arg(format!("http://{}/files/images/kernel", s.ours))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "request {i}");
        assert_eq!(
            std::fs::read(dir.path().join(format!("b{i}"))).unwrap(),
            want
        );
    }
    assert_eq!(
        hits(&s, "images/kernel"),
        1,
        "one upstream fetch for 50 requests"
    );
    // Later requests, ranges included, come from the cache.
    assert_eq!(get(&s, "images/kernel", &[]).1, want);
    let (status, body) = get(&s, "images/kernel", &["-r", "10-19"]);
    assert_eq!((status, body.as_slice()), (206, &want[10..20]));
    assert_eq!(hits(&s, "images/kernel"), 1);
    assert_eq!(cached_objects(&s), 1);
}

#[test]
fn upstream_failures_are_not_cached() {
    let s = setup(64 << 20);
    assert_eq!(get(&s, "broken", &[]).0, 502);
    assert_eq!(get(&s, "broken", &[]).0, 502);
    assert_eq!(hits(&s, "broken"), 2, "a failure is not remembered");
    assert_eq!(get(&s, "missing", &[]).0, 404);
    assert_eq!(cached_objects(&s), 0);
    assert!(
        std::fs::read_dir(s.cache.path().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no partial files"
    );
    // Path escapes never reach the upstream.
    assert_eq!(get(&s, "%2e%2e/secret", &[]).0, 400);
}

#[test]
fn least_recently_used_objects_are_evicted_under_the_cap() {
    // Room for two 256 KiB objects, not three.
    let s = setup(600 * 1024);
    for name in ["a", "b"] {
        assert_eq!(get(&s, name, &[]).0, 200);
    }
    // Use a again, so b is the least recently used.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(get(&s, "a", &[]).1, object("a"));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(get(&s, "c", &[]).1, object("c"));
    assert_eq!(cached_objects(&s), 2);
    // a is still cached, b is fetched again.
    assert_eq!(get(&s, "a", &[]).0, 200);
    assert_eq!(hits(&s, "a"), 1);
    assert_eq!(get(&s, "b", &[]).1, object("b"));
    assert_eq!(hits(&s, "b"), 2);
}
