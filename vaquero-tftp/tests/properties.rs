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

/// What the network saw, to judge a give-up without asking the server:
/// when each server transmission left (with its DATA block, if it was
/// one), and when each ACK reached the server.
#[derive(Debug, Default)]
struct Wire {
    sent: Vec<(Duration, Option<u16>)>,
    acks_in: Vec<(Duration, u16)>,
    /// When the server sent its ERROR (gave up): later ACKs came too late.
    ended: Option<Duration>,
}

impl Wire {
    /// Whether giving up was the only choice the retry budget left: after
    /// the server last learned of progress (the first delivery of the
    /// highest ACK it ever got), it sent at `max_retries + 1` distinct times
    /// (one transmission and every retransmission) and never again a block
    /// the client had acknowledged. Where the network delivered a copy and
    /// its ACK, that ACK would be later progress; so a server that gives up
    /// without being starved this way has a retransmission bug.
    fn starved(&self, max_retries: u32) -> Result<(), String> {
        // Progress: an ACK, delivered before the give-up, of something the
        // server had sent (ACK 0 of an OACK, or a DATA block beyond every
        // earlier progress).
        let end = self.ended.unwrap_or(Duration::MAX);
        let sent_before =
            |t: Duration, what: Option<u16>| self.sent.iter().any(|&(at, b)| at <= t && b == what);
        let (mut highest, mut since) = (None::<u16>, Duration::ZERO);
        for &(t, b) in self.acks_in.iter().filter(|&&(t, _)| t < end) {
            let progress = if b == 0 {
                highest.is_none() && sent_before(t, None)
            } else {
                highest.is_none_or(|h| b > h) && sent_before(t, Some(b))
            };
            if progress {
                (highest, since) = (Some(b), t);
            }
        }
        let mut times: Vec<Duration> = Vec::new();
        for &(t, block) in self.sent.iter().filter(|(t, _)| *t >= since) {
            if let (Some(b), Some(h)) = (block, highest)
                && b <= h
            {
                return Err(format!(
                    "resent block {b} after the client acknowledged {h}"
                ));
            }
            if times.last() != Some(&t) {
                times.push(t);
            }
        }
        if times.len() < max_retries as usize + 1 {
            return Err(format!(
                "gave up after {} sends since the last progress (budget: {} retransmissions)",
                times.len(),
                max_retries
            ));
        }
        Ok(())
    }
}

/// Runs one transfer through the network; returns what the client got,
/// the outcome, the virtual time it took, whether the client finished, and
/// what the network saw.
fn simulate(
    file: &[u8],
    options: Options,
    mut net: Net,
    cfg: &TransferConfig,
) -> (Vec<u8>, Outcome, Duration, bool, Wire) {
    let t0 = Instant::now();
    let mut wire = Wire::default();
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
                Transmit::Packet(p) => {
                    // The OACK is a transmission the client must answer;
                    // the ERROR that ends a give-up is not.
                    let p = p.to_vec();
                    match Packet::decode(&p) {
                        Ok(Packet::Oack(_)) => wire.sent.push((now, None)),
                        Ok(Packet::Error { .. }) => wire.ended = wire.ended.or(Some(now)),
                        _ => {}
                    }
                    p
                }
                Transmit::Data { block, offset, len } => {
                    wire.sent.push((now, Some(block)));
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
                if let Ok(Packet::Ack { block }) = Packet::decode(&f.bytes) {
                    wire.acks_in.push((now, block));
                }
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
    (client.got, outcome, now, client.done, wire)
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
        let cfg = {
            let mut c = TransferConfig::default();
            c.max_retries = 8;
            c
        };
        let net = Net { loss, dup, max_delay_ms, seed };
        let (got, outcome, took, client_done, wire) = simulate(&file, options, net, &cfg);
        match outcome {
            Outcome::Completed => {
                prop_assert!(client_done);
                prop_assert!(got == file, "delivered {} bytes, file has {}", got.len(), file.len());
            }
            Outcome::TimedOut => {
                // Giving up is allowed only on a lossy network where the
                // retry budget could not cover the loss (judged from what
                // the network saw), and what was delivered is a prefix of
                // the file.
                prop_assert!(loss > 0, "timed out without loss");
                if let Err(why) = wire.starved(cfg.max_retries) {
                    prop_assert!(false, "gave up too early: {}", why);
                }
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
        let cfg = {
            let mut c = TransferConfig::default();
            c.max_retries = retries;
            c
        };
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
