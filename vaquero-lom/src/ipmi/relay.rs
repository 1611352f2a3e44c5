//! Retransmission under `ipmi-rs`, as ipmitool does it.
//!
//! `ipmi-rs` sends each message once and waits; on a network that drops
//! datagrams, one loss would cost a whole operation. So its UDP socket is
//! connected to a relay on 127.0.0.1 instead of the BMC. The relay passes
//! every datagram on and, when a request gets no answer within the
//! [`Schedule`]'s wait, sends the *identical* datagram again (same session
//! sequence number, same request sequence number), up to a bounded number
//! of copies.
//!
//! Since the BMC may answer several copies of one request, the relay hands
//! `ipmi-rs` exactly one reply per request, and only a reply to the request
//! in flight: an answer to an earlier request, late or repeated, is
//! dropped. A reply is matched to its request by what it carries in the
//! clear (ASF pong, RMCP+ handshake payload type, an IPMI 1.5 message's
//! request sequence number and command) or, once the session is up, by the
//! request sequence number and command inside the encrypted payload: the
//! relay derives the session's AES key from the RAKP exchange it has seen
//! and the password, exactly as the two ends do. It never alters a byte.
//!
//! A request sent [`Mode::Once`] (Chassis Control) is never sent twice: a
//! BMC runs a repeated Chassis Control again (`ipmi_sim` does), and a
//! repeated power cycle would cycle the machine twice. The session reads
//! the power state instead (see `Session::reach`). Close Session is sent
//! [`Mode::Brief`]: a BMC that has closed the session ignores a copy.
//!
//! When a request's time is up, the relay ends `ipmi-rs`'s wait at once
//! with a datagram it cannot parse, and flags [`Shared::gave_up`], so the
//! session reports a timeout without waiting out a socket timeout.
//!
//! [`Retransmit`] is the pure core (it takes `now`); [`Relay`] runs it on
//! two sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aes::Aes128;
use aes::cipher::{BlockDecrypt, KeyInit, generic_array::GenericArray};
use hmac_sha1::{Hmac, Mac};
use sha1::Sha1;
use tokio::net::UdpSocket;

/// How long to wait for an answer to each copy of a request, and how many
/// copies to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// The wait for the first copy's answer; copy `n` waits `n` times it.
    pub first: Duration,
    /// Copies of each request, the first included (at least 1).
    pub tries: u32,
}

impl Schedule {
    /// The wait after copy `n` (1-based).
    fn wait(&self, n: u32) -> Duration {
        self.first.saturating_mul(n.max(1))
    }

    /// The waits of the first `copies` copies.
    fn budget(&self, copies: u32) -> Duration {
        (1..=copies.max(1)).map(|n| self.wait(n)).sum()
    }

    /// The longest one request can take: every copy's wait.
    pub fn total(&self) -> Duration {
        self.budget(self.tries)
    }
}

/// How a request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Every copy the schedule allows.
    Resend,
    /// One copy (Chassis Control), its answer awaited for as long as every
    /// copy would be (a BMC may take seconds to answer a power command).
    Once,
    /// At most two copies (Close Session: a BMC that has closed the
    /// session does not answer a copy).
    Brief,
}

impl Mode {
    const fn to_u8(self) -> u8 {
        match self {
            Mode::Resend => 0,
            Mode::Once => 1,
            Mode::Brief => 2,
        }
    }

    const fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Once,
            2 => Mode::Brief,
            _ => Mode::Resend,
        }
    }
}

/// What the relay must do at a deadline.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due<'a> {
    /// Send this copy again.
    Resend(&'a [u8]),
    /// No answer will come: end `ipmi-rs`'s wait now.
    GiveUp,
}

/// What answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// An ASF pong (the RMCP ping before a session).
    Pong,
    /// An RMCP+ handshake reply of this payload type.
    Payload(u8),
    /// An IPMI message with this request sequence byte and command.
    Ipmb { seq: u8, cmd: u8 },
    /// Something the relay cannot read: the first reply is taken.
    Unknown,
}

