//! The sending side of a read transfer, as a pure state machine.
//!
//! No sockets and no clock: the I/O layer feeds datagrams with
//! [`Transfer::handle_packet`], fires timers with
//! [`Transfer::handle_timeout`], sends what [`Transfer::poll_transmit`]
//! yields, and sleeps until [`Transfer::poll_timeout`]. A test can drive an
//! hour of retransmissions on a virtual clock in a millisecond.
//!
//! The machine never touches file bytes: it asks for a block as
//! [`Transmit::Data`] (block number, offset, length) and the I/O layer
//! reads them. It knows the file's length up front, which is what `tsize`
//! reports and what decides where the final (short, possibly empty) block
//! is.
//!
//! Windowing follows RFC 7440: a window of `windowsize` blocks is sent,
//! then an ACK is awaited. An ACK of any block inside the window moves the
//! window to the block after it, so a client that saw a gap gets the rest
//! again. Duplicate and stale ACKs are ignored and only a timeout causes a
//! retransmission, which keeps the Sorcerer's Apprentice away. Block
//! numbers wrap past 65,535 to 0; ACKs are mapped back to absolute blocks
//! relative to the window.

use std::time::{Duration, Instant};

use crate::packet::{DEFAULT_BLKSIZE, ErrorCode, Options, Packet, Request};

/// Limits and defaults of the sending side.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransferConfig {
    /// Largest block size granted (a request for more gets this).
    pub max_blksize: u16,
    /// Largest window granted.
    pub max_windowsize: u16,
    /// Retransmission timeout when the client asks for none.
    pub default_timeout: Duration,
    /// Timeouts in a row before the transfer is given up.
    pub max_retries: u32,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            // Larger than an Ethernet frame makes IP fragment; clients that
            // ask for more on jumbo-less links get what fits in 1500 bytes.
            max_blksize: 65464,
            max_windowsize: 64,
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
        }
    }
}

/// The options granted for a request: `blksize` and `windowsize` within
/// `cfg`'s limits, `timeout` as asked, and `tsize` as given (`None`
/// declines it).
pub(crate) fn grant(asked: &Options, cfg: &TransferConfig, tsize: Option<u64>) -> Options {
    Options {
        blksize: asked.blksize.map(|b| b.min(cfg.max_blksize).max(8)),
        timeout: asked.timeout,
        tsize,
        windowsize: asked.windowsize.map(|w| w.min(cfg.max_windowsize).max(1)),
    }
}

/// Block size, window and retransmission timeout of granted options.
pub(crate) fn params(granted: &Options, cfg: &TransferConfig) -> (u64, u64, Duration) {
    (
        u64::from(granted.blksize.unwrap_or(DEFAULT_BLKSIZE)),
        u64::from(granted.windowsize.unwrap_or(1)),
        granted
            .timeout
            .map_or(cfg.default_timeout, |s| Duration::from_secs(u64::from(s))),
    )
}

