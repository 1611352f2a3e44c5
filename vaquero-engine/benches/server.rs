//! bench/server: observation ingest at a `vaquero server`, batched over
//! TLS as an agent uploads its spool (target: >= 50,000 observations/s).
//!
//! The server runs in this process on loopback, on a generated site of
//! `VAQUERO_BENCH_HOSTS` hosts (default 10,000) in a rollout. One agent
//! enrols with a join token, then posts batches of 2,000 observations of
//! those hosts, one after another as the agent does: each is answered
//! once the step that took it has committed. Prints observations per
//! second, and the p50 / p99 time of one batch.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/fleet/mod.rs"]
mod fleet;

use std::time::{Duration, Instant};

use vaquero_engine::agent::Spooled;
use vaquero_engine::agent::wire::{
    EnrolRequest, Enrolled, ObservationAck, ObservationBatch, PROTOCOL, VERSION_HEADER,
};
use vaquero_engine::observe::{Observation, ObservationKind};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // `cargo test --bench server` (the smoke run) passes `--bench`-less
    // arguments; any run does the same work, sized by the environment.
    let hosts = env("VAQUERO_BENCH_HOSTS", 10_000);
    let total = env("VAQUERO_BENCH_OBSERVATIONS", 200_000);
    let batch = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let sot = dir.path().join("sot");
    fleet::write(&sot, hosts, 1, &[]);
    let certs = dir.path().join("certs");
    vaquero_engine::pki::init(&certs, &["127.0.0.1".to_owned()], jiff::Timestamp::now()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = vaquero_engine::server::ServerConfig::new(sot.to_str().unwrap(), &certs);
    config.data = dir.path().join("data");
    config.listen = ([127, 0, 0, 1], port).into();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vaquero_engine::server::run(config, async {
        let _ = stopped.await;
    }));
    let base = format!("https://127.0.0.1:{port}");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.pem")).unwrap()).unwrap();
    let admin = reqwest::Client::builder()
        .tls_certs_only([ca.clone()])
        .build()
        .unwrap();

    // The admin token, once the server is up; then a join token.
    let token_file = dir.path().join("data/admin.token");
    let deadline = Instant::now() + Duration::from_secs(120);
    let join = loop {
        assert!(Instant::now() < deadline, "the server did not start");
        if let Ok(t) = std::fs::read_to_string(&token_file)
            && let Ok(r) = admin
                .post(format!("{base}/v1/tokens"))
                .bearer_auth(t.trim())
                .json(&serde_json::json!({"role": "agent", "site": "sim"}))
                .send()
                .await
            && r.status().is_success()
        {
            let v: serde_json::Value = r.json().await.unwrap();
            break v["token"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let join = vaquero_engine::auth::parse_join(&join).unwrap();
    let (key, csr) = vaquero_engine::pki::agent_csr().unwrap();
    let enrolled: Enrolled = admin
        .post(format!("{base}/v1/agent/enrol"))
        .header(VERSION_HEADER, format!("{}.{}", PROTOCOL.0, PROTOCOL.1))
        .json(&EnrolRequest {
            token: join.token,
            csr,
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(
            reqwest::Identity::from_pem(format!("{}\n{key}", enrolled.cert).as_bytes()).unwrap(),
        )
        .build()
        .unwrap();

    let mut times = Vec::new();
    let mut seq = 0u64;
    let started = Instant::now();
    while (seq as usize) < total {
        let items: Vec<Spooled> = (0..batch)
            .map(|_| {
                seq += 1;
                let i = seq as usize % hosts;
                Spooled {
                    seq,
                    observation: Observation {
                        at: jiff::Timestamp::now(),
                        host: format!("node-{i:06}"),
                        attempt: None,
                        kind: ObservationKind::Dhcp,
                        ok: true,
                        detail: "DISCOVER".into(),
                    },
                }
            })
            .collect();
        let t = Instant::now();
        let ack: ObservationAck = agent
            .post(format!("{base}/v1/agent/observations"))
            .header(VERSION_HEADER, format!("{}.{}", PROTOCOL.0, PROTOCOL.1))
            .json(&ObservationBatch {
                spool: "bench".into(),
                items,
            })
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        times.push(t.elapsed());
        assert_eq!(ack.acked, seq, "every observation acknowledged");
    }
    let secs = started.elapsed().as_secs_f64();
    times.sort();
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    println!(
        "ingest: {seq} observations of {hosts} hosts in batches of {batch}: {:.0}/s; one batch p50 {:.1} ms, p99 {:.1} ms (target >= 50,000/s)",
        seq as f64 / secs,
        pct(50).as_secs_f64() * 1e3,
        pct(99).as_secs_f64() * 1e3
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
