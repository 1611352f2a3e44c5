//! `vaquero server` and `vaquero agent`: flags and config files around
//! `vaquero_engine::server::run` and `vaquero_engine::agent::run`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Deserialize;
use vaquero_engine::agent::AgentConfig;
use vaquero_engine::server::ServerConfig;

use crate::standalone::{metrics, ports, retention, until_signal};
use vaquero_engine::standalone::MetricsRender;

fn read_toml<T: for<'de> Deserialize<'de> + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}", path.display()))
}

/// The keys of `vaquero server --config` (the flags' names).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    sot: Option<String>,
    branch: Option<String>,
    data: Option<PathBuf>,
    listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    ca_key: Option<PathBuf>,
    advertise: Option<String>,
    keep_days: Option<u64>,
    keep_attempts: Option<usize>,
    webhook_secret_file: Option<PathBuf>,
    fetch_every: Option<u64>,
    etcd: Option<Vec<String>>,
    etcd_prefix: Option<String>,
    etcd_ca: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    etcd_user: Option<String>,
    etcd_password_file: Option<PathBuf>,
    lease_ttl: Option<u64>,
}

/// How to reach etcd, beside its URLs (`vaquero server`, `vaquero
/// migrate`).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct EtcdArgs {
    /// The prefix of every key in etcd (default /vaquero/).
    #[arg(long, value_name = "PREFIX")]
    etcd_prefix: Option<String>,
    /// The CA of the etcd members' certificates (PEM): TLS to etcd.
    #[arg(long, value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// A client certificate for etcd (PEM), with --etcd-key.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// An etcd user (with --etcd-password-file), for a cluster with
    /// authentication on.
    #[arg(long, value_name = "NAME", requires = "etcd_password_file")]
    etcd_user: Option<String>,
    /// The file holding the etcd user's password.
    #[arg(long, value_name = "FILE")]
    etcd_password_file: Option<PathBuf>,
}

impl EtcdArgs {
    /// Each option from `self`, else from `other`.
    fn or(self, other: EtcdArgs) -> EtcdArgs {
        EtcdArgs {
            etcd_prefix: self.etcd_prefix.or(other.etcd_prefix),
            etcd_ca: self.etcd_ca.or(other.etcd_ca),
            etcd_cert: self.etcd_cert.or(other.etcd_cert),
            etcd_key: self.etcd_key.or(other.etcd_key),
            etcd_user: self.etcd_user.or(other.etcd_user),
            etcd_password_file: self.etcd_password_file.or(other.etcd_password_file),
        }
    }

    /// The configuration of the cluster at `endpoints`.
    pub fn config(self, endpoints: Vec<String>) -> anyhow::Result<vaquero_engine::EtcdConfig> {
        let mut etcd = vaquero_engine::EtcdConfig::new(endpoints);
        if let Some(p) = self.etcd_prefix {
            etcd.prefix = p;
        }
        etcd.ca = self.etcd_ca;
        if let (Some(c), Some(k)) = (self.etcd_cert, self.etcd_key) {
            etcd.identity = Some((c, k));
        }
        if let Some(user) = self.etcd_user {
            let f = self
                .etcd_password_file
                .context("give --etcd-password-file with --etcd-user")?;
            let password = std::fs::read_to_string(&f)
                .with_context(|| format!("reading the etcd password {}", f.display()))?;
            etcd.user = Some((user, password.trim().to_owned()));
        }
        Ok(etcd)
    }
}

