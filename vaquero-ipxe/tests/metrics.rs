//! Request metrics of the boot service, read from a debugging recorder
//! installed for this test process: requests by route and status,
//! response bytes and latency by route.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

mod common;

use std::process::Command;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

fn curl_status(url: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            url,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

fn labels(k: &CompositeKey) -> Vec<(String, String)> {
    k.key()
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect()
}

#[test]
fn requests_are_counted_by_route_and_status() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "hello\n").unwrap();
    let server = common::start(common::lab(), Some(root), dir);
    let base = format!("http://{}", server.addr);

    assert_eq!(curl_status(&format!("{base}/files/hello.txt")), 200);
    assert_eq!(curl_status(&format!("{base}/files/hello.txt")), 200);
    assert_eq!(curl_status(&format!("{base}/files/missing")), 404);
    assert_eq!(curl_status(&format!("{base}/boot.ipxe")), 200);
    assert_eq!(curl_status(&format!("{base}/nowhere")), 404);
    drop(server);

    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str, want: &[(&str, &str)]| -> u64 {
        snapshot
            .iter()
            .filter(|(k, ..)| k.kind() == MetricKind::Counter && k.key().name() == name)
            .filter(|(k, ..)| {
                let l = labels(k);
                want.iter()
                    .all(|(a, b)| l.iter().any(|(x, y)| x == a && y == b))
            })
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    let files_ok = [("route", "files"), ("status", "200")];
    assert_eq!(counter("vaquero_http_requests_total", &files_ok), 2);
    assert_eq!(
        counter(
            "vaquero_http_requests_total",
            &[("route", "files"), ("status", "404")]
        ),
        1
    );
    assert_eq!(
        counter(
            "vaquero_http_requests_total",
            &[("route", "boot.ipxe"), ("status", "200")]
        ),
        1
    );
    // An unrouted path never reaches a route's layer: not counted as one.
    assert_eq!(
        counter("vaquero_http_requests_total", &[("route", "files")]),
        3
    );
    // Two 6-byte bodies (and the 404's text).
    assert!(counter("vaquero_http_response_bytes_total", &[("route", "files")]) >= 12);
    let latencies: usize = snapshot
        .iter()
        .filter(|(k, ..)| k.key().name() == "vaquero_http_request_duration_seconds")
        .filter(|(k, ..)| labels(k).iter().any(|(a, b)| a == "route" && b == "files"))
        .map(|(.., v)| match v {
            DebugValue::Histogram(h) => h.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(latencies, 3);
}
