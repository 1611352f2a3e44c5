//! The DHCPv4 wire boundary: datagrams in, [`Request`] out; [`Reply`] in,
//! datagrams out. `dhcproto` does the decoding and the BOOTP header; no
//! `dhcproto` type leaves this module.
//!
//! Before `dhcproto` sees a datagram it is checked here: the fixed header
//! is complete, the magic cookie is right (dhcproto 0.15 does not check
//! it), and every option's length stays inside the datagram. Options of a
//! reply are written here, in the order the client asked for them in
//! option 55 (dhcproto would sort them by code).

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use vaquero_model::MacAddr;

/// The BOOTP header: 236 bytes, then the 4-byte magic cookie.
const HEADER: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// A DHCP message type (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    /// Anything else (lease query and friends).
    Other(u8),
}

impl MessageType {
    /// The type of option 53's value.
    pub fn from_code(c: u8) -> Self {
        match c {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            c => Self::Other(c),
        }
    }

    /// A short lowercase name for metrics labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Discover => "discover",
            Self::Offer => "offer",
            Self::Request => "request",
            Self::Decline => "decline",
            Self::Ack => "ack",
            Self::Nak => "nak",
            Self::Release => "release",
            Self::Inform => "inform",
            Self::Other(_) => "other",
        }
    }

    /// Option 53's value for this type.
    pub fn code(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
            Self::Other(c) => c,
        }
    }
}

/// Relay agent information (option 82) of a relayed request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayInfo {
    /// Sub-option 1.
    pub circuit_id: Option<String>,
    /// Sub-option 2.
    pub remote_id: Option<String>,
    /// The option's bytes as received, echoed in the reply (RFC 3046).
    pub raw: Vec<u8>,
}

/// What a client asked, in the terms boot decisions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Option 53 (`None` for plain BOOTP).
    pub msg_type: Option<MessageType>,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client began.
    pub secs: u16,
    /// The broadcast flag.
    pub broadcast: bool,
    /// Relay hops.
    pub hops: u8,
    /// Client address (renewals, INFORM).
    pub ciaddr: Ipv4Addr,
    /// Relay address.
    pub giaddr: Ipv4Addr,
    /// Client hardware address.
    pub chaddr: MacAddr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54: the server the client chose.
    pub server_id: Option<Ipv4Addr>,
    /// Option 93: client system architecture (RFC 4578), the first one.
    pub arch: Option<u16>,
    /// Option 60: vendor class (`PXEClient:Arch:…`, `HTTPClient:…`).
    pub class_id: Option<Vec<u8>>,
    /// Option 77: user classes (RFC 3004, or one raw class as iPXE sends).
    pub user_classes: Vec<Vec<u8>>,
    /// Option 175 present: the client is iPXE.
    pub ipxe_options: bool,
    /// Option 97: client machine id (type 0 + 16-byte GUID).
    pub guid: Option<[u8; 16]>,
    /// Option 94: NIC interface type and UNDI version.
    pub nic: Option<(u8, u8, u8)>,
    /// Option 82.
    pub relay: Option<RelayInfo>,
    /// Option 55, in the client's order.
    pub params: Vec<u8>,
    /// Option 57.
    pub max_size: Option<u16>,
}

impl Request {
    /// Whether option 60 starts with `prefix` (`PXEClient`, `HTTPClient`).
    pub fn class_starts_with(&self, prefix: &str) -> bool {
        self.class_id
            .as_deref()
            .is_some_and(|c| c.starts_with(prefix.as_bytes()))
    }

    /// Whether the client is iPXE (user class `iPXE`, or option 175).
    pub fn is_ipxe(&self) -> bool {
        self.ipxe_options || self.user_classes.iter().any(|c| c == b"iPXE")
    }
}

