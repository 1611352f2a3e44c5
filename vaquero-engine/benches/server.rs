//! bench/server: a `vaquero server` as its agents see it, over TLS on
//! loopback, in three phases:
//!
//! 1. **Task latency** (target p99 < 50 ms): the agent answers a leased
//!    task, and times how long until the task the engine decides next for
//!    that host reaches it through its `/v1/agent/work` long-poll (the
//!    result's commit, the engine's step and the lease, end to end).
//! 2. **Model distribution**: the site's model in bytes, one full fetch,
//!    the cost of an unchanged poll (answered 304), and the time from the
//!    SoT's files changing on disk to the new version reaching the
//!    agent's long-poll (the watch, validation and compilation included).
//! 3. **Observation ingest** (target >= 50,000/s): batches of 2,000
//!    observations posted one after another as the agent uploads its
//!    spool; each is answered once the step that took it has committed.
//!
//! The server runs in this process on a generated site of
//! `VAQUERO_BENCH_HOSTS` hosts (default 10,000) in a rollout; one agent
//! enrols with a join token.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/fleet/mod.rs"]
mod fleet;

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use vaquero_engine::act::TaskResult;
use vaquero_engine::agent::Spooled;
use vaquero_engine::agent::wire::{
    EnrolRequest, Enrolled, Lease, ObservationAck, ObservationBatch, PROTOCOL, ResultsAck,
    ResultsBody, TaskKey, VERSION_HEADER, Work, WorkRequest,
};
use vaquero_engine::event::{ActionKind, Outcome};
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
    let enrolled: Enrolled = call(
        &admin,
        &base,
        "enrol",
        &EnrolRequest {
            token: join.token,
            csr,
        },
    )
    .await;
    let agent = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(
            reqwest::Identity::from_pem(format!("{}\n{key}", enrolled.cert).as_bytes()).unwrap(),
        )
        .build()
        .unwrap();

    let tasks_n = env("VAQUERO_BENCH_TASKS", 1_000);
    let revisions = env("VAQUERO_BENCH_REVISIONS", 5);
    tasks(&agent, &base, tasks_n).await;
    model(&agent, &base, &sot, hosts, revisions).await;
    ingest(&agent, &base, hosts, total).await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

/// Phase 3: observation ingest.
async fn ingest(agent: &reqwest::Client, base: &str, hosts: usize, total: usize) {
    let batch = 2_000;
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
        let ack: ObservationAck = call(
            agent,
            base,
            "observations",
            &ObservationBatch {
                spool: "bench".into(),
                items,
            },
        )
        .await;
        times.push(t.elapsed());
        assert_eq!(ack.acked, seq, "every observation acknowledged");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ingest: {seq} observations of {hosts} hosts in batches of {batch}: {:.0}/s; one batch p50 {:.1} ms, p99 {:.1} ms (target >= 50,000/s)",
        seq as f64 / secs,
        pct(&mut times, 50),
        pct(&mut times, 99)
    );
}

fn version() -> String {
    format!("{}.{}", PROTOCOL.0, PROTOCOL.1)
}

/// `times`' p-th percentile, in milliseconds.
fn pct(times: &mut [Duration], p: usize) -> f64 {
    times.sort();
    times[(times.len() * p / 100).min(times.len() - 1)].as_secs_f64() * 1e3
}

