//! `/files`: assets from a directory, never outside it — single and
//! multiple ranges, `ETag` / `If-None-Match`, `Last-Modified` /
//! `If-Modified-Since`, `If-Range`, `HEAD` — streamed from disk, never
//! loaded whole.

use std::io::{Read, Seek, SeekFrom};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags, ResolveFlags};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

pub use crate::sendfile::ZeroCopy;

/// Files up to this size are read whole in the same blocking call that
/// opens them.
const CHUNK: usize = 256 * 1024;

/// Bytes read from disk per chunk of a streamed response body.
const STREAM_CHUNK: usize = 1024 * 1024;

/// Why a path is refused before the file system is asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathFailure {
    /// Empty, absolute, `.`/`..`, or containing NUL.
    #[error("path `{0}` is not a plain relative path")]
    NotRelative(String),
}

/// The relative path `rel` (already percent-decoded) as a path under
/// `root`, refusing anything that could name something outside it.
/// Symlinks are checked after resolution by [`FileRoot::open`].
pub fn join_safely(root: &Path, rel: &str) -> Result<PathBuf, PathFailure> {
    check_relative(rel)?;
    Ok(root.join(rel))
}

/// Whether `rel` is a plain relative path: not empty, no NUL, not
/// absolute, no `.` or `..` component (empty ones, as in `a//b`, are
/// nothing). A scan of the bytes: this is on every file request.
fn check_relative(rel: &str) -> Result<(), PathFailure> {
    let plain = !rel.is_empty()
        && !rel.starts_with('/')
        && !rel.as_bytes().contains(&0)
        && rel.split('/').all(|c| c != "." && c != "..");
    if plain {
        Ok(())
    } else {
        Err(PathFailure::NotRelative(rel.to_owned()))
    }
}

/// A directory served under `/files`.
///
/// Files are opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
/// relative to the root, so the kernel refuses any path — `..` or a
/// symlink, however it is reached — that would leave it (kernels before
/// 5.6: the path is resolved and checked instead).
#[derive(Debug, Clone)]
pub struct FileRoot {
    root: PathBuf,
    dir: Arc<OwnedFd>,
    links_to: Arc<[PathBuf]>,
}