const RMCP_CLASS_ASF: u8 = 0x06;
const RMCP_CLASS_IPMI: u8 = 0x07;
const AUTH_RMCP_PLUS: u8 = 0x06;
const PAYLOAD_IPMI: u8 = 0x00;
const PAYLOAD_RAKP1: u8 = 0x12;
const PAYLOAD_RAKP2: u8 = 0x13;
const PAYLOAD_RAKP4: u8 = 0x15;

/// The RMCP+ session header of `p`: (payload type byte, payload).
fn rmcp_plus(p: &[u8]) -> Option<(u8, &[u8])> {
    if p.get(4) != Some(&AUTH_RMCP_PLUS) {
        return None;
    }
    let ty = *p.get(5)?;
    let len = u16::from_le_bytes([*p.get(14)?, *p.get(15)?]) as usize;
    Some((ty, p.get(16..16 + len)?))
}

/// The request sequence byte and command of an IPMB message (request and
/// response alike keep them at bytes 4 and 5), if its header checksum
/// holds (it does not where a payload was decrypted with a wrong key).
fn ipmb_key(m: &[u8]) -> Option<Answer> {
    let (a, b, c) = (*m.first()?, *m.get(1)?, *m.get(2)?);
    if a.wrapping_add(b).wrapping_add(c) != 0 {
        return None;
    }
    Some(Answer::Ipmb {
        seq: *m.get(4)?,
        cmd: *m.get(5)?,
    })
}

/// HMAC-SHA1 of `parts` under `key`.
fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Option<[u8; 20]> {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).ok()?;
    for p in parts {
        mac.update(p);
    }
    Some(mac.finalize().into_bytes().into())
}

/// What the RAKP exchange shows in the clear, to derive the session keys.
#[derive(Debug, Clone, Default)]
struct Handshake {
    /// RAKP 1: console random number, role, user name.
    rakp1: Option<([u8; 16], u8, Vec<u8>)>,
}

/// The retransmission state of one session: the request in flight, its
/// copies, and the key to read encrypted replies.
pub(crate) struct Retransmit {
    schedule: Schedule,
    password: Vec<u8>,
    handshake: Handshake,
    key: Option<Aes128>,
    pending: Option<Pending>,
    /// Copies sent again, over the session.
    pub resent: u64,
    /// Replies dropped (late, repeated or unmatched).
    pub dropped: u64,
}

struct Pending {
    packet: Vec<u8>,
    answer: Answer,
    copies: u32,
    max_copies: u32,
    next: Instant,
    give_up: Instant,
    /// Answered, or given up on: nothing more goes to `ipmi-rs`.
    done: bool,
}

