//! The responder against the compiled `examples/lab` model: every
//! architecture × user class × mode gives the documented boot target;
//! unknown MACs get silence; replies carry option 54 and survive the wire.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::net::Ipv4Addr;
use std::path::Path;

use proptest::prelude::*;
use vaquero_dhcp::wire::{decode_reply, encode, encode_request, parse};
use vaquero_dhcp::{BootTarget, Decision, Destination, Link, MessageType, Silence, respond};
use vaquero_model::{DhcpMode, MacAddr, SiteModel, Sot};

/// The lab's compiled model, loaded once for all tests and cases.
fn lab() -> &'static SiteModel {
    static LAB: std::sync::OnceLock<SiteModel> = std::sync::OnceLock::new();
    LAB.get_or_init(|| {
        let sot =
            Sot::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab")).unwrap();
        SiteModel::compile(&sot, "lab").unwrap()
    })
}

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const K8S_01: &str = "52:54:00:00:01:01";

fn link(mode: DhcpMode, pxe_port: bool) -> Link {
    Link {
        mode,
        server_ip: SERVER,
        pxe_port,
    }
}

fn request(mac: &str, t: MessageType, opts: &[(u8, Vec<u8>)]) -> vaquero_dhcp::Request {
    parse(&encode_request(mac.parse::<MacAddr>().unwrap(), 7, t, opts)).unwrap()
}

fn pxe(arch: u16, class: &str) -> Vec<(u8, Vec<u8>)> {
    vec![
        (93, arch.to_be_bytes().to_vec()),
        (60, class.as_bytes().to_vec()),
    ]
}

fn boot_of(d: &Decision) -> Option<BootTarget> {
    match d {
        Decision::Reply { boot, .. } => boot.clone(),
        Decision::Silence(_) => None,
    }
}

#[test]
fn boot_targets_by_architecture() {
    let m = lab();
    let tftp = |f: &str| Some(BootTarget::Tftp(f.into()));
    let http = |u: &str| Some(BootTarget::Http(u.into()));
    type Case = (Vec<(u8, Vec<u8>)>, Option<BootTarget>);
    let cases: Vec<Case> = vec![
        (
            pxe(0, "PXEClient:Arch:00000:UNDI:002001"),
            tftp("undionly.kpxe"),
        ),
        (pxe(6, "PXEClient:Arch:00006:UNDI:003016"), tftp("ipxe.efi")),
        (pxe(7, "PXEClient:Arch:00007:UNDI:003016"), tftp("ipxe.efi")),
        (pxe(9, "PXEClient:Arch:00009:UNDI:003016"), tftp("ipxe.efi")),
        (
            pxe(11, "PXEClient:Arch:00011:UNDI:003016"),
            tftp("ipxe-arm64.efi"),
        ),
        (
            pxe(16, "HTTPClient:Arch:00016:UNDI:003001"),
            http("http://10.99.0.2:8080/files/ipxe.efi"),
        ),
        (
            pxe(15, "HTTPClient:Arch:00015:UNDI:003001"),
            http("http://10.99.0.2:8080/files/ipxe.efi"),
        ),
        (
            pxe(19, "HTTPClient:Arch:00019:UNDI:003001"),
            http("http://10.99.0.2:8080/files/ipxe-arm64.efi"),
        ),
        // iPXE by user class or by its option 175, whatever its arch.
        (
            {
                let mut o = pxe(7, "PXEClient:Arch:00007:UNDI:003016");
                o.push((77, b"iPXE".to_vec()));
                o
            },
            http("http://10.99.0.2:8080/boot.ipxe"),
        ),
        (
            {
                let mut o = pxe(0, "PXEClient:Arch:00000:UNDI:002001");
                o.push((175, vec![19, 1, 1]));
                o
            },
            http("http://10.99.0.2:8080/boot.ipxe"),
        ),
        // Not a network-boot client: an address, no boot file.
        (vec![], None),
        (pxe(99, "PXEClient:Arch:00099:UNDI:003016"), None),
    ];
    for (opts, want) in cases {
        let d = respond(
            &request(K8S_01, MessageType::Discover, &opts),
            m,
            &link(DhcpMode::Server, false),
        );
        assert_eq!(boot_of(&d), want, "{opts:?}");
        let Decision::Reply { reply, .. } = d else {
            panic!("server mode answers a known host")
        };
        assert_eq!(reply.yiaddr, Ipv4Addr::new(10, 99, 0, 11));
    }
}

