//! A user-defined power driver: a smart PDU with an HTTP API, plugged into
//! Vaquero's wrapper (serialization per PDU, retries, timeouts, metrics).
//!
//! `cargo run -p vaquero-lom --example custom_driver` starts a small PDU
//! emulator on 127.0.0.1 (so the example runs anywhere), then power-cycles
//! outlet 4 through the driver and prints what happened. Against a real
//! PDU only `PduDriver` is needed.
//!
//! The PDU's API (typical of switched PDUs):
//! `GET /outlets/{n}` → `{"state": "on"|"off"}`;
//! `POST /outlets/{n}` with `{"action": "on"|"off"|"reboot"}`;
//! `503` while the PDU is busy switching another outlet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use vaquero_lom::async_trait;
use vaquero_lom::{BootOverride, Lom, LomConfig, LomError, PowerAction, PowerDriver, PowerState};

/// One outlet of an HTTP-controlled PDU.
struct PduDriver {
    client: reqwest::Client,
    base: String,
    outlet: u8,
}

impl PduDriver {
    fn new(base: &str, outlet: u8) -> Self {
        PduDriver {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
            outlet,
        }
    }

    fn url(&self) -> String {
        format!("{}/outlets/{}", self.base, self.outlet)
    }

    /// Map transport and HTTP failures to what happened: Vaquero's wrapper
    /// retries Busy, Timeout and Unreachable, and reports the rest.
    fn error(e: reqwest::Error) -> LomError {
        if e.is_timeout() {
            LomError::Timeout(Duration::from_secs(5))
        } else if e.is_connect() {
            LomError::Unreachable(e.to_string())
        } else {
            LomError::Protocol(e.to_string())
        }
    }

    fn check(resp: reqwest::Response) -> Result<reqwest::Response, LomError> {
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::SERVICE_UNAVAILABLE => Err(LomError::Busy("PDU switching".into())),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(LomError::AuthFailed("PDU refused the credentials".into()))
            }
            s => Err(LomError::Protocol(format!("PDU answered {s}"))),
        }
    }
}

#[async_trait]
impl PowerDriver for PduDriver {
    fn kind(&self) -> &'static str {
        "pdu-http"
    }

    /// Every outlet of one PDU shares one target, so the wrapper sends one
    /// request at a time to the PDU.
    fn target(&self) -> String {
        self.base.clone()
    }

    async fn power_state(&self) -> Result<PowerState, LomError> {
        let resp = self
            .client
            .get(self.url())
            .send()
            .await
            .map_err(Self::error)?;
        let body: serde_json::Value = Self::check(resp)?.json().await.map_err(Self::error)?;
        Ok(match body["state"].as_str() {
            Some("on") => PowerState::On,
            Some("off") => PowerState::Off,
            _ => PowerState::Unknown,
        })
    }

    async fn power(&self, action: PowerAction) -> Result<(), LomError> {
        let verb = match action {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            // Removing power is a cycle and a reset both, for a PDU.
            PowerAction::Cycle | PowerAction::Reset => "reboot",
            PowerAction::SoftOff => {
                return Err(LomError::Unsupported(
                    "a PDU cannot ask the OS to shut down".into(),
                ));
            }
        };
        let resp = self
            .client
            .post(self.url())
            .json(&serde_json::json!({ "action": verb }))
            .send()
            .await
            .map_err(Self::error)?;
        Self::check(resp).map(drop)
    }

    async fn set_boot_device(&self, _boot: BootOverride) -> Result<(), LomError> {
        Err(LomError::Unsupported("a PDU has no boot device".into()))
    }
}

/// The emulated PDU: outlet states, and a busy answer on every third
/// switch request (as real PDUs give while relays settle).
#[derive(Clone, Default)]
struct Pdu {
    outlets: Arc<Mutex<HashMap<u8, bool>>>,
    requests: Arc<Mutex<u32>>,
}

async fn outlet_get(State(pdu): State<Pdu>, Path(n): Path<u8>) -> String {
    let on = pdu
        .outlets
        .lock()
        .map(|o| o.get(&n).copied().unwrap_or(false))
        .unwrap_or(false);
    serde_json::json!({ "state": if on { "on" } else { "off" } }).to_string()
}

async fn outlet_post(State(pdu): State<Pdu>, Path(n): Path<u8>, body: String) -> StatusCode {
    let Ok(mut count) = pdu.requests.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    *count += 1;
    if *count % 3 == 1 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let action: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let Ok(mut outlets) = pdu.outlets.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    match action["action"].as_str() {
        Some("on") | Some("reboot") => outlets.insert(n, true),
        Some("off") => outlets.insert(n, false),
        _ => return StatusCode::BAD_REQUEST,
    };
    StatusCode::NO_CONTENT
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/outlets/{n}", get(outlet_get).post(outlet_post))
        .with_state(Pdu::default());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = LomConfig::default();
    config.backoff = Duration::from_millis(100);
    let lom = Lom::new(config);
    let outlet = lom.manage(Arc::new(PduDriver::new(&base, 4)));

    println!("outlet 4 is {}", outlet.power_state().await?);
    // The PDU answers 503 to the first switch: the wrapper retries.
    outlet.power(PowerAction::Cycle).await?;
    println!("after a cycle, outlet 4 is {}", outlet.power_state().await?);
    match outlet.power(PowerAction::SoftOff).await {
        Err(e) => println!("soft off: {e}"),
        Ok(()) => println!("soft off: done"),
    }
    Ok(())
}
