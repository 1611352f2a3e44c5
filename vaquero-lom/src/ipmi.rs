//! IPMI over LAN (RMCP+, "lanplus") on `ipmi-rs`.
//!
//! Every operation opens a session, raises it to Administrator (Set
//! Session Privilege Level: a session starts at User whatever maximum it
//! asked for, and Chassis Control needs Operator or more), runs its
//! commands and closes the session — also when a command failed, because
//! BMCs have few session slots (often 4 to 16) and a leaked session holds
//! one until the BMC's idle timeout. `ipmi-rs` is blocking: the session
//! runs on tokio's blocking pool.
//!
//! BMC networks drop datagrams. Each request that gets no answer is sent
//! again, identical, on a growing schedule (see the `relay` module), and exactly one
//! answer reaches the session. Chassis Control is the exception: a BMC
//! runs a repeated one again, so it is sent once, and when its answer is
//! lost the session reads the power state to learn whether it was applied
//! before it sends another. A power cycle of a machine that is on is done
//! as off, then on, each confirmed, so no loss can cycle a machine twice.
//!
//! Commands used (IPMI 2.0): Get Session Info (App 0x3D), Set Session
//! Privilege Level (App 0x3B), Close Session (App 0x3C), Get Device ID
//! (App 0x01), Get System GUID (App 0x37), Get Chassis Status (Chassis
//! 0x01), Chassis Control (Chassis 0x02), Set / Get System Boot Options
//! (Chassis 0x08 / 0x09, parameter 5: boot flags).

mod relay;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use ipmi_rs::connection::{
    IpmiConnection, LogicalUnit, Message, NetFn, Request, RequestTargetAddress,
};
use ipmi_rs::rmcp::{
    ActivationError, RakpMessage2ErrorStatusCode, RakpMessage2ParseError, Rmcp, RmcpIpmiError,
    RmcpIpmiReceiveError, RmcpIpmiSendError, V2_0ActivationError, V2_0WriteError,
};

use crate::driver::{
    BootDevice, BootMode, BootOverride, Inventory, LomError, PowerAction, PowerDriver, PowerState,
};

/// The default RMCP port.
pub const IPMI_PORT: u16 = 623;

/// How to reach one BMC over IPMI.
#[derive(Clone)]
#[non_exhaustive]
pub struct IpmiConfig {
    /// Host name or address of the BMC.
    pub address: String,
    /// UDP port (623).
    pub port: u16,
    /// User name.
    pub username: String,
    /// Password (at most 20 bytes for IPMI 2.0).
    pub password: String,
    /// How long to wait for the answer to a request before it is sent
    /// again; each further copy waits once more as long (1 s, 2 s, 3 s…).
    pub retransmit: Duration,
    /// Copies of each request, the first included. With the defaults (1 s,
    /// 4 copies) one request gives up after 10 s.
    pub tries: u32,
}

impl IpmiConfig {
    /// A BMC at `address`, port 623, with the default schedule (1 s, 4
    /// copies: what ipmitool does on `lanplus`).
    pub fn new(address: &str, username: &str, password: &str) -> IpmiConfig {
        IpmiConfig {
            address: address.to_owned(),
            port: IPMI_PORT,
            username: username.to_owned(),
            password: password.to_owned(),
            retransmit: DEFAULT_RETRANSMIT,
            tries: DEFAULT_TRIES,
        }
    }

    fn schedule(&self) -> relay::Schedule {
        relay::Schedule {
            first: self.retransmit,
            tries: self.tries.max(1),
        }
    }
}

/// The default wait for the first copy of a request.
pub const DEFAULT_RETRANSMIT: Duration = Duration::from_secs(1);
/// The default number of copies of a request.
pub const DEFAULT_TRIES: u32 = 4;

impl std::fmt::Debug for IpmiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiConfig")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("retransmit", &self.retransmit)
            .field("tries", &self.tries)
            .finish()
    }
}

/// A [`PowerDriver`] for IPMI BMCs.
#[derive(Debug, Clone)]
pub struct IpmiDriver {
    config: IpmiConfig,
}

