//! The tokio server: a listening socket, one task per transfer driving a
//! [`Transfer`], and the policy around them (capacity, per-client rate
//! limits, shutdown, counters).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::endpoint::{Endpoint, Ignored, Limits, Verdict};
use crate::packet::{ErrorCode, Mode, Packet, data_header};
use crate::receive::Receive;
use crate::source::{FileHandle, FileSink, FileSource, OpenFailure, to_netascii};
use crate::transfer::{Outcome, Transfer, TransferConfig, Transmit};

/// How the server runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen (default `0.0.0.0:69`).
    pub listen: SocketAddr,
    /// Serve every transfer from the listening port, keyed by client
    /// address, instead of one ephemeral port per transfer (RFC 1350).
    /// For firewalls that only let port 69 through.
    pub single_port: bool,
    /// Transfers at once. Requests beyond are not answered: the client
    /// retransmits its request, which is served once a transfer ends (an
    /// error would end a PXE ROM's boot).
    pub max_transfers: usize,
    /// New requests per second per client IP (token bucket refill).
    pub rate_per_second: f64,
    /// Burst of new requests per client IP.
    pub rate_burst: f64,
    /// Largest file served in netascii mode (it is converted in memory).
    pub max_netascii_bytes: u64,
    /// Largest file accepted by a write request (when the source accepts
    /// writes at all).
    pub max_upload_bytes: u64,
    /// How long running transfers may finish after shutdown is asked for.
    pub shutdown_grace: Duration,
    /// The transfer state machine's limits.
    pub transfer: TransferConfig,
}

impl ServerConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            ..ServerConfig::default()
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 69)),
            single_port: false,
            max_transfers: 1024,
            rate_per_second: 20.0,
            rate_burst: 40.0,
            max_netascii_bytes: 16 << 20,
            max_upload_bytes: 1 << 30,
            shutdown_grace: Duration::from_secs(5),
            transfer: TransferConfig::default(),
        }
    }
}

/// Counters of a server (also exported through the `metrics` facade).
#[derive(Debug, Default)]
pub struct Stats {
    /// Read requests received.
    pub(crate) requests: AtomicU64,
    /// Transfers that delivered the whole file.
    pub(crate) completed: AtomicU64,
    /// Transfers the client ended with an ERROR.
    pub(crate) aborted: AtomicU64,
    /// Transfers given up after the retry budget.
    pub(crate) timed_out: AtomicU64,
    /// Transfers ended for another reason (I/O, protocol).
    pub(crate) failed: AtomicU64,
    /// Requests for files that do not exist.
    pub(crate) not_found: AtomicU64,
    /// Requests refused: path escapes, writes, non-files.
    pub(crate) refused: AtomicU64,
    /// Requests not answered because the server was at capacity.
    pub(crate) busy: AtomicU64,
    /// Requests dropped by the per-client rate limit.
    pub(crate) rate_limited: AtomicU64,
    /// Datagrams dropped because they did not decode.
    pub(crate) malformed: AtomicU64,
    /// Payload bytes sent, retransmissions included.
    pub(crate) bytes_sent: AtomicU64,
    /// Retransmissions after a timeout.
    pub(crate) retransmits: AtomicU64,
    /// Datagrams whose send failed transiently: counted as lost.
    pub(crate) send_lost: AtomicU64,
}

impl Stats {
    /// Read requests received.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Transfers that delivered the whole file.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Transfers the client ended with an ERROR.
    pub fn aborted(&self) -> u64 {
        self.aborted.load(Ordering::Relaxed)
    }

    /// Transfers given up after the retry budget.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Transfers ended for another reason (I/O, protocol).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Requests for files that do not exist.
    pub fn not_found(&self) -> u64 {
        self.not_found.load(Ordering::Relaxed)
    }

    /// Requests refused: path escapes, writes, non-files.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Requests not answered because the server was at capacity.
    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// Requests dropped by the per-client rate limit.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Datagrams dropped because they did not decode.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Payload bytes sent, retransmissions included.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }

    /// Retransmissions after a timeout.
    pub fn retransmits(&self) -> u64 {
        self.retransmits.load(Ordering::Relaxed)
    }

    /// Datagrams whose send failed transiently (a firewall's drop on the
    /// output path, a full queue, a route gone for a moment): counted as
    /// lost on the wire, and the transfer's retransmission covers them.
    pub fn send_lost(&self) -> u64 {
        self.send_lost.load(Ordering::Relaxed)
    }

    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A send failed with `e`: transient (`Ok`: counted as a lost
    /// datagram) or not (`Err(e)`: the transfer ends with it).
    fn sent(&self, r: std::io::Result<()>) -> std::io::Result<()> {
        match r {
            Err(e) if transient_send(&e) => {
                Stats::inc(&self.send_lost);
                metrics::counter!("vaquero_tftp_send_lost_total").increment(1);
                tracing::debug!(error = %e, "a datagram not sent: counted as lost");
                Ok(())
            }
            r => r,
        }
    }

    fn malformed_in_transfer(&self) {
        Stats::inc(&self.malformed);
        metrics::counter!("vaquero_tftp_dropped_total", "reason" => "malformed").increment(1);
    }
}

/// One read request and how it ended, for the boot timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpEvent {
    /// When it ended.
    pub at: std::time::SystemTime,
    /// The client.
    pub client: SocketAddr,
    /// The file asked for, as the client named it.
    pub file: String,
    /// How it ended: `completed`, `aborted` (by the client: OVMF asks
    /// for the size first and aborts), `timed_out`, `failed`,
    /// `not_found`, `refused`.
    pub outcome: &'static str,
    /// Bytes sent.
    pub bytes: u64,
    /// How long it took.
    pub duration: Duration,
    /// Why it was refused or not found, for the operator (more than the
    /// client is told).
    pub reason: Option<String>,
}

/// A bound TFTP server.
pub struct Server {
    socket: Arc<UdpSocket>,
    source: Arc<dyn FileSource>,
    config: ServerConfig,
    stats: Arc<Stats>,
    events: Option<mpsc::Sender<TftpEvent>>,
}

/// Clients with a running transfer; in single-port mode, with the channel
/// their datagrams go to.
type Active = HashMap<SocketAddr, Option<mpsc::Sender<Vec<u8>>>>;

/// A client's place in the table of running transfers. It is given up
/// once, before the transfer's end is reported (a client that asks again
/// at once is then a new request, not a repeat), or when the job ends.
struct Slot {
    active: Arc<Mutex<Active>>,
    client: SocketAddr,
    released: std::sync::atomic::AtomicBool,
}

impl Slot {
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel)
            && let Ok(mut a) = self.active.lock()
        {
            a.remove(&self.client);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// How a transfer task gets its datagrams and sends its own.
enum Link {
    /// Its own socket, connected to the client (RFC 1350 TIDs).
    Own(UdpSocket),
    /// The listening socket, shared; datagrams arrive through a channel.
    Shared {
        socket: Arc<UdpSocket>,
        rx: mpsc::Receiver<Vec<u8>>,
        client: SocketAddr,
    },
}

impl Link {
    async fn send(&self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Own(s) => s.send(buf).await.map(|_| ()),
            Link::Shared { socket, client, .. } => socket.send_to(buf, client).await.map(|_| ()),
        }
    }

    /// The next datagram from the client into `buf`, its length (`None`
    /// when the link closed).
    async fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        match self {
            Link::Own(s) => s.recv(buf).await.ok(),
            Link::Shared { rx, .. } => {
                let d = rx.recv().await?;
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Some(n)
            }
        }
    }
}

impl Server {
    /// Binds the listening socket.
    pub async fn bind(config: ServerConfig, source: impl FileSource) -> std::io::Result<Server> {
        let socket = UdpSocket::bind(config.listen).await?;
        Ok(Server {
            socket: Arc::new(socket),
            source: Arc::new(source),
            config,
            stats: Arc::new(Stats::default()),
            events: None,
        })
    }