impl FileRoot {
    /// Serves `dir` (resolved once, so a symlinked root is fine).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let root = std::fs::canonicalize(dir)?;
        let fd = rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(FileRoot {
            root,
            dir: Arc::new(fd),
            links_to: Arc::new([]),
        })
    }

    /// Lets symbolic links under the root resolve into `dirs` too (each
    /// must exist). Every file under them becomes readable by anyone who
    /// can reach the service: name only directories meant to be served.
    pub fn allow_links_to<P: AsRef<Path>>(
        mut self,
        dirs: impl IntoIterator<Item = P>,
    ) -> std::io::Result<Self> {
        self.links_to = dirs
            .into_iter()
            .map(|d| std::fs::canonicalize(d.as_ref()))
            .collect::<Result<Vec<_>, _>>()?
            .into();
        Ok(self)
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether a resolved path may be served.
    fn allowed(&self, real: &Path) -> bool {
        real.starts_with(&self.root) || self.links_to.iter().any(|d| real.starts_with(d))
    }

    /// Why `rel` is refused (403) or missing (404), for the operator's log
    /// and the host's timeline: where a link leads, and what to do. Not on
    /// the serving path: called once a request has failed.
    pub fn explain(&self, rel: &str, status: StatusCode) -> String {
        let Ok(path) = join_safely(&self.root, rel) else {
            return format!("`{rel}` is not a plain relative path");
        };
        match std::fs::canonicalize(&path) {
            Ok(real) if !self.allowed(&real) => format!(
                "`{rel}` is a link to `{}`, which leaves the root `{}`: move or copy the file under the root, or list its directory in allow_links_to",
                real.display(),
                self.root.display()
            ),
            Ok(real) if real.is_dir() => format!("`{}` is a directory", real.display()),
            Ok(real) if status == StatusCode::FORBIDDEN => format!(
                "`{}` cannot be read by this process: make it readable (chmod o+r, or the service's group)",
                real.display()
            ),
            Ok(real) => format!("`{}`: {status}", real.display()),
            Err(_) if path.symlink_metadata().is_ok() => format!(
                "`{rel}` is a link to a file that does not exist (`{}`)",
                path.display()
            ),
            Err(_) => format!("`{}` does not exist", path.display()),
        }
    }

    /// Opens `rel` for reading if it is inside the root (blocking).
    pub fn open(&self, rel: &str) -> Result<std::fs::File, StatusCode> {
        check_relative(rel).map_err(|_| StatusCode::BAD_REQUEST)?;
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(
            &*self.dir,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            how,
        ) {
            Ok(fd) => Ok(std::fs::File::from(fd)),
            Err(rustix::io::Errno::NOSYS) => self.open_checked(rel),
            // A link out of the root, where the operator lets links lead.
            Err(rustix::io::Errno::XDEV) if !self.links_to.is_empty() => self.open_checked(rel),
            // The path would leave the root.
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::ACCESS) => Err(StatusCode::FORBIDDEN),
            Err(_) => Err(StatusCode::NOT_FOUND),
        }
    }

    /// Without openat2: resolve every symlink, then check the result.
    fn open_checked(&self, rel: &str) -> Result<std::fs::File, StatusCode> {
        let p = join_safely(&self.root, rel).map_err(|_| StatusCode::BAD_REQUEST)?;
        let real = std::fs::canonicalize(&p).map_err(|_| StatusCode::NOT_FOUND)?;
        if !self.allowed(&real) {
            return Err(StatusCode::FORBIDDEN);
        }
        // The resolved path holds no link; one put there since is refused.
        let how = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(
            rustix::fs::CWD,
            &real,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            how,
        ) {
            Ok(fd) => Ok(std::fs::File::from(fd)),
            Err(rustix::io::Errno::NOSYS) => {
                std::fs::File::open(real).map_err(|_| StatusCode::NOT_FOUND)
            }
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::ACCESS) => Err(StatusCode::FORBIDDEN),
            Err(_) => Err(StatusCode::NOT_FOUND),
        }
    }

    /// The response to `GET`/`HEAD` of `rel`.
    ///
    /// Opening, `fstat` and reading a small file happen on the calling
    /// task, as nginx does on its event loop: for a local `base_dir` in
    /// the page cache they take microseconds, and a hop to the blocking
    /// pool would cost more than the work. Large files stream from a
    /// blocking thread.
    ///
    /// With `zero_copy` (the queue of a connection accepted by
    /// [`crate::serve`], which only this crate has), large bodies are sent
    /// with `sendfile(2)`; with `None`, as real bytes.
    pub fn serve(
        &self,
        rel: &str,
        headers: &HeaderMap,
        head: bool,
        zero_copy: Option<&ZeroCopy>,
    ) -> Response {
        let opened = self.open(rel).and_then(Opened::read);
        respond(opened, Path::new(rel), headers, head, zero_copy)
    }
}

/// An open regular file, and its bytes when it is small.
pub(crate) struct Opened {
    file: std::fs::File,
    len: u64,
    modified: SystemTime,
    small: Option<Bytes>,
}

impl Opened {
    /// Stats `file` and, when small, reads it (blocking).
    fn read(mut file: std::fs::File) -> Result<Opened, StatusCode> {
        let meta = file.metadata().map_err(|_| StatusCode::NOT_FOUND)?;
        if !meta.is_file() {
            return Err(StatusCode::NOT_FOUND);
        }
        let len = meta.len();
        let small = if len <= CHUNK as u64 {
            // Exactly `len` bytes: a buffer as long as its capacity
            // becomes `Bytes` without another allocation.
            let mut v = vec![0u8; len as usize];
            match file.read_exact(&mut v) {
                Ok(()) => Some(Bytes::from(v)),
                // Shorter than it was: the streaming path reports it.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
                Err(_) => return Err(StatusCode::INTERNAL_SERVER_ERROR),
            }
        } else {
            None
        };
        Ok(Opened {
            file,
            len,
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            small,
        })
    }
}

/// The response for a regular file at `path` (already known to be safe):
/// the CDN cache's objects, opened like [`FileRoot::serve`]'s files.
pub async fn serve_path(
    path: &Path,
    headers: &HeaderMap,
    head: bool,
    zero_copy: Option<&ZeroCopy>,
) -> Response {
    let opened = std::fs::File::open(path)
        .map_err(|_| StatusCode::NOT_FOUND)
        .and_then(Opened::read);
    respond(opened, path, headers, head, zero_copy)
}