impl IpmiDriver {
    /// A driver for the BMC `config` describes. Nothing is sent until an
    /// operation is called.
    pub fn new(config: IpmiConfig) -> Self {
        IpmiDriver { config }
    }

    /// Run `f` in a fresh Administrator session on the blocking pool; the
    /// session is closed whatever `f` returns.
    async fn with_session<T, F>(&self, f: F) -> Result<T, LomError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Session) -> Result<T, LomError> + Send + 'static,
    {
        let config = self.config.clone();
        let bmc = resolve(&config).await?;
        let relay = relay::Relay::start(bmc, config.schedule(), config.password.as_bytes())
            .await
            .map_err(|e| LomError::Protocol(format!("IPMI relay socket: {e}")))?;
        let (addr, shared) = (relay.addr, relay.shared.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut session = Session::open(&config, addr, shared)?;
            let result = f(&mut session);
            session.close();
            result
        })
        .await
        .map_err(|e| LomError::Protocol(format!("IPMI worker thread failed: {e}")))?
        .map_err(|e| {
            if relay.shared.refused.load(Ordering::Acquire) {
                LomError::Unreachable(format!("{bmc}: connection refused"))
            } else {
                e
            }
        });
        let (resent, dropped) = (
            relay.shared.resent.load(Ordering::Relaxed),
            relay.shared.dropped.load(Ordering::Relaxed),
        );
        if resent > 0 {
            metrics::counter!("vaquero_lom_ipmi_retransmits_total").increment(resent);
        }
        if resent > 0 || dropped > 0 {
            tracing::debug!(
                resent,
                dropped,
                "IPMI session: copies sent again, replies dropped"
            );
        }
        relay.finish();
        result
    }
}

/// The BMC's socket address (a name is resolved off the runtime).
async fn resolve(config: &IpmiConfig) -> Result<SocketAddr, LomError> {
    let target = (config.address.clone(), config.port);
    let name = config.address.clone();
    tokio::task::spawn_blocking(move || target.to_socket_addrs().map(|mut a| a.next()))
        .await
        .map_err(|e| LomError::Protocol(format!("IPMI resolver thread failed: {e}")))?
        .map_err(|e| LomError::Unreachable(format!("{name}: {e}")))?
        .ok_or_else(|| LomError::Unreachable(format!("{name}: no address")))
}

/// Chassis Control command bytes.
fn control_byte(action: PowerAction) -> u8 {
    match action {
        PowerAction::Off => 0x00,
        PowerAction::On => 0x01,
        PowerAction::Cycle => 0x02,
        PowerAction::Reset => 0x03,
        PowerAction::SoftOff => 0x05,
    }
}

/// Boot flags (parameter 5) for an override: byte 1 = valid, persistent,
/// EFI; byte 2 = the device selector.
pub fn boot_flags(boot: BootOverride) -> Result<[u8; 5], LomError> {
    let device = match boot.device {
        BootDevice::Pxe => 0x04,
        BootDevice::Disk => 0x08,
        BootDevice::BiosSetup => 0x18,
        BootDevice::Http => {
            return Err(LomError::Unsupported(
                "IPMI has no HTTP boot device; use pxe".into(),
            ));
        }
    };
    let mut b1 = 0x80;
    if boot.persistent {
        b1 |= 0x40;
    }
    if boot.mode == BootMode::Uefi {
        b1 |= 0x20;
    }
    Ok([b1, device, 0, 0, 0])
}

/// The override that boot flags (parameter 5, data bytes 1–5) describe,
/// if they are valid and name a device this crate knows.
pub fn parse_boot_flags(flags: &[u8]) -> Option<BootOverride> {
    let (&b1, &b2) = (flags.first()?, flags.get(1)?);
    if b1 & 0x80 == 0 {
        return None;
    }
    let device = match (b2 >> 2) & 0x0f {
        0x1 => BootDevice::Pxe,
        0x2 => BootDevice::Disk,
        0x6 => BootDevice::BiosSetup,
        _ => return None,
    };
    Some(BootOverride {
        device,
        persistent: b1 & 0x40 != 0,
        mode: if b1 & 0x20 != 0 {
            BootMode::Uefi
        } else {
            BootMode::Legacy
        },
    })
}