#[test]
fn a_hosts_boot_files_override_the_sites_for_that_host_only() {
    let m = lab();
    let d = |mac: &str, arch: u16| {
        let class = format!("PXEClient:Arch:{arch:05}:UNDI:003016");
        boot_of(&respond(
            &request(mac, MessageType::Discover, &pxe(arch, &class)),
            m,
            &link(DhcpMode::Server, false),
        ))
    };
    let tftp = |f: &str| Some(BootTarget::Tftp(f.into()));
    // bastion-01 sets uefi_x64 only; BIOS keeps the site's default.
    assert_eq!(d("52:54:00:00:01:31", 7), tftp("snponly.efi"));
    assert_eq!(d("52:54:00:00:01:31", 0), tftp("undionly.kpxe"));
    assert_eq!(d(K8S_01, 7), tftp("ipxe.efi"));
}

#[test]
fn server_mode_offer_has_the_sot_options() {
    let m = lab();
    let mut opts = pxe(0, "PXEClient:Arch:00000:UNDI:002001");
    opts.push((
        55,
        vec![1, 3, 6, 12, 15, 42, 51, 54, 66, 67, 150, 224, 252, 7],
    ));
    let req = request(K8S_01, MessageType::Discover, &opts);
    let Decision::Reply { reply, to, .. } = respond(&req, m, &link(DhcpMode::Server, false)) else {
        panic!()
    };
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(reply.msg_type, MessageType::Offer);
    assert_eq!(reply.option(54), Some(&[10, 99, 0, 2][..]));
    assert_eq!(reply.option(1), Some(&[255, 255, 255, 0][..]));
    assert_eq!(reply.option(3), Some(&[10, 99, 0, 1][..]));
    assert_eq!(reply.option(6), Some(&[10, 99, 0, 1][..]));
    assert_eq!(reply.option(12), Some(&b"k8s-01"[..]));
    assert_eq!(reply.option(15), Some(&b"lab.vaquero.test"[..]));
    assert_eq!(reply.option(42), Some(&[10, 99, 0, 1][..]));
    assert_eq!(reply.option(51), Some(&3600u32.to_be_bytes()[..]));
    assert_eq!(reply.option(7), Some(&[10, 99, 0, 2][..]));
    assert_eq!(reply.option(150), Some(&[10, 99, 0, 2][..]));
    assert_eq!(reply.option(224), Some(&3600u32.to_be_bytes()[..]));
    assert_eq!(
        reply.option(252),
        Some(&b"http://10.99.0.2:8080/wpad.dat"[..])
    );
    assert_eq!(reply.option(66), Some(&b"10.99.0.2"[..]));
    assert_eq!(reply.option(67), Some(&b"undionly.kpxe"[..]));
    assert_eq!(
        (reply.siaddr, reply.file.as_deref()),
        (SERVER, Some("undionly.kpxe"))
    );
    assert!(reply.option(175).is_none(), "not iPXE: no 175");
    // Through the wire, in the client's order.
    let bytes = encode(&reply, &req.params, req.max_size);
    let (back, order) = decode_reply(&bytes).unwrap();
    assert_eq!(back.yiaddr, Ipv4Addr::new(10, 99, 0, 11));
    assert_eq!(&order[..4], &[53, 54, 1, 3]);
}

#[test]
fn ipxe_gets_no_pxedhcp_and_http_boot_echoes_httpclient() {
    let m = lab();
    let mut o = pxe(7, "PXEClient:Arch:00007:UNDI:003016");
    o.push((77, b"iPXE".to_vec()));
    let Decision::Reply { reply, .. } = respond(
        &request(K8S_01, MessageType::Discover, &o),
        m,
        &link(DhcpMode::Server, false),
    ) else {
        panic!()
    };
    assert_eq!(reply.option(175), Some(&[176, 1, 1][..]));
    assert!(reply.option(60).is_none());
    let Decision::Reply { reply, .. } = respond(
        &request(
            K8S_01,
            MessageType::Discover,
            &pxe(16, "HTTPClient:Arch:00016"),
        ),
        m,
        &link(DhcpMode::Server, false),
    ) else {
        panic!()
    };
    assert_eq!(reply.option(60), Some(&b"HTTPClient"[..]));
}