impl std::fmt::Debug for Retransmit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retransmit")
            .field("schedule", &self.schedule)
            .field("keyed", &self.key.is_some())
            .field("resent", &self.resent)
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Retransmit {
    /// The state for a session authenticated with `password`.
    pub fn new(schedule: Schedule, password: &[u8]) -> Retransmit {
        Retransmit {
            schedule,
            password: password.to_vec(),
            handshake: Handshake::default(),
            key: None,
            pending: None,
            resent: 0,
            dropped: 0,
        }
    }

    /// The first block of an encrypted IPMI payload, decrypted.
    fn decrypt_head(&self, payload: &[u8]) -> Option<[u8; 16]> {
        let key = self.key.as_ref()?;
        let (iv, rest) = (payload.get(..16)?, payload.get(16..32)?);
        let mut block = GenericArray::clone_from_slice(rest);
        key.decrypt_block(&mut block);
        let mut out = [0u8; 16];
        for (o, (b, v)) in out.iter_mut().zip(block.iter().zip(iv)) {
            *o = b ^ v;
        }
        Some(out)
    }

    /// What a request or a reply is about.
    fn key_of(&self, p: &[u8]) -> Answer {
        match p.get(3) {
            Some(&RMCP_CLASS_ASF) => return Answer::Pong,
            Some(&RMCP_CLASS_IPMI) => {}
            _ => return Answer::Unknown,
        }
        if let Some((ty, payload)) = rmcp_plus(p) {
            let kind = ty & 0x3f;
            if kind != PAYLOAD_IPMI {
                return Answer::Payload(kind);
            }
            let head = if ty & 0x80 != 0 {
                self.decrypt_head(payload)
            } else {
                payload.get(..16).and_then(|h| h.try_into().ok())
            };
            return head.and_then(|h| ipmb_key(&h)).unwrap_or(Answer::Unknown);
        }
        // IPMI 1.5 header: auth type, sequence (4), session id (4), an
        // authentication code (16) unless the type is none, length (1).
        let start = match p.get(4) {
            Some(0) => 14,
            Some(_) => 30,
            None => return Answer::Unknown,
        };
        p.get(start..).and_then(ipmb_key).unwrap_or(Answer::Unknown)
    }

    /// A request from `ipmi-rs` at `now`; returns the bytes to send.
    pub fn request(&mut self, packet: Vec<u8>, now: Instant, mode: Mode) -> &[u8] {
        let mut answer = self.key_of(&packet);
        if let Answer::Payload(ty) = answer {
            // Handshake requests are answered by the next payload type.
            answer = Answer::Payload(ty + 1);
            if ty == PAYLOAD_RAKP1 {
                self.note_rakp1(&packet);
            }
        }
        let tries = self.schedule.tries.max(1);
        let (max_copies, budget) = match mode {
            Mode::Resend => (tries, self.schedule.total()),
            Mode::Once => (1, self.schedule.total()),
            Mode::Brief => (tries.min(2), self.schedule.budget(tries.min(2))),
        };
        let pending = self.pending.insert(Pending {
            packet,
            answer,
            copies: 1,
            max_copies,
            next: now + self.schedule.wait(1),
            give_up: now + budget,
            done: false,
        });
        &pending.packet
    }

    fn note_rakp1(&mut self, packet: &[u8]) {
        // Tag, 3 reserved, managed system session id (4), console random
        // (16), role, 2 reserved, user name length, user name.
        let Some((_, m)) = rmcp_plus(packet) else {
            return;
        };
        let (Some(random), Some(&role), Some(&len)) = (m.get(8..24), m.get(24), m.get(27)) else {
            return;
        };
        let Some(user) = m.get(28..28 + len as usize) else {
            return;
        };
        let mut r = [0u8; 16];
        r.copy_from_slice(random);
        self.handshake.rakp1 = Some((r, role, user.to_vec()));
    }

    /// RAKP 2 carries the BMC's random number: with RAKP 1 and the
    /// password, that gives SIK, K2 and the AES key (IPMI 2.0 §13.31–32).
    fn note_rakp2(&mut self, packet: &[u8]) {
        let Some((_, m)) = rmcp_plus(packet) else {
            return;
        };
        let (Some(&0), Some(bmc_random)) = (m.get(1), m.get(8..24)) else {
            return;
        };
        let Some((console_random, role, user)) = &self.handshake.rakp1 else {
            return;
        };
        let Some(sik) = hmac_sha1(
            &self.password,
            &[console_random, bmc_random, &[*role, user.len() as u8], user],
        ) else {
            return;
        };
        let Some(k2) = hmac_sha1(&sik, &[&[0x02; 20]]) else {
            return;
        };
        self.key = Aes128::new_from_slice(&k2[..16]).ok();
    }

    /// A reply from the BMC: what to hand to `ipmi-rs`, if anything.
    pub fn reply(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        let key = self.key_of(packet);
        let Some(pending) = self.pending.as_mut() else {
            self.dropped += 1;
            return None;
        };
        let matches = match (pending.answer, key) {
            (Answer::Unknown, _) | (_, Answer::Unknown) => true,
            (want, got) => want == got,
        };
        if !matches || pending.done {
            self.dropped += 1;
            return None;
        }
        pending.done = true;
        match key {
            Answer::Payload(PAYLOAD_RAKP2) => self.note_rakp2(packet),
            Answer::Payload(PAYLOAD_RAKP4) => {
                if let Some(plain) = self.plain_rakp4(packet) {
                    return Some(plain);
                }
            }
            _ => {}
        }
        Some(packet.to_vec())
    }

    /// RAKP 4 as the BMC sends it when RAKP 3 came twice: the session is
    /// already active, so the answer to the copy is encrypted (`ipmi_sim`
    /// does this). Its payload is the RAKP 4 the first copy's lost answer
    /// carried; handed on in the clear, as a first answer is.
    fn plain_rakp4(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let (ty, payload) = rmcp_plus(packet)?;
        if ty & 0x80 == 0 {
            return None;
        }
        let plain = self.decrypt(payload)?;
        let mut out = packet.get(..4)?.to_vec();
        out.extend_from_slice(&[AUTH_RMCP_PLUS, PAYLOAD_RAKP4, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&u16::try_from(plain.len()).ok()?.to_le_bytes());
        out.extend_from_slice(&plain);
        Some(out)
    }

    /// An encrypted payload (IV, then AES-128-CBC blocks), decrypted and
    /// without its confidentiality trailer (pad bytes 1, 2, 3…, then the
    /// pad length).
    fn decrypt(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let key = self.key.as_ref()?;
        let (iv, blocks) = (payload.get(..16)?, payload.get(16..)?);
        if blocks.is_empty() || blocks.len() % 16 != 0 {
            return None;
        }
        let mut plain = Vec::with_capacity(blocks.len());
        let mut prev = iv;
        for c in blocks.chunks_exact(16) {
            let mut block = GenericArray::clone_from_slice(c);
            key.decrypt_block(&mut block);
            plain.extend(block.iter().zip(prev).map(|(b, p)| b ^ p));
            prev = c;
        }
        let pad = *plain.last()? as usize;
        let end = plain.len().checked_sub(pad + 1)?;
        let trailer_ok = plain
            .get(end..end + pad)?
            .iter()
            .enumerate()
            .all(|(i, &b)| b as usize == i + 1);
        trailer_ok.then(|| {
            plain.truncate(end);
            plain
        })
    }

    /// When the request in flight next needs the relay: a copy to send,
    /// or the end of its wait.
    pub fn deadline(&self) -> Option<Instant> {
        let p = self.pending.as_ref().filter(|p| !p.done)?;
        Some(if p.copies < p.max_copies {
            p.next.min(p.give_up)
        } else {
            p.give_up
        })
    }

    /// At `now`: what is due for the request in flight, if anything.
    pub fn due(&mut self, now: Instant) -> Option<Due<'_>> {
        let schedule = self.schedule;
        let p = self.pending.as_mut().filter(|p| !p.done)?;
        if now >= p.give_up {
            p.done = true;
            return Some(Due::GiveUp);
        }
        if p.copies >= p.max_copies || now < p.next {
            return None;
        }
        p.copies += 1;
        p.next = now + schedule.wait(p.copies);
        self.resent += 1;
        Some(Due::Resend(&p.packet))
    }
}