fn io_error(e: &io::Error, timeout: Duration) -> LomError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => LomError::Timeout(timeout),
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable
        | io::ErrorKind::AddrNotAvailable
        | io::ErrorKind::NotFound => LomError::Unreachable(e.to_string()),
        _ => LomError::Protocol(format!("socket: {e}")),
    }
}

fn receive_error(e: &RmcpIpmiReceiveError, timeout: Duration) -> LomError {
    match e {
        RmcpIpmiReceiveError::Io(e) => io_error(e, timeout),
        other => LomError::Protocol(format!("bad reply: {other:?}")),
    }
}

fn connection_error(e: &RmcpIpmiError, timeout: Duration) -> LomError {
    match e {
        RmcpIpmiError::Receive(r) => receive_error(r, timeout),
        RmcpIpmiError::Send(RmcpIpmiSendError::V2_0(V2_0WriteError::Io(e))) => io_error(e, timeout),
        other => LomError::Protocol(format!("{other:?}")),
    }
}

fn activation_error(e: &ActivationError, timeout: Duration) -> LomError {
    use V2_0ActivationError as V2;
    match e {
        ActivationError::BindSocket(e)
        | ActivationError::PingSend(e)
        | ActivationError::PongReceive(e) => io_error(e, timeout),
        ActivationError::GetChannelAuthenticationCapabilities(ipmi_rs::IpmiError::Connection(
            c,
        )) => connection_error(c, timeout),
        ActivationError::IpmiNotSupported | ActivationError::NoSupportedIpmiLANVersions => {
            LomError::Unsupported(format!("RMCP+ session: {e:?}"))
        }
        ActivationError::V2_0(v2) => match v2 {
            V2::Io(e) => io_error(e, timeout),
            V2::OpenSessionResponseReceive(r)
            | V2::RakpMessage2Receive(r)
            | V2::RakpMessage4Receive(r) => receive_error(r, timeout),
            V2::RakpMessage2Parse(RakpMessage2ParseError::ErrorStatusCode(
                RakpMessage2ErrorStatusCode::InsufficientResourcesToCreateSessionAtRequestedRole,
            )) => LomError::Busy("no free session slot".into()),
            V2::RakpMessage2Parse(_)
            | V2::RakpMessage4Parse(_)
            | V2::ServerAuthenticationFailed
            | V2::RakpMessage4InvalidIntegrityCheckValue => {
                LomError::AuthFailed(format!("RAKP: {v2:?}"))
            }
            other => LomError::Protocol(format!("session setup: {other:?}")),
        },
        other => LomError::Protocol(format!("session setup: {other:?}")),
    }
}

/// What a non-zero completion code means for the caller.
fn completion_error(what: &str, cc: u8) -> LomError {
    let text = format!("{what}: completion code 0x{cc:02X}");
    match cc {
        // Node busy, out of space, command timeout, resources exhausted.
        0xC0 | 0xC4 | 0xC3 | 0xCE => LomError::Busy(text),
        // Insufficient privilege.
        0xD4 => LomError::AuthFailed(text),
        // Invalid command, not supported in this state, parameter not
        // supported, illegal or unsupported data.
        0xC1 | 0xC2 | 0xC9 | 0xCC | 0xD5 | 0xD6 | 0x80 => LomError::Unsupported(text),
        _ => LomError::Protocol(text),
    }
}

/// One RMCP+ session; closed by [`Session::close`].
pub(crate) struct Session {
    rmcp: Rmcp,
    id: Option<u32>,
    handle: Option<u8>,
    /// The longest one request may take, every copy included.
    timeout: Duration,
    /// Chassis Controls to send before giving up on reaching a state.
    tries: u32,
    relay: Arc<relay::Shared>,
}