    /// Reports every read request, when it ends, to `events` (dropped, not
    /// waited for, when the channel is full).
    pub fn with_events(mut self, events: mpsc::Sender<TftpEvent>) -> Self {
        self.events = Some(events);
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The server's counters (shared; they keep counting while it runs).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves until `shutdown` completes, then lets running transfers
    /// finish for up to `shutdown_grace` and ends the rest with an error
    /// packet.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks: JoinSet<()> = JoinSet::new();
        let active: Arc<Mutex<Active>> = Arc::default();
        let mut endpoint = Endpoint::new(Limits {
            max_transfers: self.config.max_transfers,
            rate_per_second: self.config.rate_per_second,
            rate_burst: self.config.rate_burst,
            single_port: self.config.single_port,
        });
        let mut buf = vec![0u8; 65536];
        tokio::pin!(shutdown);
        info!(listen = %self.local_addr()?, single_port = self.config.single_port, "TFTP server listening");
        loop {
            let (n, from) = tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(v) => v,
                    Err(e) => {
                        // ICMP errors of earlier sends surface here; keep serving.
                        debug!(error = %e, "recv on the listening socket");
                        continue;
                    }
                },
            };
            let datagram = &buf[..n];
            if self.config.single_port {
                let tx = active
                    .lock()
                    .ok()
                    .and_then(|a| a.get(&from).cloned().flatten());
                if let Some(tx) = tx {
                    // A full queue means the task is behind: dropping is
                    // what the network would do.
                    let _ = tx.try_send(datagram.to_vec());
                    continue;
                }
            }
            let running = |c: SocketAddr| active.lock().is_ok_and(|a| a.contains_key(&c));
            let verdict = endpoint.handle(datagram, from, running, tasks.len(), Instant::now());
            let req = match verdict {
                Verdict::Accept(req) => req,
                Verdict::Refuse { code, message, why } => {
                    Stats::inc(&self.stats.refused);
                    metrics::counter!("vaquero_tftp_refused_total", "reason" => why).increment(1);
                    self.reply_error(from, code, message).await;
                    continue;
                }
                Verdict::Ignore(why) => {
                    self.count_ignored(&why, from);
                    continue;
                }
            };
            Stats::inc(&self.stats.requests);
            metrics::counter!("vaquero_tftp_requests_total").increment(1);
            let link = if self.config.single_port {
                let (tx, rx) = mpsc::channel(64);
                if let Ok(mut a) = active.lock() {
                    a.insert(from, Some(tx));
                }
                Link::Shared {
                    socket: self.socket.clone(),
                    rx,
                    client: from,
                }
            } else {
                let local = SocketAddr::new(self.socket.local_addr()?.ip(), 0);
                let sock = match UdpSocket::bind(local).await {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "cannot open a transfer socket");
                        continue;
                    }
                };
                if sock.connect(from).await.is_err() {
                    continue;
                }
                if let Ok(mut a) = active.lock() {
                    a.insert(from, None);
                }
                Link::Own(sock)
            };
            let job = Job {
                write: req.write,
                name: req.filename,
                mode: req.mode,
                options: req.options,
                client: from,
                source: self.source.clone(),
                config: self.config.clone(),
                stats: self.stats.clone(),
                events: self.events.clone(),
                slot: Slot {
                    active: active.clone(),
                    client: from,
                    released: false.into(),
                },
            };
            let stop = stop_rx.clone();
            let span = info_span!("tftp", client = %from, file = %job.name);
            tasks.spawn(job.run(link, stop).instrument(span));
        }
        info!(running = tasks.len(), "TFTP server stopping");
        let _ = stop_tx.send(true);
        let grace = tokio::time::sleep(self.config.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                r = tasks.join_next() => if r.is_none() { break },
                _ = &mut grace => {
                    tasks.abort_all();
                    break;
                }
                // Single-port transfers get their clients' datagrams from
                // this loop alone: route them while they finish. New
                // requests are not taken.
                r = self.socket.recv_from(&mut buf), if self.config.single_port => {
                    if let Ok((n, from)) = r
                        && let Some(tx) = active
                            .lock()
                            .ok()
                            .and_then(|a| a.get(&from).cloned().flatten())
                    {
                        let _ = tx.try_send(buf[..n].to_vec());
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts a datagram the endpoint ignored.
    fn count_ignored(&self, why: &Ignored, from: SocketAddr) {
        if why.is_request() {
            Stats::inc(&self.stats.requests);
            metrics::counter!("vaquero_tftp_requests_total").increment(1);
        }
        let counter = match why {
            Ignored::Malformed(e) => {
                debug!(client = %from, error = %e, "malformed datagram dropped");
                &self.stats.malformed
            }
            // Not a request, and not part of a transfer we know.
            Ignored::Unexpected => &self.stats.malformed,
            Ignored::RateLimited => &self.stats.rate_limited,
            Ignored::Busy => &self.stats.busy,
            // The transfer answers it.
            _ => return,
        };
        Stats::inc(counter);
        if let Some(reason) = why.reason() {
            metrics::counter!("vaquero_tftp_dropped_total", "reason" => reason).increment(1);
        }
    }

    async fn reply_error(&self, to: SocketAddr, code: ErrorCode, message: &str) {
        let _ = self
            .socket
            .send_to(&Packet::Error { code, message }.to_vec(), to)
            .await;
    }
}

struct Job {
    /// A write request.
    write: bool,
    name: String,
    mode: Mode,
    options: crate::packet::Options,
    client: SocketAddr,
    source: Arc<dyn FileSource>,
    config: ServerConfig,
    stats: Arc<Stats>,
    events: Option<mpsc::Sender<TftpEvent>>,
    slot: Slot,
}

impl Job {
    fn emit(&self, outcome: &'static str, bytes: u64, started: Instant) {
        self.emit_why(outcome, bytes, started, None);
    }

    fn emit_why(
        &self,
        outcome: &'static str,
        bytes: u64,
        started: Instant,
        reason: Option<String>,
    ) {
        self.slot.release();
        if let Some(tx) = &self.events {
            let _ = tx.try_send(TftpEvent {
                at: std::time::SystemTime::now(),
                client: self.client,
                file: self.name.clone(),
                outcome,
                bytes,
                duration: started.elapsed(),
                reason,
            });
        }
    }

    async fn open(&self) -> Result<Box<dyn FileHandle>, OpenFailure> {
        let (source, name, client) = (self.source.clone(), self.name.clone(), self.client);
        let mode = self.mode;
        let max = self.config.max_netascii_bytes;
        let opened = tokio::task::spawn_blocking(move || {
            let f = source.open(&name, client)?;
            if mode == Mode::Netascii {
                if f.len() > max {
                    return Err(OpenFailure::AccessViolation("too large for netascii mode"));
                }
                let mut raw = vec![0u8; f.len() as usize];
                let n = f.read_at(0, &mut raw)?;
                raw.truncate(n);
                return Ok(
                    Box::new(crate::source::Bytes(to_netascii(&raw).into())) as Box<dyn FileHandle>
                );
            }
            Ok(f)
        })
        .await;
        opened.unwrap_or_else(|e| Err(OpenFailure::Io(std::io::Error::other(e))))
    }

    async fn run(self, link: Link, stop: watch::Receiver<bool>) {
        if self.write {
            return self.run_write(link, stop).await;
        }
        let started = Instant::now();
        let file = match self.open().await {
            Ok(f) => f,
            Err(e) => {
                let counter = match e.code() {
                    ErrorCode::FILE_NOT_FOUND => &self.stats.not_found,
                    ErrorCode::ACCESS_VIOLATION => &self.stats.refused,
                    _ => &self.stats.failed,
                };
                Stats::inc(counter);
                metrics::counter!("vaquero_tftp_refused_total", "reason" => reason(&e))
                    .increment(1);
                debug!(error = %e, "request refused");
                self.emit_why(
                    if e.code() == ErrorCode::FILE_NOT_FOUND {
                        "not_found"
                    } else {
                        "refused"
                    },
                    0,
                    started,
                    Some(e.to_string()),
                );
                let msg = e.client_message();
                let _ = link.send(&error_packet(e.code(), &msg)).await;
                return;
            }
        };
        let req = crate::packet::Request {
            filename: &self.name,
            mode: self.mode,
            options: self.options,
        };
        let t = Transfer::new(&req, file.len(), &self.config.transfer, Instant::now());
        let o = t.options();
        debug!(size = file.len(), blksize = t.blksize(), windowsize = ?o.windowsize, tsize = ?o.tsize, "transfer started");
        let result = match link {
            Link::Own(sock) => {
                // Its own socket: a blocking loop on a thread of its own
                // answers each ACK with the least latency (lock-step TFTP
                // is round-trip bound).
                let grace = self.config.shutdown_grace;
                let stats = self.stats.clone();
                on_own_thread(sock, "tftp-transfer", move |sock| {
                    drive_blocking(
                        Sending {
                            d: Datagrams::new(&t),
                            t,
                            file: &*file,
                        },
                        sock,
                        &stop,
                        grace,
                        &stats,
                    )
                })
                .await
            }
            shared @ Link::Shared { .. } => run_async(t, &*file, shared, stop, &self.stats).await,
        };
        self.finish(result, started);
    }

    /// A write request: create the file through the source and receive it
    /// on a thread of its own (write requests always have their own port).
    async fn run_write(self, link: Link, stop: watch::Receiver<bool>) {
        let started = Instant::now();
        let Link::Own(sock) = link else {
            return;
        };
        let (source, name, client) = (self.source.clone(), self.name.clone(), self.client);
        let sink = tokio::task::spawn_blocking(move || source.create(&name, client))
            .await
            .unwrap_or_else(|e| Err(OpenFailure::Io(std::io::Error::other(e))));
        let sink = match sink {
            Ok(s) => s,
            Err(e) => {
                Stats::inc(if e.code() == ErrorCode::ACCESS_VIOLATION {
                    &self.stats.refused
                } else {
                    &self.stats.failed
                });
                metrics::counter!("vaquero_tftp_refused_total", "reason" => reason(&e))
                    .increment(1);
                debug!(error = %e, "write refused");
                let _ = sock
                    .send(&error_packet(e.code(), &e.client_message()))
                    .await;
                return;
            }
        };
        let req = crate::packet::Request {
            filename: &self.name,
            mode: self.mode,
            options: self.options,
        };
        let r = Receive::new(
            &req,
            &self.config.transfer,
            self.config.max_upload_bytes,
            Instant::now(),
        );
        let grace = self.config.shutdown_grace;
        let stats = self.stats.clone();
        let result = on_own_thread(sock, "tftp-receive", move |sock| {
            drive_blocking(
                Receiving {
                    r,
                    sink: Some(sink),
                },
                sock,
                &stop,
                grace,
                &stats,
            )
        })
        .await;
        let (counter, label) = match &result {
            Ok(Outcome::Completed) => (&self.stats.completed, "completed"),
            Ok(Outcome::AbortedByPeer { .. }) => (&self.stats.aborted, "aborted"),
            Ok(Outcome::TimedOut) => (&self.stats.timed_out, "timed_out"),
            _ => (&self.stats.failed, "failed"),
        };
        Stats::inc(counter);
        metrics::counter!("vaquero_tftp_transfers_total", "outcome" => label).increment(1);
        info!(
            outcome = label,
            write = true,
            ms = started.elapsed().as_millis() as u64,
            "transfer ended"
        );
    }

    fn finish(&self, result: std::io::Result<Transfer>, started: Instant) {
        let t = match result {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "transfer failed");
                self.emit("failed", 0, started);
                Stats::inc(&self.stats.failed);
                metrics::counter!("vaquero_tftp_transfers_total", "outcome" => "failed")
                    .increment(1);
                return;
            }
        };
        let s = t.stats();
        self.stats.bytes_sent.fetch_add(s.bytes, Ordering::Relaxed);
        self.stats
            .retransmits
            .fetch_add(s.retransmits, Ordering::Relaxed);
        metrics::counter!("vaquero_tftp_sent_bytes_total").increment(s.bytes);
        metrics::counter!("vaquero_tftp_retransmits_total").increment(s.retransmits);
        let outcome = t
            .outcome()
            .cloned()
            .unwrap_or(Outcome::Protocol("link closed".into()));
        let (counter, label) = match &outcome {
            Outcome::Completed => (&self.stats.completed, "completed"),
            Outcome::AbortedByPeer { .. } => (&self.stats.aborted, "aborted"),
            Outcome::TimedOut => (&self.stats.timed_out, "timed_out"),
            Outcome::Protocol(_) => (&self.stats.failed, "failed"),
        };
        Stats::inc(counter);
        metrics::counter!("vaquero_tftp_transfers_total", "outcome" => label).increment(1);
        self.emit(label, s.bytes, started);
        info!(
            outcome = label,
            bytes = s.bytes,
            retransmits = s.retransmits,
            ms = started.elapsed().as_millis() as u64,
            "transfer ended"
        );
    }
}