/// Why a datagram is not a DHCPv4 request we read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireFailure {
    /// Shorter than the BOOTP header and cookie.
    #[error("too short ({0} bytes)")]
    TooShort(usize),
    /// The magic cookie is not 99.130.83.99.
    #[error("bad magic cookie")]
    BadCookie,
    /// An option runs past the end of the datagram.
    #[error("option {0} runs past the end")]
    OptionOverrun(u8),
    /// Not a BOOTREQUEST.
    #[error("not a request (op {0})")]
    NotRequest(u8),
    /// Not Ethernet (htype 1, hlen 6).
    #[error("unsupported hardware type {htype} / length {hlen}")]
    Hardware {
        /// htype.
        htype: u8,
        /// hlen.
        hlen: u8,
    },
    /// dhcproto could not decode it.
    #[error("malformed: {0}")]
    Malformed(String),
}

/// Walks the options area: every length must fit.
fn check_options(mut opts: &[u8]) -> Result<(), WireFailure> {
    while let Some((&code, rest)) = opts.split_first() {
        match code {
            0 => opts = rest,
            255 => return Ok(()),
            _ => {
                let (&len, rest) = rest.split_first().ok_or(WireFailure::OptionOverrun(code))?;
                let len = usize::from(len);
                if rest.len() < len {
                    return Err(WireFailure::OptionOverrun(code));
                }
                opts = &rest[len..];
            }
        }
    }
    Ok(())
}

/// RFC 3004 user classes: length-prefixed items that exactly cover the
/// option; anything else (iPXE's plain `iPXE`) is one class.
fn user_classes(b: &[u8]) -> Vec<Vec<u8>> {
    let mut items = Vec::new();
    let mut rest = b;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || tail.len() < len {
            return vec![b.to_vec()];
        }
        items.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    if items.is_empty() {
        vec![b.to_vec()]
    } else {
        items
    }
}

/// Decodes and checks a datagram.
pub fn parse(buf: &[u8]) -> Result<Request, WireFailure> {
    if buf.len() < HEADER + 4 {
        return Err(WireFailure::TooShort(buf.len()));
    }
    if buf[HEADER..HEADER + 4] != MAGIC {
        return Err(WireFailure::BadCookie);
    }
    check_options(&buf[HEADER + 4..])?;
    if buf[0] != 1 {
        return Err(WireFailure::NotRequest(buf[0]));
    }
    check_ethernet(buf)?;
    let msg = v4::Message::decode(&mut Decoder::new(buf))
        .map_err(|e| WireFailure::Malformed(e.to_string()))?;
    let ch = msg.chaddr();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(
        ch.get(..6)
            .ok_or(WireFailure::Hardware { htype: 1, hlen: 6 })?,
    );
    let o = msg.opts();
    let raw = |code: u8| raw_option(&buf[HEADER + 4..], code);
    let relay = o.get(OptionCode::RelayAgentInformation).map(|opt| {
        let mut r = RelayInfo {
            raw: raw(82).unwrap_or_default(),
            ..RelayInfo::default()
        };
        if let DhcpOption::RelayAgentInformation(info) = opt {
            use dhcproto::v4::relay::{RelayCode, RelayInfo as R};
            if let Some(R::AgentCircuitId(c)) = info.get(RelayCode::AgentCircuitId) {
                r.circuit_id = Some(String::from_utf8_lossy(c).into_owned());
            }
            if let Some(R::AgentRemoteId(c)) = info.get(RelayCode::AgentRemoteId) {
                r.remote_id = Some(String::from_utf8_lossy(c).into_owned());
            }
        }
        r
    });
    Ok(Request {
        msg_type: raw(53)
            .and_then(|v| v.first().copied())
            .map(MessageType::from_code),
        xid: msg.xid(),
        secs: msg.secs(),
        broadcast: msg.flags().broadcast(),
        hops: msg.hops(),
        ciaddr: msg.ciaddr(),
        giaddr: msg.giaddr(),
        chaddr: MacAddr(mac),
        requested_ip: raw(50)
            .filter(|v| v.len() == 4)
            .map(|v| Ipv4Addr::new(v[0], v[1], v[2], v[3])),
        server_id: raw(54)
            .filter(|v| v.len() == 4)
            .map(|v| Ipv4Addr::new(v[0], v[1], v[2], v[3])),
        arch: raw(93)
            .filter(|v| v.len() >= 2)
            .map(|v| u16::from_be_bytes([v[0], v[1]])),
        class_id: raw(60),
        user_classes: raw(77).map(|v| user_classes(&v)).unwrap_or_default(),
        ipxe_options: raw(175).is_some(),
        guid: raw(97).filter(|v| v.len() == 17 && v[0] == 0).map(|v| {
            let mut g = [0u8; 16];
            g.copy_from_slice(&v[1..]);
            g
        }),
        nic: raw(94).filter(|v| v.len() == 3).map(|v| (v[0], v[1], v[2])),
        relay,
        params: raw(55).unwrap_or_default(),
        max_size: raw(57)
            .filter(|v| v.len() == 2)
            .map(|v| u16::from_be_bytes([v[0], v[1]])),
    })
}