#[test]
fn request_ack_nak_inform_release() {
    let m = lab();
    let l = link(DhcpMode::Server, false);
    let ok = request(
        K8S_01,
        MessageType::Request,
        &[(50, vec![10, 99, 0, 11]), (54, vec![10, 99, 0, 2])],
    );
    let Decision::Reply { reply, .. } = respond(&ok, m, &l) else {
        panic!()
    };
    assert_eq!(reply.msg_type, MessageType::Ack);
    let wrong = request(K8S_01, MessageType::Request, &[(50, vec![10, 99, 0, 99])]);
    let Decision::Reply { reply, to, .. } = respond(&wrong, m, &l) else {
        panic!()
    };
    assert_eq!(
        (reply.msg_type, to, reply.yiaddr),
        (
            MessageType::Nak,
            Destination::Broadcast,
            Ipv4Addr::UNSPECIFIED
        )
    );
    let other = request(
        K8S_01,
        MessageType::Request,
        &[(50, vec![10, 99, 0, 11]), (54, vec![10, 99, 0, 250])],
    );
    assert_eq!(
        respond(&other, m, &l),
        Decision::Silence(Silence::OtherServer)
    );
    let inform = request(K8S_01, MessageType::Inform, &[]);
    let Decision::Reply { reply, .. } = respond(&inform, m, &l) else {
        panic!()
    };
    assert!(reply.option(51).is_none() && reply.yiaddr.is_unspecified());
    assert_eq!(
        respond(&request(K8S_01, MessageType::Release, &[]), m, &l),
        Decision::Silence(Silence::Noted(MessageType::Release))
    );
    assert_eq!(
        respond(
            &request(K8S_01, MessageType::Discover, &[]),
            m,
            &link(DhcpMode::Off, false)
        ),
        Decision::Silence(Silence::NotAnswered)
    );
}

#[test]
fn bmc_nics_get_an_address_and_no_boot_file() {
    let m = lab();
    let d = respond(
        &request(
            "52:54:00:00:02:01",
            MessageType::Discover,
            &pxe(0, "PXEClient"),
        ),
        m,
        &link(DhcpMode::Server, false),
    );
    let Decision::Reply { reply, boot, .. } = d else {
        panic!()
    };
    assert_eq!(reply.yiaddr, Ipv4Addr::new(10, 99, 1, 11));
    assert_eq!(boot, None);
    assert_eq!(reply.option(1), Some(&[255, 255, 255, 0][..]));
}