/// Something to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit<'a> {
    /// A ready packet (OACK or ERROR).
    Packet(&'a [u8]),
    /// A DATA packet: [`crate::packet::data_header`] of `block`, then `len`
    /// bytes of the file from `offset`.
    Data {
        /// Wire block number.
        block: u16,
        /// Byte offset in the file.
        offset: u64,
        /// Bytes to send (may be 0 for the final block).
        len: usize,
    },
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the final block.
    Completed,
    /// The client sent an ERROR (OVMF does this on purpose after learning
    /// `tsize`).
    AbortedByPeer {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The client stopped answering.
    TimedOut,
    /// The client sent something a read transfer does not allow.
    Protocol(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// OACK sent, waiting for ACK 0.
    Negotiating,
    Sending,
    Ended,
}

/// Counters of one transfer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// DATA packets sent, retransmissions included.
    pub data_packets: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes: u64,
    /// Timeouts that caused a retransmission.
    pub retransmits: u64,
    /// ACKs ignored as duplicate or stale.
    pub ignored_acks: u64,
}

/// The sending side of one read transfer.
#[derive(Debug)]
pub struct Transfer {
    len: u64,
    blksize: u64,
    window: u64,
    timeout: Duration,
    max_retries: u32,
    last_block: u64,
    acked: u64,
    next: u64,
    window_end: u64,
    /// The highest block ever sent: an ACK beyond it is bogus.
    highest_sent: u64,
    state: State,
    deadline: Option<Instant>,
    retries: u32,
    oack: Option<Vec<u8>>,
    /// A control packet (OACK, ERROR) waiting to go out.
    pending: Option<Vec<u8>>,
    /// The last control packet handed out (poll_transmit lends it).
    sent: Vec<u8>,
    outcome: Option<Outcome>,
    negotiated: Options,
    stats: TransferStats,
}

impl Transfer {
    /// Starts sending a file of `len` bytes in answer to `req`. Options the
    /// client asked for are granted within `cfg`'s limits and confirmed in
    /// an OACK; without options the first block goes out at once.
    pub fn new(req: &Request<'_>, len: u64, cfg: &TransferConfig, now: Instant) -> Self {
        // An empty file's size is not confirmed: curl rejects an OACK with
        // `tsize 0` as illegal, and declining an option is always allowed.
        let tsize = req.options.tsize.and((len > 0).then_some(len));
        let granted = grant(&req.options, cfg, tsize);
        let (blksize, window, timeout) = params(&granted, cfg);
        let mut t = Transfer {
            len,
            blksize,
            window,
            timeout,
            max_retries: cfg.max_retries,
            last_block: len / blksize + 1,
            acked: 0,
            next: 1,
            window_end: 0,
            highest_sent: 0,
            state: State::Sending,
            deadline: None,
            retries: 0,
            oack: None,
            pending: None,
            sent: Vec::new(),
            outcome: None,
            negotiated: granted,
            stats: TransferStats::default(),
        };
        if granted.is_empty() {
            t.start_window();
        } else {
            let oack = Packet::Oack(granted).to_vec();
            t.pending = Some(oack.clone());
            t.oack = Some(oack);
            t.state = State::Negotiating;
        }
        let _ = now;
        t
    }

    /// The options granted (empty when the client asked for none).
    pub fn options(&self) -> Options {
        self.negotiated
    }

    /// The block size in use.
    pub fn blksize(&self) -> usize {
        self.blksize as usize
    }

    /// Counters so far.
    pub fn stats(&self) -> TransferStats {
        self.stats
    }

    /// How it ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Whether the transfer is over and nothing is left to send.
    pub fn is_finished(&self) -> bool {
        self.state == State::Ended && self.pending.is_none()
    }

    fn start_window(&mut self) {
        self.next = self.acked + 1;
        self.window_end = (self.acked + self.window).min(self.last_block);
        self.deadline = None;
    }

    fn end(&mut self, outcome: Outcome, error: Option<(ErrorCode, &str)>) {
        self.state = State::Ended;
        self.deadline = None;
        self.pending = error.map(|(code, message)| Packet::Error { code, message }.to_vec());
        self.outcome = Some(outcome);
    }

    /// Feeds a datagram from the client.
    pub fn handle_packet(
        &mut self,
        buf: &[u8],
        now: Instant,
    ) -> Result<(), crate::packet::DecodeFailure> {
        let _ = now;
        let packet = Packet::decode(buf)?;
        if self.state == State::Ended {
            return Ok(());
        }
        match packet {
            Packet::Ack { block } => self.on_ack(block),
            Packet::Error { code, message } => self.end(
                Outcome::AbortedByPeer {
                    code,
                    message: message.to_owned(),
                },
                None,
            ),
            other => {
                let what = match other {
                    Packet::Rrq(_) => "RRQ",
                    Packet::Wrq(_) => "WRQ",
                    Packet::Data { .. } => "DATA",
                    Packet::Oack(_) => "OACK",
                    _ => "packet",
                };
                let msg = format!("unexpected {what} during a read transfer");
                self.end(
                    Outcome::Protocol(msg.clone()),
                    Some((ErrorCode::ILLEGAL_OPERATION, &msg)),
                );
            }
        }
        Ok(())
    }

    fn on_ack(&mut self, block: u16) {
        match self.state {
            State::Negotiating if block == 0 => {
                self.state = State::Sending;
                self.retries = 0;
                self.start_window();
            }
            State::Sending => {
                // Distance from the last acknowledged block, modulo the
                // 16-bit block counter; only blocks already sent count.
                let delta = u64::from(block.wrapping_sub(self.acked as u16));
                if delta == 0 || self.acked + delta > self.highest_sent {
                    self.stats.ignored_acks += 1;
                    return;
                }
                self.acked += delta;
                self.retries = 0;
                if self.acked >= self.last_block {
                    self.end(Outcome::Completed, None);
                } else {
                    self.start_window();
                }
            }
            _ => self.stats.ignored_acks += 1,
        }
    }

    /// Fires the retransmission timer if it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(d) if d <= now && self.state != State::Ended => {}
            _ => return,
        }
        self.retries += 1;
        if self.retries > self.max_retries {
            self.end(
                Outcome::TimedOut,
                Some((
                    ErrorCode::NOT_DEFINED,
                    "timed out waiting for an acknowledgement",
                )),
            );
            return;
        }
        self.stats.retransmits += 1;
        match self.state {
            State::Negotiating => self.pending = self.oack.clone(),
            State::Sending => self.start_window(),
            State::Ended => {}
        }
        self.deadline = None;
    }

    /// When [`Self::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next thing to send, if any. Call until `None` after every input.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit<'_>> {
        if let Some(p) = self.pending.take() {
            if self.state == State::Negotiating {
                self.deadline = Some(now + self.timeout);
            }
            self.sent = p;
            return Some(Transmit::Packet(&self.sent));
        }
        if self.state != State::Sending || self.next > self.window_end {
            return None;
        }
        let b = self.next;
        self.next += 1;
        self.highest_sent = self.highest_sent.max(b);
        if self.next > self.window_end {
            self.deadline = Some(now + self.timeout);
        }
        let offset = (b - 1) * self.blksize;
        let len = (self.len - offset).min(self.blksize) as usize;
        self.stats.data_packets += 1;
        self.stats.bytes += len as u64;
        Some(Transmit::Data {
            block: b as u16,
            offset,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Mode;

    fn req(options: Options) -> Request<'static> {
        Request {
            filename: "f",
            mode: Mode::Octet,
            options,
        }
    }

    fn drain(t: &mut Transfer, now: Instant) -> Vec<(u16, u64, usize)> {
        let mut v = Vec::new();
        while let Some(x) = t.poll_transmit(now) {
            if let Transmit::Data { block, offset, len } = x {
                v.push((block, offset, len));
            }
        }
        v
    }

    fn ack(t: &mut Transfer, b: u16, now: Instant) {
        t.handle_packet(&Packet::Ack { block: b }.to_vec(), now)
            .unwrap();
    }

    #[test]
    fn lockstep_without_options() {
        let now = Instant::now();
        let mut t = Transfer::new(
            &req(Options::default()),
            1024,
            &TransferConfig::default(),
            now,
        );
        assert_eq!(drain(&mut t, now), vec![(1, 0, 512)]);
        ack(&mut t, 1, now);
        assert_eq!(drain(&mut t, now), vec![(2, 512, 512)]);
        ack(&mut t, 2, now);
        // 1024 is a multiple of 512: a final empty block ends it.
        assert_eq!(drain(&mut t, now), vec![(3, 1024, 0)]);
        ack(&mut t, 3, now);
        assert!(t.is_finished());
        assert_eq!(t.outcome(), Some(&Outcome::Completed));
    }

    #[test]
    fn oack_then_windows_and_going_back() {
        let now = Instant::now();
        let o = Options {
            blksize: Some(100),
            windowsize: Some(4),
            tsize: Some(0),
            timeout: None,
        };
        let mut t = Transfer::new(&req(o), 950, &TransferConfig::default(), now);
        let Some(Transmit::Packet(p)) = t.poll_transmit(now) else {
            panic!("OACK first");
        };
        assert_eq!(
            Packet::decode(p).unwrap(),
            Packet::Oack(Options {
                blksize: Some(100),
                windowsize: Some(4),
                tsize: Some(950),
                timeout: None
            })
        );
        assert_eq!(drain(&mut t, now), vec![], "nothing before ACK 0");
        ack(&mut t, 0, now);
        assert_eq!(
            drain(&mut t, now).iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        // The client saw 1 and 2 only: the window restarts at 3.
        ack(&mut t, 2, now);
        assert_eq!(
            drain(&mut t, now).iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        // A duplicate and a stale ACK change nothing.
        ack(&mut t, 2, now);
        ack(&mut t, 1, now);
        assert_eq!(drain(&mut t, now), vec![]);
        assert_eq!(t.stats().ignored_acks, 2);
        ack(&mut t, 6, now);
        assert_eq!(
            drain(&mut t, now),
            vec![(7, 600, 100), (8, 700, 100), (9, 800, 100), (10, 900, 50)]
        );
        ack(&mut t, 10, now);
        assert_eq!(t.outcome(), Some(&Outcome::Completed));
    }

    #[test]
    fn retransmits_on_timeout_then_gives_up() {
        let t0 = Instant::now();
        let cfg = TransferConfig {
            max_retries: 2,
            ..TransferConfig::default()
        };
        let mut t = Transfer::new(&req(Options::default()), 10, &cfg, t0);
        assert_eq!(drain(&mut t, t0).len(), 1);
        let d = t.poll_timeout().unwrap();
        assert_eq!(d, t0 + Duration::from_secs(1));
        t.handle_timeout(d - Duration::from_millis(1));
        assert_eq!(drain(&mut t, d).len(), 0, "not due yet");
        t.handle_timeout(d);
        assert_eq!(drain(&mut t, d), vec![(1, 0, 10)]);
        let d2 = t.poll_timeout().unwrap();
        t.handle_timeout(d2);
        assert_eq!(drain(&mut t, d2).len(), 1);
        t.handle_timeout(t.poll_timeout().unwrap());
        let Some(Transmit::Packet(p)) = t.poll_transmit(d2) else {
            panic!("an error packet");
        };
        assert!(matches!(Packet::decode(p), Ok(Packet::Error { .. })));
        assert!(t.is_finished());
        assert_eq!(t.outcome(), Some(&Outcome::TimedOut));
        assert_eq!(t.stats().retransmits, 2);
    }

    #[test]
    fn block_numbers_roll_over() {
        let now = Instant::now();
        let o = Options {
            blksize: Some(8),
            windowsize: Some(16),
            ..Options::default()
        };
        let len = 8 * 70_000 + 3;
        let mut t = Transfer::new(&req(o), len, &TransferConfig::default(), now);
        drain(&mut t, now);
        ack(&mut t, 0, now);
        let mut last_abs = 0u64;
        let mut sent = 0u64;
        loop {
            let w = drain(&mut t, now);
            if w.is_empty() {
                break;
            }
            for (block, offset, len) in &w {
                last_abs += 1;
                assert_eq!(*block, last_abs as u16);
                assert_eq!(*offset, (last_abs - 1) * 8);
                sent += *len as u64;
            }
            ack(&mut t, w.last().unwrap().0, now);
        }
        assert_eq!(sent, len);
        assert_eq!(last_abs, 70_001);
        assert_eq!(t.outcome(), Some(&Outcome::Completed));
    }

    #[test]
    fn peer_error_and_illegal_packets() {
        let now = Instant::now();
        let o = Options {
            tsize: Some(0),
            ..Options::default()
        };
        let mut t = Transfer::new(&req(o), 5, &TransferConfig::default(), now);
        t.poll_transmit(now);
        t.handle_packet(
            &Packet::Error {
                code: ErrorCode::OPTION_NEGOTIATION,
                message: "tsize only",
            }
            .to_vec(),
            now,
        )
        .unwrap();
        assert!(t.is_finished());
        assert!(matches!(t.outcome(), Some(Outcome::AbortedByPeer { .. })));

        let mut t = Transfer::new(&req(Options::default()), 5, &TransferConfig::default(), now);
        drain(&mut t, now);
        t.handle_packet(
            &Packet::Data {
                block: 1,
                data: b"x",
            }
            .to_vec(),
            now,
        )
        .unwrap();
        let Some(Transmit::Packet(p)) = t.poll_transmit(now) else {
            panic!()
        };
        assert!(matches!(
            Packet::decode(p),
            Ok(Packet::Error {
                code: ErrorCode::ILLEGAL_OPERATION,
                ..
            })
        ));
        assert!(t.handle_packet(b"\x00\x09", now).is_err());
    }
}
