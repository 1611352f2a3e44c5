//! What the compositions share (`vaquero standalone`, `vaquero server`,
//! `vaquero agent`): the data directory's files and secrets, the SoT
//! source and its watch, the power drivers, the error they stop with.

use std::path::Path;
use std::sync::Arc;

use crate::Error;
use vaquero_model::{DirSource, GitRemote, GitSource, SotSource};

/// Renders the process's metrics as Prometheus text (the binary installs
/// the exporter; the API serves what it renders).
#[derive(Clone)]
pub struct MetricsRender(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRender")
    }
}

/// The admin token's file in the data directory.
pub const TOKEN_FILE: &str = "admin.token";
/// The store's file in the data directory.
#[cfg(feature = "server")]
pub(crate) const STATE_FILE: &str = "state.redb";

/// Reads `data/name`, or writes 32 random bytes (hex) there with mode 0600.
pub(crate) fn secret(data: &Path, name: &str) -> Result<String, Error> {
    let path = data.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Data { path, source }),
    }
    write_secret(data, name)
}

/// Writes 32 new random bytes (hex) to `data/name` with mode 0600,
/// atomically: beside it, synced, then renamed over it (a crash leaves
/// the old secret or the new one, never half of one). The new secret.
pub(crate) fn write_secret(data: &Path, name: &str) -> Result<String, Error> {
    let path = data.join(name);
    let err = |source| Error::Data {
        path: path.clone(),
        source,
    };
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = data.join(format!(".{name}.new"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(format!("{text}\n").as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    if let Ok(dir) = std::fs::File::open(data) {
        let _ = dir.sync_all();
    }
    Ok(text)
}

/// The SoT source named by `sot`: a remote Git repository (mirrored into
/// `data/sot.git`, cloned there the first time), a local one, or a
/// directory.
pub fn open_source(
    sot: &str,
    branch: Option<&str>,
    data: &Path,
) -> Result<Arc<dyn SotSource>, vaquero_model::Error> {
    if GitRemote::is_remote(sot) {
        return Ok(Arc::new(GitRemote::open(sot, &data.join(MIRROR), branch)?));
    }
    let path = Path::new(sot.strip_prefix("file://").unwrap_or(sot));
    if GitSource::is_repository(path) {
        Ok(Arc::new(match branch {
            Some(b) => GitSource::open(sot, b)?,
            None => GitSource::open_head(sot)?,
        }))
    } else {
        if !path.is_dir() {
            return Err(vaquero_model::Error::NotFound(path.to_path_buf()));
        }
        Ok(Arc::new(DirSource::new(path)))
    }
}

/// A remote SoT's mirror in the data directory.
pub const MIRROR: &str = "sot.git";

/// Fetches a remote SoT into its mirror: at once when told of a push,
/// else at most once per interval. A fetch that fails is logged and the
/// last fetched revision keeps serving.
#[cfg(feature = "server")]
pub(crate) struct Fetcher {
    remote: bool,
    every: std::time::Duration,
    last: Option<tokio::time::Instant>,
}

#[cfg(feature = "server")]
impl Fetcher {
    /// For the SoT named by `sot`, fetched at most every `every`.
    pub(crate) fn new(sot: &str, every: std::time::Duration) -> Self {
        Fetcher {
            remote: GitRemote::is_remote(sot),
            every,
            last: None,
        }
    }

    /// Fetches `source` if it is remote and a fetch is due (`push`: at
    /// once).
    pub(crate) async fn fetch(&mut self, source: &Arc<dyn SotSource>, push: bool) {
        if !self.remote || (!push && self.last.is_some_and(|l| l.elapsed() < self.every)) {
            return;
        }
        self.last = Some(tokio::time::Instant::now());
        let s = source.clone();
        let r = tokio::task::spawn_blocking(move || s.refresh()).await;
        match r {
            Ok(Ok(())) => {
                metrics::counter!("vaquero_sot_fetches_total", "outcome" => "ok").increment(1)
            }
            Ok(Err(e)) => {
                metrics::counter!("vaquero_sot_fetches_total", "outcome" => "failed").increment(1);
                tracing::warn!(error = %e, "SoT: fetch failed; the last fetched revision keeps serving");
            }
            Err(e) => tracing::error!(error = %e, "SoT: the fetch panicked"),
        }
    }
}

#[cfg(feature = "agent")]
/// Power drivers of the model's hosts, managed (one operation per BMC,
/// retries, timeouts). A host whose BMC entry cannot be used (a missing
/// secret) gets none, with a warning: its power actions fail, named.
pub(crate) fn drivers(
    model: &vaquero_model::SiteModel,
    lom: &vaquero_lom::Lom,
    have: &vaquero_lom::PowerDrivers,
) -> std::collections::HashMap<String, Arc<dyn vaquero_lom::PowerDriver>> {
    let mut out = std::collections::HashMap::new();
    for h in model.hosts() {
        if h.interfaces.iter().all(|i| i.bmc.is_none()) {
            continue;
        }
        match have.driver_for(h) {
            Ok(d) => {
                out.insert(
                    h.name.clone(),
                    Arc::new(lom.manage(d)) as Arc<dyn vaquero_lom::PowerDriver>,
                );
            }
            Err(e) => tracing::warn!(host = %h.name, error = %e, "no power driver"),
        }
    }
    out
}

/// How often execution records are pruned (the first time at start).
#[cfg(feature = "server")]
pub(crate) const PRUNE: std::time::Duration = std::time::Duration::from_secs(3600);

/// How long the SoT's files must be quiet after a change before it is read.
#[cfg(feature = "server")]
pub(crate) const SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

/// Sleeps until `at`; never returns when there is none.
pub(crate) async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(feature = "server")]
/// Watches the SoT's directory (recursively: a Git repository's refs and
/// a directory's files alike); each change is one message. Without
/// notification (an unsupported file system, too few inotify watches),
/// the receiver never yields and polling alone notices changes.
pub(crate) fn watch_sot(
    sot: &str,
) -> (
    Option<notify::RecommendedWatcher>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use notify::Watcher;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    if GitRemote::is_remote(sot) {
        // Its mirror changes when it is fetched, and each fetch is read.
        return (None, rx);
    }
    let path = Path::new(sot.strip_prefix("file://").unwrap_or(sot)).to_path_buf();
    let watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if let Ok(e) = e
            && !matches!(e.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&path, notify::RecursiveMode::Recursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => {
            tracing::debug!(path = %path.display(), "SoT: watching for changes");
            (Some(w), rx)
        }
        Err(e) => {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "SoT: no file-change notification; polling only"
            );
            (None, rx)
        }
    }
}
