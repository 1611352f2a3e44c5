//! What the listening socket does with a datagram, decided without I/O:
//! [`Endpoint::handle`] takes the datagram, who sent it, which clients
//! have a transfer running and the time, and says whether to start a
//! transfer, refuse with an error packet, or ignore it (and why). The
//! server's loop only receives, counts and spawns; the decisions —
//! repeated requests, rate limiting, capacity, malformed packets — are
//! tested and fuzzed here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::packet::{DecodeFailure, ErrorCode, Mode, Options, Packet};

/// The limits the endpoint applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Transfers at once; requests beyond are not answered (the client's
    /// retransmission is served once one ends).
    pub max_transfers: usize,
    /// New requests per second per client IP (token bucket refill).
    pub rate_per_second: f64,
    /// Burst of new requests per client IP.
    pub rate_burst: f64,
    /// Every transfer runs on the listening port: writes are refused.
    pub single_port: bool,
}

/// A request to start, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// A write request (WRQ); otherwise a read (RRQ).
    pub write: bool,
    /// The file name as sent.
    pub filename: String,
    /// The transfer mode.
    pub mode: Mode,
    /// The options asked for.
    pub options: Options,
}

/// Why a datagram is not answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ignored {
    /// It does not decode.
    Malformed(DecodeFailure),
    /// It decodes, but is not a request, and no transfer of its sender
    /// runs.
    Unexpected,
    /// A request from a client whose transfer runs: our first answer was
    /// lost or slow, and the transfer answers it.
    Repeat,
    /// The client's IP asked too often.
    RateLimited,
    /// `max_transfers` run; the client's retransmission asks again.
    Busy,
}

impl Ignored {
    /// Whether the datagram was a request (counted as one).
    pub fn is_request(&self) -> bool {
        matches!(self, Ignored::Repeat | Ignored::RateLimited | Ignored::Busy)
    }

    /// The `reason` label of `vaquero_tftp_dropped_total` (`None`: a
    /// repeat, which is not a drop).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Ignored::Malformed(_) => Some("malformed"),
            Ignored::Unexpected => Some("unexpected"),
            Ignored::Repeat => None,
            Ignored::RateLimited => Some("rate_limited"),
            Ignored::Busy => Some("busy"),
        }
    }
}

/// What to do with a datagram on the listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Start a transfer for the sender.
    Accept(Accepted),
    /// Answer with an error packet; `why` is the refusal's metric label.
    Refuse {
        /// The code sent.
        code: ErrorCode,
        /// The message sent.
        message: &'static str,
        /// The `reason` label of `vaquero_tftp_refused_total`.
        why: &'static str,
    },
    /// Send nothing.
    Ignore(Ignored),
}

/// The listening socket's decisions: the per-IP rate limiter and the
/// limits. Pure: the caller says which clients have a transfer running,
/// how many run, and what time it is.
#[derive(Debug)]
pub struct Endpoint {
    limits: Limits,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

/// Buckets kept before full ones are forgotten.
const MAX_BUCKETS: usize = 65_536;

impl Endpoint {
    /// An endpoint applying `limits`.
    pub fn new(limits: Limits) -> Self {
        Endpoint {
            limits,
            buckets: HashMap::new(),
        }
    }

    /// Decides what to do with `datagram` from `from`. `running(from)`
    /// says whether a transfer of that client runs; `transfers` is how
    /// many run.
    pub fn handle(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        running: impl Fn(SocketAddr) -> bool,
        transfers: usize,
        now: Instant,
    ) -> Verdict {
        let (write, req) = match Packet::decode(datagram) {
            Err(e) => return Verdict::Ignore(Ignored::Malformed(e)),
            Ok(Packet::Wrq(_)) if self.limits.single_port => {
                return Verdict::Refuse {
                    code: ErrorCode::ACCESS_VIOLATION,
                    message: "writes need a port per transfer",
                    why: "write",
                };
            }
            Ok(Packet::Rrq(r)) => (false, r),
            Ok(Packet::Wrq(r)) => (true, r),
            Ok(_) => return Verdict::Ignore(Ignored::Unexpected),
        };
        if running(from) {
            return Verdict::Ignore(Ignored::Repeat);
        }
        if !self.allow(from.ip(), now) {
            return Verdict::Ignore(Ignored::RateLimited);
        }
        if transfers >= self.limits.max_transfers {
            // Not answered: an error would end a PXE ROM's boot (a boot
            // storm of 5,000 machines lost 2,959 to "server busy").
            return Verdict::Ignore(Ignored::Busy);
        }
        Verdict::Accept(Accepted {
            write,
            filename: req.filename.to_owned(),
            mode: req.mode,
            options: req.options,
        })
    }

