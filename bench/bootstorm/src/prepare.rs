//! `bootstorm prepare`: one model of N machines, written for both stacks.
//!
//! - `sot/`: Vaquero's SoT (one site, one workflow of one stage, N hosts
//!   with their MAC, SMBIOS UUID and reserved address, no BMC: they
//!   netboot by themselves, `force_provision: false`).
//! - `files/`: the kernel and the initrd both stacks serve.
//! - `tftp/`: Debian's iPXE builds (`undionly.kpxe`, `ipxe.efi`) for
//!   dnsmasq; Vaquero serves the same files from `/usr/lib/ipxe`.
//! - `www/`: nginx's tree: the same chain script Vaquero serves
//!   (`vaquero_ipxe::chain_script`), one pre-rendered script and one config
//!   per host.
//! - `dnsmasq.conf`: the reservations and boot files exported from the
//!   same model by `vaquero_dhcp::export::dnsmasq`.
//! - `nginx.conf`, and `machines.tsv`: what the storm's machines are.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use vaquero_ipxe::Script;
use vaquero_model::{SiteModel, Sot};

/// What `prepare` writes.
#[derive(clap::Args)]
pub struct Prepare {
    /// How many machines.
    #[arg(long)]
    hosts: usize,
    /// Where everything is written (created).
    #[arg(long)]
    dir: PathBuf,
    /// The servers' interface (in their namespace).
    #[arg(long)]
    interface: String,
    /// The servers' address.
    #[arg(long, default_value = "10.0.0.2")]
    server_ip: Ipv4Addr,
    /// The boot service's port (both stacks).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The kernel's size in MiB.
    #[arg(long, default_value_t = 8)]
    kernel_mib: u64,
    /// The initrd's size in MiB.
    #[arg(long, default_value_t = 32)]
    initrd_mib: u64,
    /// One machine in this many boots with UEFI firmware (TFTP windowsize
    /// 4, `ipxe.efi`); the others with a BIOS PXE ROM (`undionly.kpxe`).
    #[arg(long, default_value_t = 2)]
    uefi_every: usize,
    /// Where Debian's iPXE builds are.
    #[arg(long, default_value = "/usr/lib/ipxe")]
    ipxe_dir: PathBuf,
}

/// Machine `i`'s MAC, address, UUID and name: the same on both stacks.
pub struct Host {
    /// Host name in the SoT.
    pub name: String,
    /// `52:54:01:xx:xx:xx`.
    pub mac: String,
    /// Its reservation: 10.0.0.16 on, in a /16.
    pub ip: Ipv4Addr,
    /// Its SMBIOS UUID.
    pub uuid: String,
    /// UEFI firmware (else BIOS).
    pub uefi: bool,
}

impl Host {
    fn new(i: usize, uefi_every: usize) -> Host {
        let n = 16 + i as u32;
        Host {
            name: format!("m-{i:05}"),
            mac: format!(
                "52:54:01:{:02x}:{:02x}:{:02x}",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            ),
            ip: Ipv4Addr::new(10, 0, (n >> 8) as u8, (n & 255) as u8),
            uuid: format!("00000000-0000-4000-8000-{i:012x}"),
            uefi: uefi_every > 0 && i % uefi_every == uefi_every - 1,
        }
    }

    fn mac_hyphens(&self) -> String {
        self.mac.replace(':', "-")
    }
}

