//! Where served bytes come from: the [`FileSource`] trait and its
//! implementations — a directory root, an in-memory map, generated
//! per-client content, and an overlay of two sources.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::packet::ErrorCode;

/// An open file: its length and random access to its bytes.
pub trait FileHandle: Send + Sync {
    /// Length in bytes (what `tsize` reports).
    fn len(&self) -> u64;

    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
}

/// Why a file cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenFailure {
    /// There is no such file.
    #[error("file not found")]
    NotFound,
    /// The name tries to leave the root, or names something that is not a
    /// regular file.
    #[error("access violation: {0}")]
    AccessViolation(&'static str),
    /// The name resolves (through a symbolic link) to a file outside
    /// the root and outside every directory links may lead to. The
    /// client is told "access violation" only.
    #[error("`{name}` is a link to `{target}`, which leaves the root `{root}`")]
    Outside {
        /// The name asked for, relative to the root.
        name: String,
        /// Where it resolves to.
        target: PathBuf,
        /// The root.
        root: PathBuf,
    },
    /// A write request for a file that exists.
    #[error("file already exists")]
    Exists,
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl OpenFailure {
    /// What the client is told: no more than the code says for a file
    /// outside the root (its target is the operator's business).
    pub fn client_message(&self) -> String {
        match self {
            OpenFailure::Outside { .. } => "access violation: the file is outside the root".into(),
            e => e.to_string(),
        }
    }

    /// The TFTP error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            OpenFailure::NotFound => ErrorCode::FILE_NOT_FOUND,
            OpenFailure::AccessViolation(_) | OpenFailure::Outside { .. } => {
                ErrorCode::ACCESS_VIOLATION
            }
            OpenFailure::Exists => ErrorCode::FILE_EXISTS,
            OpenFailure::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                ErrorCode::DISK_FULL
            }
            OpenFailure::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ErrorCode::FILE_NOT_FOUND
            }
            OpenFailure::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                ErrorCode::ACCESS_VIOLATION
            }
            OpenFailure::Io(_) => ErrorCode::NOT_DEFINED,
        }
    }
}

/// Where a received file goes.
pub trait FileSink: Send {
    /// Stores `data` at `offset` (offsets arrive in order).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// The transfer completed: make the file visible.
    fn commit(self: Box<Self>) -> std::io::Result<()>;
}

/// Where the server's files come from.
///
/// Implementations get the file name exactly as the client sent it and
/// decide what it means; they must never hand out anything the operator
/// did not mean to serve. Sources are read-only unless they override
/// [`FileSource::create`]: by default the server refuses write requests
/// with "access violation".
pub trait FileSource: Send + Sync + 'static {
    /// Opens `name` for `client`.
    fn open(&self, name: &str, client: SocketAddr) -> Result<Box<dyn FileHandle>, OpenFailure>;

    /// Creates `name` for a write request of `client`. The default refuses.
    fn create(&self, name: &str, client: SocketAddr) -> Result<Box<dyn FileSink>, OpenFailure> {
        let _ = (name, client);
        Err(OpenFailure::AccessViolation(
            "this server does not accept writes",
        ))
    }
}

