//! bench/store-commit: the latency of an engine step's commit on the
//! embedded store (redb) and on a real 3-member etcd cluster (Debian's
//! etcd-server, loopback), with `VAQUERO_BENCH_HOSTS` hosts (default
//! 10,000) stored:
//!
//! 1. the first step of a rollout: every host's state in one transaction;
//! 2. `VAQUERO_BENCH_COMMITS` steps (default 200) of 10 hosts each, as a
//!    rollout in flight commits them (hosts moving on, a pending action
//!    each), one after another: p50, p99 and max.
//!
//! Each commit is `StateStore::commit`, the engine's own write path:
//! durable (redb fsyncs; etcd answers once a quorum has it on disk) before
//! it returns. No peer: the figures compare the two stores.
#![allow(clippy::unwrap_used, missing_docs)]

use vaquero_test_support as support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use vaquero_engine::{EtcdConfig, EtcdStore, HostState, RedbStore, StateStore, Step, Store};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Figures {
    first: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn measure(store: Arc<dyn Store>, hosts: usize, commits: usize) -> Figures {
    let states = StateStore::new(store, "bench");
    let now = jiff::Timestamp::now();
    let all: Vec<HostState> = (0..hosts)
        .map(|i| {
            // A host that ran before: the fields a state in flight carries.
            let mut h = HostState::new(&format!("host-{i:05}"), "workflow", now);
            h.installed = Some("install".into());
            h.version = Some("9f2c".repeat(16));
            h.seq = 7;
            h
        })
        .collect();
    let t = Instant::now();
    states
        .commit(&Step {
            hosts: all.clone(),
            ..Step::default()
        })
        .await
        .unwrap();
    let first = t.elapsed();
    let mut times = Vec::with_capacity(commits);
    for c in 0..commits {
        let hosts: Vec<HostState> = (0..10)
            .map(|k| {
                let mut h = all[(c * 10 + k) % all.len()].clone();
                h.attempt += 1;
                h
            })
            .collect();
        let t = Instant::now();
        states
            .commit(&Step {
                hosts,
                ..Step::default()
            })
            .await
            .unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Figures {
        first,
        p50: at(0.5),
        p99: at(0.99),
        max: times[times.len() - 1],
    }
}

fn print(name: &str, hosts: usize, f: &Figures) {
    println!(
        "commit: {name:5} first step ({hosts} hosts) {:8.1} ms; steps of 10 hosts: p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms",
        f.first.as_secs_f64() * 1e3,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        f.max.as_secs_f64() * 1e3,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let hosts = env("VAQUERO_BENCH_HOSTS", 10_000);
    let commits = env("VAQUERO_BENCH_COMMITS", 200);
    let dir = tempfile::tempdir().unwrap();

    let redb: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("state.redb")).unwrap());
    let r = measure(redb, hosts, commits).await;
    print("redb", hosts, &r);

    let cluster = support::EtcdCluster::start(&dir.path().join("etcd"), 3);
    let etcd: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(&EtcdConfig::new(cluster.endpoints()))
            .await
            .unwrap(),
    );
    let e = measure(etcd, hosts, commits).await;
    print("etcd", hosts, &e);
    println!(
        "commit: etcd/redb  first step {:.2}x  p50 {:.2}x  p99 {:.2}x",
        e.first.as_secs_f64() / r.first.as_secs_f64(),
        e.p50.as_secs_f64() / r.p50.as_secs_f64(),
        e.p99.as_secs_f64() / r.p99.as_secs_f64(),
    );
    drop(cluster);
}
