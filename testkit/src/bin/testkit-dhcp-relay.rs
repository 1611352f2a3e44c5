//! A relay agent: sends one relayed DISCOVER (giaddr 10.99.0.1, option 82
//! naming switch `tor-a` port `ge-0/0/1`) from 10.99.0.1:67 to
//! 10.99.0.2:67, and prints the reply as `REPLY <hex>` (`REPLY none`
//! after ten tries of 2 s).
#![allow(clippy::unwrap_used)] // a test helper: a panic fails the test

use std::time::Duration;

fn main() {
    let sock = std::net::UdpSocket::bind("10.99.0.1:67").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // An unknown MAC on a known switch port: option 82 says where it is.
    let mut relay = vec![1, 8];
    relay.extend_from_slice(b"ge-0/0/1");
    relay.extend_from_slice(&[2, 5]);
    relay.extend_from_slice(b"tor-a");
    let mut d = vaquero_dhcp::wire::encode_request(
        "02:00:00:00:00:99".parse().unwrap(),
        0x5eed,
        vaquero_dhcp::MessageType::Discover,
        &[(82, relay)],
    );
    d[3] = 1; // hops
    d[24..28].copy_from_slice(&[10, 99, 0, 1]); // giaddr
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        sock.send_to(&d, "10.99.0.2:67").unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let hex: String = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
            println!("REPLY {hex}");
            return;
        }
    }
    println!("REPLY none");
}