/// The bytes of option `code` (concatenated if it appears more than once,
/// RFC 3396), from a checked options area.
fn raw_option(mut opts: &[u8], code: u8) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    while let Some((&c, rest)) = opts.split_first() {
        match c {
            0 => opts = rest,
            255 => break,
            _ => {
                let (&len, rest) = rest.split_first()?;
                let v = rest.get(..usize::from(len))?;
                if c == code {
                    out.get_or_insert_with(Vec::new).extend_from_slice(v);
                }
                opts = &rest[usize::from(len)..];
            }
        }
    }
    out
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Option 53.
    pub msg_type: MessageType,
    /// The request's transaction id.
    pub xid: u32,
    /// The request's broadcast flag.
    pub broadcast: bool,
    /// Echoed client address.
    pub ciaddr: Ipv4Addr,
    /// "Your" address: what the client gets.
    pub yiaddr: Ipv4Addr,
    /// Next server (TFTP) address.
    pub siaddr: Ipv4Addr,
    /// The relay's address.
    pub giaddr: Ipv4Addr,
    /// The client's hardware address.
    pub chaddr: MacAddr,
    /// The header's boot file field.
    pub file: Option<String>,
    /// Options as (code, value), in the order they should go out unless
    /// the client's option 55 says otherwise.
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Reply {
    /// The value of option `code`, if set.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| &v[..])
    }
}

/// Options that always go first, whatever the client asked (53 message
/// type, 54 server id) and last (82 relay information, RFC 3046).
fn order(options: &[(u8, Vec<u8>)], params: &[u8]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..options.len()).collect();
    let rank = |code: u8| -> usize {
        match code {
            53 => 0,
            54 => 1,
            82 => usize::MAX,
            c => params
                .iter()
                .position(|p| *p == c)
                .map_or(1000 + usize::from(c), |p| 2 + p),
        }
    };
    idx.sort_by_key(|&i| rank(options[i].0));
    idx
}

/// The fixed header of `msg` (encoded by dhcproto) and the magic cookie;
/// options are appended by the caller, in the order it chooses.
fn header(mut msg: v4::Message, capacity: usize) -> Vec<u8> {
    msg.set_opts(v4::DhcpOptions::new());
    let mut out = Vec::with_capacity(capacity);
    // An empty option set encodes as nothing at all, cookie included.
    let _ = msg.encode(&mut Encoder::new(&mut out));
    out.truncate(HEADER);
    out.extend_from_slice(&MAGIC);
    out
}

