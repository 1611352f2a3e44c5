//! Any datagram decodes to a packet or a typed error, never a panic; a
//! packet that decodes encodes back to something that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaquero_tftp::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        let again = p.to_vec();
        assert_eq!(Packet::decode(&again), Ok(p));
    }
});
