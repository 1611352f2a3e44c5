//! A TFTP read as PXE firmware does it: RRQ with `blksize` (and
//! `windowsize` for UEFI, as OVMF asks), ACK 0 after the OACK, an ACK at
//! the end of each window or on a gap, the last ACK resent on a timeout.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::UdpSocket;
use vaquero_tftp::{Mode, Options, Packet, Request};

/// What a read gave.
pub struct Read {
    /// Bytes received.
    pub bytes: u64,
    /// Timeouts after which a packet was resent.
    pub retries: u32,
}

/// Reads `file` from `server` port 69, from `local` (the leased address).
pub async fn read(
    local: Ipv4Addr,
    server: Ipv4Addr,
    file: &str,
    blksize: u16,
    windowsize: Option<u16>,
) -> Result<Read> {
    let sock = UdpSocket::bind((local, 0))
        .await
        .with_context(|| format!("binding {local} (the leased address is not on this side)"))?;
    let rrq = Packet::Rrq(Request {
        filename: file,
        mode: Mode::Octet,
        options: Options {
            blksize: Some(blksize),
            timeout: None,
            tsize: Some(0),
            windowsize,
        },
    })
    .to_vec();
    let mut peer = SocketAddr::from((server, 69));
    let mut last = rrq;
    let mut tid: Option<SocketAddr> = None;
    let mut blk = 512u64;
    let mut window = 1u16;
    let mut expect: u16 = 1;
    let mut in_window = 0u16;
    let mut bytes = 0u64;
    let mut tsize = None;
    let mut retries = 0;
    let mut timeouts = 0;
    let mut buf = vec![0u8; 65536];
    sock.send_to(&last, peer).await?;
    loop {
        let wait = Duration::from_secs(1 << timeouts.min(3));
        let (n, from) = match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                timeouts += 1;
                retries += 1;
                if timeouts > 6 {
                    bail!("{file}: no answer after {timeouts} timeouts ({bytes} bytes in)");
                }
                sock.send_to(&last, peer).await?;
                continue;
            }
        };
        if tid.is_some_and(|t| t != from) || from.ip() != peer.ip() {
            continue; // not our transfer
        }
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        let Ok(pkt) = Packet::decode(datagram) else {
            bail!("{file}: a datagram that is not TFTP");
        };
        if tid.is_none() {
            tid = Some(from);
            peer = from;
        }
        match pkt {
            Packet::Oack(o) if expect == 1 && bytes == 0 => {
                timeouts = 0;
                blk = u64::from(o.blksize.unwrap_or(512));
                window = o.windowsize.unwrap_or(1);
                tsize = o.tsize;
                last = Packet::Ack { block: 0 }.to_vec();
                sock.send_to(&last, peer).await?;
            }
            Packet::Data { block, data } if block == expect => {
                timeouts = 0;
                bytes += data.len() as u64;
                expect = expect.wrapping_add(1);
                in_window += 1;
                let end = (data.len() as u64) < blk;
                if end || in_window >= window {
                    in_window = 0;
                    last = Packet::Ack { block }.to_vec();
                    sock.send_to(&last, peer).await?;
                }
                if end {
                    if let Some(t) = tsize
                        && t != bytes
                    {
                        bail!("{file}: {bytes} bytes, tsize said {t}");
                    }
                    return Ok(Read { bytes, retries });
                }
            }
            Packet::Data { .. } => {
                // A gap or a repeat: name the last block in order.
                in_window = 0;
                last = Packet::Ack {
                    block: expect.wrapping_sub(1),
                }
                .to_vec();
                sock.send_to(&last, peer).await?;
            }
            Packet::Error { code, message } => {
                bail!("{file}: TFTP error {}: {message}", code.code())
            }
            _ => {}
        }
    }
}
