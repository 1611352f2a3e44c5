//! The model's DHCP view as configuration for other servers: dnsmasq and
//! Kea. For running beside them (the address server of a proxy-mode
//! site, a migration in either direction) and for comparing against them:
//! the differential test and `bench/dhcp` configure both peers from the
//! same compiled model this crate answers from.
//!
//! What is exported, for one subnet: a static reservation per interface
//! (address, host name, lease time; `ignore_dhcp` interfaces are left
//! out), the subnet's implied options (router, DNS, domain, NTP, log
//! server, lease time) and its custom options as raw bytes. dnsmasq also
//! gets the boot-file choices of [`crate::select_boot`] for BIOS, UEFI x64
//! and iPXE clients, with each host's `boot_files` override; Kea gets
//! addresses and options only (its client classes are left to the
//! operator).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use vaquero_model::{DhcpOptionType, SiteModel, Subnet};

/// Why the model could not be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportFailure {
    /// The site has no subnet of that id.
    #[error("site `{site}` has no subnet `{subnet}`")]
    NoSubnet {
        /// The site.
        site: String,
        /// The subnet asked for.
        subnet: String,
    },
    /// A custom option does not encode (validation normally catches this).
    #[error("subnet `{subnet}`: option {option}: {message}")]
    Option {
        /// The subnet.
        subnet: String,
        /// The option code.
        option: u8,
        /// What is wrong with it.
        message: String,
    },
}

fn subnet<'m>(m: &'m SiteModel, id: &str) -> Result<&'m Subnet, ExportFailure> {
    m.site()
        .subnets
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ExportFailure::NoSubnet {
            site: m.site().id.clone(),
            subnet: id.to_owned(),
        })
}

fn lease_secs(s: &Subnet) -> u64 {
    s.lease_time.map_or(3600, |d| d.as_secs())
}

/// Every reservable interface of the subnet: (MAC, address, host name,
/// host).
fn reservations<'m>(
    m: &'m SiteModel,
    s: &'m Subnet,
) -> impl Iterator<Item = (String, Ipv4Addr, &'m str, &'m vaquero_model::Host)> {
    m.hosts().iter().flat_map(move |h| {
        h.interfaces
            .iter()
            .filter(move |i| i.subnet == s.id && !i.ignore_dhcp)
            .map(move |i| {
                let name = i.hostname.as_deref().unwrap_or(&h.name);
                (i.mac.to_string(), i.ipv4, name, h)
            })
    })
}

/// Custom options as (code, bytes, is `addresses`).
fn custom(s: &Subnet) -> Result<Vec<(u8, Vec<u8>, bool)>, ExportFailure> {
    s.dhcp_options
        .iter()
        .map(|o| {
            let v = o.encoded().map_err(|message| ExportFailure::Option {
                subnet: s.id.clone(),
                option: o.option,
                message: message.to_owned(),
            })?;
            Ok((o.option, v.to_vec(), o.kind == DhcpOptionType::Addresses))
        })
        .collect()
}

/// The subnet's IPv4 DNS servers and NTP servers given as addresses (the
/// peers take addresses only).
fn dns_ntp(s: &Subnet) -> (Vec<String>, Vec<&str>) {
    let dns = s
        .dns
        .iter()
        .filter(|a| a.is_ipv4())
        .map(|a| a.to_string())
        .collect();
    let ntp = s
        .ntp
        .iter()
        .filter(|n| n.parse::<Ipv4Addr>().is_ok())
        .map(String::as_str)
        .collect();
    (dns, ntp)
}

