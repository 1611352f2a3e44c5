//! Zero-copy file bodies on plain-TCP HTTP/1.1 connections.
//!
//! hyper writes response bodies from memory, so serving a file costs a
//! copy from the page cache into a buffer and another into the socket;
//! nginx's `sendfile` costs neither. To close that gap without giving up
//! hyper, a file region travels through hyper as a *placeholder*: a
//! [`Bytes`] of the region's length that points into one static run of
//! zeros (never written, never read: its pages are never even faulted
//! in), while the region itself — file, offset, length — is queued on the
//! connection's [`ZeroCopy`]. The connection's IO type
//! ([`SendfileStream`]), handed bytes that point into the zeros by
//! hyper's vectored write, sends the region at the front of its queue
//! with `sendfile(2)` instead. HTTP/1.1 writes one response's body after
//! another, in order, so the queue's order is the order hyper writes;
//! each write is also checked against the region's progress, and a
//! mismatch fails the connection rather than send a wrong byte.
//!
//! A placeholder costs no memory whatever the number of connections (a
//! boot storm holds a thousand 40 MiB responses in flight at once).
//! Placeholders are only produced for connections accepted by
//! [`SendfileListener`] (the handler reaches their queue through the
//! connection info), so a router served any other way (TLS, HTTP/2,
//! tests) always gets real bytes. The server is HTTP/1 only for the same
//! reason.

use std::collections::VecDeque;
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

/// The largest placeholder; a larger region takes several.
pub(crate) const PLACEHOLDER_SIZE: usize = 4 << 20;

/// What every placeholder points into. Zero-initialized, so it lives in
/// `.bss`: address space, no memory, until something reads it (nothing
/// does).
static ZEROS: [u8; PLACEHOLDER_SIZE] = [0; PLACEHOLDER_SIZE];

/// A region queued for `sendfile`: `len` bytes of `file` from `offset`,
/// `sent` of them already written.
struct Region {
    file: Arc<File>,
    offset: u64,
    len: usize,
    sent: usize,
}

/// One connection's queue of file regions to send with `sendfile(2)`, in
/// the order its response bodies yield their placeholders. Only
/// connections of the boot server ([`crate::serve`]) have one, and only
/// this crate makes one: a placeholder no connection replaces would be
/// sent as zeros. Callers of [`crate::files::FileRoot::serve`] elsewhere
/// pass `None` and get real bytes.
#[derive(Clone)]
pub struct ZeroCopy(Arc<Mutex<VecDeque<Region>>>);

impl std::fmt::Debug for ZeroCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = self.0.lock().map_or(0, |q| q.len());
        f.debug_struct("ZeroCopy").field("queued", &queued).finish()
    }
}

impl ZeroCopy {
    /// An empty queue, for a connection of [`SendfileListener`].
    fn new() -> ZeroCopy {
        ZeroCopy(Arc::new(Mutex::new(VecDeque::new())))
    }

    /// A body chunk that stands for `len` (at most [`PLACEHOLDER_SIZE`])
    /// bytes of `file` from `offset`; the region is queued now, so call
    /// this when the body yields the chunk, not before.
    pub(crate) fn placeholder(&self, file: Arc<File>, offset: u64, len: usize) -> Bytes {
        let len = len.min(PLACEHOLDER_SIZE);
        if let Ok(mut q) = self.0.lock() {
            q.push_back(Region {
                file,
                offset,
                len,
                sent: 0,
            });
        }
        Bytes::from_static(&ZEROS[..len])
    }

    /// The region placeholder bytes `buf` stand for: (file, offset,
    /// length), or an error when `buf` is not where the front region's
    /// progress says hyper must be.
    fn front(&self, buf: &[u8]) -> std::io::Result<(Arc<File>, u64, usize)> {
        let at = buf.as_ptr() as usize - ZEROS.as_ptr() as usize;
        let q = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("zero-copy queue poisoned"))?;
        match q.front() {
            Some(r) if r.sent == at && buf.len() <= r.len - r.sent => {
                Ok((r.file.clone(), r.offset + at as u64, buf.len()))
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "placeholder bytes out of step with the connection's file regions",
            )),
        }
    }

    /// `n` bytes of the front region were sent.
    fn advance(&self, n: usize) {
        if let Ok(mut q) = self.0.lock()
            && let Some(r) = q.front_mut()
        {
            r.sent += n;
            if r.sent >= r.len {
                q.pop_front();
            }
        }
    }
}

/// Whether `bytes` are (part of) a placeholder.
fn is_placeholder(bytes: &[u8]) -> bool {
    let z = ZEROS.as_ptr() as usize;
    let p = bytes.as_ptr() as usize;
    !bytes.is_empty() && p >= z && p < z + PLACEHOLDER_SIZE
}

/// A TCP connection that writes placeholders with `sendfile(2)`.
pub struct SendfileStream {
    tcp: TcpStream,
    activity: Option<Arc<Activity>>,
    zero_copy: ZeroCopy,
}

impl SendfileStream {
    /// The connection's queue of regions for `sendfile`.
    pub(crate) fn zero_copy(&self) -> ZeroCopy {
        self.zero_copy.clone()
    }

    /// Sends the placeholder bytes `buf` stand for.
    fn poll_placeholder(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let (file, offset, len) = match self.zero_copy.front(buf) {
            Ok(r) => r,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let p = self.poll_sendfile(cx, &file, offset, len);
        if let Poll::Ready(Ok(n)) = p {
            self.zero_copy.advance(n);
        }
        p
    }

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
        let p = if is_placeholder(buf) {
            self.poll_placeholder(cx, buf)
        } else {
            Pin::new(&mut self.tcp).poll_write(cx, buf)
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
        let plain = bufs.iter().take_while(|b| !is_placeholder(b)).count();
        let p = if plain > 0 {
            Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[..plain])
        } else {
            match bufs.first() {
                Some(b) => self.poll_placeholder(cx, b),
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
                            zero_copy: ZeroCopy::new(),
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
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its queue of regions for `sendfile`.
    pub zero_copy: ZeroCopy,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, SendfileListener>>
    for Conn
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, SendfileListener>) -> Self {
        Conn {
            addr: *stream.remote_addr(),
            zero_copy: stream.io().zero_copy(),
        }
    }
}
