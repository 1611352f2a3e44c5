//! A standalone whose machines are powered by a driver written here: a
//! "PDU" that switches each machine's outlet. This one keeps each
//! outlet's state in a file and logs every request, so it runs anywhere;
//! a real one would speak the PDU's protocol in the same two methods.
//!
//! The SoT names the driver on each host's BMC interface, with the
//! parameters the driver checks:
//!
//! ```yaml
//! bmc:
//!   type: custom
//!   driver: file-pdu
//!   params: {outlet: 3}
//! ```
//!
//! Run it on the SoT beside this file (its site has DHCP off, so it needs
//! no privileges; the boot service listens on 127.0.0.1:8080, the API on
//! 127.0.0.1:9090):
//!
//! ```sh
//! cargo run -p vaquero-engine --example custom_power -- \
//!     vaquero-engine/examples/custom-power-sot /tmp/pdu-data /tmp/pdu
//! cat /tmp/pdu/requests.log
//! ```
//!
//! A SoT that names a driver this program does not register, or an
//! outlet the driver refuses, is refused at start with every error at
//! file:line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vaquero_engine::Error;
use vaquero_engine::standalone::{Standalone, StandaloneConfig};
use vaquero_lom::{
    BootOverride, DriverFactory, LomError, PowerAction, PowerDriver, PowerState, async_trait,
    serde_json,
};
use vaquero_model::{Bmc, Host};

/// The name hosts give in `bmc.driver`.
pub const DRIVER: &str = "file-pdu";

/// The PDU: a directory with a state file per outlet and a request log.
pub struct FilePdu {
    /// Where the outlets' states and `requests.log` are.
    pub dir: PathBuf,
}

/// The outlet `params` name: a number from 1 to 48.
fn outlet(params: &serde_json::Map<String, serde_json::Value>) -> Result<u64, String> {
    match params.get("outlet").and_then(serde_json::Value::as_u64) {
        Some(n @ 1..=48) => Ok(n),
        Some(n) => Err(format!("outlet {n} does not exist (1 to 48)")),
        None => Err("`outlet` (a number from 1 to 48) is required".into()),
    }
}

impl DriverFactory for FilePdu {
    fn check(&self, params: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
        outlet(params).map(|_| ())
    }

    fn driver(&self, host: &Host, bmc: &Bmc) -> Result<Arc<dyn PowerDriver>, LomError> {
        Ok(Arc::new(Outlet {
            dir: self.dir.clone(),
            host: host.name.clone(),
            outlet: outlet(&bmc.params).map_err(LomError::Config)?,
        }))
    }
}

/// One machine's outlet.
struct Outlet {
    dir: PathBuf,
    host: String,
    outlet: u64,
}

impl Outlet {
    fn state_file(&self) -> PathBuf {
        self.dir.join(format!("outlet-{}", self.outlet))
    }

    /// Appends `what` to the request log: `HOST outlet N WHAT`.
    fn log(&self, what: &str) -> Result<(), LomError> {
        let line = format!("{} outlet {} {what}\n", self.host, self.outlet);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("requests.log"))
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| LomError::Config(format!("{}: {e}", self.dir.display())))
    }

    fn set(&self, on: bool) -> Result<(), LomError> {
        std::fs::write(self.state_file(), if on { "on\n" } else { "off\n" })
            .map_err(|e| LomError::Config(format!("{}: {e}", self.state_file().display())))
    }
}

#[async_trait]
impl PowerDriver for Outlet {
    fn kind(&self) -> &'static str {
        DRIVER
    }

    fn target(&self) -> String {
        // One PDU: operations on it are serialized, as on a real one.
        self.dir.display().to_string()
    }

    async fn power_state(&self) -> Result<PowerState, LomError> {
        Ok(match std::fs::read_to_string(self.state_file()) {
            Ok(s) if s.trim() == "on" => PowerState::On,
            _ => PowerState::Off,
        })
    }

    async fn power(&self, action: PowerAction) -> Result<(), LomError> {
        let name = match action {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::SoftOff => "soft-off",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
        };
        tracing::info!(host = %self.host, outlet = self.outlet, action = name, "file-pdu");
        self.log(name)?;
        // An outlet cannot ask an OS to shut down: a soft off cuts power.
        self.set(matches!(
            action,
            PowerAction::On | PowerAction::Cycle | PowerAction::Reset
        ))
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), LomError> {
        // A PDU cannot choose the boot device: the machines' firmware
        // boots from the network first. Logged, so it can be seen.
        self.log(&format!(
            "boot {} (left to the firmware)",
            boot.device.name()
        ))
    }
}

/// Runs a standalone on `config` with the PDU driver over `pdu`, until
/// `shutdown` completes.
pub async fn run(
    config: StandaloneConfig,
    pdu: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    std::fs::create_dir_all(pdu).map_err(|source| Error::Data {
        path: pdu.to_path_buf(),
        source,
    })?;
    Standalone::builder(config)
        .power_driver(
            DRIVER,
            FilePdu {
                dir: pdu.to_path_buf(),
            },
        )
        .build()?
        .run(shutdown)
        .await
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VAQUERO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [sot, data, pdu, rest @ ..] = args.as_slice() else {
        eprintln!("usage: custom_power SOT DATA_DIR PDU_DIR [API_ADDR]");
        return std::process::ExitCode::from(2);
    };
    let mut config = StandaloneConfig::new(sot.as_str());
    config.data = PathBuf::from(data);
    if let Some(api) = rest.first() {
        match api.parse() {
            Ok(a) => config.api = a,
            Err(e) => {
                eprintln!("API_ADDR {api}: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config, Path::new(pdu), async {
        let _ = tokio::signal::ctrl_c().await;
    }));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custom_power: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
