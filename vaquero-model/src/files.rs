//! A SoT as a set of files, however it was read (directory, Git tree).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::Error;

/// The text files of one SoT revision, keyed by `/`-separated path relative
/// to the SoT root. Hidden entries (`.git`, `.github`, …) are not included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SotFiles {
    files: BTreeMap<String, Arc<str>>,
}

impl SotFiles {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, path: impl Into<String>, text: impl Into<Arc<str>>) {
        self.files.insert(path.into(), text.into());
    }

    /// A file's text.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(|t| &**t)
    }

    /// All files in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<str>)> {
        self.files.iter().map(|(p, t)| (p.as_str(), t))
    }

    /// How many files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Reads every file under `root` (symlinks followed, hidden entries
    /// skipped). Files that are not UTF-8 are an error: everything in a SoT
    /// is YAML or a text template.
    pub fn read_dir(root: &Path) -> Result<Self, Error> {
        let mut out = SotFiles::new();
        if !root.exists() {
            return Err(Error::NotFound(root.to_path_buf()));
        }
        if !root.is_dir() {
            return Err(Error::NotADirectory(root.to_path_buf()));
        }
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
                if meta.is_dir() {
                    stack.push(path);
                } else if meta.is_file() {
                    let rel = relative(root, &path);
                    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                    let text =
                        String::from_utf8(bytes).map_err(|_| Error::NotUtf8(path.clone()))?;
                    out.insert(rel, text);
                }
            }
        }
        Ok(out)
    }

    /// A content hash of every path and text (hex SHA-256), used as the
    /// revision id of a plain directory.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (p, t) in &self.files {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
            h.update((t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
        }
        hex(&h.finalize())
    }
}

impl IntoIterator for SotFiles {
    type Item = (String, Arc<str>);
    type IntoIter = std::collections::btree_map::IntoIter<String, Arc<str>>;

    fn into_iter(self) -> Self::IntoIter {
        self.files.into_iter()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
