//! bench/state-growth: how the embedded store grows as a site is
//! reprovisioned again and again. A site of `VAQUERO_BENCH_HOSTS` hosts
//! (default 10,000) is provisioned, then reprovisioned
//! `VAQUERO_BENCH_ROUNDS - 1` times (default 10 rounds in all), by the
//! real runner (control half and acting half in one process, as
//! standalone runs them) on a real redb file: fake BMCs (vaquero-lom's
//! FakeDriver) whose machines "boot" by sending the observations the boot
//! services would (DHCP, TFTP, the chain and host scripts, kernel,
//! initrd, config, checkpoint). After each round, execution records are
//! pruned as the hourly prune does (`--keep-attempts`,
//! `VAQUERO_BENCH_KEEP`, default 20), and the size of `state.redb` is
//! printed. Target: after the first round, less than 10 % growth over the
//! remaining rounds.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/machines/mod.rs"]
mod machines;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use vaquero_engine::record::Retention;
use vaquero_engine::transport::LocalSite;
use vaquero_engine::{
    Actor, Command, EngineBootState, EngineConfig, JobRunner, ObservationKind, Phase, RedbStore,
    Runner,
};
use vaquero_lom::{FakeDriver, PowerDriver};
use vaquero_model::{SiteModel, Sot};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sot(dir: &Path, hosts: usize) {
    let w = |p: &str, s: &str| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w(
        "os/linux.yml",
        "id: linux\nos_family: debian\nmajor_version: \"12\"\nboot:\n  kernel: \"{{ urls.assets }}/vmlinuz\"\n  initrd: [\"{{ urls.assets }}/initrd.img\"]\n",
    );
    w("boot/install.yml", "id: install\noperating_system: linux\n");
    w(
        "workflows/w.yml",
        &format!("id: w\nstages: [{{boot: install}}]\npolicy: {{max_concurrent: {hosts}}}\n"),
    );
    w(
        "sites/s/env.yml",
        "id: s\nagents: [{id: a, asset_server: {url: \"http://127.0.0.1:8080\"}}]\nsubnets: [{id: p, cidr: 10.0.0.0/8, dns: [10.0.0.1]}]\npolicy: {force_provision: true, auto_apply: true}\n",
    );
    let mut text = String::new();
    for i in 0..hosts {
        text.push_str(&format!(
            "---\nname: host-{i:05}\nworkflow: w\ninterfaces:\n  - {{type: physical, mac: \"52:54:00:{:02x}:{:02x}:{:02x}\", subnet: p, ipv4: 10.{}.{}.{}}}\n",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff,
            1 + ((i >> 16) & 0xff),
            (i >> 8) & 0xff,
            i & 0xff,
        ));
    }
    w("sites/s/hosts.yml", &text);
}

/// What a machine sends as it boots, as the boot services would.
const BOOT: [(ObservationKind, &str); 7] = [
    (ObservationKind::Dhcp, "Discover → offer, boot ipxe.efi"),
    (
        ObservationKind::Tftp,
        "ipxe.efi completed (1048576 bytes, 120 ms)",
    ),
    (ObservationKind::Chain, "boot.ipxe"),
    (ObservationKind::Script, "install (stage 0) for x86_64 efi"),
    (ObservationKind::File, "vmlinuz"),
    (ObservationKind::File, "initrd.img"),
    (ObservationKind::Checkpoint, "install body: ok"),
];

