//! Serves a site's HTTP boot service the way `vaquero standalone` does:
//! [`SiteServices`] answering from an [`EngineBootState`] loaded from the
//! engine's [`SiteState`], every request turned into an [`Observation`]
//! and then into an engine event.
//!
//! ```sh
//! cargo run --release -p vaquero-engine --example boot_service -- \
//!     --sot examples/lab --site lab --listen 127.0.0.1:8080 --netbooting all
//! ```
//!
//! The hosts named by `--netbooting` (or `all`) are in the engine's
//! `netbooting` phase of their first stage, attempt 1, as the engine
//! commits them once it has power-cycled them; every other host boots
//! from its disk. The site's agent must serve no DHCP (`dhcp_mode: off`,
//! no interfaces): this example starts the HTTP service only.
//! `bench/http` measures per-host scripts through it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use tokio::sync::mpsc;
use vaquero_engine::site::{SiteOptions, SiteServices};
use vaquero_engine::{EngineBootState, HostState, Phase, SiteState};
use vaquero_ipxe::TokenKey;
use vaquero_model::{SiteModel, Sot};

// The allocator the `vaquero` binary ships with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serve a site's boot service from the engine's state.
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
    /// Hosts netbooting their first stage; `all` for every host.
    #[arg(long)]
    netbooting: Vec<String>,
    /// HTTP event loops (threads); default: one per CPU.
    #[arg(long)]
    threads: Option<std::num::NonZeroUsize>,
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

    // The engine's state: the chosen hosts netbooting stage 0, attempt 1.
    let now = jiff::Timestamp::now();
    let mut state = SiteState::new(&args.site);
    for h in model.hosts() {
        let mut s = HostState::new(&h.name, &h.workflow, now);
        if args.netbooting.iter().any(|n| n == "all" || *n == h.name) {
            s.phase = Phase::Netbooting;
            s.attempt = 1;
            s.rollout = Some(1);
        }
        state.hosts.insert(h.name.clone(), s);
    }
    let boot_state = Arc::new(EngineBootState::new());
    boot_state.load(&model, &state);

    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut options = SiteOptions::new(TokenKey::new(key.to_vec()));
    options.http_listen = Some(args.listen);
    options.http_threads = args
        .threads
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(std::num::NonZeroUsize::MIN);
    let (observer, mut observations) = mpsc::unbounded_channel();
    let services = SiteServices::start(model.clone(), boot_state, options, observer).await?;
    println!(
        "serving site {} on http://{} from the engine's state",
        args.site,
        services.http_addr()
    );

    // The deciding half takes observations once per step (every 200 ms)
    // and turns each into an engine event.
    let taken = tokio::spawn(async move {
        let mut events = 0u64;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tick.tick().await;
            loop {
                match observations.try_recv() {
                    Ok((o, kept)) => {
                        events += u64::from(o.event().is_some());
                        // A checkpoint's installer is answered once its
                        // event is kept (an engine commits it first).
                        kept.into_iter()
                            .for_each(vaquero_engine::observe::Kept::done);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return events,
                }
            }
        }
    });
    let _ = tokio::signal::ctrl_c().await;
    services.stop().await;
    println!("{} engine events taken", taken.await?);
    Ok(())
}
