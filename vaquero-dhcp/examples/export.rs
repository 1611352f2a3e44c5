//! Writes one subnet of a SoT as dnsmasq and Kea configuration, plus the
//! list of its MACs (for `perfdhcp -M`). `bench/dhcp` configures its peers
//! with it.
//!
//! ```sh
//! cargo run -p vaquero-dhcp --example export -- --sot examples/lab --site lab \
//!     --subnet prov --server-ip 10.99.0.2 --interface eth1 --out /tmp/peers
//! ```

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::Parser;
use vaquero_model::{SiteModel, Sot};

/// Export a subnet of a SoT for other DHCP servers.
#[derive(Parser)]
struct Args {
    /// The SoT directory.
    #[arg(long)]
    sot: PathBuf,
    /// The site.
    #[arg(long)]
    site: String,
    /// The subnet to export.
    #[arg(long)]
    subnet: String,
    /// The TFTP server PXE clients are sent to.
    #[arg(long)]
    server_ip: Ipv4Addr,
    /// The interface Kea serves on.
    #[arg(long)]
    interface: String,
    /// Where to write dnsmasq.conf, kea-dhcp4.json and macs.txt.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let sot = Sot::load_dir(&args.sot)?;
    let model = SiteModel::compile(&sot, &args.site)?;
    std::fs::create_dir_all(&args.out)?;
    let dnsmasq = vaquero_dhcp::export::dnsmasq(&model, &args.subnet, args.server_ip)?;
    std::fs::write(args.out.join("dnsmasq.conf"), dnsmasq)?;
    let kea = vaquero_dhcp::export::kea(&model, &args.subnet, &args.interface)?;
    std::fs::write(args.out.join("kea-dhcp4.json"), kea)?;
    let macs: Vec<String> = model
        .hosts()
        .iter()
        .flat_map(|h| &h.interfaces)
        .filter(|i| i.subnet == args.subnet && !i.ignore_dhcp)
        .map(|i| i.mac.to_string())
        .collect();
    std::fs::write(args.out.join("macs.txt"), macs.join("\n") + "\n")?;
    println!(
        "wrote {} reservations to {}",
        macs.len(),
        args.out.display()
    );
    Ok(())
}