/// Counters a relay shares with its session.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// How to send the next request ([`Mode`]); back to `Resend` after it.
    pub next_mode: AtomicU8,
    /// The relay ended `ipmi-rs`'s wait for the last request: no answer
    /// came in time.
    pub gave_up: AtomicBool,
    /// Copies sent again.
    pub resent: AtomicU64,
    /// Replies dropped.
    pub dropped: AtomicU64,
    /// The BMC's port refused a datagram (ICMP port unreachable).
    pub refused: AtomicBool,
}

/// A running relay: `ipmi-rs` connects to [`Relay::addr`]. Stopped when
/// dropped.
#[derive(Debug)]
pub(crate) struct Relay {
    /// Where `ipmi-rs` sends.
    pub addr: SocketAddr,
    /// Shared with the relay task.
    pub shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Shared {
    /// Send the next request in `mode`.
    pub fn set_mode(&self, mode: Mode) {
        self.next_mode.store(mode.to_u8(), Ordering::Release);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Relay {
    /// Start a relay to the BMC at `bmc`.
    pub async fn start(
        bmc: SocketAddr,
        schedule: Schedule,
        password: &[u8],
    ) -> std::io::Result<Relay> {
        let front = UdpSocket::bind("127.0.0.1:0").await?;
        let back = UdpSocket::bind(if bmc.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).await?;
        back.connect(bmc).await?;
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared::default());
        let state = Retransmit::new(schedule, password);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(front, back, state, shared.clone(), stopped));
        Ok(Relay {
            addr,
            shared,
            task: Some(task),
            stop: Some(stop),
        })
    }

    /// Stop, once whatever `ipmi-rs` sent last is on its way to the BMC
    /// (a RAKP 3 that refuses the BMC, say, which `ipmi-rs` sends just
    /// before it returns): the relay task passes it on by itself, within
    /// about 100 ms, without holding up the caller.
    pub fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Detached: the task ends by itself.
        self.task.take();
    }
}

