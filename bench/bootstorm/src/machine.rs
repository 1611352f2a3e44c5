//! One machine's netboot, step by step as its firmware and iPXE go.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::dhcp::{Client, Dhcp};
use crate::ipxe::{self, Next, Settings};
use crate::tftp;

/// The steps of a boot, in order.
pub const PHASES: [&str; 9] = [
    "dhcp",
    "tftp",
    "ipxe-dhcp",
    "chain",
    "script",
    "kernel",
    "initrd",
    "config",
    "checkpoint",
];

/// A machine of the storm (a line of `machines.tsv`).
pub struct Machine {
    /// Host name.
    pub name: String,
    /// MAC, colon-separated.
    pub mac: String,
    /// Reserved address (what DHCP should lease).
    pub ip: Ipv4Addr,
    /// SMBIOS UUID.
    pub uuid: String,
    /// UEFI firmware.
    pub uefi: bool,
}

impl Machine {
    /// Parses `name mac ip uuid bios|efi` (tab-separated).
    pub fn parse(line: &str) -> Result<Machine> {
        let f: Vec<&str> = line.split('\t').collect();
        let [name, mac, ip, uuid, arch] = f[..] else {
            bail!("not `name mac ip uuid arch`: {line:?}");
        };
        Ok(Machine {
            name: name.to_owned(),
            mac: mac.to_owned(),
            ip: ip.parse()?,
            uuid: uuid.to_owned(),
            uefi: arch == "efi",
        })
    }
}

/// How one boot went.
pub struct Outcome {
    /// Time spent in each phase reached (seconds), in [`PHASES`] order.
    pub phases: Vec<f64>,
    /// From the first DISCOVER to the checkpoint's answer, when it booted.
    pub total: Option<f64>,
    /// Where and why it failed.
    pub failed: Option<(&'static str, String)>,
    /// Retransmissions and retried requests.
    pub retries: u32,
    /// Bytes received over TFTP and HTTP.
    pub bytes: u64,
    /// Why HTTP requests were retried (the phase, the error).
    pub retried: Vec<(&'static str, String)>,
}

/// Bounds on every wait: a machine that gets nothing gives up, as
/// firmware does, and the storm ends.
pub struct Limits {
    /// DHCP retransmission timeouts of the PXE ROM (4, 8, 16, 32 s by the
    /// PXE specification).
    pub rom_dhcp: Vec<Duration>,
    /// iPXE's DHCP timeouts.
    pub ipxe_dhcp: Vec<Duration>,
    /// One HTTP request, body included.
    pub http: Duration,
    /// Tries of each HTTP request (the scripts retry 5 times, 3 s apart).
    pub http_tries: u32,
}

struct Run<'a> {
    start: Instant,
    mark: Instant,
    phases: Vec<f64>,
    retries: u32,
    bytes: u64,
    retried: Vec<(&'static str, String)>,
    limits: &'a Limits,
}

impl Run<'_> {
    fn done(&mut self) {
        let now = Instant::now();
        self.phases.push((now - self.mark).as_secs_f64());
        self.mark = now;
    }

    fn phase(&self) -> &'static str {
        PHASES.get(self.phases.len()).copied().unwrap_or("?")
    }

    /// A DHCP exchange as the firmware (or, with `ipxe`, iPXE) makes it,
    /// which must lease the `reserved` address.
    async fn lease(
        &mut self,
        dhcp: &Dhcp,
        client: &Client,
        xid: u32,
        ipxe: bool,
        reserved: Ipv4Addr,
    ) -> Result<crate::dhcp::Lease> {
        let timeouts = if ipxe {
            &self.limits.ipxe_dhcp
        } else {
            &self.limits.rom_dhcp
        };
        let lease = dhcp.exchange(client, xid, ipxe, timeouts).await?;
        self.retries += lease.retries;
        if lease.yiaddr != reserved {
            bail!("leased {}, reserved {reserved}", lease.yiaddr);
        }
        Ok(lease)
    }