fn main() {
    let hosts = env("VAQUERO_BENCH_HOSTS", 10_000);
    let rounds = env("VAQUERO_BENCH_ROUNDS", 10).max(2);
    let keep = env("VAQUERO_BENCH_KEEP", 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        sot(&dir.path().join("sot"), hosts);
        let sot = Sot::load_dir(&dir.path().join("sot")).unwrap_or_else(|e| panic!("{e}"));
        let model: Arc<SiteModel> = Arc::new(sot.compile().unwrap().remove("s").unwrap());
        let fakes: HashMap<String, FakeDriver> = model
            .hosts()
            .iter()
            .map(|h| (h.name.clone(), FakeDriver::new(format!("bmc-{}", h.name))))
            .collect();
        let drivers: HashMap<String, Arc<dyn PowerDriver>> = fakes
            .iter()
            .map(|(n, f)| (n.clone(), Arc::new(f.clone()) as Arc<dyn PowerDriver>))
            .collect();
        let db = dir.path().join("state.redb");
        let boot_state = Arc::new(EngineBootState::new());
        let store = Arc::new(RedbStore::open(&db).unwrap());
        let reader: Arc<dyn vaquero_engine::Store> = store.clone();
        let all = drivers.clone();
        let link = LocalSite::new(
            Actor::new(drivers, JobRunner::new()),
            Box::new(move |_| all.clone()),
        );
        let mut r = Runner::open(
            store,
            model.clone(),
            EngineConfig::default(),
            boot_state.clone(),
            "s".into(),
            link,
            Timestamp::now(),
        )
        .await
        .unwrap();
        r.adopt(None, None, Timestamp::now()).await.unwrap();
        let mut retention = Retention::default();
        retention.attempts = keep;
        let names: Vec<String> = model.hosts().iter().map(|h| h.name.clone()).collect();
        let mut seen = HashMap::new();
        let (mut first, mut first_data) = (0u64, 0u64);
        println!(
            "state-growth: {hosts} hosts, {rounds} rounds, records of the last {keep} attempts kept"
        );
        println!(
            "{:>5} {:>9} {:>12} {:>8} {:>12} {:>8}",
            "round", "seconds", "state.redb", "growth", "data", "growth"
        );
        for round in 1..=rounds {
            let t = Instant::now();
            if round > 1 {
                r.command(
                    Command::Reprovision {
                        hosts: names.clone(),
                        now: true,
                    },
                    Timestamp::now(),
                )
                .await
                .unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(1800);
            loop {
                r.tick(Timestamp::now()).await.unwrap();
                let state = r.control().state();
                let done = state.hosts.values().all(|h| h.phase == Phase::Done);
                if done {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round} not done in 30 min: {:?}",
                    state.phase_counts()
                );
                machines::boot(&fakes, &boot_state, &r.link().observer(), &mut seen, &BOOT);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r.control()
                .prune(&retention, Timestamp::now())
                .await
                .unwrap();
            let size = std::fs::metadata(&db).unwrap().len();
            // What is stored: every key and value (the file also holds
            // free pages redb reuses, and never gives back).
            let data: u64 = reader
                .list("")
                .await
                .unwrap()
                .iter()
                .map(|kv| (kv.key.len() + kv.value.len()) as u64)
                .sum();
            if round == 1 {
                (first, first_data) = (size, data);
            }
            if std::env::var_os("VAQUERO_BENCH_BREAKDOWN").is_some() {
                let mut by: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
                for kv in reader.list("").await.unwrap() {
                    let k: Vec<&str> = kv.key.split('/').collect();
                    let class = k.iter().take(4).copied().collect::<Vec<_>>().join("/");
                    let class = class.split("host-").next().unwrap_or_default().to_owned();
                    let e = by.entry(class).or_default();
                    e.0 += 1;
                    e.1 += (kv.key.len() + kv.value.len()) as u64;
                }
                for (class, (n, b)) in by {
                    println!("      {class:<40} {n:>8} keys {:>10} bytes", b);
                }
            }
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            let pct = |b: u64, of: u64| (b as f64 / of as f64 - 1.0) * 100.0;
            println!(
                "{round:>5} {:>9.1} {:>8.1} MiB {:>7.1}% {:>8.1} MiB {:>7.1}%",
                t.elapsed().as_secs_f64(),
                mib(size),
                pct(size, first),
                mib(data),
                pct(data, first_data)
            );
        }
    });
}
