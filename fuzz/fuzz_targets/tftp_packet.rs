//! Any datagram decodes to a packet or a typed error, never a panic; a
//! packet that decodes encodes back to something that decodes the same.
//! The listening socket's endpoint agrees with the decoder: it ignores
//! exactly the datagrams that do not decode as malformed, and accepts only
//! requests, with their file name, mode and options as sent.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use vaquero_tftp::{Endpoint, Ignored, Limits, Packet, Verdict};

fuzz_target!(|data: &[u8]| {
    let decoded = Packet::decode(data);
    if let Ok(p) = &decoded {
        let again = p.to_vec();
        assert_eq!(Packet::decode(&again).as_ref(), Ok(p));
    }
    let mut endpoint = Endpoint::new(Limits {
        max_transfers: 1,
        rate_per_second: 1.0,
        rate_burst: 1.0,
        single_port: data.first().is_some_and(|b| b & 1 == 1),
    });
    let from = SocketAddr::from(([127, 0, 0, 1], 1069));
    match (
        endpoint.handle(data, from, |_| false, 0, Instant::now()),
        decoded,
    ) {
        (Verdict::Ignore(Ignored::Malformed(e)), Err(d)) => assert_eq!(e, d),
        (Verdict::Accept(a), Ok(Packet::Rrq(r) | Packet::Wrq(r))) => {
            assert_eq!(a.filename, r.filename);
            assert_eq!(a.mode, r.mode);
            assert_eq!(a.options, r.options);
        }
        (Verdict::Refuse { .. }, Ok(Packet::Wrq(_))) => {}
        (Verdict::Ignore(Ignored::Unexpected), Ok(p)) => {
            assert!(!matches!(p, Packet::Rrq(_) | Packet::Wrq(_)));
        }
        (v, d) => panic!("endpoint {v:?} for {d:?}"),
    }
});