fn error_packet(code: ErrorCode, message: &str) -> Vec<u8> {
    Packet::Error { code, message }.to_vec()
}

/// Builds the datagrams a transfer asks for. File bytes come from a chunk
/// cache: blocks are contiguous, so one read serves a whole window (or
/// many lock-step blocks), and the next chunk is read while the client's
/// ACK is awaited rather than after it arrives.
struct Datagrams {
    out: Vec<u8>,
    /// File bytes from `cache_at`.
    cache: Vec<u8>,
    cache_at: u64,
    chunk: usize,
    /// Where the block after the last one sent starts.
    next_offset: u64,
}

impl Datagrams {
    fn new(t: &Transfer) -> Self {
        let window = usize::from(t.options().windowsize.unwrap_or(1));
        Datagrams {
            out: Vec::with_capacity(4 + t.blksize()),
            cache: Vec::new(),
            cache_at: 0,
            // At least 64 KiB, and a whole window.
            chunk: (t.blksize() * window).max(64 * 1024),
            next_offset: 0,
        }
    }

    /// Where `len` bytes at `offset` are in the cache, if they are.
    fn cached(&self, offset: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(offset.checked_sub(self.cache_at)?).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.cache.len()).then_some(start..end)
    }

    fn fill(&mut self, file: &dyn FileHandle, offset: u64) -> std::io::Result<()> {
        let len = (file.len().saturating_sub(offset)).min(self.chunk as u64) as usize;
        self.cache.resize(len, 0);
        let n = file.read_at(offset, &mut self.cache)?;
        self.cache.truncate(n);
        self.cache_at = offset;
        Ok(())
    }

    /// The next datagram the transfer wants sent: its bytes, or `None`.
    fn next(
        &mut self,
        t: &mut Transfer,
        file: &dyn FileHandle,
        now: Instant,
    ) -> std::io::Result<Option<&[u8]>> {
        match t.poll_transmit(now) {
            None => Ok(None),
            Some(Transmit::Packet(p)) => {
                self.out.clear();
                self.out.extend_from_slice(p);
                Ok(Some(&self.out))
            }
            Some(Transmit::Data { block, offset, len }) => {
                if self.cached(offset, len).is_none() {
                    self.fill(file, offset)?;
                }
                let Some(range) = self.cached(offset, len) else {
                    return Err(std::io::Error::other("the file shrank while being served"));
                };
                self.out.clear();
                self.out.extend_from_slice(&data_header(block));
                self.out.extend_from_slice(&self.cache[range]);
                self.next_offset = offset + len as u64;
                Ok(Some(&self.out))
            }
        }
    }

    /// While waiting: make sure the block after the last one sent is cached.
    fn read_ahead(&mut self, file: &dyn FileHandle) {
        let offset = self.next_offset;
        if offset < file.len() && self.cached(offset, 1).is_none() {
            let _ = self.fill(file, offset);
        }
    }
}

