//! The receiving side of a write transfer, as a pure state machine — the
//! mirror of [`crate::transfer`]: no sockets, no clock, no file bytes.
//!
//! [`Receive::handle_packet`] says where an in-order DATA payload goes
//! ([`Write`]); the I/O layer writes it and sends what
//! [`Receive::poll_transmit`] yields. ACKs go out at the end of each
//! window, on the final block, and — naming the last in-order block — when
//! a gap shows (RFC 7440). After the final ACK the receiver dallies for a
//! timeout so that a lost final ACK can be answered again.

use std::time::{Duration, Instant};

use crate::packet::{DecodeFailure, ErrorCode, Packet, Request};
use crate::transfer::{Outcome, TransferConfig, grant, params};

/// Where the payload of the DATA packet just handled goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    /// File offset.
    pub offset: u64,
    /// Bytes of payload (the packet from byte 4 on).
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Receiving,
    /// Final ACK sent; answering repeats of the final block until the
    /// deadline.
    Dallying,
    Ended,
}

/// The receiving side of one write transfer.
#[derive(Debug)]
pub struct Receive {
    blksize: u64,
    window: u64,
    timeout: Duration,
    max_retries: u32,
    max_len: u64,
    /// Absolute number of the next block expected.
    expect: u64,
    in_window: u64,
    state: State,
    deadline: Option<Instant>,
    retries: u32,
    /// The packet to (re)send when nothing new arrives: OACK or last ACK.
    last_reply: Vec<u8>,
    pending: Option<Vec<u8>>,
    sent: Vec<u8>,
    outcome: Option<Outcome>,
    received: u64,
}

impl Receive {
    /// Starts receiving in answer to `req`, accepting at most `max_len`
    /// bytes. Options are granted within `cfg` and confirmed by an OACK;
    /// without options the answer is ACK 0.
    pub fn new(req: &Request<'_>, cfg: &TransferConfig, max_len: u64, now: Instant) -> Self {
        let asked = req.options;
        let granted = grant(&asked, cfg, asked.tsize);
        let (blksize, window, timeout) = params(&granted, cfg);
        let first = if granted.is_empty() {
            Packet::Ack { block: 0 }.to_vec()
        } else {
            Packet::Oack(granted).to_vec()
        };
        let mut r = Receive {
            blksize,
            window,
            timeout,
            max_retries: cfg.max_retries,
            max_len,
            expect: 1,
            in_window: 0,
            state: State::Receiving,
            deadline: Some(now),
            retries: 0,
            last_reply: first.clone(),
            pending: Some(first),
            sent: Vec::new(),
            outcome: None,
            received: 0,
        };
        if asked.tsize.is_some_and(|s| s > max_len) {
            r.fail(
                ErrorCode::DISK_FULL,
                "the file is larger than this server accepts",
            );
        }
        r
    }

    /// How it ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Bytes received in order so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether the transfer is over and nothing is left to send.
    pub fn is_finished(&self) -> bool {
        self.state == State::Ended && self.pending.is_none()
    }

    fn fail(&mut self, code: ErrorCode, message: &str) {
        self.state = State::Ended;
        self.deadline = None;
        self.pending = Some(Packet::Error { code, message }.to_vec());
        self.outcome = Some(Outcome::Protocol(message.to_owned()));
    }

    /// The I/O layer could not store the data (disk full, I/O error).
    pub fn abort(&mut self, code: ErrorCode, message: &str) {
        if self.state != State::Ended {
            self.fail(code, message);
        }
    }

    fn ack(&mut self, now: Instant) {
        let ack = Packet::Ack {
            block: (self.expect - 1) as u16,
        }
        .to_vec();
        self.last_reply = ack.clone();
        self.pending = Some(ack);
        self.in_window = 0;
        self.deadline = Some(now + self.timeout);
    }

    /// Feeds a datagram from the client; `Ok(Some(w))` means "store the
    /// packet's payload at `w.offset`".
    pub fn handle_packet(
        &mut self,
        buf: &[u8],
        now: Instant,
    ) -> Result<Option<Write>, DecodeFailure> {
        let packet = Packet::decode(buf)?;
        match (self.state, packet) {
            (State::Ended, _) => Ok(None),
            (_, Packet::Error { code, message }) => {
                self.state = State::Ended;
                self.deadline = None;
                self.outcome = Some(Outcome::AbortedByPeer {
                    code,
                    message: message.to_owned(),
                });
                Ok(None)
            }
            (State::Dallying, Packet::Data { .. }) => {
                // Our final ACK was lost: say it again.
                self.pending = Some(self.last_reply.clone());
                Ok(None)
            }
            (State::Receiving, Packet::Data { block, data }) => {
                if block != self.expect as u16 {
                    // A block from the future means one went missing: tell
                    // the sender where we are. An old one needs nothing.
                    if block.wrapping_sub(self.expect as u16) < 0x8000 && self.in_window > 0 {
                        self.ack(now);
                    }
                    return Ok(None);
                }
                if data.len() as u64 > self.blksize {
                    self.fail(
                        ErrorCode::ILLEGAL_OPERATION,
                        "DATA larger than the block size",
                    );
                    return Ok(None);
                }
                let offset = (self.expect - 1) * self.blksize;
                if offset + data.len() as u64 > self.max_len {
                    self.fail(
                        ErrorCode::DISK_FULL,
                        "the file is larger than this server accepts",
                    );
                    return Ok(None);
                }
                self.expect += 1;
                self.in_window += 1;
                self.retries = 0;
                self.received = offset + data.len() as u64;
                if (data.len() as u64) < self.blksize {
                    self.ack(now);
                    self.state = State::Dallying;
                    self.outcome = Some(Outcome::Completed);
                } else if self.in_window >= self.window {
                    self.ack(now);
                } else {
                    self.deadline = Some(now + self.timeout);
                }
                Ok(Some(Write {
                    offset,
                    len: data.len(),
                }))
            }
            (State::Receiving, Packet::Wrq(_)) => {
                // The client repeated its request: our first answer was lost.
                self.pending = Some(self.last_reply.clone());
                Ok(None)
            }
            (_, other) => {
                let msg = format!("unexpected {:?} during a write transfer", opcode(&other));
                self.fail(ErrorCode::ILLEGAL_OPERATION, &msg);
                Ok(None)
            }
        }
    }