impl Session {
    /// A session through the relay at `relay_addr`.
    fn open(
        config: &IpmiConfig,
        relay_addr: SocketAddr,
        relay: Arc<relay::Shared>,
    ) -> Result<Session, LomError> {
        // The relay sends copies and ends each wait when the last copy's
        // time is up; ipmi-rs's own timeout is only a safety net.
        let timeout = config.schedule().total();
        let mut rmcp = Rmcp::new(relay_addr, timeout + Duration::from_secs(5))
            .map_err(|e| LomError::Unreachable(format!("{}: {e}", config.address)))?;
        rmcp.activate(
            true,
            Some(&config.username),
            Some(config.password.as_bytes()),
        )
        .map_err(|e| {
            if relay.gave_up.swap(false, Ordering::AcqRel) {
                LomError::Timeout(timeout)
            } else {
                activation_error(&e, timeout)
            }
        })?;
        let mut session = Session {
            id: session_id(&rmcp),
            rmcp,
            handle: None,
            timeout,
            tries: config.tries.max(1),
            relay,
        };
        // The session exists on the BMC from here on: every path closes it.
        match session.raise_privilege() {
            Ok(()) => Ok(session),
            Err(e) => {
                session.close();
                Err(e)
            }
        }
    }

    fn raise_privilege(&mut self) -> Result<(), LomError> {
        // Get Session Info for this session (index 0): byte 1 is its handle,
        // which Close Session needs (ipmi-rs keeps the session id private).
        let info = self.command("Get Session Info", NetFn::App, 0x3D, vec![0x00])?;
        self.handle = info.first().copied().filter(|&h| h != 0);
        // Set Session Privilege Level: 4 = Administrator.
        let granted = self.command("Set Session Privilege Level", NetFn::App, 0x3B, vec![0x04])?;
        match granted.first() {
            Some(l) if l & 0x0f >= 0x04 => Ok(()),
            other => Err(LomError::AuthFailed(format!(
                "the BMC granted privilege {other:?}, not Administrator"
            ))),
        }
    }