/// Encodes a reply for a client that asked with `params` (option 55) and
/// accepts `max_size` bytes (option 57; at least 576). Options that do not
/// fit are left out, those the client did not ask for first.
pub fn encode(reply: &Reply, params: &[u8], max_size: Option<u16>) -> Vec<u8> {
    let mut msg = v4::Message::new(
        reply.ciaddr,
        reply.yiaddr,
        reply.siaddr,
        reply.giaddr,
        &reply.chaddr.0,
    );
    msg.set_opcode(v4::Opcode::BootReply).set_xid(reply.xid);
    if reply.broadcast {
        msg.set_flags(v4::Flags::default().set_broadcast());
    }
    if let Some(f) = &reply.file {
        msg.set_fname_str(f);
    }
    let mut out = header(msg, 576);
    let limit = usize::from(max_size.unwrap_or(576).max(576)) - 28; // IP + UDP headers
    let mut ordered: Vec<&(u8, Vec<u8>)> = order(&reply.options, params)
        .into_iter()
        .map(|i| &reply.options[i])
        .collect();
    let fits = |opts: &[&(u8, Vec<u8>)]| {
        out.len() + opts.iter().map(|(_, v)| 2 + v.len()).sum::<usize>() < limit
    };
    while !fits(&ordered) {
        // Drop the last option the client did not ask for, else the last.
        let pos = ordered
            .iter()
            .rposition(|(c, _)| !params.contains(c) && !matches!(c, 53 | 54))
            .unwrap_or(ordered.len() - 1);
        ordered.remove(pos);
    }
    for (code, value) in ordered {
        out.push(*code);
        out.push(value.len().min(255) as u8);
        out.extend_from_slice(&value[..value.len().min(255)]);
    }
    out.push(255);
    // Some BOOTP-era clients want at least 300 bytes.
    if out.len() < 300 {
        out.resize(300, 0);
    }
    out
}

/// Only Ethernet (htype 1, hlen 6): dhcproto slices `chaddr` by `hlen`
/// and panics past 16, so this is checked before it decodes anything.
fn check_ethernet(buf: &[u8]) -> Result<(), WireFailure> {
    if buf[1] != 1 || buf[2] != 6 {
        return Err(WireFailure::Hardware {
            htype: buf[1],
            hlen: buf[2],
        });
    }
    Ok(())
}

