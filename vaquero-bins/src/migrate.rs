//! `vaquero migrate`: every key of Vaquero's state from one store into
//! another (redb file or etcd cluster), checked afterwards.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use vaquero_engine::{EtcdConfig, EtcdStore, RedbStore, Store};

/// `vaquero migrate` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store copied from: `redb:PATH` (a server's or standalone's
    /// DATA/state.redb, with it stopped) or `etcd:URL,URL,…`.
    #[arg(long, value_name = "redb:PATH|etcd:URLS")]
    from: String,
    /// The store copied into, in the same form.
    #[arg(long, value_name = "redb:PATH|etcd:URLS")]
    to: String,
    /// Say what would be copied; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Overwrite keys that already exist at the destination (else the
    /// copy is refused and nothing is written).
    #[arg(long)]
    overwrite: bool,
    /// The prefix of the keys in etcd (default /vaquero/).
    #[arg(long, value_name = "PREFIX")]
    etcd_prefix: Option<String>,
    /// The CA of the etcd members' certificates (PEM).
    #[arg(long, value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// A client certificate for etcd (PEM), with --etcd-key.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
}

async fn open(spec: &str, args: &Args) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = spec.strip_prefix("redb:") {
        let store = RedbStore::open(std::path::Path::new(path)).with_context(|| {
            format!("opening {path} (a running server or standalone holds it: stop it first)")
        })?;
        return Ok(Arc::new(store));
    }
    if let Some(urls) = spec.strip_prefix("etcd:") {
        let mut config = EtcdConfig::new(urls.split(',').map(str::to_owned).collect());
        if let Some(p) = &args.etcd_prefix {
            config.prefix.clone_from(p);
        }
        config.ca.clone_from(&args.etcd_ca);
        if let (Some(c), Some(k)) = (&args.etcd_cert, &args.etcd_key) {
            config.identity = Some((c.clone(), k.clone()));
        }
        let store = EtcdStore::connect(&config)
            .await
            .with_context(|| format!("connecting to etcd at {urls}"))?;
        return Ok(Arc::new(store));
    }
    anyhow::bail!("`{spec}`: give redb:PATH or etcd:URL,URL,…")
}

/// `vaquero migrate`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let from = open(&args.from, args).await?;
        let to = open(&args.to, args).await?;
        let c = vaquero_engine::migrate::migrate(
            from.as_ref(),
            to.as_ref(),
            args.overwrite,
            args.dry_run,
        )
        .await
        .with_context(|| format!("migrating {} to {}", args.from, args.to))?;
        let verb = if c.written {
            "copied and checked"
        } else {
            "would copy (dry run)"
        };
        println!(
            "{verb}: {} keys, {} bytes, sha256 {}{}",
            c.keys,
            c.bytes,
            c.checksum,
            if c.existing > 0 {
                format!(", {} overwritten", c.existing)
            } else {
                String::new()
            }
        );
        Ok(ExitCode::SUCCESS)
    })
}