#[test]
fn relayed_requests() {
    let m = lab();
    let mut buf = encode_request(
        K8S_01.parse().unwrap(),
        5,
        MessageType::Discover,
        &[(
            82,
            vec![
                1, 8, b'g', b'e', b'-', b'0', b'/', b'0', b'/', b'1', 2, 5, b't', b'o', b'r', b'-',
                b'a',
            ],
        )],
    );
    // giaddr on the host's subnet.
    buf[24..28].copy_from_slice(&[10, 99, 0, 1]);
    let req = parse(&buf).unwrap();
    assert_eq!(
        req.relay.as_ref().unwrap().circuit_id.as_deref(),
        Some("ge-0/0/1")
    );
    let Decision::Reply { reply, to, .. } = respond(&req, m, &link(DhcpMode::Server, false)) else {
        panic!()
    };
    assert_eq!(to, Destination::Relay(Ipv4Addr::new(10, 99, 0, 1)));
    assert_eq!(reply.giaddr, Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(reply.option(82), req.relay.as_ref().map(|r| &r.raw[..]));
    let (_, order) = decode_reply(&encode(&reply, &[], None)).unwrap();
    assert_eq!(order.last(), Some(&82), "option 82 goes last");
    // A relay on another subnet is not this host's.
    buf[24..28].copy_from_slice(&[10, 98, 0, 1]);
    assert_eq!(
        respond(&parse(&buf).unwrap(), m, &link(DhcpMode::Server, false)),
        Decision::Silence(Silence::WrongSubnet)
    );
    // Unknown MAC, known switch port: found by location.
    let mut by_port = encode_request(
        "02:00:00:00:00:99".parse().unwrap(),
        5,
        MessageType::Discover,
        &[(
            82,
            vec![
                1, 8, b'g', b'e', b'-', b'0', b'/', b'0', b'/', b'1', 2, 5, b't', b'o', b'r', b'-',
                b'a',
            ],
        )],
    );
    by_port[24..28].copy_from_slice(&[10, 99, 0, 1]);
    let Decision::Reply { host, .. } =
        respond(&parse(&by_port).unwrap(), m, &link(DhcpMode::Server, false))
    else {
        panic!()
    };
    assert_eq!(host, "k8s-01");
}

#[test]
fn proxy_mode_gives_boot_info_only() {
    let m = lab();
    let d = respond(
        &request(
            K8S_01,
            MessageType::Discover,
            &pxe(0, "PXEClient:Arch:00000:UNDI:002001"),
        ),
        m,
        &link(DhcpMode::Proxy, false),
    );
    let Decision::Reply { reply, .. } = d else {
        panic!()
    };
    assert_eq!(reply.msg_type, MessageType::Offer);
    assert!(reply.yiaddr.is_unspecified(), "no address from a proxy");
    assert!(reply.option(51).is_none() && reply.option(1).is_none());
    assert_eq!(reply.option(60), Some(&b"PXEClient"[..]));
    assert_eq!(
        reply.option(43),
        Some(&[6, 1, 8, 255][..]),
        "BIOS PXE wants option 43"
    );
    let d = respond(
        &request(
            K8S_01,
            MessageType::Discover,
            &pxe(7, "PXEClient:Arch:00007"),
        ),
        m,
        &link(DhcpMode::Proxy, false),
    );
    let Decision::Reply { reply, .. } = d else {
        panic!()
    };
    assert!(reply.option(43).is_none(), "no option 43 for UEFI");
    // REQUEST on 4011 → ACK back to the source; on 67 the address server answers.
    let r = request(
        K8S_01,
        MessageType::Request,
        &pxe(7, "PXEClient:Arch:00007"),
    );
    let Decision::Reply { reply, to, .. } = respond(&r, m, &link(DhcpMode::Proxy, true)) else {
        panic!()
    };
    assert_eq!(
        (reply.msg_type, to),
        (MessageType::Ack, Destination::Source)
    );
    assert_eq!(
        respond(&r, m, &link(DhcpMode::Proxy, false)),
        Decision::Silence(Silence::NotForProxy)
    );
    // Not a PXE client: the proxy stays quiet.
    assert_eq!(
        respond(
            &request(K8S_01, MessageType::Discover, &[]),
            m,
            &link(DhcpMode::Proxy, false)
        ),
        Decision::Silence(Silence::NotForProxy)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn unknown_macs_get_silence_and_replies_round_trip(
        mac in any::<[u8; 6]>(),
        known in 0usize..8,
        t in prop_oneof![Just(MessageType::Discover), Just(MessageType::Request), Just(MessageType::Inform)],
        arch in proptest::option::of(0u16..24),
        ipxe in any::<bool>(),
        params in proptest::collection::vec(1u8..255, 0..20),
        max in proptest::option::of(0u16..2000),
        mode in prop_oneof![Just(DhcpMode::Server), Just(DhcpMode::Proxy)],
        pxe_port in any::<bool>(),
    ) {
        let m = lab();
        let known_macs = ["52:54:00:00:01:01", "52:54:00:00:01:02", "52:54:00:00:01:03", "52:54:00:00:01:21", "52:54:00:00:01:22", "52:54:00:00:01:31", "52:54:00:00:02:01"];
        let mac: MacAddr = if known < known_macs.len() { known_macs[known].parse().unwrap() } else { MacAddr(mac) };
        let mut opts = vec![(55, params.clone())];
        if let Some(a) = arch {
            opts.push((93, a.to_be_bytes().to_vec()));
            opts.push((60, b"PXEClient:Arch".to_vec()));
        }
        if ipxe {
            opts.push((77, b"iPXE".to_vec()));
        }
        if let Some(s) = max {
            opts.push((57, s.to_be_bytes().to_vec()));
        }
        let req = parse(&encode_request(mac, 1, t, &opts)).unwrap();
        let d = respond(&req, m, &link(mode, pxe_port));
        match d {
            Decision::Silence(s) => {
                if m.by_mac(&mac).is_none() {
                    prop_assert_eq!(s, Silence::UnknownClient);
                }
            }
            Decision::Reply { reply, .. } => {
                prop_assert!(m.by_mac(&mac).is_some(), "answered an unknown MAC");
                prop_assert_eq!(reply.option(54), Some(&SERVER.octets()[..]));
                let bytes = encode(&reply, &req.params, req.max_size);
                prop_assert!(bytes.len() <= usize::from(req.max_size.unwrap_or(576).max(576)) - 28);
                let (back, _) = decode_reply(&bytes).unwrap();
                prop_assert_eq!(back.msg_type, reply.msg_type);
                prop_assert_eq!(back.yiaddr, reply.yiaddr);
                prop_assert_eq!(back.xid, reply.xid);
                prop_assert_eq!(back.option(54), reply.option(54));
            }
        }
    }
}