async fn run(
    front: UdpSocket,
    back: UdpSocket,
    mut state: Retransmit,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut client: Option<SocketAddr> = None;
    let mut from_client = vec![0u8; 2048];
    let mut from_bmc = vec![0u8; 2048];
    loop {
        let deadline = state.deadline();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stopped => {
                // Pass on what ipmi-rs sent last, then stop. On loopback a
                // datagram may reach the socket a moment after its send
                // returned (the kernel delivers it in a softirq, deferred
                // under load): wait until the socket is quiet for 100 ms.
                let quiet = Duration::from_millis(100);
                while let Ok(Ok((n, from))) =
                    tokio::time::timeout(quiet, front.recv_from(&mut from_client)).await
                {
                    if client == Some(from) {
                        let _ = back.send(from_client.get(..n).unwrap_or_default()).await;
                    }
                }
                return;
            }
            r = front.recv_from(&mut from_client) => {
                let Ok((n, from)) = r else { continue };
                // Only the session's own socket may use the relay.
                if client.is_some_and(|c| c != from) || !from.ip().is_loopback() {
                    continue;
                }
                client = Some(from);
                let mode = Mode::from_u8(shared.next_mode.swap(0, Ordering::AcqRel));
                let packet = from_client.get(..n).unwrap_or_default().to_vec();
                let out = state.request(packet, Instant::now(), mode);
                // A send error shows as a missing answer: ipmi-rs times out.
                let _ = back.send(out).await;
            }
            r = back.recv(&mut from_bmc) => {
                let n = match r {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        // Nothing listens at the BMC's port: tell ipmi-rs
                        // now (a datagram it cannot parse ends its wait)
                        // rather than after every copy's wait.
                        shared.refused.store(true, Ordering::Release);
                        if let Some(c) = client {
                            let _ = front.send_to(&[0], c).await;
                        }
                        continue;
                    }
                    Err(_) => continue,
                };
                let packet = from_bmc.get(..n).unwrap_or_default();
                if let Some(out) = state.reply(packet)
                    && let Some(c) = client
                {
                    let _ = front.send_to(&out, c).await;
                }
                shared.dropped.store(state.dropped, Ordering::Relaxed);
            }
            () = sleep => {
                match state.due(Instant::now()) {
                    Some(Due::Resend(out)) => {
                        let _ = back.send(out).await;
                        shared.resent.store(state.resent, Ordering::Relaxed);
                    }
                    Some(Due::GiveUp) => {
                        shared.gave_up.store(true, Ordering::Release);
                        if let Some(c) = client {
                            let _ = front.send_to(&[0], c).await;
                        }
                    }
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: Schedule = Schedule {
        first: Duration::from_secs(1),
        tries: 4,
    };

    /// An RMCP+ packet of payload type `ty` with `payload`.
    fn plus(ty: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x06, 0x00, 0xff, RMCP_CLASS_IPMI, AUTH_RMCP_PLUS, ty];
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// An IPMI 1.5 (no authentication) message.
    fn v15(ipmb: &[u8]) -> Vec<u8> {
        let mut p = vec![0x06, 0x00, 0xff, RMCP_CLASS_IPMI, 0x00];
        p.extend_from_slice(&[0; 8]);
        p.push(ipmb.len() as u8);
        p.extend_from_slice(ipmb);
        p
    }

    #[test]
    fn schedule_grows_and_is_bounded() {
        assert_eq!(SCHEDULE.total(), Duration::from_secs(10));
        let one = Schedule {
            first: Duration::from_millis(300),
            tries: 0,
        };
        assert_eq!(one.total(), Duration::from_millis(300));
    }

    #[test]
    fn resends_identical_copies_on_schedule_then_stops() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(SCHEDULE, b"pw");
        let req = v15(&[0x20, 0x18, 0xc8, 0x81, 0x04, 0x38, 0x8e, 0x04, 0x00]);
        assert_eq!(r.request(req.clone(), t0, Mode::Resend), &req[..]);
        assert_eq!(r.deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(r.due(t0 + Duration::from_millis(999)).is_none());
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(r.due(t1), Some(Due::Resend(&req)));
        // The second copy waits twice as long, the third three times.
        assert!(r.due(t1 + Duration::from_millis(1999)).is_none());
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(r.due(t2), Some(Due::Resend(&req)));
        let t3 = t2 + Duration::from_secs(3);
        assert_eq!(r.due(t3), Some(Due::Resend(&req)));
        // Four copies in all; then, after the last one's wait, give up.
        let end = t3 + Duration::from_secs(4);
        assert_eq!(r.deadline(), Some(end));
        assert!(r.due(end - Duration::from_millis(1)).is_none());
        assert_eq!(r.due(end), Some(Due::GiveUp));
        assert_eq!(r.deadline(), None);
        assert!(r.due(end + Duration::from_secs(60)).is_none());
        assert_eq!(r.resent, 3);
    }

    #[test]
    fn one_reply_per_request_and_only_its_own() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(SCHEDULE, b"pw");
        let req = v15(&[0x20, 0x18, 0xc8, 0x81, 0x04, 0x38, 0x8e, 0x04, 0x00]);
        r.request(req, t0, Mode::Resend);
        let other = v15(&[0x81, 0x1c, 0x63, 0x20, 0x08, 0x38, 0x00, 0x01]);
        let mine = v15(&[0x81, 0x1c, 0x63, 0x20, 0x04, 0x38, 0x00, 0x01]);
        assert!(r.reply(&other).is_none(), "a reply to another request");
        assert_eq!(r.reply(&mine), Some(mine.clone()));
        assert!(r.reply(&mine).is_none(), "the answer to a second copy");
        assert_eq!(r.deadline(), None, "answered: nothing more to do");
        assert_eq!(r.dropped, 2);
    }

    #[test]
    fn once_is_never_resent_and_brief_twice_at_most() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(SCHEDULE, b"pw");
        r.request(plus(0xc0, &[0; 32]), t0, Mode::Once);
        // Awaited as long as every copy would be (1 + 2 + 3 + 4 s), never
        // sent again.
        let end = t0 + Duration::from_secs(10);
        assert_eq!(r.deadline(), Some(end));
        assert!(r.due(end - Duration::from_millis(1)).is_none());
        assert_eq!(r.due(end), Some(Due::GiveUp));
        assert_eq!(r.resent, 0);

        r.request(plus(0xc0, &[0; 32]), t0, Mode::Brief);
        let t1 = t0 + Duration::from_secs(1);
        assert!(matches!(r.due(t1), Some(Due::Resend(_))));
        assert_eq!(r.deadline(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(r.due(t0 + Duration::from_secs(3)), Some(Due::GiveUp));
        assert_eq!(r.resent, 1);
    }

    #[test]
    fn handshake_replies_match_by_payload_type() {
        let t0 = Instant::now();
        let mut r = Retransmit::new(SCHEDULE, b"pw");
        r.request(plus(0x10, &[0; 32]), t0, Mode::Resend);
        assert!(
            r.reply(&plus(0x13, &[0; 40])).is_none(),
            "RAKP 2 does not answer Open Session"
        );
        assert!(r.reply(&plus(0x11, &[0; 36])).is_some());
        let pong = [0x06, 0x00, 0xff, RMCP_CLASS_ASF, 0, 0, 0, 0];
        assert!(r.reply(&pong).is_none(), "a late pong");
    }

    /// The relay's key is the one the two ends derive: a payload encrypted
    /// with K2 from the same RAKP values is read back.
    #[test]
    fn derives_the_session_key_and_reads_encrypted_replies() {
        use aes::cipher::BlockEncrypt;
        let (pw, user) = (b"s3cret-pw", b"admin");
        let (rm, rc) = ([7u8; 16], [9u8; 16]);
        let mut rakp1 = vec![0x0d, 0, 0, 0, 1, 2, 3, 4];
        rakp1.extend_from_slice(&rm);
        rakp1.extend_from_slice(&[0x14, 0, 0, user.len() as u8]);
        rakp1.extend_from_slice(user);
        let mut rakp2 = vec![0x0d, 0, 0, 0, 5, 6, 7, 8];
        rakp2.extend_from_slice(&rc);
        rakp2.extend_from_slice(&[0; 36]);

        let t0 = Instant::now();
        let mut r = Retransmit::new(SCHEDULE, pw);
        r.request(plus(PAYLOAD_RAKP1, &rakp1), t0, Mode::Resend);
        assert!(r.reply(&plus(PAYLOAD_RAKP2, &rakp2)).is_some());
        assert!(r.key.is_some());

        // What the ends compute (IPMI 2.0 §13.31–32).
        let sik = hmac_sha1(pw, &[&rm, &rc, &[0x14, user.len() as u8], user]).unwrap();
        let k2 = hmac_sha1(&sik, &[&[2; 20]]).unwrap();
        let aes = Aes128::new_from_slice(&k2[..16]).unwrap();
        // AES-CBC with the confidentiality trailer, as the ends send it.
        let encrypt = |ty: u8, data: &[u8]| {
            let iv = [0x5a_u8; 16];
            let mut plain = data.to_vec();
            let pad = 15 - data.len() % 16;
            plain.extend((1..=pad as u8).chain([pad as u8]));
            let mut payload = iv.to_vec();
            let mut prev = iv;
            for chunk in plain.chunks_exact(16) {
                let mut block = [0u8; 16];
                for (b, (x, p)) in block.iter_mut().zip(chunk.iter().zip(prev)) {
                    *b = x ^ p;
                }
                let mut ga = GenericArray::clone_from_slice(&block);
                aes.encrypt_block(&mut ga);
                prev.copy_from_slice(&ga);
                payload.extend_from_slice(&ga);
            }
            plus(ty, &payload)
        };
        // Get Chassis Status, request sequence 5.
        r.request(
            encrypt(0xc0, &[0x20, 0x00, 0xe0, 0x81, 0x14, 0x01]),
            t0,
            Mode::Resend,
        );
        let late = encrypt(0xc0, &[0x81, 0x04, 0x7b, 0x20, 0x10, 0x01, 0x00, 0x01]);
        let own = encrypt(0xc0, &[0x81, 0x04, 0x7b, 0x20, 0x14, 0x01, 0x00, 0x01]);
        assert!(
            r.reply(&late).is_none(),
            "the answer to the previous request"
        );
        assert!(r.reply(&own).is_some());

        // RAKP 4 answering a repeated RAKP 3 comes encrypted; ipmi-rs gets
        // it in the clear, as the first answer would have been.
        r.request(plus(0x14, &[0x0a, 0, 0, 0, 5, 6, 7, 8]), t0, Mode::Resend);
        let rakp4: Vec<u8> = [0x0a, 0, 0, 0, 1, 2, 3, 4]
            .into_iter()
            .chain([0xee; 12])
            .collect();
        assert_eq!(r.reply(&encrypt(0xd5, &rakp4)), Some(plus(0x15, &rakp4)));
    }
}