    /// GET (or POST `body`) with iPXE's retries; the body is counted and
    /// dropped, or returned as text when `text`.
    async fn http(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        body: Option<&'static str>,
        text: bool,
    ) -> Result<String> {
        let mut last = anyhow!("no try");
        for n in 0..self.limits.http_tries {
            if n > 0 {
                self.retries += 1;
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            let req = match body {
                Some(b) => client.post(url).body(b),
                None => client.get(url),
            };
            match fetch(req, text, self.limits.http).await {
                Ok((t, n)) => {
                    self.bytes += n;
                    return Ok(t);
                }
                Err(e) => {
                    let e = e.context(format!("{url} (try {})", n + 1));
                    self.retried.push((self.phase(), format!("{e:#}")));
                    last = e;
                }
            }
        }
        Err(last)
    }
}

async fn fetch(req: reqwest::RequestBuilder, text: bool, limit: Duration) -> Result<(String, u64)> {
    let go = async {
        let mut resp = req.send().await?;
        let status = resp.status();
        let expected = resp.content_length();
        let mut out = Vec::new();
        let mut n = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            n += chunk.len() as u64;
            if text {
                out.extend_from_slice(&chunk);
            }
        }
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&out).trim());
        }
        if let Some(e) = expected
            && e != n
        {
            bail!("{n} bytes of {e}");
        }
        Ok((String::from_utf8_lossy(&out).into_owned(), n))
    };
    tokio::time::timeout(limit, go)
        .await
        .map_err(|_| anyhow!("no complete answer in {} s", limit.as_secs()))?
}

/// Boots machine `m` (index `i`), starting now.
pub async fn boot(i: usize, m: Arc<Machine>, dhcp: Arc<Dhcp>, limits: Arc<Limits>) -> Outcome {
    let start = Instant::now();
    let mut run = Run {
        start,
        mark: start,
        phases: Vec::new(),
        retries: 0,
        bytes: 0,
        retried: Vec::new(),
        limits: &limits,
    };
    let res = steps(i, &m, &dhcp, &mut run).await;
    let failed = res
        .err()
        .map(|e| (run.phase(), format!("{}: {e:#}", m.name)));
    Outcome {
        total: failed
            .is_none()
            .then(|| (Instant::now() - run.start).as_secs_f64()),
        phases: run.phases,
        failed,
        retries: run.retries,
        bytes: run.bytes,
        retried: run.retried,
    }
}

async fn steps(i: usize, m: &Machine, dhcp: &Dhcp, run: &mut Run<'_>) -> Result<()> {
    let mac = m.mac.parse().map_err(|e| anyhow!("{e}"))?;
    let uuid = parse_uuid(&m.uuid)?;
    let client = Client {
        mac,
        uuid,
        uefi: m.uefi,
    };
    let xid = (i as u32) << 4;

    // 1. The firmware's DHCP: an address and the boot file.
    let lease = run.lease(dhcp, &client, xid | 1, false, m.ip).await?;
    let file = lease.file.context("no boot file")?;
    run.done();

    // 2. TFTP of iPXE, from the leased address.
    let window = m.uefi.then_some(4);
    let read = tftp::read(lease.yiaddr, lease.next_server, &file, 1468, window).await?;
    run.retries += read.retries;
    run.bytes += read.bytes;
    run.done();

    // 3. iPXE's own DHCP.
    let lease = run.lease(dhcp, &client, xid | 2, true, m.ip).await?;
    let url = lease.file.context("no boot URL for iPXE")?;
    if !url.starts_with("http://") {
        bail!("iPXE was given {url:?}, not an HTTP URL");
    }
    run.done();

    // 4. The chain script, then the host's script, from the leased address.
    let http = reqwest::Client::builder()
        .local_address(IpAddr::V4(lease.yiaddr))
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(1)
        .build()?;
    let settings = Settings {
        mac: &m.mac,
        uuid: &m.uuid,
        uefi: m.uefi,
    };
    let chain = run.http(&http, &url, None, true).await?;
    let Next::Chain(next) = ipxe::read(&chain, &settings) else {
        bail!("the boot script chains nowhere: {chain}");
    };
    run.done();
    let script = run.http(&http, &next, None, true).await?;
    let Next::Boot {
        kernel,
        initrds,
        cmdline,
    } = ipxe::read(&script, &settings)
    else {
        bail!("the host's script boots nothing: {script}");
    };
    run.done();

    // 5. The kernel, then the initrds.
    run.http(&http, &kernel, None, false).await?;
    run.done();
    for u in &initrds {
        run.http(&http, u, None, false).await?;
    }
    run.done();

    // 6. What the installer reads: its config, named on the command line.
    let config_url = ipxe::arg(&cmdline, "vaquero.config").context("no vaquero.config=")?;
    let config = run.http(&http, config_url, None, true).await?;
    let checkpoint = config
        .lines()
        .find_map(|l| l.strip_prefix("CHECKPOINT="))
        .context("the config names no CHECKPOINT=")?
        .trim()
        .to_owned();
    run.done();

    // 7. The checkpoint, as the installed system reports.
    run.http(&http, &checkpoint, Some("kernel bootstorm"), false)
        .await?;
    run.done();
    Ok(())
}

fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    if hex.len() != 32 {
        bail!("bad UUID {s}");
    }
    for (k, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * k..2 * k + 2], 16)?;
    }
    Ok(out)
}
