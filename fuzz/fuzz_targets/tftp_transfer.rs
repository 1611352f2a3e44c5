//! The sending state machine fed arbitrary datagrams and clock jumps: no
//! panic, every DATA it asks for lies inside the file, and it always ends
//! within its retry budget once the client falls silent.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vaquero_tftp::{Mode, Options, Request, Transfer, TransferConfig, Transmit};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from(u32::from_le_bytes([data[0], data[1], data[2], 0]));
    let options = Options {
        blksize: (data[3] & 1 == 1).then_some(8 + u16::from(data[4])),
        windowsize: (data[3] & 2 == 2).then_some(1 + u16::from(data[5] % 32)),
        tsize: (data[3] & 4 == 4).then_some(0),
        timeout: (data[3] & 8 == 8).then_some(1 + data[6] % 5),
    };
    let t0 = Instant::now();
    let mut cfg = TransferConfig::default();
    cfg.max_retries = 3;
    let req = Request {
        filename: "f",
        mode: Mode::Octet,
        options,
    };
    let mut t = Transfer::new(&req, len, &cfg, t0);
    let mut now = t0;
    let check = |t: &mut Transfer, now: Instant| {
        while let Some(tx) = t.poll_transmit(now) {
            if let Transmit::Data { offset, len: n, .. } = tx {
                assert!(offset + n as u64 <= len, "block outside the file");
                assert!(n <= t.blksize());
            }
        }
    };
    // The rest: chunks of [kind, a, b, payload-len, payload…].
    let mut rest = &data[7..];
    while rest.len() >= 4 {
        check(&mut t, now);
        let (kind, a, b, n) = (rest[0], rest[1], rest[2], rest[3] as usize);
        rest = &rest[4..];
        match kind % 4 {
            0 => {
                let _ = t.handle_packet(&[0, 4, a, b], now);
            }
            1 => {
                let n = n.min(rest.len());
                let _ = t.handle_packet(&rest[..n], now);
                rest = &rest[n..];
            }
            2 => {
                now += Duration::from_millis(u64::from(a) * 40);
                t.handle_timeout(now);
            }
            _ => {
                if let Some(d) = t.poll_timeout() {
                    now = d;
                    t.handle_timeout(now);
                }
            }
        }
    }
    // Then silence: it must end by itself.
    for _ in 0..64 {
        check(&mut t, now);
        match t.poll_timeout() {
            Some(d) => {
                now = d;
                t.handle_timeout(now);
            }
            None => break,
        }
    }
    check(&mut t, now);
    assert!(
        t.is_finished(),
        "still running after the client fell silent"
    );
});
