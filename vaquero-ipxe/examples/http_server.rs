//! Serves the HTTP boot service for a SoT until interrupted.
//!
//! ```sh
//! cargo run --release -p vaquero-ipxe --example http_server -- \
//!     --sot examples/lab --site lab --listen 10.99.0.2:8080 --files /srv/vaquero \
//!     --provision all
//! ```
//!
//! Which hosts get their first stage (instead of booting from disk) is set
//! with `--provision` (a host name, repeatable, or `all`); the engine
//! decides this in the real agent. The checkpoint key comes from
//! `--key-file`, else `VAQUERO_CHECKPOINT_KEY`, else a random one.
//! Every request is printed as one line on stdout (`--quiet`: not
//! printed; `--no-events`: not even emitted).

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

// The allocator the `vaquero` binary ships with: per-request allocations
// under many connections are cheaper than with glibc's malloc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use vaquero_ipxe::{CdnConfig, Current, MemoryBootState, ServiceConfig, TokenKey};
use vaquero_model::{SiteModel, Sot};

/// Serve the HTTP boot service for a SoT.
#[derive(Parser)]
struct Args {
    /// The SoT directory.
    #[arg(long)]
    sot: PathBuf,
    /// The site to serve.
    #[arg(long)]
    site: String,
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The directory served under /files.
    #[arg(long)]
    files: Option<PathBuf>,
    /// Proxy /files to this upstream base URL through a local cache.
    #[arg(long)]
    cdn: Option<String>,
    /// The cache directory for --cdn.
    #[arg(long, default_value = "vaquero-cache")]
    cache: PathBuf,
    /// Cache size cap in MiB for --cdn.
    #[arg(long, default_value_t = 10240)]
    cache_mib: u64,
    /// A file holding the checkpoint signing key.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Hosts to provision (their first stage, attempt 1); `all` for every host.
    #[arg(long)]
    provision: Vec<String>,
    /// Do not print a line per request (events are still taken, as the
    /// agent takes them).
    #[arg(long)]
    quiet: bool,
    /// Take no events at all (like nginx with `access_log off`).
    #[arg(long)]
    no_events: bool,
    /// HTTP event loops (threads); default: one per CPU.
    #[arg(long)]
    threads: Option<std::num::NonZeroUsize>,
}

fn key(args: &Args) -> std::io::Result<Vec<u8>> {
    if let Some(p) = &args.key_file {
        return std::fs::read(p);
    }
    if let Ok(k) = std::env::var("VAQUERO_CHECKPOINT_KEY") {
        return Ok(k.into_bytes());
    }
    let mut k = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut k)?;
    Ok(k)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let sot = Sot::load_dir(&args.sot)?;
    let model = Arc::new(SiteModel::compile(&sot, &args.site)?);
    let state = Arc::new(MemoryBootState::new());
    for h in model.hosts() {
        if args.provision.iter().any(|p| p == "all" || *p == h.name)
            && let Some(boot) = model.stages(h).first()
        {
            state.set(
                &h.name,
                Current::Stage {
                    stage: 0,
                    boot: (*boot).to_owned(),
                    attempt: 1,
                },
            );
        }
    }
    let mut config = ServiceConfig::new(args.files.clone(), TokenKey::new(key(&args)?));
    if let Some(upstream) = &args.cdn {
        config.cdn = Some(CdnConfig::new(
            upstream.clone(),
            args.cache.clone(),
            args.cache_mib << 20,
        ));
    }
    let (events_tx, mut events) = tokio::sync::mpsc::channel(16384);
    let (_swap, rx) = tokio::sync::watch::channel(model.clone());
    let events_tx = (!args.no_events).then_some(events_tx);
    let service = vaquero_ipxe::BootService::new(rx, state, config, events_tx)?;
    let quiet = args.quiet;
    // Events are drained in batches every 10 ms, as the agent's engine
    // takes them once per step: the event loops never wake this task.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
        loop {
            tick.tick().await;
            loop {
                let e = match events.try_recv() {
                    Ok(e) => e,
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return,
                };
                if quiet {
                    continue;
                }
                println!(
                    "{:?} {} host={} attempt={} client={} {}",
                    e.route,
                    e.status,
                    e.host.as_deref().unwrap_or("-"),
                    e.attempt.map_or("-".into(), |a| a.to_string()),
                    e.client.map_or("-".into(), |c| c.to_string()),
                    e.detail
                );
            }
        }
    });
    let threads = args
        .threads
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(std::num::NonZeroUsize::MIN);
    let listeners = vaquero_ipxe::Listeners::bind(args.listen, threads)?;
    println!(
        "serving site {} (model {}) on http://{} ({threads} event loops)",
        args.site,
        &model.version()[..12],
        listeners.local_addr()
    );
    listeners
        .serve(service, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
