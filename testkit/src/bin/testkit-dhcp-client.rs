//! A DHCP client for the segment tests, started with
//! `VAQUERO_DHCP_TEST_CLIENT=iface|bind|dest|wait_ms`. It binds to the
//! interface, sends each request of `VAQUERO_DHCP_TEST_REQUESTS` (hex,
//! comma-separated) and prints every reply with the same xid that arrives
//! within `wait_ms` as `REPLY <index> <hex>` (several servers may answer
//! one request, as a PXE ROM sees them), then `CLIENT DONE`.
#![allow(clippy::unwrap_used)] // a test helper: a panic fails the test

use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

fn main() {
    let spec = std::env::var("VAQUERO_DHCP_TEST_CLIENT").expect("VAQUERO_DHCP_TEST_CLIENT");
    let parts: Vec<&str> = spec.split('|').collect();
    let [iface, bind, dest, wait] = parts[..] else {
        panic!("bad client spec {spec}")
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_broadcast(true).unwrap();
    s.bind_device(Some(iface.as_bytes())).unwrap();
    s.bind(&bind.parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    let sock: std::net::UdpSocket = s.into();
    let dest: std::net::SocketAddr = dest.parse().unwrap();
    let wait = Duration::from_millis(wait.parse().unwrap());
    let requests = std::env::var("VAQUERO_DHCP_TEST_REQUESTS").unwrap();
    let mut buf = [0u8; 1500];
    for (i, req) in requests.split(',').filter(|r| !r.is_empty()).enumerate() {
        let req = unhex(req);
        sock.send_to(&req, dest).unwrap();
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            // Replies only (op 2), to this request (xid).
            if n > 8 && buf[0] == 2 && buf[4..8] == req[4..8] {
                let hex: String = buf[..n].iter().map(|b| format!("{b:02x}")).collect();
                println!("REPLY {i} {hex}");
            }
        }
    }
    println!("CLIENT DONE");
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}