    /// Send one command and return the response data after a zero
    /// completion code.
    fn command(
        &mut self,
        what: &str,
        netfn: NetFn,
        cmd: u8,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, LomError> {
        let mut request = Request::new(
            Message::new_request(netfn, cmd, data),
            RequestTargetAddress::Bmc(LogicalUnit::Zero),
        );
        let response = self.rmcp.send_recv(&mut request).map_err(|e| {
            if self.relay.gave_up.swap(false, Ordering::AcqRel) {
                LomError::Timeout(self.timeout)
            } else {
                connection_error(&e, self.timeout)
            }
        })?;
        if response.cmd() != cmd {
            return Err(LomError::Protocol(format!(
                "{what}: reply to command 0x{:02X}",
                response.cmd()
            )));
        }
        match response.cc() {
            0 => Ok(response.data().to_vec()),
            cc => Err(completion_error(what, cc)),
        }
    }

    /// Close Session (App 0x3C). The request names the BMC's session id;
    /// where that is unknown, id 0 and the session handle (IPMI 2.0
    /// §22.19), which not every BMC takes (`ipmi_sim` answers 0x87).
    /// Errors are logged, not returned: the operation's own result is what
    /// the caller needs, and a BMC that misses the close times the session
    /// out itself.
    fn close(&mut self) {
        let data = match (self.id.take(), self.handle.take()) {
            (Some(id), _) => id.to_le_bytes().to_vec(),
            (None, Some(handle)) => vec![0, 0, 0, 0, handle],
            (None, None) => {
                tracing::debug!("IPMI session id unknown; the BMC will time the session out");
                return;
            }
        };
        self.relay.set_mode(relay::Mode::Brief);
        if let Err(e) = self.command("Close Session", NetFn::App, 0x3C, data) {
            tracing::debug!(error = %e, "closing the IPMI session failed");
        }
    }

    fn power_state(&mut self) -> Result<PowerState, LomError> {
        let status = self.command("Get Chassis Status", NetFn::Chassis, 0x01, vec![])?;
        match status.first() {
            Some(b) if b & 0x01 != 0 => Ok(PowerState::On),
            Some(_) => Ok(PowerState::Off),
            None => Err(LomError::Protocol("empty chassis status".into())),
        }
    }

    /// Chassis Control, sent once: a BMC runs a repeated one again.
    fn control_once(&mut self, action: PowerAction) -> Result<(), LomError> {
        self.relay.set_mode(relay::Mode::Once);
        let sent = self.command(
            "Chassis Control",
            NetFn::Chassis,
            0x02,
            vec![control_byte(action)],
        );
        // Cleared also where the request never left.
        self.relay.set_mode(relay::Mode::Resend);
        sent.map(drop)
    }

    fn control(&mut self, action: PowerAction) -> Result<(), LomError> {
        match action {
            PowerAction::On => self.reach(PowerState::On, None),
            PowerAction::Off => self.reach(PowerState::Off, None),
            PowerAction::Cycle => {
                // Off, then on, each confirmed; a machine that is off is
                // only powered on (a cycle of an off machine does nothing,
                // or fails with 0xD5, on most BMCs).
                if self.power_state()? == PowerState::On {
                    self.reach(PowerState::Off, Some(PowerState::On))?;
                    // Chassis Control's own power cycle keeps the machine
                    // off for at least a second too.
                    std::thread::sleep(Duration::from_secs(1));
                }
                self.reach(PowerState::On, Some(PowerState::Off))
            }
            // Neither can be confirmed from the power state: an unanswered
            // one is reported, not repeated.
            PowerAction::Reset | PowerAction::SoftOff => match self.control_once(action) {
                Err(LomError::Timeout(t)) => Err(LomError::Protocol(format!(
                    "Chassis Control ({}) got no answer in {t:?}: whether the BMC \
                     applied it is unknown, so it is not sent again",
                    action.name()
                ))),
                other => other,
            },
        }
    }

    /// Chassis Control until the power state is `target`. `now` is the
    /// state, where it is known. A control whose answer is lost is not
    /// sent again before the state has been read: only a control that did
    /// not take effect is repeated.
    fn reach(&mut self, target: PowerState, now: Option<PowerState>) -> Result<(), LomError> {
        let mut state = match now {
            Some(s) => s,
            None => self.power_state()?,
        };
        let action = match target {
            PowerState::On => PowerAction::On,
            _ => PowerAction::Off,
        };
        let mut sent = 0;
        while state != target {
            if sent == self.tries {
                return Err(LomError::Timeout(self.timeout));
            }
            sent += 1;
            match self.control_once(action) {
                Ok(()) => return Ok(()),
                Err(LomError::Timeout(_)) => {
                    tracing::debug!(
                        action = action.name(),
                        "no answer to Chassis Control; reading the power state"
                    );
                    state = self.power_state()?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn set_boot(&mut self, boot: BootOverride) -> Result<(), LomError> {
        let flags = boot_flags(boot)?;
        // Parameter 0 "set in progress" brackets the change where the BMC
        // has it; a BMC without it (0x80) is fine.
        let in_progress = |s: &mut Session, v: u8| match s.command(
            "Set System Boot Options (set in progress)",
            NetFn::Chassis,
            0x08,
            vec![0x00, v],
        ) {
            Err(LomError::Unsupported(_)) => Ok(()),
            other => other.map(drop),
        };
        in_progress(self, 0x01)?;
        let mut data = vec![0x05];
        data.extend_from_slice(&flags);
        let set = self.command("Set System Boot Options", NetFn::Chassis, 0x08, data);
        let done = in_progress(self, 0x00);
        set?;
        done
    }

    fn get_boot(&mut self) -> Result<Option<BootOverride>, LomError> {
        let data = self.command(
            "Get System Boot Options",
            NetFn::Chassis,
            0x09,
            vec![0x05, 0x00, 0x00],
        )?;
        // Byte 1: parameter version, byte 2: parameter selector, then data.
        Ok(data.get(2..).and_then(parse_boot_flags))
    }

    fn inventory(&mut self) -> Result<Inventory, LomError> {
        let id = self.command("Get Device ID", NetFn::App, 0x01, vec![])?;
        let mut inv = Inventory::default();
        if id.len() >= 11 {
            let mfg = u32::from_le_bytes([id[6], id[7], id[8] & 0x0f, 0]);
            let product = u16::from_le_bytes([id[9], id[10]]);
            inv.vendor = Some(format!("IANA {mfg}"));
            inv.model = Some(format!("product 0x{product:04x}"));
        }
        match self.command("Get System GUID", NetFn::App, 0x37, vec![]) {
            Ok(g) if g.len() == 16 => inv.uuid = Some(smbios_uuid(&g)),
            Ok(_) | Err(LomError::Unsupported(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(inv)
    }
}

/// The BMC's id of the session `rmcp` holds.
///
/// `ipmi-rs` 0.6 keeps it private and has no Close Session of its own, so
/// it is read from the connection's `Debug` form (`session_id: N`), which
/// `Cargo.lock` pins; the ipmi_sim test fails if an upgrade changes it.
fn session_id(rmcp: &Rmcp) -> Option<u32> {
    let text = format!("{rmcp:?}");
    let at = text.find("session_id: ")? + "session_id: ".len();
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
        .filter(|&id| id != 0)
}

/// An IPMI GUID (SMBIOS byte order, as BMCs send it: the first three
/// fields little-endian) as a lower-case hyphenated UUID.
fn smbios_uuid(g: &[u8]) -> String {
    // IPMI sends the GUID least significant byte first; reversed, it reads
    // as the SMBIOS UUID string.
    let mut b: Vec<u8> = g.to_vec();
    b.reverse();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[async_trait]
impl PowerDriver for IpmiDriver {
    fn kind(&self) -> &'static str {
        "ipmi"
    }

    fn target(&self) -> String {
        format!("{}:{}", self.config.address, self.config.port)
    }

    async fn power_state(&self) -> Result<PowerState, LomError> {
        self.with_session(Session::power_state).await
    }

    async fn power(&self, action: PowerAction) -> Result<(), LomError> {
        self.with_session(move |s| s.control(action)).await
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), LomError> {
        boot_flags(boot)?;
        self.with_session(move |s| s.set_boot(boot)).await
    }

    async fn inventory(&self) -> Result<Inventory, LomError> {
        self.with_session(Session::inventory).await
    }
}

impl IpmiDriver {
    /// The boot override the BMC holds now (parameter 5), if valid.
    pub async fn boot_device(&self) -> Result<Option<BootOverride>, LomError> {
        self.with_session(Session::get_boot).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_flags_round_trip() {
        for device in [BootDevice::Pxe, BootDevice::Disk, BootDevice::BiosSetup] {
            for persistent in [false, true] {
                for mode in [BootMode::Uefi, BootMode::Legacy] {
                    let o = BootOverride {
                        device,
                        persistent,
                        mode,
                    };
                    let flags = boot_flags(o).unwrap();
                    assert_eq!(parse_boot_flags(&flags), Some(o));
                }
            }
        }
        assert!(matches!(
            boot_flags(BootOverride::once(BootDevice::Http)),
            Err(LomError::Unsupported(_))
        ));
        assert_eq!(
            boot_flags(BootOverride::once(BootDevice::Pxe)).unwrap(),
            [0x80, 0x04, 0, 0, 0]
        );
        assert_eq!(parse_boot_flags(&[0x00, 0x04, 0, 0, 0]), None);
    }

    #[test]
    fn completion_codes() {
        assert!(completion_error("x", 0xC0).is_transient());
        assert_eq!(completion_error("x", 0xD4).label(), "auth");
        assert_eq!(completion_error("x", 0xC1).label(), "unsupported");
        assert_eq!(completion_error("x", 0xFF).label(), "protocol");
    }

    #[test]
    fn guid_reads_as_uuid() {
        let g: Vec<u8> = (0u8..16).collect();
        assert_eq!(smbios_uuid(&g), "0f0e0d0c-0b0a-0908-0706-050403020100");
    }
}
