//! The boot service on 127.0.0.1, as the HTTP tests start it.
#![allow(dead_code)] // each test binary uses part of it

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use vaquero_ipxe::{BootEvent, MemoryBootState, ServiceConfig, TokenKey};
use vaquero_model::{SiteModel, Sot};

pub const KEY: &[u8] = b"test key, 32 bytes long........";

pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<MemoryBootState>,
    pub events: mpsc::Receiver<BootEvent>,
    /// Whether checkpoint events are kept (acknowledged) as they arrive;
    /// when not, their acknowledgement is dropped at once.
    pub keep: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn lab() -> SiteModel {
    let sot =
        Sot::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab")).unwrap();
    SiteModel::compile(&sot, "lab").unwrap()
}

/// How a test server answers.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    /// `vaquero_ipxe::serve`: scripts and files without the router,
    /// sendfile for large files.
    Serve,
    /// The service's axum router under plain `axum::serve`, as an
    /// application embedding it would.
    Router,
    /// `vaquero_ipxe::Listeners`: two event loops on threads of their own.
    Loops,
}

/// Serves `model` (and `files_root`) on a free port of 127.0.0.1 with an
/// in-memory boot state and an event channel, until dropped.
pub fn start(model: SiteModel, files_root: Option<PathBuf>, dir: tempfile::TempDir) -> Server {
    start_via(model, files_root, dir, Via::Serve)
}

/// [`start`], answering [`Via`] either path.
pub fn start_via(
    model: SiteModel,
    files_root: Option<PathBuf>,
    dir: tempfile::TempDir,
    via: Via,
) -> Server {
    start_custom(model, files_root, dir, via, |_| {})
}

/// [`start_via`], with `tweak` applied to the service's configuration.
pub fn start_custom(
    model: SiteModel,
    files_root: Option<PathBuf>,
    dir: tempfile::TempDir,
    via: Via,
    tweak: impl FnOnce(&mut ServiceConfig),
) -> Server {
    let state = Arc::new(MemoryBootState::new());
    let (etx, mut taken) = mpsc::channel::<BootEvent>(1024);
    let (fwd, events) = mpsc::channel(1024);
    let keep = Arc::new(AtomicBool::new(true));
    let (_swap, rx) = tokio::sync::watch::channel(Arc::new(model));
    let mut config = ServiceConfig::new(files_root, TokenKey::new(KEY));
    tweak(&mut config);
    let service = vaquero_ipxe::BootService::new(rx, state.clone(), config, Some(etx)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // What keeps events: checkpoints are acknowledged (or not) as they
    // arrive, and every event goes on to the test.
    let keeping = keep.clone();
    rt.spawn(async move {
        while let Some(mut e) = taken.recv().await {
            if let Some(a) = e.ack.take()
                && keeping.load(Ordering::SeqCst)
            {
                a.kept();
            }
            let _ = fwd.send(e).await;
        }
    });
    let loops = vaquero_ipxe::Listeners::bind(
        "127.0.0.1:0".parse().unwrap(),
        std::num::NonZeroUsize::new(2).unwrap(),
    )
    .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = match via {
        Via::Loops => loops.local_addr(),
        _ => listener.local_addr().unwrap(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let stop = async move {
            let _ = stopped.await;
            drop(_swap);
        };
        match via {
            Via::Serve => rt.block_on(vaquero_ipxe::serve(listener, service, stop)),
            Via::Loops => rt.block_on(loops.serve(service, stop)),
            Via::Router => rt.block_on(
                axum::serve(
                    listener,
                    service
                        .router()
                        .into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(stop)
                .into_future(),
            ),
        }
        .unwrap();
    });
    Server {
        addr,
        state,
        events,
        keep,
        stop: Some(stop),
        thread: Some(thread),
        _dir: dir,
    }
}