/// Runs `work` on a thread of its own over the transfer's socket, made
/// blocking, inside the current tracing span; awaits its result.
async fn on_own_thread<T: Send + 'static>(
    sock: UdpSocket,
    name: &str,
    work: impl FnOnce(&std::net::UdpSocket) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let span = tracing::Span::current();
    let sock = sock.into_std()?;
    sock.set_nonblocking(false)?;
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _g = span.enter();
            let _ = done_tx.send(work(&sock));
        })?;
    done_rx
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("transfer thread died")))
}

/// A receive timeout of a blocking loop: the tick that fires timers.
/// Whether a failed send is one the network heals: the datagram is as good
/// as lost, and retransmission covers it. EPERM is a local firewall's drop
/// (nftables, iptables) on the output path; ENOBUFS and EAGAIN a full
/// queue or conntrack table; ENETUNREACH and EHOSTUNREACH a route or a
/// neighbour gone for a moment.
fn transient_send(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::PERM | Errno::NOBUFS | Errno::AGAIN | Errno::NETUNREACH | Errno::HOSTUNREACH)
    )
}

fn is_tick(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

/// One side of a transfer, driven over a blocking socket connected to the
/// client by [`drive_blocking`].
trait Blocking {
    /// What the side ends with.
    type Done;
    /// Sends what is due; whether the side is finished.
    fn transmit(
        &mut self,
        sock: &std::net::UdpSocket,
        stats: &Stats,
        now: Instant,
    ) -> std::io::Result<bool>;
    /// What the finished side ends with.
    fn done(self) -> Self::Done;
    /// Takes a datagram from the client.
    fn datagram(&mut self, d: &[u8], stats: &Stats, now: Instant) -> std::io::Result<()>;
    /// No datagram came within a tick.
    fn tick(&mut self, now: Instant);
}

/// Drives `side` until it finishes, the client goes away, or a shutdown's
/// grace period ends (the client then gets an error packet).
fn drive_blocking<B: Blocking>(
    mut side: B,
    sock: &std::net::UdpSocket,
    stop: &watch::Receiver<bool>,
    grace: Duration,
    stats: &Stats,
) -> std::io::Result<B::Done> {
    // A short receive timeout is the tick that fires retransmissions and
    // notices a shutdown; a datagram ends the wait at once.
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut inbuf = vec![0u8; 65536];
    let mut abort_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if side.transmit(sock, stats, now)? {
            return Ok(side.done());
        }
        if abort_at.is_none() && *stop.borrow() {
            abort_at = Some(now + grace);
        }
        if abort_at.is_some_and(|a| now >= a) {
            let _ = sock.send(&error_packet(
                ErrorCode::NOT_DEFINED,
                "server shutting down",
            ));
            return Err(std::io::Error::other("aborted by server shutdown"));
        }
        match sock.recv(&mut inbuf) {
            Ok(n) => side.datagram(&inbuf[..n], stats, Instant::now())?,
            Err(e) if is_tick(&e) => side.tick(Instant::now()),
            // ICMP port unreachable: the client is gone.
            Err(e) => return Err(e),
        }
    }
}

