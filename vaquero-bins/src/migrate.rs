//! `vaquero migrate`: every key of Vaquero's state from one store into
//! another (redb file or etcd cluster), checked afterwards.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use vaquero_engine::{EtcdStore, RedbStore, Store};

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
    #[command(flatten)]
    etcd: crate::remote::EtcdArgs,
}

async fn open(spec: &str, etcd: crate::remote::EtcdArgs) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = spec.strip_prefix("redb:") {
        let store = RedbStore::open(std::path::Path::new(path)).with_context(|| {
            format!("opening {path} (a running server or standalone holds it: stop it first)")
        })?;
        return Ok(Arc::new(store));
    }
    if let Some(urls) = spec.strip_prefix("etcd:") {
        let config = etcd.config(urls.split(',').map(str::to_owned).collect())?;
        let store = EtcdStore::connect(&config)
            .await
            .with_context(|| format!("connecting to etcd at {urls}"))?;
        return Ok(Arc::new(store));
    }
    anyhow::bail!("`{spec}`: give redb:PATH or etcd:URL,URL,…")
}

/// `vaquero migrate`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let from = open(&args.from, args.etcd.clone()).await?;
        let to = open(&args.to, args.etcd.clone()).await?;
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

/// The secrets `vaquero rotate` replaces.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Secret {
    /// `admin.token`, the first admin token (tokens made with `vaquero
    /// token create` are revoked one by one with `vaquero token revoke`).
    AdminToken,
    /// `checkpoint.key`, which signs the checkpoint tokens in per-host
    /// scripts and configs.
    CheckpointKey,
}

/// `vaquero rotate`.
pub fn rotate(secret: Secret, data: &std::path::Path) -> anyhow::Result<ExitCode> {
    use vaquero_engine::standalone::{Secret as S, rotate};
    let (which, after) = match secret {
        Secret::AdminToken => (
            S::AdminToken,
            "the old token is refused once vaquero starts again",
        ),
        Secret::CheckpointKey => (
            S::CheckpointKey,
            "checkpoint tokens signed with the old key are refused once vaquero starts again: an install in flight cannot check in, and its attempt times out",
        ),
    };
    let path = rotate(data, which)?;
    println!("{} replaced: {after}", path.display());
    Ok(ExitCode::SUCCESS)
}
