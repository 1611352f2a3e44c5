//! Zero-copy file bodies on plain-TCP HTTP/1.1 connections.
//!
//! hyper writes response bodies from memory, so serving a file costs a
//! copy from the page cache into a buffer and another into the socket;
//! nginx's `sendfile` costs neither. To close that gap without giving up
//! hyper, a file region travels through hyper as a *placeholder*: a
//! [`Bytes`] of the region's length backed by untouched zero pages (never
//! read, never faulted in), registered here with the file and offset it
//! stands for. The connection's IO type ([`SendfileStream`]), handed the
//! placeholder's bytes by hyper's vectored write, recognises them by
//! address and calls `sendfile(2)` from the file instead.
//!
//! Placeholders are only produced for connections accepted by
//! [`SendfileListener`] (the handler learns it from the connection info),
//! so a router served any other way (TLS, HTTP/2, tests) always gets real
//! bytes. The server is HTTP/1 only for the same reason.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::idle::Activity;

/// A registered placeholder: `len` bytes at `start` stand for `file` from
/// `offset`.
struct Region {
    len: usize,
    file: Arc<File>,
    offset: u64,
}

static REGIONS: Mutex<BTreeMap<usize, Region>> = Mutex::new(BTreeMap::new());

/// The size of a placeholder buffer; a larger region takes several.
pub(crate) const PLACEHOLDER_SIZE: usize = 4 << 20;

/// Placeholder buffers for reuse. They are zeroed once when allocated —
/// fresh pages from the OS, never touched, so they cost address space, not
/// memory — and never written afterwards, so reusing one costs nothing
/// (freeing and allocating anew could make the allocator zero recycled
/// memory for every response).
static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Buffers kept for reuse (1 GiB of address space).
const FREE_MAX: usize = 256;

/// Owns a placeholder's buffer; unregisters it when hyper is done with it.
struct Placeholder {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Placeholder {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        if let Ok(mut r) = REGIONS.lock() {
            r.remove(&(self.buf.as_ptr() as usize));
        }
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut f) = FREE.lock()
            && f.len() < FREE_MAX
        {
            f.push(buf);
        }
    }
}

/// A body chunk that stands for `len` (at most [`PLACEHOLDER_SIZE`])
/// bytes of `file` from `offset`.
pub(crate) fn placeholder(file: Arc<File>, offset: u64, len: usize) -> Bytes {
    let len = len.min(PLACEHOLDER_SIZE);
    let buf = FREE
        .lock()
        .ok()
        .and_then(|mut f| f.pop())
        .unwrap_or_else(|| vec![0u8; PLACEHOLDER_SIZE]);
    let start = buf.as_ptr() as usize;
    if let Ok(mut r) = REGIONS.lock() {
        r.insert(start, Region { len, file, offset });
    }
    Bytes::from_owner(Placeholder { buf, len })
}

/// The file region `bytes` stand for, if they are (part of) a placeholder:
/// (file, offset, length).
fn lookup(bytes: &[u8]) -> Option<(Arc<File>, u64, usize)> {
    let p = bytes.as_ptr() as usize;
    let r = REGIONS.lock().ok()?;
    let (&start, region) = r.range(..=p).next_back()?;
    let end = start + region.len;
    (p + bytes.len() <= end && !bytes.is_empty()).then(|| {
        (
            region.file.clone(),
            region.offset + (p - start) as u64,
            bytes.len(),
        )
    })
}

/// A TCP connection that writes placeholders with `sendfile(2)`.
pub struct SendfileStream {
    tcp: TcpStream,
    activity: Option<Arc<Activity>>,
}

impl SendfileStream {
    /// Notes every read and write in `activity`.
    pub(crate) fn watch(&mut self, activity: Arc<Activity>) {
        self.activity = Some(activity);
    }

    fn progressed<T>(&self, p: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let (Poll::Ready(Ok(_)), Some(a)) = (&p, &self.activity) {
            a.touch();
        }
        p
    }

    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let r = self.tcp.try_io(Interest::WRITABLE, || {
                let mut off = offset;
                rustix::fs::sendfile(self.tcp.as_fd(), file.as_fd(), Some(&mut off), len)
                    .map_err(std::io::Error::from)
            });
            match r {
                Ok(0) => {
                    // The file is shorter than it was: never send zeros.
                    return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.tcp).poll_read(cx, buf);
        self.progressed(p)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let p = match lookup(buf) {
            Some((file, offset, len)) => self.poll_sendfile(cx, &file, offset, len),
            None => Pin::new(&mut self.tcp).poll_write(cx, buf),
        };
        self.progressed(p)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // Ordinary slices up to the first placeholder go out together; a
        // placeholder at the front goes out by sendfile.
        let plain = bufs.iter().take_while(|b| lookup(b).is_none()).count();
        let p = if plain > 0 {
            Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[..plain])
        } else {
            match bufs.first().and_then(|b| lookup(b)) {
                Some((file, offset, len)) => self.poll_sendfile(cx, &file, offset, len),
                None => Poll::Ready(Ok(0)),
            }
        };
        self.progressed(p)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A TCP listener whose connections write placeholders with `sendfile`
/// (and have `TCP_NODELAY` set: responses go out as headers then body
/// chunks, which Nagle and delayed ACKs would hold for ~40 ms).
pub struct SendfileListener {
    tcp: TcpListener,
}

impl SendfileListener {
    /// Wraps a bound listener.
    pub fn new(tcp: TcpListener) -> Self {
        SendfileListener { tcp }
    }
}

impl axum::serve::Listener for SendfileListener {
    type Io = SendfileStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.tcp.accept().await {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    return (
                        SendfileStream {
                            tcp,
                            activity: None,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The connection info of a [`SendfileListener`] connection.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    /// The client's address.
    pub addr: SocketAddr,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, SendfileListener>>
    for Conn
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, SendfileListener>) -> Self {
        Conn {
            addr: *stream.remote_addr(),
        }
    }
}