/// A read transfer's sending side, served from `file`.
struct Sending<'a> {
    t: Transfer,
    d: Datagrams,
    file: &'a dyn FileHandle,
}

impl Blocking for Sending<'_> {
    type Done = Transfer;

    fn transmit(
        &mut self,
        sock: &std::net::UdpSocket,
        stats: &Stats,
        now: Instant,
    ) -> std::io::Result<bool> {
        while let Some(p) = self.d.next(&mut self.t, self.file, now)? {
            if let Err(e) = stats.sent(sock.send(p).map(|_| ())) {
                let _ = sock.send(&error_packet(ErrorCode::NOT_DEFINED, &e.to_string()));
                return Err(e);
            }
        }
        if self.t.is_finished() {
            return Ok(true);
        }
        self.d.read_ahead(self.file);
        Ok(false)
    }

    fn done(self) -> Transfer {
        self.t
    }

    fn datagram(&mut self, d: &[u8], stats: &Stats, now: Instant) -> std::io::Result<()> {
        if self.t.handle_packet(d, now).is_err() {
            stats.malformed_in_transfer();
        }
        Ok(())
    }

    fn tick(&mut self, now: Instant) {
        self.t.handle_timeout(now);
    }
}

/// A write transfer's receiving side, storing into `sink`; it commits the
/// file when it is complete.
struct Receiving {
    r: Receive,
    sink: Option<Box<dyn FileSink>>,
}

