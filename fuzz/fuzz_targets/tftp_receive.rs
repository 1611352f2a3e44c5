//! The receiving state machine fed arbitrary datagrams and clock jumps: no
//! panic, every write it asks for is in order and within the size limit,
//! and it ends within its retry budget once the client falls silent.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vaquero_tftp::{Mode, Options, Receive, Request, TransferConfig};

const MAX: u64 = 100_000;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let options = Options {
        blksize: (data[0] & 1 == 1).then_some(8 + u16::from(data[1])),
        windowsize: (data[0] & 2 == 2).then_some(1 + u16::from(data[2] % 16)),
        tsize: (data[0] & 4 == 4).then_some(u64::from(data[3]) * 1000),
        timeout: None,
    };
    let t0 = Instant::now();
    let mut cfg = TransferConfig::default();
    cfg.max_retries = 3;
    let req = Request {
        filename: "f",
        mode: Mode::Octet,
        options,
    };
    let mut r = Receive::new(&req, &cfg, MAX, t0);
    let mut now = t0;
    let mut written = 0u64;
    // Chunks of [kind, a, b, len, payload…]: DATA a/b with payload, raw
    // bytes, or a clock jump.
    let mut rest = &data[4..];
    while rest.len() >= 4 {
        while r.poll_transmit(now).is_some() {}
        let (kind, a, b, n) = (rest[0], rest[1], rest[2], usize::from(rest[3]) * 8);
        rest = &rest[4..];
        let n = n.min(rest.len());
        let (payload, tail) = rest.split_at(n);
        rest = tail;
        let packet = match kind % 3 {
            0 => {
                let mut p = vec![0, 3, a, b];
                p.extend_from_slice(payload);
                p
            }
            1 => payload.to_vec(),
            _ => {
                now += Duration::from_millis(u64::from(a) * 20);
                r.handle_timeout(now);
                continue;
            }
        };
        if let Ok(Some(w)) = r.handle_packet(&packet, now) {
            assert_eq!(w.offset, written, "writes arrive in order");
            assert!(w.offset + w.len as u64 <= MAX);
            assert!(4 + w.len <= packet.len());
            written += w.len as u64;
        }
    }
    for _ in 0..64 {
        while r.poll_transmit(now).is_some() {}
        match r.poll_timeout() {
            Some(d) => {
                now = d;
                r.handle_timeout(now);
            }
            None => break,
        }
    }
    while r.poll_transmit(now).is_some() {}
    assert!(
        r.is_finished(),
        "still running after the client fell silent"
    );
});
