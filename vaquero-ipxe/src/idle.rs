//! Closing connections that make no progress — idle keep-alive
//! connections, clients that stop sending a request or stop reading a
//! response — after a timeout, as nginx's `keepalive_timeout`,
//! `client_header_timeout` and `send_timeout` do.
//!
//! hyper's own header-read timeout arms a timer (an allocation and a
//! timer-wheel entry) for every request, which costs more than serving a
//! small file. Here a connection only stores a coarse tick when it reads
//! or writes, and one task per server sweeps the connections once a
//! second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;

/// How one connection is doing.
#[derive(Debug)]
pub(crate) struct Activity {
    clock: Arc<AtomicU32>,
    /// The tick of the last read or write.
    last: AtomicU32,
    /// Requests being answered (a handler may take long before the
    /// first byte of its response: a CDN fetch).
    busy: AtomicU32,
}

impl Activity {
    /// Notes progress: bytes read or written.
    pub(crate) fn touch(&self) {
        self.last
            .store(self.clock.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Marks a request as being answered until the guard is dropped.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// A request being answered (see [`Activity::busy`]).
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The connections of one server.
#[derive(Debug)]
pub(crate) struct Reaper {
    /// Seconds since the server started, advanced by [`Reaper::sweep`].
    clock: Arc<AtomicU32>,
    timeout_ticks: u32,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Watched>>,
}

/// A connection's activity and, once spawned, its task.
type Watched = (Arc<Activity>, Option<AbortHandle>);

/// How often [`Reaper::sweep`] runs.
pub(crate) const TICK: Duration = Duration::from_secs(1);

impl Reaper {
    /// Closes connections after `timeout` without progress (rounded up
    /// to whole seconds, at least one).
    pub(crate) fn new(timeout: Duration) -> Reaper {
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        Reaper {
            clock: Arc::default(),
            timeout_ticks: u32::try_from(secs.max(1)).unwrap_or(u32::MAX),
            next_id: AtomicU64::new(0),
            conns: Mutex::default(),
        }
    }

    /// A new connection's activity, and its key for [`Reaper::watch`].
    pub(crate) fn register(&self) -> (u64, Arc<Activity>) {
        let a = Arc::new(Activity {
            clock: self.clock.clone(),
            last: AtomicU32::new(self.clock.load(Ordering::Relaxed)),
            busy: AtomicU32::new(0),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.conns.lock() {
            c.insert(id, (a.clone(), None));
        }
        (id, a)
    }

    /// The task serving connection `id`, aborted if it stalls.
    pub(crate) fn watch(&self, id: u64, task: AbortHandle) {
        if let Ok(mut c) = self.conns.lock()
            && let Some(e) = c.get_mut(&id)
        {
            e.1 = Some(task);
        }
    }

    /// Advances the clock, forgets finished connections and aborts those
    /// that made no progress for the timeout. Returns how many it closed.
    pub(crate) fn sweep(&self) -> usize {
        let now = self.clock.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let Ok(mut c) = self.conns.lock() else {
            return 0;
        };
        let mut closed = 0;
        c.retain(|_, (a, task)| {
            let Some(task) = task else {
                return true;
            };
            if task.is_finished() {
                return false;
            }
            let idle = now.wrapping_sub(a.last.load(Ordering::Relaxed));
            if a.busy.load(Ordering::Relaxed) == 0 && idle >= self.timeout_ticks {
                task.abort();
                closed += 1;
                return false;
            }
            true
        });
        closed
    }

    /// Connections being watched.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.conns.lock().map_or(0, |c| c.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stalled_connections_are_aborted_busy_and_active_ones_kept() {
        let r = Reaper::new(Duration::from_millis(1500)); // two ticks
        let spawn = || tokio::spawn(std::future::pending::<()>());
        let (idle_id, _idle) = r.register();
        let idle_task = spawn();
        r.watch(idle_id, idle_task.abort_handle());
        let (busy_id, busy) = r.register();
        let busy_task = spawn();
        r.watch(busy_id, busy_task.abort_handle());
        let guard = busy.busy();
        let (active_id, active) = r.register();
        let active_task = spawn();
        r.watch(active_id, active_task.abort_handle());
        let (done_id, _done) = r.register();
        let done_task = tokio::spawn(async {});
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !done_task.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        r.watch(done_id, done_task.abort_handle());

        // Tick 1: nothing stalled yet; the finished one is forgotten.
        assert_eq!(r.sweep(), 0);
        assert_eq!(r.len(), 3);
        active.touch();
        // Tick 2: the idle one has made no progress for two ticks.
        assert_eq!(r.sweep(), 1);
        let _ = idle_task.await;
        assert_eq!(r.len(), 2);
        // The busy one is kept while busy, then gets a fresh start.
        assert_eq!(r.sweep(), 1); // the active one, touched at tick 1
        drop(guard);
        assert_eq!(r.sweep(), 0);
        assert_eq!(r.sweep(), 1);
        assert_eq!(r.len(), 0);
    }
}