fn respond(
    opened: Result<Opened, StatusCode>,
    name: &Path,
    headers: &HeaderMap,
    head: bool,
    zero_copy: Option<&ZeroCopy>,
) -> Response {
    match opened {
        Ok(o) => serve_open(o, name, headers, head, zero_copy),
        Err(status) => (status, status.canonical_reason().unwrap_or("")).into_response(),
    }
}

/// A strong validator from size and modification time.
pub fn etag(len: u64, modified: SystemTime) -> String {
    let nanos = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // On every file response: hex digits by hand, not `format!`.
    let mut s = String::with_capacity(44);
    s.push('"');
    push_hex(&mut s, u128::from(len));
    s.push('-');
    push_hex(&mut s, nanos);
    s.push('"');
    s
}

/// A file version's validators and length, as header values.
#[derive(Clone)]
struct Validators {
    len: u64,
    modified: SystemTime,
    /// `len` as a `Content-Length` value.
    length: HeaderValue,
    etag: HeaderValue,
    last_modified: HeaderValue,
}

/// Validators per thread, by (size, modification time): many machines
/// fetch the same few kernels and initrds, and formatting an `ETag` and
/// an HTTP date costs more than the rest of a small file's headers.
const VALIDATORS_CACHED: usize = 64;

thread_local! {
    static VALIDATORS: std::cell::RefCell<Vec<Option<Validators>>> =
        std::cell::RefCell::new(vec![None; VALIDATORS_CACHED]);
}

impl Validators {
    fn of(len: u64, modified: SystemTime) -> Validators {
        let nanos = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let slot = ((u128::from(len) ^ nanos) % VALIDATORS_CACHED as u128) as usize;
        let cached = VALIDATORS.with_borrow(|c| {
            c.get(slot)
                .and_then(Option::as_ref)
                .filter(|v| v.len == len && v.modified == modified)
                .cloned()
        });
        if let Some(v) = cached {
            return v;
        }
        let v = Validators {
            len,
            modified,
            length: HeaderValue::from(len),
            etag: HeaderValue::from_str(&etag(len, modified))
                .unwrap_or(HeaderValue::from_static("")),
            last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(modified))
                .unwrap_or(HeaderValue::from_static("")),
        };
        VALIDATORS.with_borrow_mut(|c| {
            if let Some(s) = c.get_mut(slot) {
                *s = Some(v.clone());
            }
        });
        v
    }
}

/// Appends `v` in lowercase hex without leading zeros (`0` for zero).
fn push_hex(s: &mut String, v: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (128 - v.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        s.push(char::from(HEX[((v >> (i * 4)) & 0xf) as usize]));
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("ipxe" | "txt" | "cfg" | "ks") => "text/plain; charset=utf-8",
        Some("json" | "ign") => "application/json",
        Some("yaml" | "yml") => "application/yaml",
        Some("iso") => "application/x-iso9660-image",
        Some("efi" | "kpxe" | "pxe" | "lkrn") => "application/octet-stream",
        _ => "application/octet-stream",
    }
}

/// Whether `If-None-Match` matches `tag` (weak comparison, `*`).
fn none_match(headers: &HeaderMap, tag: &str) -> Option<bool> {
    let v = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    let bare = tag.trim_start_matches("W/");
    Some(
        v.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == bare),
    )
}

fn not_modified_since(headers: &HeaderMap, modified: SystemTime) -> bool {
    let Some(v) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Ok(since) = httpdate::parse_http_date(v) else {
        return false;
    };
    // HTTP dates have whole seconds.
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    secs(modified) <= secs(since)
}

/// `If-Range`: ranges apply only if the validator still matches.
fn if_range_holds(headers: &HeaderMap, tag: &str, modified: SystemTime) -> bool {
    let Some(v) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if v.starts_with('"') {
        return v == tag;
    }
    httpdate::parse_http_date(v)
        .is_ok_and(|d| httpdate::fmt_http_date(d) == httpdate::fmt_http_date(modified))
}