/// `vaquero server` flags (each overrides the config file).
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The SoT: a directory, a Git repository (path or file:// URL), or a
    /// remote one (https://, ssh://, git@host:path), mirrored into --data.
    #[arg(long, value_name = "DIR|GIT_URL", env = "VAQUERO_SOT")]
    sot: Option<String>,
    /// For a Git SoT: the branch followed (default: the one HEAD names).
    #[arg(long, value_name = "BRANCH")]
    branch: Option<String>,
    /// Where state and the admin token live.
    #[arg(long, value_name = "DIR", env = "VAQUERO_DATA")]
    data: Option<PathBuf>,
    /// Where users and agents reach the server (HTTPS; default
    /// 0.0.0.0:9443).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The server's certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The CA that signs agents' certificates (default: ca.pem beside
    /// --tls-cert, as `vaquero certs init` writes it).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The CA's key (default: ca.key beside --tls-cert).
    #[arg(long, value_name = "FILE")]
    ca_key: Option<PathBuf>,
    /// The URL agents reach the server at, written in join tokens
    /// (default: the address the admin used).
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    /// A TOML file with the same keys.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Execution records that ended, and timeline entries seen, longer
    /// ago are deleted (default 90).
    #[arg(long, value_name = "DAYS")]
    keep_days: Option<u64>,
    /// A host's records and timeline entries of its newest N boot
    /// attempts are kept (default 20).
    #[arg(long, value_name = "N")]
    keep_attempts: Option<usize>,
    /// How long a site's agents may be silent before no new host starts
    /// there, in seconds (default 90).
    #[arg(long, value_name = "SECONDS", hide = true)]
    silence: Option<u64>,
    /// The secret of `POST /v1/webhook/github` (GitHub's "Secret"): a
    /// push makes the server fetch the branch tip at once.
    #[arg(long, value_name = "FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// How often the SoT is checked when nothing says it changed, in
    /// seconds (default 10).
    #[arg(long, value_name = "SECONDS", hide = true)]
    poll: Option<u64>,
    /// Do not watch the SoT's files (the poll and the webhook only).
    #[arg(long, hide = true)]
    no_watch: bool,
    /// How often a remote SoT is fetched, in seconds (default 60; a push
    /// to the webhook fetches at once).
    #[arg(long, value_name = "SECONDS")]
    fetch_every: Option<u64>,
    /// Replicated: keep the state on this etcd cluster (client URLs,
    /// comma-separated) instead of DATA/state.redb. Every replica names the
    /// same cluster and its own --advertise URL; one leads at a time.
    #[arg(long, value_name = "URL,URL,URL", value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    #[command(flatten)]
    etcd_with: EtcdArgs,
    /// A replica's lease in the election, in seconds (default 2): a
    /// leader that dies is replaced about this long after.
    #[arg(long, value_name = "SECONDS")]
    lease_ttl: Option<u64>,
}

/// `vaquero server`.
pub fn server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let file: ServerFile = read_toml(args.config.as_deref())?;
    let sot = args
        .sot
        .or(file.sot)
        .context("give the SoT: vaquero server --sot DIR|GIT_URL")?;
    let cert = args
        .tls_cert
        .or(file.tls_cert)
        .context("give --tls-cert and --tls-key (vaquero certs init makes them)")?;
    let key = args
        .tls_key
        .or(file.tls_key)
        .context("give --tls-key with --tls-cert")?;
    let dir = cert.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut config = ServerConfig::new(sot, &dir);
    config.cert = cert;
    config.key = key;
    if let Some(c) = args.ca_cert.or(file.ca_cert) {
        config.ca_cert = c;
    }
    if let Some(k) = args.ca_key.or(file.ca_key) {
        config.ca_key = k;
    }
    config.branch = args.branch.or(file.branch);
    if let Some(d) = args.data.or(file.data) {
        config.data = d;
    }
    if let Some(l) = args.listen.or(file.listen) {
        config.listen = l;
    }
    config.advertise = args.advertise.or(file.advertise);
    if let Some(s) = args.silence {
        config.hub.silence = std::time::Duration::from_secs(s);
    }
    if let Some(p) = args.poll {
        config.poll = std::time::Duration::from_secs(p.max(1));
    }
    config.watch = !args.no_watch;
    if let Some(f) = args.fetch_every.or(file.fetch_every) {
        config.fetch = std::time::Duration::from_secs(f.max(1));
    }
    if let Some(f) = args.webhook_secret_file.or(file.webhook_secret_file) {
        let secret = std::fs::read_to_string(&f)
            .with_context(|| format!("reading the webhook secret {}", f.display()))?;
        let secret = secret.trim();
        anyhow::ensure!(
            !secret.is_empty(),
            "the webhook secret {} is empty",
            f.display()
        );
        config.webhook_secret = Some(secret.as_bytes().to_vec());
    }
    config.retention = retention(
        args.keep_days.or(file.keep_days),
        args.keep_attempts.or(file.keep_attempts),
    );
    if let Some(endpoints) = args.etcd.or(file.etcd) {
        let from_file = EtcdArgs {
            etcd_prefix: file.etcd_prefix,
            etcd_ca: file.etcd_ca,
            etcd_cert: file.etcd_cert,
            etcd_key: file.etcd_key,
            etcd_user: file.etcd_user,
            etcd_password_file: file.etcd_password_file,
        };
        config.etcd = Some(args.etcd_with.or(from_file).config(endpoints)?);
    }
    if let Some(t) = args.lease_ttl.or(file.lease_ttl) {
        config.ttl = std::time::Duration::from_secs(t.max(1));
    }
    config.metrics = Some(metrics("server")?);
    until_signal(|shutdown| vaquero_engine::server::run(config, shutdown))
}

