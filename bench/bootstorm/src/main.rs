//! `bootstorm`: N machines netbooting at once, each doing what its
//! firmware and iPXE do, in order — DHCP with the PXE options, TFTP of
//! iPXE, iPXE's DHCP, the chain script, the host's script, the kernel and
//! the initrd, the config, the checkpoint — against whichever stack serves
//! the clients' network. `bench/bootstorm/run` sets up the namespaces and
//! the two stacks (Vaquero standalone; dnsmasq + nginx) and compares them.
//!
//! ```sh
//! bootstorm prepare --hosts 1000 --dir /tmp/storm --interface vqss0
//! ip netns exec CLIENTS bootstorm storm --machines /tmp/storm/machines.tsv --interface vqsc0 --label vaquero
//! ```

mod dhcp;
mod ipxe;
mod machine;
mod prepare;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

use machine::{Limits, Machine, Outcome, PHASES};

mod tftp;

#[derive(Parser)]
#[command(about = "A boot storm: N machines netbooting at once")]
enum Cmd {
    /// Write the SoT, the files, and the peers' configurations for N machines.
    Prepare(prepare::Prepare),
    /// Boot every machine of a `machines.tsv` at once and report.
    Storm(Storm),
}

#[derive(clap::Args)]
struct Storm {
    /// The machines (written by `prepare`).
    #[arg(long)]
    machines: PathBuf,
    /// The clients' interface: DHCP is broadcast on it.
    #[arg(long)]
    interface: String,
    /// The stack's name in the report.
    #[arg(long)]
    label: String,
    /// Only the first N machines.
    #[arg(long)]
    count: Option<usize>,
    /// Client worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> Result<()> {
    match Cmd::parse() {
        Cmd::Prepare(p) => prepare::run(&p),
        Cmd::Storm(s) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(t) = s.threads {
                rt.worker_threads(t);
            }
            rt.enable_all().build()?.block_on(storm(s))
        }
    }
}

async fn storm(s: Storm) -> Result<()> {
    let text = std::fs::read_to_string(&s.machines)
        .with_context(|| format!("{}", s.machines.display()))?;
    let mut machines = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(Machine::parse)
        .collect::<Result<Vec<_>>>()?;
    if let Some(n) = s.count {
        machines.truncate(n);
    }
    let n = machines.len();
    let dhcp = dhcp::Dhcp::bind(&s.interface)?;
    let limits = Arc::new(Limits {
        rom_dhcp: [4, 8, 16, 32].map(Duration::from_secs).to_vec(),
        ipxe_dhcp: [1, 2, 4, 8, 16].map(Duration::from_secs).to_vec(),
        http: Duration::from_secs(300),
        http_tries: 5,
    });
    let start = Instant::now();
    let tasks: Vec<_> = machines
        .into_iter()
        .enumerate()
        .map(|(i, m)| tokio::spawn(machine::boot(i, Arc::new(m), dhcp.clone(), limits.clone())))
        .collect();
    let mut outcomes = Vec::with_capacity(n);
    for t in tasks {
        outcomes.push(t.await?);
    }
    let wall = start.elapsed().as_secs_f64();
    report(&s.label, &outcomes, wall, &dhcp);
    Ok(())
}

/// This process's CPU time so far, user + system, in seconds.
fn own_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // After the command's closing parenthesis: fields 3 on; utime and
    // stime are fields 14 and 15, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// The `q` quantile of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn report(label: &str, outcomes: &[Outcome], wall: f64, dhcp: &dhcp::Dhcp) {
    let n = outcomes.len();
    let times = sorted(outcomes.iter().filter_map(|o| o.total).collect());
    let ok = times.len();
    let failed = n - ok;
    let last = times.last().copied().unwrap_or(wall);
    let per_min = if last > 0.0 {
        ok as f64 * 60.0 / last
    } else {
        0.0
    };
    let retries: u32 = outcomes.iter().map(|o| o.retries).sum();
    let bytes: u64 = outcomes.iter().map(|o| o.bytes).sum();
    println!(
        "{label}: {n} machines at once, {ok} booted, {failed} failed, last boot done after {last:.2} s"
    );
    let [p50, p95, p99, max] = [0.50, 0.95, 0.99, 1.0].map(|q| quantile(&times, q));
    println!("{label}: boot time p50 {p50:.2} s  p95 {p95:.2} s  p99 {p99:.2} s  max {max:.2} s");
    println!(
        "{label}: {per_min:.0} boots/min; {:.1} GiB received ({:.2} GiB/s); {retries} retransmissions or retried requests; DHCP replies unrouted: {} stray, {} malformed",
        bytes as f64 / f64::from(1u32 << 30),
        bytes as f64 / f64::from(1u32 << 30) / last.max(1e-9),
        dhcp.unrouted.stray.load(Relaxed),
        dhcp.unrouted.malformed.load(Relaxed),
    );
    println!("{label}: time in each phase (p50 / p99 / max, seconds):");
    for (k, phase) in PHASES.iter().enumerate() {
        let v = sorted(
            outcomes
                .iter()
                .filter_map(|o| o.phases.get(k).copied())
                .collect(),
        );
        if v.is_empty() {
            continue;
        }
        println!(
            "{label}:   {phase:<10} {:>7.3} {:>7.3} {:>7.3}",
            quantile(&v, 0.5),
            quantile(&v, 0.99),
            quantile(&v, 1.0)
        );
    }
    let mut by_phase: Vec<(&str, usize, &str)> = Vec::new();
    for o in outcomes {
        if let Some((phase, why)) = &o.failed {
            match by_phase.iter_mut().find(|(p, _, _)| p == phase) {
                Some(e) => e.1 += 1,
                None => by_phase.push((phase, 1, why)),
            }
        }
    }
    println!(
        "{label}: client CPU {:.1} s (this process: {n} machines' DHCP, TFTP and HTTP)",
        own_cpu()
    );
    for o in outcomes {
        for (phase, why) in &o.retried {
            println!("{label}: retried in {phase}: {why}");
        }
    }
    for (phase, count, why) in &by_phase {
        println!("{label}: FAILED in {phase}: {count} (first: {why})");
    }
    // One line for the script.
    println!(
        "result label={label} n={n} ok={ok} failed={failed} per_min={per_min:.1} p50={p50:.3} p95={p95:.3} p99={p99:.3} max={max:.3} last={last:.3}"
    );
}
