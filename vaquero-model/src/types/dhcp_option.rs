//! Custom DHCP options of a subnet, encoded for the wire once, when the
//! SoT is read.

use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A custom DHCP option of a subnet. Its value is encoded for the wire
/// once, when the SoT is read; [`encoded`](Self::encoded) hands out
/// those bytes (or why they could not be encoded, which validation
/// reports at the option's file:line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "DhcpOptionSpec", into = "DhcpOptionSpec")]
pub struct DhcpOption {
    /// The option code, 1–254.
    pub option: u8,
    /// How `value` is encoded.
    pub kind: DhcpOptionType,
    /// The value as written, encoded per `kind` (a list is accepted for
    /// `addresses`).
    pub value: OneOrMany,
    encoded: Result<Vec<u8>, String>,
}

/// A custom DHCP option as written in the SoT.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DhcpOptionSpec {
    option: u8,
    #[serde(rename = "type")]
    kind: DhcpOptionType,
    value: OneOrMany,
}

impl From<DhcpOptionSpec> for DhcpOption {
    fn from(s: DhcpOptionSpec) -> Self {
        DhcpOption::new(s.option, s.kind, s.value)
    }
}

impl From<DhcpOption> for DhcpOptionSpec {
    fn from(o: DhcpOption) -> Self {
        DhcpOptionSpec {
            option: o.option,
            kind: o.kind,
            value: o.value,
        }
    }
}

/// How a custom DHCP option's value is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum DhcpOptionType {
    String,
    Uint8,
    Uint16,
    Uint32,
    Int8,
    Int16,
    Int32,
    Bool,
    Addresses,
    Base64,
    Hex,
}

impl DhcpOption {
    /// The option `option` with `value` encoded per `kind`.
    pub fn new(option: u8, kind: DhcpOptionType, value: OneOrMany) -> Self {
        let encoded = encode_option(kind, &value);
        DhcpOption {
            option,
            kind,
            value,
            encoded,
        }
    }

    /// The option's value encoded for the wire (at most 255 bytes), or
    /// why it cannot be.
    pub fn encoded(&self) -> Result<&[u8], &str> {
        match &self.encoded {
            Ok(b) => Ok(b),
            Err(e) => Err(e),
        }
    }
}

fn encode_option(kind: DhcpOptionType, value: &OneOrMany) -> Result<Vec<u8>, String> {
    {
        use DhcpOptionType as T;
        let one = || match value {
            OneOrMany::One(s) => Ok(s.trim()),
            OneOrMany::Many(_) => Err("a list is only allowed for type `addresses`".to_owned()),
        };
        fn int<I: FromStr>(s: &str, what: &str) -> Result<I, String> {
            s.parse()
                .map_err(|_| format!("`{s}` is not a valid {what}"))
        }
        let bytes = match kind {
            T::String => one()?.as_bytes().to_vec(),
            T::Uint8 => vec![int::<u8>(one()?, "uint8")?],
            T::Uint16 => int::<u16>(one()?, "uint16")?.to_be_bytes().to_vec(),
            T::Uint32 => int::<u32>(one()?, "uint32")?.to_be_bytes().to_vec(),
            T::Int8 => int::<i8>(one()?, "int8")?.to_be_bytes().to_vec(),
            T::Int16 => int::<i16>(one()?, "int16")?.to_be_bytes().to_vec(),
            T::Int32 => int::<i32>(one()?, "int32")?.to_be_bytes().to_vec(),
            T::Bool => match one()? {
                "true" | "1" => vec![1],
                "false" | "0" => vec![0],
                s => return Err(format!("`{s}` is not a valid bool (true or false)")),
            },
            T::Addresses => {
                let items: Vec<&str> = match value {
                    OneOrMany::One(s) => s.split([',', ' ']).filter(|s| !s.is_empty()).collect(),
                    OneOrMany::Many(l) => l.iter().map(|s| s.trim()).collect(),
                };
                if items.is_empty() {
                    return Err("at least one address is required".into());
                }
                let mut out = Vec::with_capacity(items.len() * 4);
                for a in items {
                    let ip: Ipv4Addr = a
                        .parse()
                        .map_err(|_| format!("`{a}` is not a valid IPv4 address"))?;
                    out.extend(ip.octets());
                }
                out
            }
            T::Base64 => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(one()?)
                    .map_err(|e| format!("invalid base64: {e}"))?
            }
            T::Hex => {
                let s: String = one()?
                    .chars()
                    .filter(|c| !matches!(c, ':' | ' ' | '-'))
                    .collect();
                hex::decode(&s).map_err(|e| format!("invalid hex: {e}"))?
            }
        };
        if bytes.len() > 255 {
            return Err(format!(
                "the encoded value is {} bytes; an option holds at most 255",
                bytes.len()
            ));
        }
        Ok(bytes)
    }
}

/// A scalar or a list of scalars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// A list of values.
    Many(Vec<String>),
}
