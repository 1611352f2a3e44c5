//! The TFTP wire format: RFC 1350 packets, RFC 2347 option negotiation with
//! `blksize` (RFC 2348), `timeout` and `tsize` (RFC 2349) and `windowsize`
//! (RFC 7440).
//!
//! Decoding borrows from the datagram, never panics, and rejects what a
//! correct peer never sends: unknown opcodes, missing NUL terminators,
//! trailing bytes, unsupported modes, out-of-range option values, repeated
//! options. Unknown option *names* are skipped, as RFC 2347 requires.

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::take_till;
use nom::number::complete::be_u16;

/// Smallest and largest `blksize` (RFC 2348).
pub const BLKSIZE_RANGE: std::ops::RangeInclusive<u16> = 8..=65464;
/// Smallest and largest `timeout` in seconds (RFC 2349).
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<u8> = 1..=255;
/// Smallest and largest `windowsize` (RFC 7440).
pub const WINDOWSIZE_RANGE: std::ops::RangeInclusive<u16> = 1..=65535;
/// Block size without options (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;

/// Transfer mode of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Raw bytes.
    Octet,
    /// Text with CR LF line ends (RFC 764).
    Netascii,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
        }
    }
}

/// The options of a request or an OACK. `None` means not present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// `blksize`: data bytes per block.
    pub blksize: Option<u16>,
    /// `timeout`: retransmission timeout in seconds.
    pub timeout: Option<u8>,
    /// `tsize`: transfer size in bytes (0 in a read request).
    pub tsize: Option<u64>,
    /// `windowsize`: blocks sent before an ACK is awaited.
    pub windowsize: Option<u16>,
}

impl Options {
    /// Whether no option is present.
    pub fn is_empty(&self) -> bool {
        *self == Options::default()
    }
}

/// A read or write request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The file name as sent (not yet checked against any root).
    pub filename: &'a str,
    /// The transfer mode.
    pub mode: Mode,
    /// Requested options.
    pub options: Options,
}

/// A TFTP error code (RFC 1350, RFC 2347): the 16-bit number an ERROR
/// packet carries, with the defined codes as constants.
///
/// A number rather than an enum, like `http::StatusCode`: a code no RFC
/// defines is kept as sent, and one code has one value (an enum with an
/// `Other(u16)` arm could hold `Other(1)` beside `FileNotFound`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(u16);

impl ErrorCode {
    /// 0: not defined, see the message.
    pub const NOT_DEFINED: Self = Self(0);
    /// 1: file not found.
    pub const FILE_NOT_FOUND: Self = Self(1);
    /// 2: access violation.
    pub const ACCESS_VIOLATION: Self = Self(2);
    /// 3: disk full or allocation exceeded.
    pub const DISK_FULL: Self = Self(3);
    /// 4: illegal TFTP operation.
    pub const ILLEGAL_OPERATION: Self = Self(4);
    /// 5: unknown transfer ID.
    pub const UNKNOWN_TRANSFER_ID: Self = Self(5);
    /// 6: file already exists.
    pub const FILE_EXISTS: Self = Self(6);
    /// 7: no such user.
    pub const NO_SUCH_USER: Self = Self(7);
    /// 8: the options could not be agreed (RFC 2347).
    pub const OPTION_NEGOTIATION: Self = Self(8);

    /// The wire value.
    pub const fn code(self) -> u16 {
        self.0
    }

    /// The code of a wire value; any value is kept as sent.
    pub const fn from_code(c: u16) -> Self {
        Self(c)
    }

    /// The RFC's name of a defined code; `None` for any other value.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "NotDefined",
            1 => "FileNotFound",
            2 => "AccessViolation",
            3 => "DiskFull",
            4 => "IllegalOperation",
            5 => "UnknownTransferId",
            6 => "FileExists",
            7 => "NoSuchUser",
            8 => "OptionNegotiation",
            _ => return None,
        })
    }
}

impl std::fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ErrorCode({})", self.0),
        }
    }
}

/// A TFTP packet, borrowing from the datagram it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// 1: read request.
    Rrq(Request<'a>),
    /// 2: write request.
    Wrq(Request<'a>),
    /// 3: a block of data.
    Data {
        /// Block number (wraps at 65,535).
        block: u16,
        /// The bytes (up to the negotiated block size).
        data: &'a [u8],
    },
    /// 4: acknowledgement.
    Ack {
        /// Block number acknowledged.
        block: u16,
    },
    /// 5: error; ends the transfer.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// A message for people.
        message: &'a str,
    },
    /// 6: option acknowledgement (RFC 2347).
    Oack(Options),
}