fn hex(v: &[u8], sep: &str) -> String {
    v.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// dnsmasq configuration lines for subnet `subnet_id` (append them to a
/// base configuration that names the interface). `server_ip` is the
/// TFTP server PXE clients are sent to.
pub fn dnsmasq(
    m: &SiteModel,
    subnet_id: &str,
    server_ip: Ipv4Addr,
) -> Result<String, ExportFailure> {
    let s = subnet(m, subnet_id)?;
    let tag = &s.id;
    let lease = lease_secs(s);
    let mut c = String::new();
    let _ = writeln!(
        c,
        "dhcp-range=set:{tag},{},static,{},{lease}",
        s.cidr.network(),
        s.cidr.netmask()
    );
    let mut opt = |o: &str, v: &str| {
        let _ = writeln!(c, "dhcp-option=tag:{tag},{o},{v}");
    };
    if let Some(g) = s.gateway {
        opt("option:router", &g.to_string());
    }
    let (dns, ntp) = dns_ntp(s);
    if !dns.is_empty() {
        opt("option:dns-server", &dns.join(","));
    }
    if let Some(d) = &s.domain_name {
        opt("option:domain-name", d);
    }
    if !ntp.is_empty() {
        opt("option:ntp-server", &ntp.join(","));
    }
    if let Some(l) = s.log_server {
        opt("option:log-server", &l.to_string());
    }
    // dnsmasq reads a value by the option's known type: addresses as
    // dotted quads, one byte as a number, anything else as colon hex.
    for (code, v, addresses) in custom(s)? {
        let value = if addresses {
            v.chunks_exact(4)
                .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string())
                .collect::<Vec<_>>()
                .join(",")
        } else if v.len() == 1 {
            v[0].to_string()
        } else {
            hex(&v, ":")
        };
        opt(&code.to_string(), &value);
    }
    // Only hosts with their own boot files get a tag: dnsmasq scans every
    // tag of every request, and ten thousand of them cost it dearly.
    for (mac, ip, name, h) in reservations(m, s) {
        let tag = match h.boot_files {
            Some(_) => format!("set:h-{},", h.name),
            None => String::new(),
        };
        let _ = writeln!(c, "dhcp-host={mac},{tag}{ip},{name},{lease}");
    }
    // Boot files: iPXE gets its script over HTTP, BIOS and UEFI x64 PXE
    // ROMs their iPXE binary over TFTP. dnsmasq takes the last matching
    // dhcp-boot line, so hosts' own files come after the site's.
    let files = &m.site().boot_files;
    let _ = writeln!(c, "dhcp-userclass=set:ipxe,iPXE");
    let _ = writeln!(c, "dhcp-match=set:ipxe,175");
    let _ = writeln!(c, "dhcp-match=set:bios,option:client-arch,0");
    for a in [6, 7, 9] {
        let _ = writeln!(c, "dhcp-match=set:efi64,option:client-arch,{a}");
    }
    let boot = |c: &mut String, tags: &str, bios: &Option<String>, efi: &Option<String>| {
        if let Some(f) = bios {
            let _ = writeln!(c, "dhcp-boot={tags}tag:!ipxe,tag:bios,{f},,{server_ip}");
        }
        if let Some(f) = efi {
            let _ = writeln!(c, "dhcp-boot={tags}tag:!ipxe,tag:efi64,{f},,{server_ip}");
        }
    };
    boot(
        &mut c,
        "",
        &Some(files.bios.clone().unwrap_or_else(|| "undionly.kpxe".into())),
        &Some(files.uefi_x64.clone().unwrap_or_else(|| "ipxe.efi".into())),
    );
    if let Some(a) = m.agent_url() {
        let _ = writeln!(
            c,
            "dhcp-boot=tag:ipxe,{}/boot.ipxe,,{server_ip}",
            a.trim_end_matches('/')
        );
    }
    for h in m.hosts() {
        if let Some(own) = &h.boot_files {
            boot(
                &mut c,
                &format!("tag:h-{},", h.name),
                &own.bios,
                &own.uefi_x64,
            );
        }
    }
    Ok(c)
}

