//! `vaquero standalone`: flags and config file, logs, the metrics
//! exporter and signals around `vaquero_engine::standalone::run`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use vaquero_engine::standalone::{MetricsRender, StandaloneConfig};

/// The keys of a `--config` TOML file (the flags' names).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub sot: Option<String>,
    pub branch: Option<String>,
    pub site: Option<String>,
    pub agent: Option<String>,
    pub data: Option<PathBuf>,
    pub api: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub dhcp_port: Option<u16>,
    pub tftp_port: Option<u16>,
    pub http_listen: Option<SocketAddr>,
    pub ipxe_dir: Option<PathBuf>,
    pub keep_days: Option<u64>,
    pub keep_attempts: Option<usize>,
    pub fetch_every: Option<u64>,
}

impl FileConfig {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}", path.display()))
    }
}

/// Flags (each overrides the config file).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SoT: a directory, a Git repository (path or file:// URL), or a
    /// remote one (https://, ssh://, git@host:path), mirrored into --data.
    #[arg(long, value_name = "DIR|GIT_URL", env = "VAQUERO_SOT")]
    pub sot: Option<String>,
    /// For a Git SoT: the branch followed (default: the one HEAD names).
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// The site to serve (default: the SoT's only site).
    #[arg(long, value_name = "ID", env = "VAQUERO_SITE")]
    pub site: Option<String>,
    /// The agent entry of the site to run (default: its only one).
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,
    /// Where state, the admin token and keys live.
    #[arg(long, value_name = "DIR", env = "VAQUERO_DATA")]
    pub data: Option<PathBuf>,
    /// Where the user API listens (an address off loopback needs TLS).
    #[arg(long, value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// The API's certificate chain (PEM): the API speaks HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The API's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A TOML file with the same keys (sot, site, agent, data, api, …).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The DHCP port (67).
    #[arg(long, value_name = "PORT", hide = true)]
    pub dhcp_port: Option<u16>,
    /// The TFTP port (69).
    #[arg(long, value_name = "PORT", hide = true)]
    pub tftp_port: Option<u16>,
    /// The boot service's address (default: the port of asset_server.url).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Where iPXE binaries missing from the TFTP root are taken from.
    #[arg(long, value_name = "DIR")]
    pub ipxe_dir: Option<PathBuf>,
    /// Execution records that ended, and timeline entries seen, longer ago
    /// are deleted (default 90).
    #[arg(long, value_name = "DAYS")]
    pub keep_days: Option<u64>,
    /// A host's records and timeline entries of its newest N boot attempts
    /// are kept, older ones deleted (default 20).
    #[arg(long, value_name = "N")]
    pub keep_attempts: Option<usize>,
    /// How often a remote SoT is fetched, in seconds (default 60).
    #[arg(long, value_name = "SECONDS")]
    pub fetch_every: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(p) => FileConfig::read(p)?,
        None => FileConfig::default(),
    };
    let sot = args
        .sot
        .or(file.sot)
        .context("give the SoT: vaquero standalone --sot DIR|GIT_URL")?;
    let mut config = StandaloneConfig::new(sot);
    if let Some(f) = args.fetch_every.or(file.fetch_every) {
        config.fetch = std::time::Duration::from_secs(f.max(1));
    }
    config.branch = args.branch.or(file.branch);
    config.site = args.site.or(file.site);
    config.agent = args.agent.or(file.agent);
    if let Some(d) = args.data.or(file.data) {
        config.data = d;
    }
    if let Some(a) = args.api.or(file.api) {
        config.api = a;
    }
    match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
    ) {
        (Some(cert), Some(key)) => {
            config.tls = Some(vaquero_engine::api::Tls {
                cert,
                key,
                client_ca: None,
            });
        }
        (None, None) => {}
        _ => anyhow::bail!("give both tls_cert and tls_key, or neither"),
    }
    ports(
        &mut config.ports,
        args.dhcp_port.or(file.dhcp_port),
        args.tftp_port.or(file.tftp_port),
        args.http_listen.or(file.http_listen),
        args.ipxe_dir.or(file.ipxe_dir),
    );
    config.retention = retention(
        args.keep_days.or(file.keep_days),
        args.keep_attempts.or(file.keep_attempts),
    );
    config.metrics = Some(metrics("standalone")?);
    until_signal(|shutdown| vaquero_engine::standalone::run(config, shutdown))
}

/// Where the site services listen, from the flags (or the config file).
pub fn ports(
    ports: &mut vaquero_engine::standalone::Ports,
    dhcp: Option<u16>,
    tftp: Option<u16>,
    http: Option<SocketAddr>,
    ipxe_dir: Option<PathBuf>,
) {
    if let Some(p) = dhcp {
        ports.dhcp = p;
    }
    if let Some(p) = tftp {
        ports.tftp = p;
    }
    ports.http = http;
    if let Some(d) = ipxe_dir {
        ports.ipxe_dirs = vec![d];
    }
}

/// How long execution records are kept: `--keep-days` (default 90) and
/// `--keep-attempts` (default 20).
pub fn retention(days: Option<u64>, attempts: Option<usize>) -> vaquero_engine::Retention {
    let keep = vaquero_engine::Retention::default();
    vaquero_engine::Retention::new(
        days.map_or(keep.max_age, |d| {
            std::time::Duration::from_secs(d * 24 * 3600)
        }),
        attempts.unwrap_or(keep.attempts),
    )
}

/// Installs the Prometheus recorder, with real histograms
/// ([`vaquero_engine::HISTOGRAM_BUCKETS`]) and every crate's metrics
/// described; what renders `/metrics`. `mode` is the process's
/// (`vaquero_build_info`).
pub fn metrics(mode: &'static str) -> anyhow::Result<MetricsRender> {
    let mut builder = metrics_exporter_prometheus::PrometheusBuilder::new();
    for (name, buckets) in vaquero_engine::HISTOGRAM_BUCKETS {
        builder = builder
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full((*name).to_owned()),
                buckets,
            )
            .with_context(|| format!("the buckets of {name}"))?;
    }
    let handle = builder
        .install_recorder()
        .context("installing the metrics recorder")?;
    vaquero_dhcp::describe_metrics();
    vaquero_tftp::describe_metrics();
    vaquero_ipxe::describe_metrics();
    vaquero_lom::describe_metrics();
    vaquero_engine::describe_metrics();
    metrics::describe_gauge!(
        "vaquero_build_info",
        "Always 1: the version and the mode (standalone, server, agent) of the process."
    );
    metrics::gauge!(
        "vaquero_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "mode" => mode
    )
    .set(1.0);
    Ok(MetricsRender(Arc::new(move || handle.render())))
}

/// Runs `main` on a multi-threaded runtime until it ends or SIGINT or
/// SIGTERM asks it to stop (the future it is given completes).
pub fn until_signal<F, Fut, E>(main: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = Box::pin(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        main(shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