    /// Fires the timer if it is due: repeat the last answer, give up after
    /// the retry budget, or end the dally.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(d) if d <= now => {}
            _ => return,
        }
        match self.state {
            State::Dallying => {
                self.state = State::Ended;
                self.deadline = None;
            }
            State::Receiving => {
                self.retries += 1;
                if self.retries > self.max_retries {
                    self.fail(ErrorCode::NOT_DEFINED, "timed out waiting for data");
                    self.outcome = Some(Outcome::TimedOut);
                } else {
                    self.pending = Some(self.last_reply.clone());
                    self.deadline = None;
                }
            }
            State::Ended => {}
        }
    }

    /// When [`Self::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next packet to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        let p = self.pending.take()?;
        if self.state == State::Receiving && self.deadline.is_none_or(|d| d <= now) {
            self.deadline = Some(now + self.timeout);
        }
        self.sent = p;
        Some(&self.sent)
    }
}

fn opcode(p: &Packet<'_>) -> &'static str {
    match p {
        Packet::Rrq(_) => "RRQ",
        Packet::Wrq(_) => "WRQ",
        Packet::Data { .. } => "DATA",
        Packet::Ack { .. } => "ACK",
        Packet::Error { .. } => "ERROR",
        Packet::Oack(_) => "OACK",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Mode, Options};

    #[test]
    fn receives_in_windows_and_dallies() {
        let now = Instant::now();
        let o = Options {
            blksize: Some(8),
            windowsize: Some(2),
            ..Options::default()
        };
        let req = Request {
            filename: "f",
            mode: Mode::Octet,
            options: o,
        };
        let mut r = Receive::new(&req, &TransferConfig::default(), 100, now);
        assert!(matches!(
            Packet::decode(r.poll_transmit(now).unwrap()),
            Ok(Packet::Oack(_))
        ));
        let data = |b: u16, d: &[u8]| Packet::Data { block: b, data: d }.to_vec();
        let ack = |r: &mut Receive| {
            Packet::decode(r.poll_transmit(now).unwrap()).map(|p| format!("{p:?}"))
        };
        assert_eq!(
            r.handle_packet(&data(1, b"abcdefgh"), now).unwrap(),
            Some(Write { offset: 0, len: 8 })
        );
        assert!(r.poll_transmit(now).is_none(), "mid-window: no ACK");
        assert_eq!(
            r.handle_packet(&data(2, b"ijklmnop"), now).unwrap(),
            Some(Write { offset: 8, len: 8 })
        );
        assert_eq!(ack(&mut r), Ok("Ack { block: 2 }".into()));
        // Block 5 after 3: a gap; ACK 3, nothing stored.
        assert_eq!(
            r.handle_packet(&data(3, b"qrstuvwx"), now).unwrap(),
            Some(Write { offset: 16, len: 8 })
        );
        assert_eq!(r.handle_packet(&data(5, b"z"), now).unwrap(), None);
        assert_eq!(ack(&mut r), Ok("Ack { block: 3 }".into()));
        assert_eq!(
            r.handle_packet(&data(4, b"yz"), now).unwrap(),
            Some(Write { offset: 24, len: 2 })
        );
        assert_eq!(ack(&mut r), Ok("Ack { block: 4 }".into()));
        assert_eq!(r.received(), 26);
        // A repeated final block gets the final ACK again while dallying.
        r.handle_packet(&data(4, b"yz"), now).unwrap();
        assert_eq!(ack(&mut r), Ok("Ack { block: 4 }".into()));
        r.handle_timeout(now + Duration::from_secs(5));
        assert!(r.is_finished());
        assert_eq!(r.outcome(), Some(&Outcome::Completed));
    }

    #[test]
    fn refuses_too_large_and_times_out() {
        let now = Instant::now();
        let o = Options {
            tsize: Some(1000),
            ..Options::default()
        };
        let req = Request {
            filename: "f",
            mode: Mode::Octet,
            options: o,
        };
        let mut r = Receive::new(&req, &TransferConfig::default(), 10, now);
        assert!(matches!(
            Packet::decode(r.poll_transmit(now).unwrap()),
            Ok(Packet::Error {
                code: ErrorCode::DISK_FULL,
                ..
            })
        ));
        assert!(r.is_finished());

        let req = Request {
            filename: "f",
            mode: Mode::Octet,
            options: Options::default(),
        };
        let cfg = TransferConfig {
            max_retries: 1,
            ..TransferConfig::default()
        };
        let mut r = Receive::new(&req, &cfg, 10, now);
        assert_eq!(
            Packet::decode(r.poll_transmit(now).unwrap()),
            Ok(Packet::Ack { block: 0 })
        );
        let d = r.poll_timeout().unwrap();
        r.handle_timeout(d);
        assert_eq!(
            Packet::decode(r.poll_transmit(d).unwrap()),
            Ok(Packet::Ack { block: 0 })
        );
        r.handle_timeout(r.poll_timeout().unwrap());
        assert!(matches!(
            Packet::decode(r.poll_transmit(d).unwrap()),
            Ok(Packet::Error { .. })
        ));
        assert_eq!(r.outcome(), Some(&Outcome::TimedOut));
    }
}