/// `POST /v1/agent/{path}` with `body`, as the agent calls it.
async fn call<R: serde::de::DeserializeOwned>(
    agent: &reqwest::Client,
    base: &str,
    path: &str,
    body: &impl serde::Serialize,
) -> R {
    agent
        .post(format!("{base}/v1/agent/{path}"))
        .header(VERSION_HEADER, version())
        .json(body)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One `/v1/agent/work` poll; `req` then asks for what is newer.
async fn poll(agent: &reqwest::Client, base: &str, req: &mut WorkRequest) -> Vec<Lease> {
    let w: Work = call(agent, base, "work", &*req).await;
    req.boot = w.boot;
    req.epoch = w.epoch;
    w.tasks
}

/// Phase 1: task latency. Answers leased tasks one at a time, each with
/// success, and times the next lease of the same host (a power cycle
/// has none until the host boots and checks in, so it is answered
/// without a sample). Samples end at `n`, or when the rollout's first
/// wave is all in flight.
async fn tasks(agent: &reqwest::Client, base: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut req = WorkRequest::default();
    let mut queue: VecDeque<Lease> = VecDeque::new();
    let mut times = Vec::new();
    let mut answered = 0usize;
    while times.len() < n {
        assert!(
            Instant::now() < deadline,
            "task phase: {} of {n} samples after {answered} results",
            times.len()
        );
        let Some(lease) = queue.pop_front() else {
            // No task left to answer: the rollout's first wave has every
            // host it may start in flight (power-cycled hosts wait for a
            // netboot that never comes here).
            req.wait = 5;
            req.running.clear();
            let leased = poll(agent, base, &mut req).await;
            if leased.is_empty() && answered > 0 {
                break;
            }
            queue.extend(leased);
            continue;
        };
        let action = &lease.task.action;
        let follows = !matches!(action.kind, ActionKind::PowerCycle | ActionKind::Notice(_));
        let started = Instant::now();
        let ack: ResultsAck = call(
            agent,
            base,
            "results",
            &ResultsBody {
                results: vec![TaskResult {
                    site: lease.task.site.clone(),
                    host: action.host.clone(),
                    seq: action.seq,
                    outcome: Outcome::Ok {
                        output: String::new(),
                    },
                    steps: Vec::new(),
                    ended: jiff::Timestamp::now(),
                }],
            },
        )
        .await;
        answered += 1;
        assert_eq!(
            ack.taken,
            vec![TaskKey::of(&lease.task)],
            "the result is taken"
        );
        if !follows {
            continue;
        }
        // The host's next task, through the long-poll; other hosts' tasks
        // queue up, their leases kept by naming them as running.
        let next = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < next,
                "no task followed {} {} (seq {})",
                action.host,
                action.kind.name(),
                action.seq
            );
            req.wait = 10;
            req.running = queue.iter().map(|l| TaskKey::of(&l.task)).collect();
            let leased = poll(agent, base, &mut req).await;
            let found = leased
                .iter()
                .any(|l| l.task.action.host == action.host && l.task.action.seq > action.seq);
            queue.extend(leased);
            if found {
                times.push(started.elapsed());
                break;
            }
        }
    }
    assert!(!times.is_empty(), "no task followed another");
    println!(
        "tasks: {} results answered, {} timed from the result's post to the host's next lease: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 50 ms)",
        answered,
        times.len(),
        pct(&mut times, 50),
        pct(&mut times, 99),
        pct(&mut times, 100)
    );
}

/// The ETag of a model response.
fn etag_of(r: &reqwest::Response) -> String {
    r.headers()[reqwest::header::ETAG]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Phase 2: model distribution.
async fn model(agent: &reqwest::Client, base: &str, sot: &Path, hosts: usize, revisions: usize) {
    let get = |etag: Option<&str>, wait: u64| {
        let mut r = agent
            .get(format!("{base}/v1/agent/model?wait={wait}"))
            .header(VERSION_HEADER, version());
        if let Some(e) = etag {
            r = r.header(reqwest::header::IF_NONE_MATCH, e);
        }
        r.send()
    };
    let started = Instant::now();
    let r = get(None, 0).await.unwrap().error_for_status().unwrap();
    let mut etag = etag_of(&r);
    let bytes = r.bytes().await.unwrap().len();
    let full = started.elapsed();

    let polls = 500u32;
    let started = Instant::now();
    for _ in 0..polls {
        let r = get(Some(&etag), 0).await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::NOT_MODIFIED);
    }
    let unchanged = started.elapsed() / polls;

    let mut times = Vec::new();
    for v in 0..revisions {
        let started = Instant::now();
        fleet::write(sot, hosts, 2 + v as u32, &[]);
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "revision {v} did not reach the agent"
            );
            let r = get(Some(&etag), 30).await.unwrap();
            if r.status() == reqwest::StatusCode::OK {
                etag = etag_of(&r);
                r.bytes().await.unwrap();
                break;
            }
        }
        times.push(started.elapsed());
    }
    println!(
        "model: {hosts} hosts, {:.1} MiB; full fetch {:.1} ms; unchanged poll (304) {:.2} ms; SoT written -> new version at the agent: p50 {:.0} ms, max {:.0} ms over {revisions} revisions",
        bytes as f64 / (1024.0 * 1024.0),
        full.as_secs_f64() * 1e3,
        unchanged.as_secs_f64() * 1e3,
        pct(&mut times, 50),
        pct(&mut times, 100)
    );
}
