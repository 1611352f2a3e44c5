#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets that take datagrams or
state-machine scripts: real packets, as the interop tests exchange them
(DHCP from a PXE ROM, iPXE and a relay; TFTP requests with options, DATA,
ACK, ERROR, OACK), and scripts that walk the TFTP state machines through
negotiation, windows, loss and silence. the boot service's inputs: the query strings iPXE's chain script sends and
checkpoint tokens (real ones, minted as vaquero-ipxe mints them, and
claims to mint). sot_yaml's corpus is hand-made.

    python3 fuzz/seeds.py      (re)writes fuzz/corpus/<target>/seed-*
"""
import base64
import hashlib
import hmac
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, seeds):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        if name.startswith("seed-"):
            os.remove(os.path.join(d, name))
    for i, data in enumerate(seeds):
        with open(os.path.join(d, f"seed-{i}"), "wb") as f:
            f.write(data)


# --- DHCP -----------------------------------------------------------------
KNOWN_MAC = bytes.fromhex("020000000001")  # the fuzz model's host `h`


def opt(code, value):
    return bytes([code, len(value)]) + value


def bootp(op, mac, options, giaddr=b"\0\0\0\0", ciaddr=b"\0\0\0\0", yiaddr=b"\0\0\0\0",
          siaddr=b"\0\0\0\0", xid=0x1234ABCD, flags=0x8000):
    head = struct.pack("!BBBBIHH", op, 1, 6, 0 if giaddr == b"\0\0\0\0" else 1, xid, 4, flags)
    head += ciaddr + yiaddr + siaddr + giaddr + mac + b"\0" * 10 + b"\0" * 64 + b"\0" * 128
    return head + b"\x63\x82\x53\x63" + b"".join(options) + b"\xff"


PXE_BIOS = [
    opt(57, struct.pack("!H", 1472)),
    opt(93, struct.pack("!H", 0)),
    opt(94, b"\x01\x02\x01"),
    opt(97, b"\x00" + bytes(range(16))),
    opt(60, b"PXEClient:Arch:00000:UNDI:002001"),
    opt(55, bytes([1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67, 128, 129, 130])),
]
PXE_UEFI = [
    opt(93, struct.pack("!H", 7)),
    opt(60, b"PXEClient:Arch:00007:UNDI:003016"),
    opt(55, bytes([1, 3, 6, 15, 43, 54, 60, 66, 67])),
]
IPXE = [
    opt(77, b"iPXE"),
    opt(175, b"\x13\x01\x01\x19\x01\x01\x17\x01\x01"),
    opt(60, b"PXEClient:Arch:00000:UNDI:002001"),
    opt(55, bytes([1, 3, 6, 12, 15, 17, 43, 60, 66, 67, 119, 175])),
]
SERVER = b"\x0a\x00\x00\x02"
dhcp = [
    bootp(1, KNOWN_MAC, [opt(53, b"\x01")] + PXE_BIOS),
    bootp(1, KNOWN_MAC, [opt(53, b"\x03"), opt(50, b"\x0a\x00\x00\x05"), opt(54, SERVER)] + PXE_BIOS),
    bootp(1, KNOWN_MAC, [opt(53, b"\x01")] + PXE_UEFI),
    bootp(1, KNOWN_MAC, [opt(53, b"\x01")] + IPXE),
    bootp(1, KNOWN_MAC, [opt(53, b"\x03"), opt(50, b"\x0a\x00\x00\x05"), opt(54, SERVER)] + IPXE),
    # Through a relay, with option 82 (circuit id p1: the host's location).
    bootp(1, bytes.fromhex("020000000099"),
          [opt(53, b"\x01"), opt(82, opt(1, b"p1") + opt(2, b"sw1"))] + PXE_BIOS,
          giaddr=b"\x0a\x00\x00\x01"),
    # Renewal, inform, release, decline; an unknown MAC.
    bootp(1, KNOWN_MAC, [opt(53, b"\x03")], ciaddr=b"\x0a\x00\x00\x05", flags=0),
    bootp(1, KNOWN_MAC, [opt(53, b"\x08"), opt(55, bytes([1, 3, 6, 15]))], ciaddr=b"\x0a\x00\x00\x05"),
    bootp(1, KNOWN_MAC, [opt(53, b"\x07"), opt(54, SERVER)], ciaddr=b"\x0a\x00\x00\x05"),
    bootp(1, KNOWN_MAC, [opt(53, b"\x04"), opt(50, b"\x0a\x00\x00\x05"), opt(54, SERVER)]),
    bootp(1, bytes.fromhex("0200000000ff"), [opt(53, b"\x01")] + PXE_BIOS),
    # A server's offer, as the rogue-server inspector sees one.
    bootp(2, KNOWN_MAC, [opt(53, b"\x02"), opt(54, b"\x0a\x00\x00\x09"), opt(51, struct.pack("!I", 600))],
          yiaddr=b"\x0a\x00\x00\x05"),
    # Plain BOOTP (no message type).
    bootp(1, KNOWN_MAC, []),
]
write("dhcp_respond", dhcp)

# --- TFTP packets -----------------------------------------------------------


def rrq(name, mode=b"octet", **opts):
    b = struct.pack("!H", 1) + name + b"\0" + mode + b"\0"
    for k, v in opts.items():
        b += k.encode() + b"\0" + str(v).encode() + b"\0"
    return b


tftp = [
    rrq(b"undionly.kpxe"),
    rrq(b"ipxe.efi", blksize=1468, tsize=0, windowsize=4),
    rrq(b"pxelinux.cfg/01-52-54-00-00-01-01", mode=b"netascii", timeout=3),
    struct.pack("!H", 2) + b"upload.bin\0octet\0blksize\0" + b"512\0",
    struct.pack("!HH", 3, 1) + bytes(range(256)) * 2,
    struct.pack("!HH", 3, 7) + b"tail",
    struct.pack("!HH", 4, 0),
    struct.pack("!HH", 4, 65535),
    struct.pack("!HH", 5, 1) + b"File not found\0",
    struct.pack("!H", 6) + b"blksize\x001468\0tsize\x00850000\0windowsize\x004\0",
]
write("tftp_packet", tftp)

# --- TFTP state machines -----------------------------------------------------
# tftp_transfer: [len: 3 bytes LE][flags][blksize-8][windowsize-1][timeout-1]
# then chunks [kind, a, b, n, payload]: kind%4 0 = ACK a<<8|b, 1 = raw
# packet of n bytes, 2 = clock += a*40 ms, 3 = the next timeout.


def ack(block):
    return bytes([0, block >> 8, block & 0xFF, 0])


def raw(p):
    return bytes([1, 0, 0, len(p)]) + p


def wait(units):
    return bytes([2, units, 0, 0])


def timeout():
    return bytes([3, 0, 0, 0])


def transfer(length, flags, blk, win, tmo, chunks):
    return struct.pack("<I", length)[:3] + bytes([flags, blk, win, tmo]) + b"".join(chunks)


transfers = [
    # No options: five blocks of 512, acknowledged in order, the last twice.
    transfer(2100, 0, 0, 0, 0, [ack(1), ack(2), ack(3), ack(4), ack(5), ack(5)]),
    # Options negotiated (OACK acknowledged with block 0), windows of 4.
    transfer(9000, 0b111, 247, 3, 0, [ack(0), ack(4), ack(8), ack(12), ack(16), ack(20), ack(24)]),
    # A lost window: timeouts, retransmission, then the ACK.
    transfer(4000, 0b010, 0, 3, 0, [ack(4), timeout(), timeout(), ack(8)]),
    # An ERROR from the client, then silence.
    transfer(1000, 0, 0, 0, 0, [raw(struct.pack("!HH", 5, 0) + b"cancelled\0"), wait(50)]),
    # A stale ACK and an ACK beyond the window.
    transfer(6000, 0b010, 0, 1, 0, [ack(2), ack(1), ack(60), ack(4)]),
    # Empty file; a client timeout option; silence.
    transfer(0, 0b1000, 0, 0, 2, [timeout(), timeout(), timeout(), timeout()]),
]
write("tftp_transfer", transfers)

# tftp_receive: [flags][blksize-8][windowsize-1][tsize/1000] then chunks
# [kind, a, b, n/8, payload]: kind%3 0 = DATA a<<8|b with the payload,
# 1 = raw packet, 2 = clock += a*20 ms.


def data(block, payload):
    assert len(payload) % 8 == 0
    return bytes([0, block >> 8, block & 0xFF, len(payload) // 8]) + payload


def rraw(p):
    p = p + b"\0" * (-len(p) % 8)
    return bytes([1, 0, 0, len(p) // 8]) + p


def rwait(units):
    return bytes([2, units, 0, 0])


receives = [
    # Default blksize: one full block, then a short one.
    bytes([0, 0, 0, 0]) + data(1, b"A" * 512) + data(2, b"tail0000"),
    # blksize 16, windows of 2, tsize 1000: in order, a duplicate, a gap.
    bytes([0b111, 8, 1, 1]) + data(1, b"B" * 16) + data(2, b"C" * 16) + data(2, b"C" * 16)
    + data(4, b"E" * 16) + data(3, b"D" * 16) + data(4, b"E" * 8),
    # The sender goes quiet mid-transfer.
    bytes([0b001, 8, 0, 0]) + data(1, b"F" * 16) + rwait(100) + rwait(100),
    # An ERROR from the sender.
    bytes([0, 0, 0, 0]) + rraw(struct.pack("!HH", 5, 3) + b"disk full\0"),
]
write("tftp_receive", receives)


# --- the boot service ---------------------------------------------------------
# ipxe_identity: real queries of `GET /ipxe` (the chain script's settings as
# iPXE expands them), and the five values NUL-separated.
identities = [
    b"mac=52-54-00-99-00-11&uuid=4c4c4544-0042-3510-8052-b4c04f4e3732&serial=&arch=i386&platform=pcbios",
    b"mac=52-54-00-99-00-21&uuid=00000000-0000-4000-8000-000000000021&serial=SN%2000042&arch=x86_64&platform=efi",
    b"mac=52%2D54%2D00%2D00%2D01%2D01&mac=02-00-00-00-00-01&other=1&uuid",
    b"serial=a+b%20c%zz%&arch=&&=",
    b"52-54-00-99-00-11\x004c4c4544-0042-3510-8052-b4c04f4e3732\0SN 1\0x86_64\0efi",
]
write("ipxe_identity", identities)

# checkpoint_token: tokens minted with the target's key (payload
# `host\0boot\0attempt\0expires`, HMAC-SHA256, URL-safe base64 without
# padding, joined by `.`), a forged one, and claims to mint (attempt and
# expiry little-endian, then `host/boot`).
FUZZ_KEY = b"fuzz key 0123456"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def token(host, boot, attempt, expires, key=FUZZ_KEY):
    payload = b"\0".join([host, boot, str(attempt).encode(), str(expires).encode()])
    sig = hmac.new(key, payload, hashlib.sha256).digest()
    return b64(payload) + b"." + b64(sig)


tokens = [
    token(b"vm-bios-1", b"stage1", 1, 4102444800),
    token(b"k8s-01", b"burnin", 3, 1000),
    token(b"vm-uefi-1", b"stage2", 2, 4102444800, key=b"another key 6543"),
    b"nope",
    b"a.b.c",
    struct.pack("<QQ", 3, 4102444800) + b"node-000001/stage1",
    struct.pack("<QQ", 0, 0) + b"/",
    struct.pack("<QQ", 2**64 - 1, 2**64 - 1) + "néud-étage/boot".encode(),
]
write("checkpoint_token", tokens)