impl Blocking for Receiving {
    type Done = Outcome;

    fn transmit(
        &mut self,
        sock: &std::net::UdpSocket,
        stats: &Stats,
        now: Instant,
    ) -> std::io::Result<bool> {
        while let Some(p) = self.r.poll_transmit(now) {
            stats.sent(sock.send(p).map(|_| ()))?;
        }
        Ok(self.r.is_finished())
    }

    fn done(self) -> Outcome {
        self.r
            .outcome()
            .cloned()
            .unwrap_or(Outcome::Protocol("unfinished".into()))
    }

    fn datagram(&mut self, d: &[u8], _: &Stats, now: Instant) -> std::io::Result<()> {
        if let Ok(Some(w)) = self.r.handle_packet(d, now)
            && let Some(s) = self.sink.as_mut()
            && let Err(e) = s.write_at(w.offset, &d[4..4 + w.len])
        {
            self.r.abort(
                OpenFailure::Io(e).code(),
                "the server could not store the file",
            );
        }
        // The final block is in: the file is complete now, while the
        // receiver still dallies to re-ACK a repeated block.
        if self.r.outcome() == Some(&Outcome::Completed)
            && let Some(s) = self.sink.take()
        {
            s.commit()?;
        }
        Ok(())
    }

    fn tick(&mut self, now: Instant) {
        self.r.handle_timeout(now);
    }
}

