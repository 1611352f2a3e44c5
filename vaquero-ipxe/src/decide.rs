//! What a machine asking for its per-host script (`GET /ipxe`) gets,
//! decided without I/O: which host it is, whether it may ask from where
//! it asks, and whether it boots a stage or its local disk. The boot
//! service answers with it (both its fast path and its router), and
//! `vaquero preview` shows what it would serve with it.

use std::borrow::Cow;
use std::net::IpAddr;

use vaquero_model::{HostRef, InterfaceType, MacAddr, SiteModel, Uuid};

use crate::state::Current;

/// What the boot service serves a machine asking for its script.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Decision<'m> {
    /// Boot stage `stage` (boot `boot`) of the host's workflow.
    Script {
        /// The host and the interface that asked.
        host: HostRef<'m>,
        /// Index of the stage in the workflow.
        stage: usize,
        /// The stage's boot id.
        boot: String,
        /// The boot attempt; events and checkpoint tokens carry it.
        attempt: u64,
    },
    /// Boot from the local disk; `why` is shown on the machine's console.
    LocalDisk {
        /// The host, when the machine is one of the model's.
        host: Option<HostRef<'m>>,
        /// Why.
        why: String,
        /// The boot state names a stage the host's workflow does not
        /// have (the SoT changed under it): served the disk, and worth an
        /// operator's look.
        stale: bool,
    },
    /// Refused (403): the request does not come from an address of the
    /// host it names, and per-host answers go to the host alone.
    Refused {
        /// The host named.
        host: HostRef<'m>,
    },
}

/// The host whose address `ip` is (an IPv4-mapped IPv6 address counts as
/// its IPv4 address).
pub fn host_of_ip(m: &SiteModel, ip: Option<IpAddr>) -> Option<HostRef<'_>> {
    match ip? {
        IpAddr::V4(v4) => m.by_ipv4(&v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().and_then(|v4| m.by_ipv4(&v4)),
    }
}

/// Whether a request for `h`'s per-host answer from `client` is refused:
/// with `check_address`, only the host's own addresses are answered.
pub fn address_refused(
    m: &SiteModel,
    h: HostRef<'_>,
    client: Option<IpAddr>,
    check_address: bool,
) -> bool {
    check_address && host_of_ip(m, client).is_none_or(|o| o.host.name != h.host.name)
}

/// Decides what the machine `id` asking from `client` boots: the host is
/// found by MAC, else by SMBIOS UUID; `current` gives a host's current
/// step by name (the boot state). With `check_address`, a request from an
/// address that is not the host's is refused.
pub fn decide<'m>(
    m: &'m SiteModel,
    id: &Identity<'_>,
    client: Option<IpAddr>,
    check_address: bool,
    current: impl FnOnce(&str) -> Current,
) -> Decision<'m> {
    let mac = id.mac.as_deref().and_then(|v| v.parse::<MacAddr>().ok());
    let h = mac.as_ref().and_then(|mac| m.by_mac(mac)).or_else(|| {
        id.uuid
            .as_deref()
            .and_then(|u| u.parse::<Uuid>().ok())
            .and_then(|u| m.by_uuid(&u))
    });
    let Some(h) = h else {
        let who = id
            .mac
            .as_deref()
            .or(id.uuid.as_deref())
            .unwrap_or("an unidentified machine");
        return Decision::LocalDisk {
            host: None,
            why: format!("{who} is not in the model"),
            stale: false,
        };
    };
    let name = h.host.name.as_str();
    if address_refused(m, h, client, check_address) {
        return Decision::Refused { host: h };
    }
    let local = |why: String| Decision::LocalDisk {
        host: Some(h),
        why,
        stale: false,
    };
    if h.interface.kind == InterfaceType::Bmc {
        return local(format!("{} is a BMC interface of {name}", h.interface.mac));
    }
    if h.host.never_provision {
        return local(format!("{name} is never provisioned"));
    }
    match current(name) {
        Current::LocalDisk(why) => local(format!("{name}: {why}")),
        Current::Stage {
            stage,
            boot,
            attempt,
        } => {
            if m.stage(h.host, stage) != Some(boot.as_str()) {
                return Decision::LocalDisk {
                    host: Some(h),
                    why: format!("{name}: stage {stage} ({boot}) is not in its workflow"),
                    stale: true,
                };
            }
            Decision::Script {
                host: h,
                stage,
                boot,
                attempt,
            }
        }
    }
}

/// What iPXE reports about itself in the query of `GET /ipxe` (see
/// [`crate::chain_script`]): each value as the machine sent it, decoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity<'q> {
    /// `mac=`: the MAC of the NIC that booted (hyphenated by iPXE).
    pub mac: Option<Cow<'q, str>>,
    /// `uuid=`: the SMBIOS UUID.
    pub uuid: Option<Cow<'q, str>>,
    /// `serial=`: the SMBIOS serial (logged; reserved for inventory).
    pub serial: Option<Cow<'q, str>>,
    /// `arch=`: iPXE's build architecture.
    pub arch: Option<Cow<'q, str>>,
    /// `platform=`: `pcbios` or `efi`.
    pub platform: Option<Cow<'q, str>>,
}

impl<'q> Identity<'q> {
    /// From the query string: values percent-decoded (`+` is a space),
    /// other keys ignored, the last of a repeated key wins. By hand rather
    /// than through serde, and borrowing what needs no decoding: this is
    /// on every per-host script request. Any input parses (fuzzed:
    /// `fuzz/fuzz_targets/ipxe_identity.rs`).
    pub fn parse(query: Option<&'q str>) -> Identity<'q> {
        let mut id = Identity::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match k {
                "mac" => &mut id.mac,
                "uuid" => &mut id.uuid,
                "serial" => &mut id.serial,
                "arch" => &mut id.arch,
                "platform" => &mut id.platform,
                _ => continue,
            };
            *slot = Some(if v.contains(['%', '+']) {
                let plus = v.replace('+', " ");
                Cow::Owned(
                    percent_encoding::percent_decode_str(&plus)
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            } else {
                Cow::Borrowed(v)
            });
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_from_a_query() {
        let id = Identity::parse(Some(
            "mac=52-54-00-12-34-56&uuid=&serial=SN%20one+two&arch=x86_64&x=1&platform=efi&arch=i386&flag",
        ));
        assert_eq!(id.mac.as_deref(), Some("52-54-00-12-34-56"));
        assert!(matches!(id.mac, Some(Cow::Borrowed(_))));
        assert_eq!(id.uuid.as_deref(), Some(""));
        assert_eq!(id.serial.as_deref(), Some("SN one two"));
        assert_eq!(id.arch.as_deref(), Some("i386"), "the last one wins");
        assert_eq!(id.platform.as_deref(), Some("efi"));
        let none = Identity::parse(None);
        assert!(none.mac.is_none() && none.uuid.is_none());
        // Broken escapes decode lossily, never fail.
        assert_eq!(
            Identity::parse(Some("mac=%zz%e2")).mac.as_deref(),
            Some("%zz\u{fffd}")
        );
    }
}
