//! Answers DHCP from a SoT on one interface until interrupted.
//!
//! ```sh
//! cargo run --release -p vaquero-dhcp --example dhcp_server -- --sot examples/lab --site lab --interface eth1 --server-ip 10.99.0.2
//! ```

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use vaquero_dhcp::{Server, ServerConfig};
use vaquero_model::{DhcpMode, SiteModel, Sot};

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Server,
    Proxy,
}

/// Answer DHCP from a SoT.
#[derive(Parser)]
struct Args {
    /// The SoT directory.
    #[arg(long)]
    sot: PathBuf,
    /// The site to serve.
    #[arg(long)]
    site: String,
    /// The interface to serve on.
    #[arg(long)]
    interface: Option<String>,
    /// This server's address on that link.
    #[arg(long)]
    server_ip: Ipv4Addr,
    /// Server or proxy mode.
    #[arg(long, value_enum, default_value = "server")]
    mode: Mode,
    /// Server port (67).
    #[arg(long, default_value_t = 67)]
    port: u16,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let sot = Sot::load_dir(&args.sot)?;
    let model = Arc::new(SiteModel::compile(&sot, &args.site)?);
    let mode = match args.mode {
        Mode::Server => DhcpMode::Server,
        Mode::Proxy => DhcpMode::Proxy,
    };
    let mut config = ServerConfig::new(args.interface, args.server_ip, mode);
    config.port = args.port;
    let (_tx, rx) = tokio::sync::watch::channel(model);
    let server = Server::bind(config, rx, None)?;
    println!(
        "serving site {} (model {})",
        args.site,
        &_tx.borrow().version()[..12]
    );
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