/// Why a datagram is not a valid TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeFailure {
    /// Shorter than its fixed header.
    #[error("packet too short")]
    TooShort,
    /// The opcode is not 1–6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A string field has no terminating NUL.
    #[error("string without NUL terminator")]
    MissingNul,
    /// Bytes after the last field.
    #[error("{0} trailing byte(s)")]
    TrailingData(usize),
    /// A string is not UTF-8.
    #[error("string is not UTF-8")]
    NotUtf8,
    /// The mode is not `octet` or `netascii` (`mail` is obsolete).
    #[error("unsupported mode `{0}`")]
    UnsupportedMode(String),
    /// An option value is not a number in its range.
    #[error("option `{name}` has invalid value `{value}`")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// The value as sent.
        value: String,
    },
    /// The same option appears twice.
    #[error("option `{0}` given twice")]
    DuplicateOption(&'static str),
    /// An empty file name.
    #[error("empty file name")]
    EmptyFilename,
}

fn cstr(i: &[u8]) -> IResult<&[u8], &[u8]> {
    let (rest, s) = take_till(|b| b == 0).parse(i)?;
    if rest.is_empty() {
        // No NUL: nom reports it as an error of its own kind.
        return Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::Char,
        )));
    }
    Ok((&rest[1..], s))
}

fn string(i: &[u8]) -> Result<(&[u8], &str), DecodeFailure> {
    let (rest, s) = cstr(i).map_err(|_| DecodeFailure::MissingNul)?;
    let s = std::str::from_utf8(s).map_err(|_| DecodeFailure::NotUtf8)?;
    Ok((rest, s))
}

fn number<T: std::str::FromStr + PartialOrd>(
    name: &'static str,
    value: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, DecodeFailure> {
    let invalid = || DecodeFailure::InvalidOption {
        name,
        value: value.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let v: T = value.parse().map_err(|_| invalid())?;
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(invalid())
    }
}

fn set<T>(slot: &mut Option<T>, name: &'static str, v: T) -> Result<(), DecodeFailure> {
    if slot.is_some() {
        return Err(DecodeFailure::DuplicateOption(name));
    }
    *slot = Some(v);
    Ok(())
}

/// Options until the end of the packet: NUL-terminated name/value pairs.
fn options(mut i: &[u8]) -> Result<Options, DecodeFailure> {
    let mut o = Options::default();
    while !i.is_empty() {
        let (rest, name) = string(i)?;
        let (rest, value) = string(rest)?;
        i = rest;
        match name.to_ascii_lowercase().as_str() {
            "blksize" => set(
                &mut o.blksize,
                "blksize",
                number("blksize", value, BLKSIZE_RANGE)?,
            )?,
            "timeout" => set(
                &mut o.timeout,
                "timeout",
                number("timeout", value, TIMEOUT_RANGE)?,
            )?,
            "tsize" => set(&mut o.tsize, "tsize", number("tsize", value, 0..=u64::MAX)?)?,
            "windowsize" => set(
                &mut o.windowsize,
                "windowsize",
                number("windowsize", value, WINDOWSIZE_RANGE)?,
            )?,
            // RFC 2347: options the server does not know are ignored.
            _ => {}
        }
    }
    Ok(o)
}

fn request(i: &[u8]) -> Result<Request<'_>, DecodeFailure> {
    let (rest, filename) = string(i)?;
    let (rest, mode) = string(rest)?;
    if filename.is_empty() {
        return Err(DecodeFailure::EmptyFilename);
    }
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else {
        return Err(DecodeFailure::UnsupportedMode(mode.to_owned()));
    };
    Ok(Request {
        filename,
        mode,
        options: options(rest)?,
    })
}

