//! The last good model, on disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use vaquero_model::SiteModel;

/// The cached model could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheFailure {
    /// The file system.
    #[error("model cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not a model this cache wrote, or was damaged: its
    /// checksum or its model's own version does not match its content.
    #[error("model cache {path}: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What does not match.
        why: String,
    },
}

/// The site's last good model in one file: `sha256:HEX\n` and the model's
/// JSON (which carries its version, itself a hash of its content).
/// Written to a temporary file, synced, renamed over the old one and the
/// directory synced: a crash leaves the old model or the new one, never a
/// mix.
#[derive(Debug, Clone)]
pub struct ModelCache {
    path: PathBuf,
}

const FILE: &str = "model.json";

impl ModelCache {
    /// The cache in directory `dir` (created when the first model is
    /// stored).
    pub fn new(dir: &Path) -> Self {
        ModelCache {
            path: dir.join(FILE),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `model` as the last good one.
    pub fn store(&self, model: &SiteModel) -> Result<(), CacheFailure> {
        write_checked(&self.path, model)
    }

    /// The last good model, `None` when none was stored yet.
    pub fn load(&self) -> Result<Option<Arc<SiteModel>>, CacheFailure> {
        Ok(read_checked::<SiteModel>(&self.path)?.map(Arc::new))
    }

    /// Stores `value` beside the model as `name` (the boot table, the
    /// enrolment), the same way: atomically, with a checksum.
    pub fn store_other(
        &self,
        name: &str,
        value: &impl serde::Serialize,
    ) -> Result<(), CacheFailure> {
        write_checked(&self.dir().join(name), value)
    }

    /// What [`store_other`](Self::store_other) stored as `name`.
    pub fn load_other<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, CacheFailure> {
        read_checked(&self.dir().join(name))
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Writes `value` as JSON to `path` after a `sha256:HEX` line: to a
/// temporary file, synced, renamed over the old one, the directory
/// synced.
fn write_checked(path: &Path, value: &impl serde::Serialize) -> Result<(), CacheFailure> {
    let io = |source| CacheFailure::Io {
        path: path.to_path_buf(),
        source,
    };
    let body = serde_json::to_vec(value).map_err(|e| CacheFailure::Corrupt {
        path: path.to_path_buf(),
        why: format!("does not serialize: {e}"),
    })?;
    let sum = hex::encode(Sha256::digest(&body));
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(format!("sha256:{sum}\n").as_bytes())
        .and_then(|()| f.write_all(&body))
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Reads what [`write_checked`] wrote; `None` when there is no file.
fn read_checked<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, CacheFailure> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheFailure::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |why: String| CacheFailure::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no checksum line".into()))?;
    let (head, body) = (&bytes[..nl], &bytes[nl + 1..]);
    let want = head
        .strip_prefix(b"sha256:")
        .ok_or_else(|| corrupt("no checksum line".into()))?;
    let have = hex::encode(Sha256::digest(body));
    if want != have.as_bytes() {
        return Err(corrupt(format!(
            "checksum {} does not match the content ({have})",
            String::from_utf8_lossy(want)
        )));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}