/// Decodes a server's reply — ours in tests and fuzzing, other servers'
/// in rogue detection (so it is validated like any datagram from the
/// network): the reply and the order its options came in.
pub fn decode_reply(buf: &[u8]) -> Result<(Reply, Vec<u8>), WireFailure> {
    if buf.len() < HEADER + 4 {
        return Err(WireFailure::TooShort(buf.len()));
    }
    if buf[HEADER..HEADER + 4] != MAGIC {
        return Err(WireFailure::BadCookie);
    }
    check_options(&buf[HEADER + 4..])?;
    check_ethernet(buf)?;
    let msg = v4::Message::decode(&mut Decoder::new(buf))
        .map_err(|e| WireFailure::Malformed(e.to_string()))?;
    let mut options = Vec::new();
    let mut opts = &buf[HEADER + 4..];
    let mut order_seen = Vec::new();
    while let Some((&c, rest)) = opts.split_first() {
        match c {
            0 => opts = rest,
            255 => break,
            _ => {
                let len = usize::from(rest[0]);
                options.push((c, rest[1..1 + len].to_vec()));
                order_seen.push(c);
                opts = &rest[1 + len..];
            }
        }
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(msg.chaddr().get(..6).ok_or(WireFailure::Hardware {
        htype: buf[1],
        hlen: buf[2],
    })?);
    let msg_type = options
        .iter()
        .find(|(c, _)| *c == 53)
        .and_then(|(_, v)| v.first().copied())
        .map_or(MessageType::Other(0), MessageType::from_code);
    Ok((
        Reply {
            msg_type,
            xid: msg.xid(),
            broadcast: msg.flags().broadcast(),
            ciaddr: msg.ciaddr(),
            yiaddr: msg.yiaddr(),
            siaddr: msg.siaddr(),
            giaddr: msg.giaddr(),
            chaddr: MacAddr(mac),
            file: msg
                .fname_str()
                .and_then(|r| r.ok())
                .map(|s| s.trim_end_matches('\0').to_owned())
                .filter(|s| !s.is_empty()),
            options,
        },
        order_seen,
    ))
}

/// Encodes a request (for tests, fuzzing and benchmarks).
pub fn encode_request(
    mac: MacAddr,
    xid: u32,
    msg_type: MessageType,
    options: &[(u8, Vec<u8>)],
) -> Vec<u8> {
    let mut msg = v4::Message::new(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    msg.set_xid(xid);
    let mut out = header(msg, 300);
    out.extend_from_slice(&[53, 1, msg_type.code()]);
    for (c, v) in options {
        out.push(*c);
        out.push(v.len() as u8);
        out.extend_from_slice(v);
    }
    out.push(255);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> MacAddr {
        "52:54:00:00:01:01".parse().unwrap()
    }

    #[test]
    fn parses_a_pxe_discover() {
        let mut guid = vec![0u8];
        guid.extend_from_slice(&[7; 16]);
        let buf = encode_request(
            mac(),
            42,
            MessageType::Discover,
            &[
                (93, vec![0, 7]),
                (60, b"PXEClient:Arch:00007:UNDI:003016".to_vec()),
                (97, guid),
                (94, vec![1, 3, 16]),
                (55, vec![1, 3, 6, 66, 67, 60, 43]),
                (57, vec![5, 192]),
                (77, b"iPXE".to_vec()),
            ],
        );
        let r = parse(&buf).unwrap();
        assert_eq!(r.msg_type, Some(MessageType::Discover));
        assert_eq!(r.xid, 42);
        assert_eq!(r.chaddr, mac());
        assert_eq!(r.arch, Some(7));
        assert!(r.class_starts_with("PXEClient"));
        assert_eq!(r.guid, Some([7; 16]));
        assert_eq!(r.nic, Some((1, 3, 16)));
        assert_eq!(r.params, vec![1, 3, 6, 66, 67, 60, 43]);
        assert_eq!(r.max_size, Some(1472));
        assert!(r.is_ipxe(), "plain `iPXE` user class");
        assert_eq!(
            user_classes(&[4, b'i', b'P', b'X', b'E', 3, b'a', b'b', b'c']),
            vec![b"iPXE".to_vec(), b"abc".to_vec()]
        );
    }

    #[test]
    fn rejects_what_dhcproto_would_swallow() {
        let good = encode_request(mac(), 1, MessageType::Discover, &[]);
        let mut bad = good.clone();
        bad[236] = 98;
        assert_eq!(parse(&bad), Err(WireFailure::BadCookie));
        assert_eq!(parse(&good[..100]), Err(WireFailure::TooShort(100)));
        let mut overrun = good[..240].to_vec();
        overrun.extend_from_slice(&[60, 200, 1, 2]);
        assert_eq!(parse(&overrun), Err(WireFailure::OptionOverrun(60)));
        let mut reply = good.clone();
        reply[0] = 2;
        assert_eq!(parse(&reply), Err(WireFailure::NotRequest(2)));
    }

    #[test]
    fn replies_follow_option_55_and_fit() {
        let reply = Reply {
            msg_type: MessageType::Offer,
            xid: 9,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 0, 0, 5),
            siaddr: Ipv4Addr::new(10, 0, 0, 2),
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac(),
            file: Some("undionly.kpxe".into()),
            options: vec![
                (53, vec![2]),
                (54, vec![10, 0, 0, 2]),
                (1, vec![255, 255, 255, 0]),
                (3, vec![10, 0, 0, 1]),
                (6, vec![10, 0, 0, 1]),
                (224, vec![0; 200]),
                (225, vec![0; 200]),
            ],
        };
        let buf = encode(&reply, &[6, 3, 1], None);
        let (back, order) = decode_reply(&buf).unwrap();
        assert_eq!(order[..5], [53, 54, 6, 3, 1]);
        assert!(buf.len() <= 576 - 28);
        // The unasked 225 was dropped to fit; the rest survives.
        assert!(back.option(225).is_none());
        assert_eq!(back.yiaddr, reply.yiaddr);
        assert_eq!(back.file.as_deref(), Some("undionly.kpxe"));
        assert!(back.broadcast);
        let big = encode(&reply, &[6, 3, 1], Some(1500));
        assert!(decode_reply(&big).unwrap().0.option(225).is_some());
    }
}