    /// Takes a token from `ip`'s bucket, if it has one.
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let (rate, burst) = (self.limits.rate_per_second, self.limits.rate_burst);
        let refill = |tokens: f64, at: Instant| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(burst)
        };
        if self.buckets.len() > MAX_BUCKETS {
            // Full buckets say nothing: forget them.
            self.buckets.retain(|_, (t, at)| refill(*t, *at) < burst);
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((burst, now));
        *tokens = refill(*tokens, *at);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_transfers: 2,
            rate_per_second: 1.0,
            rate_burst: 3.0,
            single_port: false,
        }
    }

    fn rrq(name: &str) -> Vec<u8> {
        let mut v = vec![0, 1];
        v.extend_from_slice(name.as_bytes());
        v.push(0);
        v.extend_from_slice(b"octet\0");
        v
    }

    fn wrq(name: &str) -> Vec<u8> {
        let mut v = rrq(name);
        v[1] = 2;
        v
    }

    fn client(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 4000))
    }

    const NONE: fn(SocketAddr) -> bool = |_| false;

    #[test]
    fn a_read_request_is_accepted_with_its_name_mode_and_options() {
        let mut e = Endpoint::new(limits());
        let mut d = rrq("pxelinux.0");
        d.extend_from_slice(b"blksize\x001468\0");
        match e.handle(&d, client(1), NONE, 0, Instant::now()) {
            Verdict::Accept(a) => {
                assert!(!a.write);
                assert_eq!(a.filename, "pxelinux.0");
                assert_eq!(a.mode, Mode::Octet);
                assert_eq!(a.options.blksize, Some(1468));
            }
            v => panic!("{v:?}"),
        }
        match e.handle(&wrq("up"), client(2), NONE, 0, Instant::now()) {
            Verdict::Accept(a) => assert!(a.write),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn garbage_and_stray_packets_are_ignored_with_their_reason() {
        let mut e = Endpoint::new(limits());
        let now = Instant::now();
        let v = e.handle(&[0, 9, 1], client(1), NONE, 0, now);
        assert!(matches!(v, Verdict::Ignore(Ignored::Malformed(_))), "{v:?}");
        // An ACK of no transfer we know.
        let v = e.handle(&[0, 4, 0, 1], client(1), NONE, 0, now);
        assert_eq!(v, Verdict::Ignore(Ignored::Unexpected));
        assert_eq!(Ignored::Unexpected.reason(), Some("unexpected"));
        assert!(!Ignored::Unexpected.is_request());
    }

    #[test]
    fn a_repeated_request_of_a_running_client_is_not_a_second_transfer() {
        let mut e = Endpoint::new(limits());
        let running = |c: SocketAddr| c == client(1);
        let v = e.handle(&rrq("a"), client(1), running, 1, Instant::now());
        assert_eq!(v, Verdict::Ignore(Ignored::Repeat));
        assert!(Ignored::Repeat.is_request());
        assert_eq!(Ignored::Repeat.reason(), None);
        // Another port of the same IP is another client.
        let other = SocketAddr::from(([127, 0, 0, 1], 4001));
        assert!(matches!(
            e.handle(&rrq("a"), other, running, 1, Instant::now()),
            Verdict::Accept(_)
        ));
    }

    #[test]
    fn at_capacity_requests_get_no_answer_until_a_transfer_ends() {
        let mut e = Endpoint::new(limits());
        let now = Instant::now();
        assert_eq!(
            e.handle(&rrq("a"), client(1), NONE, 2, now),
            Verdict::Ignore(Ignored::Busy)
        );
        assert!(matches!(
            e.handle(&rrq("a"), client(1), NONE, 1, now),
            Verdict::Accept(_)
        ));
    }

    #[test]
    fn each_ip_has_a_burst_then_its_rate() {
        let mut e = Endpoint::new(limits());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(matches!(
                e.handle(&rrq("a"), client(1), NONE, 0, t0),
                Verdict::Accept(_)
            ));
        }
        assert_eq!(
            e.handle(&rrq("a"), client(1), NONE, 0, t0),
            Verdict::Ignore(Ignored::RateLimited)
        );
        // Another IP has its own bucket.
        assert!(matches!(
            e.handle(&rrq("a"), client(2), NONE, 0, t0),
            Verdict::Accept(_)
        ));
        // One token a second comes back, and no more than the burst.
        let t1 = t0 + Duration::from_millis(1100);
        assert!(matches!(
            e.handle(&rrq("a"), client(1), NONE, 0, t1),
            Verdict::Accept(_)
        ));
        assert_eq!(
            e.handle(&rrq("a"), client(1), NONE, 0, t1),
            Verdict::Ignore(Ignored::RateLimited)
        );
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(matches!(
                e.handle(&rrq("a"), client(1), NONE, 0, t2),
                Verdict::Accept(_)
            ));
        }
        assert_eq!(
            e.handle(&rrq("a"), client(1), NONE, 0, t2),
            Verdict::Ignore(Ignored::RateLimited)
        );
    }

    #[test]
    fn the_bucket_table_forgets_full_buckets_when_it_grows() {
        let mut e = Endpoint::new(limits());
        let t0 = Instant::now();
        for i in 0..=MAX_BUCKETS as u32 + 1 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            e.handle(&rrq("a"), SocketAddr::new(ip, 69), NONE, 0, t0);
        }
        assert!(e.buckets.len() > MAX_BUCKETS);
        // Three seconds on, every bucket is full again: all are forgotten
        // but the one that asks now.
        e.handle(&rrq("a"), client(1), NONE, 0, t0 + Duration::from_secs(3));
        assert_eq!(e.buckets.len(), 1);
    }

    #[test]
    fn writes_are_refused_in_single_port_mode() {
        let mut e = Endpoint::new(Limits {
            single_port: true,
            ..limits()
        });
        match e.handle(&wrq("up"), client(1), NONE, 0, Instant::now()) {
            Verdict::Refuse { code, why, .. } => {
                assert_eq!(code, ErrorCode::ACCESS_VIOLATION);
                assert_eq!(why, "write");
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            e.handle(&rrq("a"), client(1), NONE, 0, Instant::now()),
            Verdict::Accept(_)
        ));
    }
}
