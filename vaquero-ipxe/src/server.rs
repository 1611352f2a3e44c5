//! [`serve`]: the boot service on a TCP listener, over hyper's HTTP/1
//! connection directly; [`Listeners`]: on one event loop per thread.
//!
//! The two requests every machine makes most — `GET /ipxe?…` and
//! `GET|HEAD /files/{path}` from a local directory — are answered here
//! without the axum router; everything else (and `/files` through a CDN
//! cache) goes through [`BootService::router`]. Both paths call the same
//! functions, emit the same events and record the same metrics; the
//! router's extractors, boxing and per-request clones cost more than
//! serving a small file does.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use crate::idle::{self, Activity, Busy, Reaper};
use crate::metrics_layer::Label;
use crate::sendfile::{Conn, SendfileListener, ZeroCopy};
use crate::service::{BootService, Route, script_response};

/// How large a request's head (request line and headers) may be: past
/// it, 431 Request Header Fields Too Large (hyper's floor is 8 KiB).
pub const MAX_HEAD: usize = 16 * 1024;

/// Serves `service` on `listener` until `shutdown` completes, then lets
/// requests in flight finish: HTTP/1.1 with keep-alive, client addresses
/// available to the handlers, `TCP_NODELAY`, file bodies sent with
/// `sendfile(2)`, and connections that make no
/// progress for [`crate::ServiceConfig::idle_timeout`] closed.
pub async fn serve(
    listener: TcpListener,
    service: BootService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut listener = SendfileListener::new(listener);
    // No hyper timer: stalled connections are closed by the reaper.
    let mut http = hyper::server::conn::http1::Builder::new();
    // A request's head (line and headers) past this gets 431.
    http.max_buf_size(MAX_HEAD);
    // Dropped when shutdown begins: every connection then finishes the
    // request in flight and closes.
    let (stop_tx, stop_rx) = watch::channel(());
    // Every connection holds a receiver: when none is left, all closed.
    let (done_tx, done_rx) = watch::channel(());
    let reaper = Arc::new(Reaper::new(service.inner.idle_timeout));
    // The sweep runs until every connection is closed: one stalled while
    // shutting down is closed like any other.
    let (swept_tx, mut swept_rx) = tokio::sync::oneshot::channel::<()>();
    let sweeper = {
        let reaper = reaper.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(idle::TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let closed = reaper.sweep();
                        if closed > 0 {
                            debug!(closed, "closed connections that made no progress");
                        }
                    }
                    _ = &mut swept_rx => break,
                }
            }
        })
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (mut io, peer) = tokio::select! {
            c = axum::serve::Listener::accept(&mut listener) => c,
            () = &mut shutdown => break,
        };
        // One client may not hold every connection the service can keep.
        let Some(slot) = service.inner.clients.admit(peer.ip()) else {
            metrics::counter!("vaquero_http_connections_refused_total").increment(1);
            debug!(%peer, "connection closed: the client holds the most it may");
            drop(io);
            continue;
        };
        let (id, activity) = reaper.register();
        io.watch(activity.clone());
        let zero_copy = io.zero_copy();
        let conn = http.serve_connection(
            TokioIo::new(io),
            Connection {
                service: service.clone(),
                peer,
                activity,
                zero_copy,
            },
        );
        let mut stop = stop_rx.clone();
        let done = done_rx.clone();
        let task = tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                debug!(%peer, error = %e, "connection ended");
            }
            drop((slot, done));
        });
        reaper.watch(id, task.abort_handle());
    }
    drop(listener);
    drop(stop_tx);
    drop(done_rx);
    done_tx.closed().await;
    let _ = swept_tx.send(());
    let _ = sweeper.await;
    Ok(())
}