/// Streams the parts of an open file in chunks read on a blocking thread
/// (one per response, not one per chunk).
fn stream(mut f: std::fs::File, parts: Vec<Segment>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let run = || -> std::io::Result<()> {
            for part in parts {
                match part {
                    Segment::Text(t) => {
                        if tx.blocking_send(Ok(t)).is_err() {
                            return Ok(());
                        }
                    }
                    Segment::File { start, len } => {
                        f.seek(SeekFrom::Start(start))?;
                        let mut left = len;
                        while left > 0 {
                            let n = left.min(STREAM_CHUNK as u64);
                            // A recycled buffer: no fresh pages to fault in
                            // and zero for every chunk.
                            let mut buf = Pooled::take();
                            (&mut f).take(n).read_to_end(&mut buf.0)?;
                            if buf.0.len() as u64 != n {
                                return Err(std::io::ErrorKind::UnexpectedEof.into());
                            }
                            left -= n;
                            // The client went away: stop reading.
                            if tx.blocking_send(Ok(Bytes::from_owner(buf))).is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Chunk buffers are returned here when the response is done with them.
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Buffers kept for reuse (64 connections × a channel of 4 + 1 in hand).
const POOL_MAX: usize = 384;

/// A chunk buffer that goes back to [`POOL`] when dropped.
struct Pooled(Vec<u8>);

impl Pooled {
    fn take() -> Pooled {
        let v = POOL
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_else(|| Vec::with_capacity(STREAM_CHUNK));
        let mut v = v;
        v.clear();
        Pooled(v)
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == STREAM_CHUNK
            && let Ok(mut p) = POOL.lock()
            && p.len() < POOL_MAX
        {
            p.push(v);
        }
    }
}

/// The body as `sendfile` placeholders for the file's parts, each made
/// (and its region queued) when hyper asks for it.
fn placeholders(zc: ZeroCopy, file: std::fs::File, parts: Vec<Segment>) -> Body {
    let file = Arc::new(file);
    let mut chunks = Vec::new();
    for p in parts {
        match p {
            Segment::Text(t) => chunks.push(Chunk::Text(t)),
            Segment::File { start, len } => {
                let mut at = start;
                while at < start + len {
                    let n = (start + len - at).min(crate::sendfile::PLACEHOLDER_SIZE as u64);
                    chunks.push(Chunk::File(at, n as usize));
                    at += n;
                }
            }
        }
    }
    Body::from_stream(futures_util::stream::iter(chunks.into_iter().map(
        move |c| {
            Ok::<_, std::io::Error>(match c {
                Chunk::Text(t) => t,
                Chunk::File(at, n) => zc.placeholder(file.clone(), at, n),
            })
        },
    )))
}

/// A chunk of a zero-copy body, before it is asked for.
enum Chunk {
    Text(Bytes),
    File(u64, usize),
}

enum Segment {
    Text(Bytes),
    File { start: u64, len: u64 },
}

/// Headers, validators, ranges and body for an opened file.
fn serve_open(
    mut o: Opened,
    name: &Path,
    headers: &HeaderMap,
    head: bool,
    zero_copy: Option<&ZeroCopy>,
) -> Response {
    let (len, modified) = (o.len, o.modified);
    let path = name;
    let v = Validators::of(len, modified);
    let tag = v.etag.to_str().unwrap_or("");
    let mut h = HeaderMap::with_capacity(8);
    let hv = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    h.insert(header::ETAG, v.etag.clone());
    h.insert(header::LAST_MODIFIED, v.last_modified.clone());
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // RFC 9110: If-None-Match wins over If-Modified-Since.
    let not_modified = match none_match(headers, tag) {
        Some(m) => m,
        None => not_modified_since(headers, modified),
    };
    if not_modified {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    let ctype = content_type(path);
    let ranges = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if if_range_holds(headers, tag, modified) => {
            match http_range_header::parse_range_header(r).and_then(|p| p.validate(len)) {
                Ok(v) => Some(v),
                Err(_) => {
                    h.insert(header::CONTENT_RANGE, hv(&format!("bytes */{len}")));
                    return (StatusCode::RANGE_NOT_SATISFIABLE, h).into_response();
                }
            }
        }
        _ => None,
    };
    let (status, parts, body_len) = match ranges.as_deref() {
        None => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            if !head && let Some(bytes) = o.small.take() {
                // The whole of a small file (the common case): no segments.
                h.insert(header::CONTENT_LENGTH, v.length);
                return response(StatusCode::OK, h, Body::from(bytes));
            }
            (
                StatusCode::OK,
                vec![Segment::File { start: 0, len }],
                v.length,
            )
        }
        Some([r]) => {
            let (s, e) = (*r.start(), *r.end());
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            h.insert(header::CONTENT_RANGE, hv(&format!("bytes {s}-{e}/{len}")));
            (
                StatusCode::PARTIAL_CONTENT,
                vec![Segment::File {
                    start: s,
                    len: e - s + 1,
                }],
                HeaderValue::from(e - s + 1),
            )
        }
        Some(many) => {
            let (parts, total) = multipart(many, len, ctype, tag);
            h.insert(
                header::CONTENT_TYPE,
                hv(&format!("multipart/byteranges; boundary={}", boundary(tag))),
            );
            (StatusCode::PARTIAL_CONTENT, parts, HeaderValue::from(total))
        }
    };
    h.insert(header::CONTENT_LENGTH, body_len);
    if head {
        return (status, h).into_response();
    }
    let body = match o.small {
        // In memory already: the body is slices of it.
        Some(bytes) => {
            let chunks: Vec<Bytes> = parts
                .into_iter()
                .map(|p| match p {
                    Segment::Text(t) => t,
                    Segment::File { start, len } => {
                        bytes.slice(start as usize..(start + len) as usize)
                    }
                })
                .collect();
            if chunks.len() == 1 {
                Body::from(chunks.into_iter().next().unwrap_or_default())
            } else {
                Body::from_stream(futures_util::stream::iter(
                    chunks.into_iter().map(Ok::<_, std::io::Error>),
                ))
            }
        }
        None => match zero_copy {
            Some(zc) => placeholders(zc.clone(), o.file, parts),
            None => stream(o.file, parts),
        },
    };
    response(status, h, body)
}

fn response(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

fn boundary(tag: &str) -> String {
    format!("vaquero-{}", tag.trim_matches('"'))
}

/// The parts of a `multipart/byteranges` body and its length.
fn multipart(
    ranges: &[RangeInclusive<u64>],
    len: u64,
    ctype: &str,
    tag: &str,
) -> (Vec<Segment>, u64) {
    let b = boundary(tag);
    let mut parts = Vec::new();
    let mut total = 0u64;
    for r in ranges {
        let (s, e) = (*r.start(), *r.end());
        let head = format!(
            "\r\n--{b}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {s}-{e}/{len}\r\n\r\n"
        );
        total += head.len() as u64 + (e - s + 1);
        parts.push(Segment::Text(Bytes::from(head)));
        parts.push(Segment::File {
            start: s,
            len: e - s + 1,
        });
    }
    let tail = format!("\r\n--{b}--\r\n");
    total += tail.len() as u64;
    parts.push(Segment::Text(Bytes::from(tail)));
    (parts, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_hex_of_length_and_mtime() {
        for (len, nanos) in [
            (0u64, 0u64),
            (1, 15),
            (1024, 1_763_800_000_123_456_789),
            (u64::MAX, 16),
        ] {
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos);
            assert_eq!(etag(len, t), format!("\"{len:x}-{nanos:x}\""));
        }
    }

    #[test]
    fn cached_validators_are_those_of_the_version_asked_for() {
        let t = |n: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(n);
        // (1, 0), (65, 0) and (1, 64) share a slot: each evicts the others.
        for _ in 0..2 {
            for (len, nanos) in [(1u64, 0u64), (65, 0), (1, 64), (1, 0)] {
                let v = Validators::of(len, t(nanos));
                assert_eq!(v.etag, etag(len, t(nanos)).as_str());
                assert_eq!(v.last_modified, httpdate::fmt_http_date(t(nanos)).as_str());
            }
        }
    }

    #[test]
    fn only_plain_relative_paths_join() {
        let root = Path::new("/srv/files");
        assert_eq!(
            join_safely(root, "alpine/vmlinuz"),
            Ok(PathBuf::from("/srv/files/alpine/vmlinuz"))
        );
        for bad in [
            "",
            "/etc/passwd",
            "../etc/passwd",
            "a/../../b",
            "./a",
            "a/./b",
            "a/..",
            "..",
            "a\0b",
        ] {
            assert!(join_safely(root, bad).is_err(), "{bad:?}");
        }
        for good in ["a//b", "dir/", "a/.hidden", "a/..b", "..."] {
            assert!(join_safely(root, good).is_ok(), "{good:?}");
        }
    }
}