/// The relative path a client's file name stands for, or why it is refused.
///
/// Backslashes count as separators (Windows PXE clients send them),
/// leading separators are dropped (the root is `/`, as with tftpd-hpa
/// `--secure`), `.` and empty components are skipped, and `..` or a NUL
/// byte anywhere refuses the name.
pub fn normalize(name: &str) -> Result<String, OpenFailure> {
    if name.contains('\0') {
        return Err(OpenFailure::AccessViolation("NUL byte in file name"));
    }
    let mut parts = Vec::new();
    for c in name.split(['/', '\\']) {
        match c {
            "" | "." => {}
            ".." => return Err(OpenFailure::AccessViolation("`..` in file name")),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(OpenFailure::NotFound);
    }
    Ok(parts.join("/"))
}

/// Serves the regular files under a directory, and nothing outside it:
/// `..`, NUL bytes and symlinks that resolve outside the root are refused.
/// Read-only unless [`Directory::allow_create`] is set.
#[derive(Debug, Clone)]
pub struct Directory {
    root: PathBuf,
    create: bool,
    links_to: Vec<PathBuf>,
}

impl Directory {
    /// A source serving `root` (which must exist).
    pub fn new(root: impl AsRef<Path>) -> std::io::Result<Self> {
        Ok(Directory {
            root: root.as_ref().canonicalize()?,
            create: false,
            links_to: Vec::new(),
        })
    }

    /// Let symbolic links under the root resolve into `dirs` too (each
    /// must exist). Every file under them becomes readable by any
    /// client: name only directories meant to be served.
    pub fn allow_links_to<P: AsRef<Path>>(
        mut self,
        dirs: impl IntoIterator<Item = P>,
    ) -> std::io::Result<Self> {
        self.links_to = dirs
            .into_iter()
            .map(|d| d.as_ref().canonicalize())
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// Whether a resolved path may be served.
    fn allowed(&self, real: &Path) -> bool {
        real.starts_with(&self.root) || self.links_to.iter().any(|d| real.starts_with(d))
    }

    /// Accept write requests for files that do not exist yet, in
    /// directories that do (as tftpd-hpa `--create`). A file is written
    /// to a hidden temporary name and appears only when complete; existing
    /// files are never overwritten.
    pub fn allow_create(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

struct DiskFile {
    file: std::fs::File,
    len: u64,
}

impl FileHandle for DiskFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl FileSource for Directory {
    fn create(&self, name: &str, _client: SocketAddr) -> Result<Box<dyn FileSink>, OpenFailure> {
        if !self.create {
            return Err(OpenFailure::AccessViolation(
                "this server does not accept writes",
            ));
        }
        let rel = normalize(name)?;
        let dest = self.root.join(&rel);
        let parent = dest.parent().ok_or(OpenFailure::NotFound)?;
        let real_parent = match parent.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OpenFailure::NotFound);
            }
            Err(e) => return Err(e.into()),
        };
        if !real_parent.starts_with(&self.root) {
            return Err(OpenFailure::AccessViolation("the file is outside the root"));
        }
        let file_name = dest.file_name().ok_or(OpenFailure::NotFound)?;
        let dest = real_parent.join(file_name);
        if dest.symlink_metadata().is_ok() {
            return Err(OpenFailure::Exists);
        }
        static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = real_parent.join(format!(
            ".{}.tftp-upload-{}-{n}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        Ok(Box::new(NewFile { file, tmp, dest }))
    }

    fn open(&self, name: &str, _client: SocketAddr) -> Result<Box<dyn FileHandle>, OpenFailure> {
        let rel = normalize(name)?;
        let path = self.root.join(&rel);
        let real = match path.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OpenFailure::NotFound);
            }
            Err(e) => return Err(e.into()),
        };
        if !self.allowed(&real) {
            return Err(OpenFailure::Outside {
                name: rel,
                target: real,
                root: self.root.clone(),
            });
        }
        let file = std::fs::File::open(&real)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(OpenFailure::AccessViolation("not a regular file"));
        }
        Ok(Box::new(DiskFile {
            file,
            len: meta.len(),
        }))
    }
}

struct NewFile {
    file: std::fs::File,
    tmp: PathBuf,
    dest: PathBuf,
}