/// A complete `kea-dhcp4` configuration (JSON) serving subnet
/// `subnet_id` on `interface` with the model's reservations and options,
/// leases in memory (memfile, not persisted: the addresses are static).
pub fn kea(m: &SiteModel, subnet_id: &str, interface: &str) -> Result<String, ExportFailure> {
    use serde_json::{Value, json};
    let s = subnet(m, subnet_id)?;
    let mut options: Vec<Value> = Vec::new();
    let mut named = |name: &str, data: String| options.push(json!({"name": name, "data": data}));
    if let Some(g) = s.gateway {
        named("routers", g.to_string());
    }
    let (dns, ntp) = dns_ntp(s);
    if !dns.is_empty() {
        named("domain-name-servers", dns.join(", "));
    }
    if let Some(d) = &s.domain_name {
        named("domain-name", d.clone());
    }
    if !ntp.is_empty() {
        named("ntp-servers", ntp.join(", "));
    }
    if let Some(l) = s.log_server {
        named("log-servers", l.to_string());
    }
    for (code, v, _) in custom(s)? {
        options.push(
            json!({"code": code, "space": "dhcp4", "csv-format": false, "data": hex(&v, "")}),
        );
    }
    let reservations: Vec<Value> = reservations(m, s)
        .map(|(mac, ip, name, _)| {
            json!({"hw-address": mac, "ip-address": ip.to_string(), "hostname": name})
        })
        .collect();
    let config = json!({
        "Dhcp4": {
            "interfaces-config": {"interfaces": [interface], "dhcp-socket-type": "udp"},
            "lease-database": {"type": "memfile", "persist": false},
            "host-reservation-identifiers": ["hw-address"],
            "valid-lifetime": lease_secs(s),
            "subnet4": [{
                "id": 1,
                "subnet": s.cidr.trunc().to_string(),
                "reservations-in-subnet": true,
                "reservations-out-of-pool": true,
                "option-data": options,
                "reservations": reservations,
            }],
            "loggers": [{"name": "kea-dhcp4", "severity": "WARN", "output_options": [{"output": "stderr"}]}],
        }
    });
    Ok(serde_json::to_string_pretty(&config).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lab() -> SiteModel {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
        let sot = vaquero_model::Sot::load_dir(&dir).unwrap();
        SiteModel::compile(&sot, "lab").unwrap()
    }

    #[test]
    fn dnsmasq_has_reservations_options_and_boot_files() {
        let c = dnsmasq(&lab(), "prov", Ipv4Addr::new(10, 99, 0, 2)).unwrap();
        for line in [
            "dhcp-range=set:prov,10.99.0.0,static,255.255.255.0,3600",
            "dhcp-option=tag:prov,option:router,10.99.0.1",
            "dhcp-option=tag:prov,150,10.99.0.2",
            "dhcp-option=tag:prov,224,00:00:0e:10",
            "dhcp-host=52:54:00:00:01:01,10.99.0.11,k8s-01,3600",
            "dhcp-host=52:54:00:00:01:31,set:h-bastion-01,10.99.0.31,bastion,3600",
            "dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe,,10.99.0.2",
            "dhcp-boot=tag:ipxe,http://10.99.0.2:8080/boot.ipxe,,10.99.0.2",
            "dhcp-boot=tag:h-bastion-01,tag:!ipxe,tag:efi64,snponly.efi,,10.99.0.2",
        ] {
            assert!(c.lines().any(|l| l == line), "missing `{line}` in\n{c}");
        }
        // BMC NICs live on the oob subnet: not in prov's export.
        assert!(!c.contains("52:54:00:00:02:01"));
    }

    #[test]
    fn kea_is_json_with_every_reservation() {
        let c = kea(&lab(), "prov", "eth1").unwrap();
        let v: serde_json::Value = serde_json::from_str(&c).unwrap();
        let sub = &v["Dhcp4"]["subnet4"][0];
        assert_eq!(sub["subnet"], "10.99.0.0/24");
        assert_eq!(sub["reservations"].as_array().unwrap().len(), 6);
        assert_eq!(v["Dhcp4"]["interfaces-config"]["interfaces"][0], "eth1");
        assert!(matches!(
            kea(&lab(), "nope", "eth1"),
            Err(ExportFailure::NoSubnet { .. })
        ));
    }
}
