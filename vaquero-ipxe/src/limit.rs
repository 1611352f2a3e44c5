//! Connections per client address: a cap, so that one client cannot
//! hold every connection the boot service can keep (nginx's
//! `limit_conn`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// How many connections each client address holds, shared by every
/// event loop of a service.
#[derive(Debug)]
pub(crate) struct ClientLimit {
    max: Option<NonZeroUsize>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection: its count is given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    limit: Arc<ClientLimit>,
    ip: IpAddr,
}

impl ClientLimit {
    /// At most `max` connections per address (`None`: no cap).
    pub(crate) fn new(max: Option<NonZeroUsize>) -> Arc<ClientLimit> {
        Arc::new(ClientLimit {
            max,
            open: Mutex::default(),
        })
    }

    /// A slot for a new connection from `ip`, or `None` when it already
    /// holds the most it may. IPv4-mapped IPv6 addresses count as IPv4.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if self.max.is_some_and(|m| *n >= m.get()) {
            return None;
        }
        *n += 1;
        Some(Slot {
            limit: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_holds_at_most_its_share() {
        let limit = ClientLimit::new(NonZeroUsize::new(2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = limit.admit(a).expect("first");
        let second = limit.admit(a).expect("second");
        assert!(limit.admit(a).is_none(), "a third from the same address");
        // The same address written as IPv4-mapped IPv6 is the same client.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("an address");
        assert!(limit.admit(mapped).is_none());
        let other = limit.admit(b).expect("another address has its own");
        drop(first);
        assert_eq!(limit.held(a), 1);
        let again = limit.admit(a).expect("a slot was given back");
        drop((second, again, other));
        assert_eq!(limit.held(a), 0);
        assert!(limit.open.lock().expect("lock").is_empty(), "nothing kept");
        let none = ClientLimit::new(None);
        let many: Vec<_> = (0..1000).filter_map(|_| none.admit(a)).collect();
        assert_eq!(many.len(), 1000, "no cap");
    }
}