impl FileSink for NewFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn commit(self: Box<Self>) -> std::io::Result<()> {
        self.file.sync_all()?;
        // Refuse to replace a file that appeared meanwhile.
        std::fs::hard_link(&self.tmp, &self.dest)?;
        std::fs::remove_file(&self.tmp)
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        // Gone after a commit; an unfinished upload leaves nothing behind.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Bytes in memory, shared without copying.
#[derive(Debug, Clone)]
pub struct Bytes(pub Arc<[u8]>);

impl FileHandle for Bytes {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

/// Files held in memory, by normalized name.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    files: HashMap<String, Arc<[u8]>>,
}

impl Memory {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file; `name` is normalized like a request's.
    pub fn insert(&mut self, name: &str, bytes: impl Into<Arc<[u8]>>) -> Result<(), OpenFailure> {
        self.files.insert(normalize(name)?, bytes.into());
        Ok(())
    }
}

impl FileSource for Memory {
    fn open(&self, name: &str, _client: SocketAddr) -> Result<Box<dyn FileHandle>, OpenFailure> {
        let rel = normalize(name)?;
        self.files
            .get(&rel)
            .map(|b| Box::new(Bytes(b.clone())) as Box<dyn FileHandle>)
            .ok_or(OpenFailure::NotFound)
    }
}

/// Content made per request, e.g. a per-client boot menu. The function gets
/// the normalized name and the client, and returns `None` for "not mine".
pub struct Generated<F>(pub F);

impl<F> FileSource for Generated<F>
where
    F: Fn(&str, SocketAddr) -> Option<Vec<u8>> + Send + Sync + 'static,
{
    fn open(&self, name: &str, client: SocketAddr) -> Result<Box<dyn FileHandle>, OpenFailure> {
        let rel = normalize(name)?;
        (self.0)(&rel, client)
            .map(|v| Box::new(Bytes(v.into())) as Box<dyn FileHandle>)
            .ok_or(OpenFailure::NotFound)
    }
}

/// `first`, and where it has no such file, `second`.
pub struct Overlay<A, B>(pub A, pub B);

impl<A: FileSource, B: FileSource> FileSource for Overlay<A, B> {
    fn open(&self, name: &str, client: SocketAddr) -> Result<Box<dyn FileHandle>, OpenFailure> {
        match self.0.open(name, client) {
            Err(OpenFailure::NotFound) => self.1.open(name, client),
            other => other,
        }
    }
}

/// Converts bytes to netascii (RFC 764): LF → CR LF, a bare CR → CR NUL.
pub fn to_netascii(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    for &b in data {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            b => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        "127.0.0.1:1000".parse().unwrap()
    }

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize("/pxelinux.0").unwrap(), "pxelinux.0");
        assert_eq!(
            normalize("boot\\x64\\wdsnbp.com").unwrap(),
            "boot/x64/wdsnbp.com"
        );
        assert_eq!(normalize("./a//b/").unwrap(), "a/b");
        assert!(matches!(
            normalize("../etc/passwd"),
            Err(OpenFailure::AccessViolation(_))
        ));
        assert!(matches!(
            normalize("a/..\\..\\b"),
            Err(OpenFailure::AccessViolation(_))
        ));
        assert!(matches!(
            normalize("a\0b"),
            Err(OpenFailure::AccessViolation(_))
        ));
        assert!(matches!(normalize("/"), Err(OpenFailure::NotFound)));
    }

    #[test]
    fn directory_stays_in_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), b"hello").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/f"), root.join("in")).unwrap();
        let d = Directory::new(&root).unwrap();
        let f = d.open("/sub/f", client()).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(f.read_at(1, &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"ello");
        assert_eq!(
            d.open("in", client()).unwrap().len(),
            5,
            "a symlink inside the root is fine"
        );
        let Err(OpenFailure::Outside {
            name,
            target,
            root: r,
        }) = d.open("out", client())
        else {
            panic!("a link out of the root is refused as such");
        };
        assert_eq!(name, "out");
        assert_eq!(target, dir.path().canonicalize().unwrap().join("secret"));
        assert_eq!(r, root.canonicalize().unwrap());
        // Allowed where the operator says links may lead, and nowhere else.
        let kernels = dir.path().join("kernels");
        std::fs::create_dir(&kernels).unwrap();
        std::fs::write(kernels.join("vmlinuz"), b"kernel").unwrap();
        std::os::unix::fs::symlink(kernels.join("vmlinuz"), root.join("vmlinuz")).unwrap();
        assert!(matches!(
            d.open("vmlinuz", client()),
            Err(OpenFailure::Outside { .. })
        ));
        let linked = d.clone().allow_links_to([&kernels]).unwrap();
        assert_eq!(linked.open("vmlinuz", client()).unwrap().len(), 6);
        assert!(
            matches!(
                linked.open("out", client()),
                Err(OpenFailure::Outside { .. })
            ),
            "only the named directories"
        );
        assert!(
            linked.open("../kernels/vmlinuz", client()).is_err(),
            "names still stay beneath the root"
        );
        for bad in [
            "../secret",
            "sub/../../secret",
            "sub\\..\\..\\secret",
            "sub",
        ] {
            assert!(
                matches!(d.open(bad, client()), Err(OpenFailure::AccessViolation(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            d.open("nope", client()),
            Err(OpenFailure::NotFound)
        ));
        let abs = dir.path().join("secret");
        assert!(matches!(
            d.open(abs.to_str().unwrap(), client()),
            Err(OpenFailure::NotFound)
        ));
    }

    #[test]
    fn memory_generated_overlay() {
        let mut m = Memory::new();
        m.insert("/ipxe.efi", b"EFI".to_vec()).unwrap();
        let g = Generated(|name: &str, c: SocketAddr| {
            (name == "menu.ipxe").then(|| format!("#!ipxe\necho {}\n", c.ip()).into_bytes())
        });
        let src = Overlay(g, m);
        assert_eq!(
            src.open("menu.ipxe", client()).unwrap().len(),
            "#!ipxe\necho 127.0.0.1\n".len() as u64
        );
        assert_eq!(src.open("ipxe.efi", client()).unwrap().len(), 3);
        assert!(matches!(
            src.open("x", client()),
            Err(OpenFailure::NotFound)
        ));
        assert_eq!(to_netascii(b"a\nb\rc"), b"a\r\nb\r\0c");
    }
}
