//! The scalars of the SoT written as strings: MAC addresses, SMBIOS UUIDs
//! and durations.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! string_serde {
    ($t:ty, $expecting:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$t, E> {
                        v.to_string().parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}
pub(super) use string_serde;

/// A MAC address. Parses `aa:bb:cc:dd:ee:ff`, `aa-bb-…` and `aabb.ccdd.eeff`;
/// displays lowercase with colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The hyphenated form iPXE's `${mac:hexhyp}` produces.
    pub fn hyphenated(&self) -> String {
        let text = self.text(b'-');
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The six bytes as lowercase hex pairs joined by `sep` (this is on
    /// every URL and log line of a boot, so without `fmt`).
    fn text(&self, sep: u8) -> [u8; 17] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [sep; 17];
        for (i, b) in self.0.iter().enumerate() {
            out[i * 3] = HEX[usize::from(b >> 4)];
            out[i * 3 + 1] = HEX[usize::from(b & 0x0f)];
        }
        out
    }
}

impl FromStr for MacAddr {
    type Err = String;
    /// `52:54:00:ab:cd:01`, `52-54-00-ab-cd-01` (either separator, any
    /// case) or Cisco's `5254.00ab.cd01`; nothing else (no bare hex, no
    /// surrounding space). Parsed by position: this runs on every request
    /// that names a MAC.
    fn from_str(s: &str) -> Result<Self, String> {
        parse_mac(s.as_bytes())
            .map(MacAddr)
            .ok_or_else(|| format!("invalid MAC address `{s}`"))
    }
}

fn parse_mac(b: &[u8]) -> Option<[u8; 6]> {
    let hex = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    // Where the 12 hex digits are, by layout.
    let (digits, separators): ([usize; 12], &[(usize, &[u8])]) = match b.len() {
        17 => (
            [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16],
            &[(2, b":-"), (5, b":-"), (8, b":-"), (11, b":-"), (14, b":-")],
        ),
        14 => (
            [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13],
            &[(4, b"."), (9, b".")],
        ),
        _ => return None,
    };
    if !separators.iter().all(|(i, ok)| ok.contains(&b[*i])) {
        return None;
    }
    let mut out = [0u8; 6];
    for (k, byte) in out.iter_mut().enumerate() {
        *byte = (hex(b[digits[2 * k]])? << 4) | hex(b[digits[2 * k + 1]])?;
    }
    Some(out)
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text(b':');
        f.write_str(&String::from_utf8_lossy(&text))
    }
}

string_serde!(MacAddr, "a MAC address like 52:54:00:12:34:56");

/// An SMBIOS UUID, stored lowercase and hyphenated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl FromStr for Uuid {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hex: String = s.trim().chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "invalid UUID `{s}`: expected 32 hex digits like 4c4c4544-0042-3510-8052-b4c04f384d32"
            ));
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("invalid UUID `{s}`"))?;
        }
        Ok(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

string_serde!(Uuid, "a UUID");

/// A duration written `90`, `90s`, `30m`, `1h`, `2d` (seconds if no unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

impl Duration {
    /// The duration in seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => 0,
        };
        match num.parse::<u64>() {
            Ok(n) if mult > 0 => n
                .checked_mul(mult)
                .map(Duration)
                .ok_or_else(|| format!("duration `{s}` is too large")),
            _ => Err(format!(
                "invalid duration `{s}`: expected a number with an optional unit s, m, h or d"
            )),
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

string_serde!(Duration, "a duration like 30s, 5m or 1h");