/// The keys of `vaquero agent --config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    server: Option<String>,
    site: Option<String>,
    agent: Option<String>,
    join: Option<String>,
    join_file: Option<PathBuf>,
    cache: Option<PathBuf>,
    dhcp_port: Option<u16>,
    tftp_port: Option<u16>,
    http_listen: Option<SocketAddr>,
    ipxe_dir: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
}

/// `vaquero agent` flags (each overrides the config file).
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The server's URL (default: the join token's).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The site served.
    #[arg(long, value_name = "ID", env = "VAQUERO_SITE")]
    site: Option<String>,
    /// The agent (default: the join token's).
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    /// A join token (`vaquero token create --role agent`), needed once:
    /// the enrolment is kept in --cache.
    #[arg(long, value_name = "TOKEN", conflicts_with = "join_file")]
    join: Option<String>,
    /// A file holding the join token.
    #[arg(long, value_name = "FILE")]
    join_file: Option<PathBuf>,
    /// Where the enrolment, the model, the boot table and the observation
    /// spool are kept.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// A TOML file with the same keys.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The DHCP port (67).
    #[arg(long, value_name = "PORT", hide = true)]
    dhcp_port: Option<u16>,
    /// The TFTP port (69).
    #[arg(long, value_name = "PORT", hide = true)]
    tftp_port: Option<u16>,
    /// The boot service's address (default: the port of asset_server.url).
    #[arg(long, value_name = "ADDR", hide = true)]
    http_listen: Option<SocketAddr>,
    /// Where iPXE binaries missing from the TFTP root are taken from.
    #[arg(long, value_name = "DIR")]
    ipxe_dir: Option<PathBuf>,
    /// Where `GET /metrics` (Prometheus) is served, over plain HTTP
    /// (default 127.0.0.1:9091, skipped with a warning when taken; the
    /// agent has no other API). An address off loopback exposes counts
    /// only: no MAC, host name or secret.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Renew the certificate once it expires within this many days
    /// (default 30; certificates last 90).
    #[arg(long, value_name = "DAYS", hide = true)]
    renew_before_days: Option<u64>,
}

/// `vaquero agent`.
pub fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let file: AgentFile = read_toml(args.config.as_deref())?;
    let site = args
        .site
        .or(file.site)
        .context("give the site: vaquero agent --site ID")?;
    let cache = args
        .cache
        .or(file.cache)
        .context("give the cache directory: vaquero agent --cache DIR")?;
    let mut config = AgentConfig::new(site, cache);
    config.server = args.server.or(file.server);
    config.agent = args.agent.or(file.agent);
    if let Some(d) = args.renew_before_days {
        config.renew_before = std::time::Duration::from_secs(d * 86_400);
    }
    config.join = match (args.join.or(file.join), args.join_file.or(file.join_file)) {
        (Some(t), _) => Some(t),
        (None, Some(f)) => Some(
            std::fs::read_to_string(&f)
                .with_context(|| format!("reading the join token {}", f.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    ports(
        &mut config.ports,
        args.dhcp_port.or(file.dhcp_port),
        args.tftp_port.or(file.tftp_port),
        args.http_listen.or(file.http_listen),
        args.ipxe_dir.or(file.ipxe_dir),
    );
    let render = metrics("agent")?;
    // Bound now: a port in use is an error at start when it was asked
    // for; the default (127.0.0.1:9091) taken, by another agent on the
    // same machine, is a warning.
    let bind = |a: SocketAddr| {
        std::net::TcpListener::bind(a).and_then(|l| l.set_nonblocking(true).map(|()| l))
    };
    let listener = match args.metrics_listen.or(file.metrics_listen) {
        Some(a) => Some(bind(a).with_context(|| format!("metrics on {a}"))?),
        None => {
            let a = SocketAddr::from(([127, 0, 0, 1], 9091));
            bind(a)
                .inspect_err(|e| tracing::warn!(error = %e, "agent: no metrics on {a} (--metrics-listen names another address)"))
                .ok()
        }
    };
    until_signal(move |shutdown| async move {
        if let Some(l) = listener {
            serve_metrics(l, render);
        }
        vaquero_engine::agent::run(config, shutdown).await
    })
}

/// Serves `GET /metrics` on `listener` until the process ends.
fn serve_metrics(listener: std::net::TcpListener, render: MetricsRender) {
    use vaquero_ipxe::axum;
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "agent: no metrics listener");
            return;
        }
    };
    if let Ok(a) = listener.local_addr() {
        tracing::info!(listen = %a, "agent: metrics on /metrics");
    }
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    (render.0)(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "agent: the metrics listener stopped");
        }
    });
}
