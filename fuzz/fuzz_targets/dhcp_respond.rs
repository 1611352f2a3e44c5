//! Any datagram through the DHCP wire boundary and the responder, in every
//! mode: no panic, and every reply encodes to something that decodes with
//! the same type, address and server id. The same datagram, seen on the
//! client port, through the rogue-server inspector: no panic.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vaquero_dhcp::wire::{decode_reply, encode, parse};
use vaquero_dhcp::{Decision, Link, respond};
use vaquero_model::{DhcpMode, SiteModel, Sot, SotFiles};

fn model() -> &'static SiteModel {
    static M: OnceLock<SiteModel> = OnceLock::new();
    M.get_or_init(|| {
        let mut f = SotFiles::new();
        f.insert("os/os.yml", "id: os\nos_family: debian\nmajor_version: \"12\"\nboot:\n  kernel: k\n  initrd: [i]\n");
        f.insert("boot/b.yml", "id: b\noperating_system: os\n");
        f.insert("workflows/w.yml", "id: w\nstages:\n  - boot: b\n");
        f.insert(
            "sites/s/env.yml",
            "id: s\nagents:\n  - id: a\n    asset_server: {url: \"http://10.0.0.2:8080\"}\nsubnets:\n  - id: n\n    cidr: 10.0.0.0/24\n    gateway: 10.0.0.1\n    dns: [10.0.0.1]\n    domain_name: example.test\n    dhcp_options:\n      - {option: 224, type: string, value: hello}\n",
        );
        f.insert(
            "sites/s/h.yml",
            "name: h\nworkflow: w\nlocation: {circuit_id: p1}\ninterfaces:\n  - {type: physical, mac: \"02:00:00:00:00:01\", subnet: n, ipv4: 10.0.0.5}\n  - {type: bmc, mac: \"02:00:00:00:00:02\", subnet: n, ipv4: 10.0.0.6}\n",
        );
        let sot = Sot::load(&f).expect("the fuzz model is valid");
        SiteModel::compile(&sot, "s").expect("compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let own = Ipv4Addr::new(10, 0, 0, 2);
    if let Some(r) = vaquero_dhcp::inspect(data, (Ipv4Addr::new(10, 0, 0, 9), 67).into(), own) {
        assert_ne!(r.server_id, own, "our own reply is never rogue");
    }
    let Ok(req) = parse(data) else {
        return;
    };
    for (mode, pxe_port) in [
        (DhcpMode::Server, false),
        (DhcpMode::Proxy, false),
        (DhcpMode::Proxy, true),
    ] {
        let link = Link {
            mode,
            server_ip: Ipv4Addr::new(10, 0, 0, 2),
            pxe_port,
        };
        if let Decision::Reply { reply, .. } = respond(&req, model(), &link) {
            let bytes = encode(&reply, &req.params, req.max_size);
            let (back, _) = decode_reply(&bytes).expect("our reply decodes");
            assert_eq!(back.msg_type, reply.msg_type);
            assert_eq!(back.yiaddr, reply.yiaddr);
            assert_eq!(back.option(54), reply.option(54));
        }
    }
});