impl<'a> Packet<'a> {
    /// Decodes one datagram.
    pub fn decode(buf: &'a [u8]) -> Result<Packet<'a>, DecodeFailure> {
        let (rest, opcode) =
            be_u16::<_, nom::error::Error<&[u8]>>(buf).map_err(|_| DecodeFailure::TooShort)?;
        match opcode {
            1 => Ok(Packet::Rrq(request(rest)?)),
            2 => Ok(Packet::Wrq(request(rest)?)),
            3 => {
                let (data, block) = be_u16::<_, nom::error::Error<&[u8]>>(rest)
                    .map_err(|_| DecodeFailure::TooShort)?;
                Ok(Packet::Data { block, data })
            }
            4 => {
                let (tail, block) = be_u16::<_, nom::error::Error<&[u8]>>(rest)
                    .map_err(|_| DecodeFailure::TooShort)?;
                if !tail.is_empty() {
                    return Err(DecodeFailure::TrailingData(tail.len()));
                }
                Ok(Packet::Ack { block })
            }
            5 => {
                let (tail, code) = be_u16::<_, nom::error::Error<&[u8]>>(rest)
                    .map_err(|_| DecodeFailure::TooShort)?;
                let (tail, message) = string(tail)?;
                if !tail.is_empty() {
                    return Err(DecodeFailure::TrailingData(tail.len()));
                }
                Ok(Packet::Error {
                    code: ErrorCode::from_code(code),
                    message,
                })
            }
            6 => Ok(Packet::Oack(options(rest)?)),
            op => Err(DecodeFailure::UnknownOpcode(op)),
        }
    }

    /// Appends the packet's wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                let op: u16 = if matches!(self, Packet::Rrq(_)) { 1 } else { 2 };
                out.extend_from_slice(&op.to_be_bytes());
                put_str(out, r.filename);
                put_str(out, r.mode.as_str());
                put_options(out, &r.options);
            }
            Packet::Data { block, data } => {
                out.extend_from_slice(&data_header(*block));
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&5u16.to_be_bytes());
                out.extend_from_slice(&code.code().to_be_bytes());
                // A NUL inside the message would end it early on the wire.
                put_str(out, &message.replace('\0', " "));
            }
            Packet::Oack(o) => {
                out.extend_from_slice(&6u16.to_be_bytes());
                put_options(out, o);
            }
        }
    }

    /// The wire form as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// The 4-byte header of a DATA packet; the payload follows it.
pub fn data_header(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 3, b[0], b[1]]
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn put_options(out: &mut Vec<u8>, o: &Options) {
    let mut put = |name: &str, v: String| {
        put_str(out, name);
        put_str(out, &v);
    };
    if let Some(v) = o.blksize {
        put("blksize", v.to_string());
    }
    if let Some(v) = o.timeout {
        put("timeout", v.to_string());
    }
    if let Some(v) = o.tsize {
        put("tsize", v.to_string());
    }
    if let Some(v) = o.windowsize {
        put("windowsize", v.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_pxe_rrq() {
        let p = b"\x00\x01undionly.kpxe\x00octet\x00tsize\x000\x00blksize\x001468\x00windowsize\x004\x00";
        let Packet::Rrq(r) = Packet::decode(p).unwrap() else {
            panic!("not an RRQ");
        };
        assert_eq!(r.filename, "undionly.kpxe");
        assert_eq!(r.mode, Mode::Octet);
        assert_eq!(r.options.tsize, Some(0));
        assert_eq!(r.options.blksize, Some(1468));
        assert_eq!(r.options.windowsize, Some(4));
        let again = Packet::Rrq(r).to_vec();
        assert_eq!(Packet::decode(&again).unwrap(), Packet::Rrq(r));
    }

    #[test]
    fn rejects_malformed() {
        use DecodeFailure as E;
        assert_eq!(Packet::decode(b"\x00"), Err(E::TooShort));
        assert_eq!(Packet::decode(b"\x00\x09"), Err(E::UnknownOpcode(9)));
        assert_eq!(Packet::decode(b"\x00\x01file\x00octet"), Err(E::MissingNul));
        assert_eq!(
            Packet::decode(b"\x00\x04\x00\x01x"),
            Err(E::TrailingData(1))
        );
        assert_eq!(
            Packet::decode(b"\x00\x01f\x00mail\x00"),
            Err(E::UnsupportedMode("mail".into()))
        );
        assert_eq!(
            Packet::decode(b"\x00\x01\x00octet\x00"),
            Err(E::EmptyFilename)
        );
        assert!(matches!(
            Packet::decode(b"\x00\x01f\x00octet\x00blksize\x007\x00"),
            Err(E::InvalidOption {
                name: "blksize",
                ..
            })
        ));
        assert!(matches!(
            Packet::decode(b"\x00\x01f\x00octet\x00windowsize\x000\x00"),
            Err(E::InvalidOption {
                name: "windowsize",
                ..
            })
        ));
        assert!(matches!(
            Packet::decode(b"\x00\x01f\x00octet\x00timeout\x00+5\x00"),
            Err(E::InvalidOption {
                name: "timeout",
                ..
            })
        ));
        assert_eq!(
            Packet::decode(b"\x00\x01f\x00octet\x00tsize\x000\x00TSIZE\x000\x00"),
            Err(E::DuplicateOption("tsize"))
        );
        assert_eq!(
            Packet::decode(b"\x00\x01f\x00octet\x00blksize\x00"),
            Err(E::MissingNul)
        );
    }

    #[test]
    fn ignores_unknown_options_and_mode_case() {
        let Packet::Rrq(r) =
            Packet::decode(b"\x00\x01f\x00OCTET\x00multicast\x00\x00blksize\x00512\x00").unwrap()
        else {
            panic!();
        };
        assert_eq!(r.mode, Mode::Octet);
        assert_eq!(r.options.blksize, Some(512));
    }
}