/// Writes everything (see the module's documentation).
pub fn run(p: &Prepare) -> Result<()> {
    if p.hosts == 0 || p.hosts > 60_000 {
        bail!("--hosts must be 1..=60000 (one /16)");
    }
    let hosts: Vec<Host> = (0..p.hosts).map(|i| Host::new(i, p.uefi_every)).collect();
    let url = format!("http://{}:{}", p.server_ip, p.port);
    for d in ["sot", "files", "tftp", "www/hosts", "www/config", "nginx"] {
        std::fs::create_dir_all(p.dir.join(d)).with_context(|| format!("creating {d}"))?;
    }
    let dir = p
        .dir
        .canonicalize()
        .with_context(|| format!("{}", p.dir.display()))?;
    blob(&dir.join("files/vmlinuz"), p.kernel_mib << 20)?;
    blob(&dir.join("files/initrd.img"), p.initrd_mib << 20)?;
    for f in ["undionly.kpxe", "ipxe.efi"] {
        std::fs::copy(p.ipxe_dir.join(f), dir.join("tftp").join(f))
            .with_context(|| format!("copying {f} from {}", p.ipxe_dir.display()))?;
    }
    write_sot(&dir, p, &hosts, &url)?;
    write_www(&dir, &hosts, &url)?;

    // The reservations and boot files of dnsmasq, from the same model.
    let sot = Sot::load_dir(&dir.join("sot")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let model = SiteModel::compile(&sot, "storm").map_err(|e| anyhow::anyhow!("{e}"))?;
    let exported = vaquero_dhcp::export::dnsmasq(&model, "prov", p.server_ip)?;
    let d = dir.display();
    let conf = format!(
        "# The peer's best case for a storm: no lease file written (the\n\
         # addresses are reserved), no ping before an offer, no per-packet log,\n\
         # and TFTP and lease limits above N (their defaults, 50 transfers and\n\
         # 1,000 leases, would refuse a rack of machines).\n\
         port=0\ninterface={iface}\nbind-interfaces\nexcept-interface=lo\n\
         leasefile-ro\nno-ping\nquiet-dhcp\nuser=root\ngroup=root\n\
         log-facility={d}/dnsmasq-warnings.log\n\
         dhcp-lease-max={leases}\n\
         enable-tftp\ntftp-root={d}/tftp\ntftp-max={leases}\n\
         {exported}",
        iface = p.interface,
        leases = p.hosts + 1000,
    );
    std::fs::write(dir.join("dnsmasq.conf"), conf)?;
    std::fs::write(dir.join("nginx/nginx.conf"), nginx_conf(&dir, p))?;

    let mut m = String::new();
    for h in &hosts {
        let _ = writeln!(
            m,
            "{}\t{}\t{}\t{}\t{}",
            h.name,
            h.mac,
            h.ip,
            h.uuid,
            if h.uefi { "efi" } else { "bios" }
        );
    }
    std::fs::write(dir.join("machines.tsv"), m)?;
    println!(
        "bootstorm: {} machines ({} UEFI) written to {d}",
        hosts.len(),
        hosts.iter().filter(|h| h.uefi).count()
    );
    Ok(())
}

/// `len` bytes that do not compress: neither stack gets to skip work.
fn blob(path: &Path, len: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut rng = fastrand::Rng::with_seed(len);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        rng.fill(&mut buf);
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn write_sot(dir: &Path, p: &Prepare, hosts: &[Host], url: &str) -> Result<()> {
    let sot = dir.join("sot");
    for d in ["os", "boot", "workflows", "assets/untyped", "sites/storm"] {
        std::fs::create_dir_all(sot.join(d))?;
    }
    std::fs::write(
        sot.join("os/storm.yml"),
        "# What every machine of the storm boots: a kernel and an initrd\n\
         # whose init fetches its config and calls its checkpoint (the\n\
         # storm's machines do that themselves).\n\
         id: storm-linux\nname: Boot storm guest\nos_family: debian\nmajor_version: \"12\"\n\
         boot:\n  kernel: \"{{ urls.assets }}/vmlinuz\"\n  initrd:\n    - \"{{ urls.assets }}/initrd.img\"\n\
         cmdline:\n  - console: ttyS0\n  - quiet: \"\"\n  - vaquero.config: \"{{ urls.config }}\"\n",
    )?;
    std::fs::write(
        sot.join("boot/storm.yml"),
        "id: storm\noperating_system: storm-linux\nunattended:\n  type: untyped\n  use: report.sh\n",
    )?;
    std::fs::write(
        sot.join("assets/untyped/report.sh"),
        "HOST={{ host.name }}\nCHECKPOINT={{ urls.checkpoint }}\n",
    )?;
    std::fs::write(
        sot.join("workflows/storm.yml"),
        "id: storm\nstages:\n  - boot: storm\n",
    )?;
    std::fs::write(
        sot.join("sites/storm/env.yml"),
        format!(
            "id: storm\nagents:\n  - id: storm-agent\n    dhcp_mode: server\n    interfaces: [{iface}]\n\
             \x20   asset_server:\n      url: {url}\n      base_dir: {files}\n\
             subnets:\n  - id: prov\n    cidr: 10.0.0.0/16\n    gateway: {gw}\n    dns: [{gw}]\n    lease_time: 1h\n\
             policy:\n  force_provision: false\n  auto_apply: true\n",
            iface = p.interface,
            files = dir.join("files").display(),
            gw = p.server_ip,
        ),
    )?;
    for (chunk, group) in hosts.chunks(1000).enumerate() {
        let mut y = String::new();
        for h in group {
            let _ = write!(
                y,
                "---\nname: {}\nworkflow: storm\nuuid: {}\ninterfaces:\n  - type: physical\n    mac: \"{}\"\n    subnet: prov\n    ipv4: {}\n",
                h.name, h.uuid, h.mac, h.ip
            );
        }
        std::fs::write(sot.join(format!("sites/storm/hosts-{chunk:03}.yml")), y)?;
    }
    Ok(())
}

/// nginx's tree: the chain script Vaquero serves, and per host the
/// script and config Vaquero would render, pointing at nginx.
fn write_www(dir: &Path, hosts: &[Host], url: &str) -> Result<()> {
    let www = dir.join("www");
    std::fs::write(
        www.join("boot.ipxe"),
        vaquero_ipxe::chain_script(url)?.render(),
    )?;
    for h in hosts {
        let mac = h.mac_hyphens();
        let mut s = Script::new();
        s.retries(5);
        s.echo(&format!("{}: boot storm", h.name));
        s.kernel("kernel", &format!("{url}/files/vmlinuz"))?;
        s.initrd("initrd0", &format!("{url}/files/initrd.img"))?;
        s.imgargs(
            "kernel",
            &format!("initrd=initrd0 console=ttyS0 quiet vaquero.config={url}/config/{mac}"),
        )?;
        s.boot("kernel")?;
        std::fs::write(www.join(format!("hosts/{mac}.ipxe")), s.render())?;
        std::fs::write(
            www.join(format!("config/{mac}")),
            format!("HOST={}\nCHECKPOINT={url}/checkpoint/{mac}\n", h.name),
        )?;
    }
    Ok(())
}

fn nginx_conf(dir: &Path, p: &Prepare) -> String {
    let d = dir.display();
    format!(
        r#"# The peer's HTTP side: nginx's best case for a storm (sendfile, no
# access log), serving what Vaquero serves at the same URLs.
user root;
worker_processes auto;
worker_rlimit_nofile 200000;
pid {d}/nginx/nginx.pid;
error_log {d}/nginx/error.log warn;
events {{ worker_connections 65536; }}
http {{
  sendfile on;
  tcp_nopush on;
  access_log off;
  keepalive_requests 100000;
  default_type application/octet-stream;
  client_body_temp_path {d}/nginx/body;
  proxy_temp_path {d}/nginx/proxy;
  fastcgi_temp_path {d}/nginx/fastcgi;
  uwsgi_temp_path {d}/nginx/uwsgi;
  scgi_temp_path {d}/nginx/scgi;
  server {{
    listen {ip}:{port} backlog=65535;
    root {d}/www;
    location = /boot.ipxe {{ default_type text/plain; }}
    # The chain script asks for /ipxe?mac=…: the host's pre-rendered script.
    location = /ipxe {{ default_type text/plain; try_files /hosts/$arg_mac.ipxe =404; }}
    location /config/ {{ default_type text/plain; }}
    location /files/ {{ alias {d}/files/; }}
    location /checkpoint/ {{ return 200; }}
  }}
}}
"#,
        ip = p.server_ip,
        port = p.port,
    )
}
