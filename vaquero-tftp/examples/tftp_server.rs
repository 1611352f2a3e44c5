//! Serves a directory over TFTP until interrupted.
//!
//! ```sh
//! cargo run --release -p vaquero-tftp --example tftp_server -- --listen 127.0.0.1:6969 --root /srv/tftp
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use vaquero_tftp::{Directory, Server, ServerConfig};

/// Serve a directory over TFTP.
#[derive(Parser)]
struct Args {
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:69")]
    listen: SocketAddr,
    /// Directory to serve.
    #[arg(long)]
    root: PathBuf,
    /// Serve every transfer from the listening port.
    #[arg(long)]
    single_port: bool,
    /// Transfers at once.
    #[arg(long, default_value_t = 1024)]
    max_transfers: usize,
    /// New requests per second per client.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Accept uploads of new files.
    #[arg(long)]
    allow_create: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = {
        let mut c = ServerConfig::default();
        c.listen = args.listen;
        c.single_port = args.single_port;
        c.max_transfers = args.max_transfers;
        c.rate_per_second = args.rate;
        c.rate_burst = args.rate * 2.0;
        c
    };
    let source = Directory::new(&args.root)?.allow_create(args.allow_create);
    let server = Server::bind(config, source).await?;
    println!(
        "serving {} on {}",
        args.root.display(),
        server.local_addr()?
    );
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
