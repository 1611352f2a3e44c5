//! The last good model, on disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use vaquero_model::SiteModel;

/// The cached model could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
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

    fn io(&self, source: std::io::Error) -> CacheError {
        CacheError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores `model` as the last good one.
    pub fn store(&self, model: &SiteModel) -> Result<(), CacheError> {
        let body = serde_json::to_vec(model).map_err(|e| CacheError::Corrupt {
            path: self.path.clone(),
            why: format!("the model does not serialize: {e}"),
        })?;
        let sum = hex::encode(Sha256::digest(&body));
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let tmp = dir.join(format!(".{FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
        f.write_all(format!("sha256:{sum}\n").as_bytes())
            .and_then(|()| f.write_all(&body))
            .and_then(|()| f.sync_all())
            .map_err(|e| self.io(e))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))
    }

    /// The last good model, `None` when none was stored yet.
    pub fn load(&self) -> Result<Option<Arc<SiteModel>>, CacheError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let corrupt = |why: String| CacheError::Corrupt {
            path: self.path.clone(),
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
        let model: SiteModel = serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some(Arc::new(model)))
    }
}