/// One connection's service.
struct Connection {
    service: BootService,
    peer: SocketAddr,
    activity: Arc<Activity>,
    zero_copy: ZeroCopy,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        let started = Instant::now();
        let inner = &self.service.inner;
        let ip = Some(self.peer.ip());
        let (method, uri) = (req.method(), req.uri());
        match Route::of(uri.path()) {
            Some((Route::Script, _)) if method == Method::GET => {
                let resp = script_response(inner, ip, uri.query());
                inner.metrics.record(Label::Script, started, &resp);
                return Answer::Ready { resp: Some(resp) };
            }
            Some((Route::Files, rel))
                if (method == Method::GET || method == Method::HEAD)
                    && let Some(root) = inner.local_files()
                    // Decoded as axum's `Path` does; what it would
                    // refuse, the router refuses.
                    && let Ok(rel) = percent_encoding::percent_decode_str(rel).decode_utf8() =>
            {
                let resp = root.serve(
                    &rel,
                    req.headers(),
                    method == Method::HEAD,
                    Some(&self.zero_copy),
                );
                inner.file_served(ip, &rel, resp.status());
                inner.metrics.record(Label::Files, started, &resp);
                return Answer::Ready { resp: Some(resp) };
            }
            _ => {}
        }
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(Conn {
            addr: self.peer,
            zero_copy: self.zero_copy.clone(),
        }));
        let mut router = self.service.router.clone();
        Answer::Routed {
            fut: tower_service::Service::call(&mut router, req),
            _busy: self.activity.busy(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Connection`].
    #[project = AnswerProj]
    enum Answer {
        Ready { resp: Option<Response> },
        // The router's handlers may wait long before answering (a CDN
        // fetch): the connection is busy, not stalled, meanwhile.
        Routed { #[pin] fut: RouteFuture<Infallible>, _busy: Busy },
    }
}

impl Future for Answer {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProj::Ready { resp } => Poll::Ready(Ok(resp.take().unwrap_or_default())),
            AnswerProj::Routed { fut, .. } => fut.poll(cx),
        }
    }
}

/// Listening sockets for [`Listeners::serve`], one set per event loop,
/// each set on the same addresses (`SO_REUSEPORT`): the kernel spreads
/// connections across them, as it does across nginx's worker processes.
#[derive(Debug)]
pub struct Listeners {
    /// Per event loop, a listener on each address.
    sockets: Vec<Vec<std::net::TcpListener>>,
    addrs: Vec<SocketAddr>,
}

impl Listeners {
    /// `threads` listeners on `addr`; with port 0, one free port for all.
    /// Fails with "address in use" if anything listens there already —
    /// also another process's `SO_REUSEPORT` listeners, which would
    /// otherwise silently share the connections.
    pub fn bind(addr: SocketAddr, threads: NonZeroUsize) -> std::io::Result<Listeners> {
        Listeners::bind_all(&[addr], threads)
    }

    /// As [`Listeners::bind`], on each of `addrs` (the addresses of a
    /// site's interfaces rather than every address of the machine); each
    /// event loop answers all of them.
    pub fn bind_all(addrs: &[SocketAddr], threads: NonZeroUsize) -> std::io::Result<Listeners> {
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no address to listen on",
            ));
        }
        let mut sockets: Vec<Vec<std::net::TcpListener>> =
            (0..threads.get()).map(|_| Vec::new()).collect();
        let mut bound = Vec::with_capacity(addrs.len());
        for addr in addrs {
            // A port named: a plain bind first, which fails if the port is
            // taken (with SO_REUSEPORT alone, another process's listeners
            // of the same user would share it silently). Port 0: the first
            // socket takes the port the kernel picks (never one shared by
            // SO_REUSEPORT) and the others join it; a probe there would
            // free its port for anyone to take before the loops bind it.
            let mut at = *addr;
            if addr.port() != 0 {
                drop(std::net::TcpListener::bind(addr)?);
            }
            for set in &mut sockets {
                let s = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
                s.set_reuse_address(true)?;
                s.set_reuse_port(true)?;
                s.set_nonblocking(true)?;
                s.bind(&at.into())?;
                s.listen(1024)?;
                let l = std::net::TcpListener::from(s);
                at = l.local_addr()?;
                set.push(l);
            }
            bound.push(at);
        }
        Ok(Listeners {
            sockets,
            addrs: bound,
        })
    }

    /// The (first) address they listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every address they listen on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Serves `service` with one event loop per listener — a
    /// single-threaded runtime on a thread of its own, each answering
    /// the connections its listener accepts, as [`serve`] does — until
    /// `shutdown` completes; then lets requests in flight finish.
    ///
    /// Without work stealing across threads, a request costs less than
    /// on a multi-threaded runtime; like nginx's workers, a loop busy
    /// with one request does not hand its other connections to an idle
    /// one.
    pub async fn serve(
        self,
        service: BootService,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(());
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut running = 0usize;
        let mut result = Ok(());
        for socket in self.sockets {
            let service = service.clone();
            let stop = stop_rx.clone();
            let done = done_tx.clone();
            let spawned = std::thread::Builder::new()
                .name("vaquero-http".into())
                .spawn(move || {
                    let run = || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?;
                        rt.block_on(async move {
                            let mut each = tokio::task::JoinSet::new();
                            for socket in socket {
                                let listener = TcpListener::from_std(socket)?;
                                let mut stop = stop.clone();
                                let service = service.clone();
                                each.spawn(serve(listener, service, async move {
                                    let _ = stop.changed().await;
                                }));
                            }
                            drop(stop);
                            // They end together at shutdown; one that
                            // fails ends the loop (the others dropped).
                            while let Some(r) = each.join_next().await {
                                r.map_err(std::io::Error::other).and_then(|r| r)?;
                            }
                            Ok(())
                        })
                    };
                    let _ = done.send(run());
                });
            match spawned {
                Ok(_) => running += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(done_tx);
        if result.is_ok() {
            // Until shutdown, or until a loop stops by itself (it failed).
            tokio::select! {
                () = shutdown => {}
                Some(r) = done_rx.recv() => {
                    running -= 1;
                    result = r.and(Err(std::io::Error::other("an HTTP event loop stopped")));
                }
            }
        }
        drop(stop_tx);
        while running > 0 {
            let Some(r) = done_rx.recv().await else {
                break;
            };
            running -= 1;
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_share_a_port_no_one_else_listens_on() {
        let two = NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN);
        let Ok(first) = Listeners::bind(SocketAddr::from(([127, 0, 0, 1], 0)), two) else {
            panic!("binding a free port");
        };
        let at = first.local_addr();
        assert_ne!(at.port(), 0);
        assert!(
            first
                .sockets
                .iter()
                .flatten()
                .all(|s| s.local_addr().ok() == Some(at))
        );
        // A second server on the same port is refused, not let in.
        let again = Listeners::bind(at, two).map(|_| ()).map_err(|e| e.kind());
        assert_eq!(again, Err(std::io::ErrorKind::AddrInUse));
        let plain = std::net::TcpListener::bind(at)
            .map(|_| ())
            .map_err(|e| e.kind());
        assert_eq!(plain, Err(std::io::ErrorKind::AddrInUse));
    }
}
