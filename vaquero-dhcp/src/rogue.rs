//! Rogue DHCP detection: a server that owns a segment should be the only
//! one answering on it. Another server's OFFER or ACK (a forgotten home
//! router, a hypervisor's built-in DHCP, a second agent with the wrong
//! mode) means clients may boot from the wrong place. The server listens
//! on the client port (68) of its interface and hands every datagram to
//! [`inspect`], which is pure.

use std::net::{Ipv4Addr, SocketAddr};

use vaquero_model::MacAddr;

use crate::wire::{MessageType, decode_reply};

/// A reply from another DHCP server seen on the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RogueReply {
    /// Its server identifier (option 54), or the datagram's source when it
    /// sent none.
    pub server_id: Ipv4Addr,
    /// Where the datagram came from (a relay forwards other servers'
    /// replies too; the server id names the server).
    pub source: SocketAddr,
    /// OFFER, ACK or NAK.
    pub msg_type: MessageType,
    /// The client it answered.
    pub client: MacAddr,
    /// The address it gave.
    pub yiaddr: Ipv4Addr,
    /// The boot file it offered, if any (option 67 or the header field).
    pub boot_file: Option<String>,
}

/// Whether a datagram seen on the client port is another server's reply.
/// `own` is this server's id on the link; our own broadcasts loop back
/// and are not rogue. Anything malformed or not a server reply is `None`.
pub fn inspect(buf: &[u8], source: SocketAddr, own: Ipv4Addr) -> Option<RogueReply> {
    // op 2 = BOOTREPLY; a client's broadcast request is not a server.
    if buf.first() != Some(&2) {
        return None;
    }
    let (reply, _) = decode_reply(buf).ok()?;
    if !matches!(
        reply.msg_type,
        MessageType::Offer | MessageType::Ack | MessageType::Nak
    ) {
        return None;
    }
    let server_id = match reply.option(54) {
        Some(v) => <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from)?,
        None => match source {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => return None,
        },
    };
    if server_id == own {
        return None;
    }
    let boot_file = reply
        .option(67)
        .map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_owned())
        .or(reply.file.clone());
    Some(RogueReply {
        server_id,
        source,
        msg_type: reply.msg_type,
        client: reply.chaddr,
        yiaddr: reply.yiaddr,
        boot_file,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wire::{Reply, encode, encode_request, parse};

    fn reply(t: MessageType, server: Option<Ipv4Addr>) -> Vec<u8> {
        let mut options = vec![(53, vec![t.code()])];
        if let Some(s) = server {
            options.push((54, s.octets().to_vec()));
        }
        options.push((67, b"pxelinux.0".to_vec()));
        let r = Reply {
            msg_type: t,
            xid: 9,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(192, 168, 1, 50),
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: "52:54:00:00:01:01".parse().unwrap(),
            file: None,
            options,
        };
        encode(&r, &[], None)
    }

    const OWN: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
    const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);

    fn from(a: Ipv4Addr) -> SocketAddr {
        SocketAddr::from((a, 67))
    }

    #[test]
    fn another_servers_offer_is_rogue() {
        let r = inspect(&reply(MessageType::Offer, Some(OTHER)), from(OTHER), OWN).unwrap();
        assert_eq!(r.server_id, OTHER);
        assert_eq!(r.msg_type, MessageType::Offer);
        assert_eq!(r.yiaddr, Ipv4Addr::new(192, 168, 1, 50));
        assert_eq!(r.client.to_string(), "52:54:00:00:01:01");
        assert_eq!(r.boot_file.as_deref(), Some("pxelinux.0"));
        assert!(inspect(&reply(MessageType::Ack, Some(OTHER)), from(OTHER), OWN).is_some());
    }

    #[test]
    fn our_own_replies_and_requests_are_not() {
        assert_eq!(
            inspect(&reply(MessageType::Offer, Some(OWN)), from(OWN), OWN),
            None
        );
        let req = encode_request(
            "52:54:00:00:01:01".parse().unwrap(),
            1,
            MessageType::Discover,
            &[],
        );
        assert!(parse(&req).is_ok());
        assert_eq!(inspect(&req, from(OTHER), OWN), None);
        assert_eq!(inspect(&[2, 1, 6], from(OTHER), OWN), None);
    }

    #[test]
    fn a_hardware_length_past_chaddr_is_dropped() {
        // Found by fuzz/dhcp_respond: dhcproto would slice chaddr[..63].
        let mut d = reply(MessageType::Offer, Some(OTHER));
        d[2] = 63;
        assert_eq!(inspect(&d, from(OTHER), OWN), None);
        assert!(matches!(
            decode_reply(&d),
            Err(crate::wire::WireFailure::Hardware { htype: 1, hlen: 63 })
        ));
    }

    #[test]
    fn without_a_server_id_the_source_names_the_server() {
        let r = inspect(&reply(MessageType::Offer, None), from(OTHER), OWN).unwrap();
        assert_eq!(r.server_id, OTHER);
        assert_eq!(
            inspect(&reply(MessageType::Offer, None), from(OWN), OWN),
            None
        );
    }
}