/// Drives a transfer over the shared listening socket (single-port mode).
async fn run_async(
    mut t: Transfer,
    file: &dyn FileHandle,
    mut link: Link,
    mut stop: watch::Receiver<bool>,
    stats: &Stats,
) -> std::io::Result<Transfer> {
    let mut d = Datagrams::new(&t);
    let mut inbuf = vec![0u8; 65536];
    let mut stopping = false;
    loop {
        while let Some(p) = d.next(&mut t, file, Instant::now())? {
            if let Err(e) = stats.sent(link.send(p).await) {
                let _ = link
                    .send(&error_packet(ErrorCode::NOT_DEFINED, &e.to_string()))
                    .await;
                return Err(e);
            }
        }
        if t.is_finished() {
            return Ok(t);
        }
        let deadline = t
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            got = link.recv(&mut inbuf) => match got {
                Some(n) => {
                    if t.handle_packet(&inbuf[..n], Instant::now()).is_err() {
                        stats.malformed_in_transfer();
                    }
                }
                None => return Ok(t),
            },
            _ = tokio::time::sleep_until(deadline) => t.handle_timeout(Instant::now()),
            // Shutdown: the transfer may finish within the grace period;
            // the server aborts what is left.
            _ = stop.changed(), if !stopping => stopping = true,
        }
    }
}

fn reason(e: &OpenFailure) -> &'static str {
    match e {
        OpenFailure::NotFound => "not_found",
        OpenFailure::AccessViolation(_) => "access",
        OpenFailure::Outside { .. } => "outside",
        _ => "io",
    }
}
