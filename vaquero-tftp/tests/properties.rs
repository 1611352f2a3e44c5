//! Property tests: every packet survives encode → decode; the sending
//! state machine, driven through a network that loses, duplicates and
//! reorders datagrams on a virtual clock, delivers exactly the file or
//! gives up within its retry budget.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vaquero_tftp::packet::data_header;
use vaquero_tftp::{
    ErrorCode, Mode, Options, Outcome, Packet, Request, Transfer, TransferConfig, Transmit,
};

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_./-]{1,40}"
}

fn options() -> impl Strategy<Value = Options> {
    (
        proptest::option::of(8u16..=65464),
        proptest::option::of(1u8..=255),
        proptest::option::of(any::<u64>()),
        proptest::option::of(1u16..=65535),
    )
        .prop_map(|(blksize, timeout, tsize, windowsize)| Options {
            blksize,
            timeout,
            tsize,
            windowsize,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(n in name(), netascii in any::<bool>(), o in options(), write in any::<bool>()) {
        let r = Request { filename: &n, mode: if netascii { Mode::Netascii } else { Mode::Octet }, options: o };
        let p = if write { Packet::Wrq(r) } else { Packet::Rrq(r) };
        let bytes = p.to_vec();
        prop_assert_eq!(Packet::decode(&bytes).unwrap(), p);
    }

    #[test]
    fn other_packets_round_trip(block in any::<u16>(), data in proptest::collection::vec(any::<u8>(), 0..1500),
                                code in 0u16..20, msg in "[ -~]{0,60}", o in options()) {
        for p in [
            Packet::Data { block, data: &data },
            Packet::Ack { block },
            Packet::Error { code: ErrorCode::from_code(code), message: &msg },
            Packet::Oack(o),
        ] {
            let bytes = p.to_vec();
            prop_assert_eq!(Packet::decode(&bytes).unwrap(), p);
        }
    }

    #[test]
    fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Packet::decode(&bytes);
    }
}

/// A datagram in flight and when it arrives.
struct Flight {
    at: Duration,
    to_server: bool,
    bytes: Vec<u8>,
}

/// The receiving side, as RFC 1350/7440 clients behave: ACK 0 after an
/// OACK, take blocks in order, ACK the last in-order block at the end of
/// each window, on a gap, or when it has waited a timeout.
struct Client {
    blksize: usize,
    window: u16,
    expect: u16,
    in_window: u16,
    got: Vec<u8>,
    done: bool,
    last_heard: Duration,
    acks: u32,
    /// Whether the server's OACK arrived (before it, the client can only
    /// repeat its request, which the server ignores while it retransmits
    /// the OACK itself).
    oack_seen: bool,
}

impl Client {
    fn ack(&mut self) -> Vec<u8> {
        self.acks += 1;
        Packet::Ack {
            block: self.expect.wrapping_sub(1),
        }
        .to_vec()
    }

    fn on(&mut self, bytes: &[u8], now: Duration) -> Option<Vec<u8>> {
        self.last_heard = now;
        match Packet::decode(bytes).unwrap() {
            Packet::Oack(o) => {
                self.oack_seen = true;
                self.blksize = o.blksize.map_or(512, usize::from);
                self.window = o.windowsize.unwrap_or(1);
                (self.expect == 1).then(|| Packet::Ack { block: 0 }.to_vec())
            }
            Packet::Data { block, data } if !self.done => {
                if block != self.expect {
                    // Out of order: say where we are (a duplicate of an old
                    // block needs no answer).
                    let ahead = block.wrapping_sub(self.expect) < 0x8000;
                    return ahead.then(|| {
                        self.in_window = 0;
                        self.ack()
                    });
                }
                self.got.extend_from_slice(data);
                self.expect = self.expect.wrapping_add(1);
                self.in_window += 1;
                if data.len() < self.blksize {
                    self.done = true;
                    return Some(self.ack());
                }
                if self.in_window >= self.window {
                    self.in_window = 0;
                    return Some(self.ack());
                }
                None
            }
            // A finished client answers repeats of the last block (dallying).
            Packet::Data { .. } => Some(self.ack()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Net {
    loss: u8,
    dup: u8,
    max_delay_ms: u64,
    seed: u64,
}

impl Net {
    fn roll(&mut self) -> u8 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed % 100) as u8
    }

    fn delay(&mut self) -> Duration {
        let r = u64::from(self.roll());
        Duration::from_millis(1 + r * self.max_delay_ms / 100)
    }

    fn send(&mut self, q: &mut Vec<Flight>, now: Duration, to_server: bool, bytes: Vec<u8>) {
        if self.roll() < self.loss {
            return;
        }
        if self.roll() < self.dup {
            let at = now + self.delay();
            q.push(Flight {
                at,
                to_server,
                bytes: bytes.clone(),
            });
        }
        let at = now + self.delay();
        q.push(Flight {
            at,
            to_server,
            bytes,
        });
    }
}

/// Runs one transfer through the network; returns what the client got,
/// the outcome, and the virtual time it took.
fn simulate(
    file: &[u8],
    options: Options,
    mut net: Net,
    cfg: &TransferConfig,
) -> (Vec<u8>, Outcome, Duration, bool) {
    let t0 = Instant::now();
    let req = Request {
        filename: "f",
        mode: Mode::Octet,
        options,
    };
    let mut server = Transfer::new(&req, file.len() as u64, cfg, t0);
    let mut client = Client {
        blksize: 512,
        window: 1,
        expect: 1,
        in_window: 0,
        got: Vec::new(),
        done: false,
        last_heard: Duration::ZERO,
        acks: 0,
        oack_seen: false,
    };
    let client_timeout = Duration::from_millis(1500);
    let mut q: Vec<Flight> = Vec::new();
    let mut now = Duration::ZERO;
    let mut out: VecDeque<Vec<u8>> = VecDeque::new();
    let mut client_gave_up = false;
    for _ in 0..2_000_000 {
        // Server output.
        while let Some(tx) = server.poll_transmit(t0 + now) {
            let bytes = match tx {
                Transmit::Packet(p) => p.to_vec(),
                Transmit::Data { block, offset, len } => {
                    let mut v = data_header(block).to_vec();
                    v.extend_from_slice(&file[offset as usize..offset as usize + len]);
                    v
                }
            };
            out.push_back(bytes);
        }
        while let Some(b) = out.pop_front() {
            net.send(&mut q, now, false, b);
        }
        if server.is_finished() && (client.done || client_gave_up) && q.is_empty() {
            break;
        }
        // Next event: a delivery, the server's timer, or the client's.
        let next_flight = q.iter().map(|f| f.at).min();
        let server_timer = server.poll_timeout().map(|d| d - t0);
        let client_timer =
            (!client.done && !client_gave_up).then_some(client.last_heard + client_timeout);
        let Some(next) = [next_flight, server_timer, client_timer]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        now = now.max(next);
        if next_flight == Some(next) {
            let i = q.iter().position(|f| f.at == next).unwrap();
            let f = q.swap_remove(i);
            if f.to_server {
                server.handle_packet(&f.bytes, t0 + now).unwrap();
            } else if let Some(reply) = client.on(&f.bytes, now) {
                net.send(&mut q, now, true, reply);
            }
        } else if server_timer == Some(next) {
            server.handle_timeout(t0 + now);
        } else {
            // The client re-acknowledges where it is, a bounded number of times.
            if client.acks > 50_000 || now > Duration::from_secs(3600) {
                client_gave_up = true;
                continue;
            }
            client.last_heard = now;
            let negotiating = !options.is_empty() && client.expect == 1 && client.got.is_empty();
            if negotiating && !client.oack_seen {
                continue;
            }
            let ack = if negotiating {
                Packet::Ack { block: 0 }.to_vec()
            } else {
                client.ack()
            };
            net.send(&mut q, now, true, ack);
        }
    }
    let outcome = server
        .outcome()
        .cloned()
        .unwrap_or(Outcome::Protocol("unfinished".into()));
    (client.got, outcome, now, client.done)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn delivers_the_exact_file_through_a_bad_network(
        len in prop_oneof![0usize..2000, 2000usize..200_000],
        blksize in prop_oneof![Just(None), (8u16..1500).prop_map(Some)],
        windowsize in prop_oneof![Just(None), (1u16..32).prop_map(Some)],
        loss in 0u8..30,
        dup in 0u8..30,
        max_delay_ms in 1u64..400,
        seed in 1u64..u64::MAX,
    ) {
        let file: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let options = Options { blksize, windowsize, ..Options::default() };
        let cfg = TransferConfig { max_retries: 8, ..TransferConfig::default() };
        let net = Net { loss, dup, max_delay_ms, seed };
        let (got, outcome, took, client_done) = simulate(&file, options, net, &cfg);
        match outcome {
            Outcome::Completed => {
                prop_assert!(client_done);
                prop_assert!(got == file, "delivered {} bytes, file has {}", got.len(), file.len());
            }
            Outcome::TimedOut => {
                // Giving up is allowed only on a lossy network, and what
                // was delivered is a prefix of the file.
                prop_assert!(loss > 0, "timed out without loss");
                prop_assert!(file.starts_with(&got));
                if client_done {
                    // The client had everything; only the final ACKs were lost.
                    prop_assert!(got == file);
                }
            }
            other => prop_assert!(false, "unexpected outcome {:?}", other),
        }
        prop_assert!(took < Duration::from_secs(4 * 3600));
    }

    #[test]
    fn a_silent_client_is_given_up_within_the_retry_budget(
        len in 0usize..5000,
        retries in 0u32..10,
        timeout in 1u8..10,
    ) {
        let t0 = Instant::now();
        let cfg = TransferConfig { max_retries: retries, ..TransferConfig::default() };
        let o = Options { timeout: Some(timeout), ..Options::default() };
        let mut t = Transfer::new(&Request { filename: "f", mode: Mode::Octet, options: o }, len as u64, &cfg, t0);
        let mut now = t0;
        let mut sends = 0;
        while !t.is_finished() {
            while t.poll_transmit(now).is_some() {
                sends += 1;
            }
            match t.poll_timeout() {
                Some(d) => {
                    now = d;
                    t.handle_timeout(now);
                }
                None => break,
            }
        }
        while t.poll_transmit(now).is_some() {}
        prop_assert_eq!(t.outcome(), Some(&Outcome::TimedOut));
        // OACK, `retries` retransmissions one timeout apart, then an ERROR.
        prop_assert_eq!(sends, retries as usize + 2);
        prop_assert_eq!(now - t0, Duration::from_secs(u64::from(timeout)) * (retries + 1));
    }
}
