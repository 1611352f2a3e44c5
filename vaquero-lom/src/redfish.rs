//! Redfish on `reqwest` (rustls).
//!
//! Each operation: the service root (no credentials needed) → a session
//! (`POST …/SessionService/Sessions`, then `X-Auth-Token`; HTTP basic
//! auth where the service has no session service) → the `Systems`
//! collection → the system → the request → the session deleted again,
//! also after an error. Resets use only the reset types the system
//! advertises (`ResetType@Redfish.AllowableValues`, or its `ActionInfo`);
//! boot overrides are a `PATCH` of `Boot` with the system's ETag in
//! `If-Match` when it has one (some BMCs require it). A `202 Accepted`
//! is followed to its task monitor until the task ends.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::driver::{
    BootDevice, BootMode, BootOverride, Inventory, LomError, PowerAction, PowerDriver, PowerState,
};

/// How to reach one Redfish service.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedfishConfig {
    /// Base URL, e.g. `https://10.0.0.5` or `http://127.0.0.1:8000`.
    pub base: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// The system to drive (its `Id` or `@odata.id`); default: the only
    /// member of `Systems` (the first, with a warning, if there are more).
    pub system: Option<String>,
    /// Accept any certificate (lab BMCs with self-signed certificates and
    /// no CA to trust). Prefer `ca_cert`.
    pub insecure_tls: bool,
    /// Trust only this CA certificate (PEM) for this BMC.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Bound on each HTTP request.
    pub timeout: Duration,
    /// Bound on following a task monitor after `202 Accepted`.
    pub task_timeout: Duration,
    /// Wait between two polls of a task monitor.
    pub task_poll: Duration,
}

impl std::fmt::Debug for RedfishConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishConfig")
            .field("base", &self.base)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("system", &self.system)
            .field("insecure_tls", &self.insecure_tls)
            .field("ca_cert", &self.ca_cert_pem.is_some())
            .field("timeout", &self.timeout)
            .field("task_timeout", &self.task_timeout)
            .finish()
    }
}

impl RedfishConfig {
    /// A configuration with the default bounds (10 s per request, 5 min
    /// per task, polled every 2 s).
    pub fn new(
        base: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        RedfishConfig {
            base: base.into(),
            username: username.into(),
            password: password.into(),
            system: None,
            insecure_tls: false,
            ca_cert_pem: None,
            timeout: Duration::from_secs(10),
            task_timeout: Duration::from_secs(300),
            task_poll: Duration::from_secs(2),
        }
    }
}

/// A [`PowerDriver`] for Redfish services.
#[derive(Debug, Clone)]
pub struct RedfishDriver {
    config: RedfishConfig,
    base: String,
    client: reqwest::Client,
}

enum Auth {
    Token {
        token: String,
        session: Option<String>,
    },
    Basic,
}

/// One logged-in conversation with the service.
struct Conn<'a> {
    d: &'a RedfishDriver,
    auth: Auth,
}

/// The reset types to try for an action, most fitting first.
fn reset_preferences(action: PowerAction) -> &'static [&'static str] {
    match action {
        PowerAction::On => &["On", "ForceOn"],
        PowerAction::Off => &["ForceOff"],
        PowerAction::SoftOff => &["GracefulShutdown"],
        PowerAction::Cycle => &["PowerCycle", "ForceRestart"],
        PowerAction::Reset => &["ForceRestart", "PowerCycle"],
    }
}

/// The reset type for `action` among those the system allows (`None`:
/// it did not say, so the first preference is sent).
pub fn choose_reset(action: PowerAction, allowed: Option<&[String]>) -> Result<String, LomError> {
    let prefs = reset_preferences(action);
    match allowed {
        None => Ok(prefs[0].to_owned()),
        Some(allowed) => prefs
            .iter()
            .find(|p| allowed.iter().any(|a| a == *p))
            .map(|p| (*p).to_owned())
            .ok_or_else(|| {
                LomError::Unsupported(format!(
                    "{action}: the system allows resets {allowed:?}, none of {prefs:?}"
                ))
            }),
    }
}

fn boot_target(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Pxe => "Pxe",
        BootDevice::Http => "UefiHttp",
        BootDevice::Disk => "Hdd",
        BootDevice::BiosSetup => "BiosSetup",
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    })
}

fn odata_id(v: &Value) -> Option<&str> {
    v.get("@odata.id").and_then(Value::as_str)
}

/// The message of a Redfish error body, or the start of the body.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        let e = v.get("error")?;
        e.get("@Message.ExtendedInfo")
            .and_then(|i| i.get(0))
            .and_then(|i| i.get("Message"))
            .or_else(|| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    from_json.unwrap_or_else(|| body.chars().take(200).collect())
}

fn status_error(what: &str, status: StatusCode, body: &str) -> LomError {
    let text = format!("{what}: HTTP {status}: {}", error_message(body));
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => LomError::AuthFailed(text),
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => LomError::Unsupported(text),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => LomError::Busy(text),
        _ => LomError::Protocol(text),
    }
}

impl RedfishDriver {
    /// A driver for the service `config` describes (the HTTP client is
    /// built here; nothing is sent yet).
    pub fn new(config: RedfishConfig) -> Result<Self, LomError> {
        let base = config.base.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(LomError::Config(format!(
                "a Redfish address is a base URL such as https://10.0.0.5, not {base:?}"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("vaquero-lom/", env!("CARGO_PKG_VERSION")));
        if config.insecure_tls {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        if let Some(pem) = &config.ca_cert_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| LomError::Config(format!("CA certificate: {e}")))?;
            builder = builder.tls_certs_only([cert]);
        }
        let client = builder
            .build()
            .map_err(|e| LomError::Config(format!("HTTP client: {e}")))?;
        Ok(RedfishDriver {
            config,
            base,
            client,
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    fn transport_error(&self, what: &str, e: &reqwest::Error) -> LomError {
        if e.is_timeout() {
            LomError::Timeout(self.config.timeout)
        } else if e.is_connect() {
            LomError::Unreachable(format!("{what}: {}: {e}", self.base))
        } else {
            LomError::Protocol(format!("{what}: {e}"))
        }
    }

    /// Log in: a session where the service has one, else basic auth.
    async fn login(&self) -> Result<Conn<'_>, LomError> {
        let root = Conn {
            d: self,
            auth: Auth::Basic,
        };
        let (service, _) = root.get_anonymous("/redfish/v1/").await?;
        let sessions = service
            .pointer("/Links/Sessions")
            .and_then(odata_id)
            .map(str::to_owned)
            .or_else(|| {
                service
                    .get("SessionService")
                    .map(|_| "/redfish/v1/SessionService/Sessions".to_owned())
            });
        let Some(sessions) = sessions else {
            return Ok(root);
        };
        let resp = self
            .client
            .post(self.url(&sessions))
            .json(&json!({"UserName": self.config.username, "Password": self.config.password}))
            .send()
            .await
            .map_err(|e| self.transport_error("login", &e))?;
        let status = resp.status();
        if matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
        ) {
            return Ok(root);
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(status_error("login", status, &body));
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let token = header("X-Auth-Token")
            .ok_or_else(|| LomError::Protocol("login: no X-Auth-Token in the reply".into()))?;
        let session = header("Location");
        Ok(Conn {
            d: self,
            auth: Auth::Token { token, session },
        })
    }

    /// Run `op` logged in; the session is deleted whatever `op` returns.
    async fn with_conn<T>(
        &self,
        op: impl AsyncFnOnce(&Conn<'_>) -> Result<T, LomError>,
    ) -> Result<T, LomError> {
        let conn = self.login().await?;
        let result = op(&conn).await;
        conn.logout().await;
        result
    }
}

impl Conn<'_> {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .d
            .client
            .request(method, self.d.url(path))
            .header("Accept", "application/json");
        match &self.auth {
            Auth::Token { token, .. } => rb.header("X-Auth-Token", token),
            Auth::Basic => rb.basic_auth(&self.d.config.username, Some(&self.d.config.password)),
        }
    }

    async fn send(
        &self,
        what: &str,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, LomError> {
        let resp = rb
            .send()
            .await
            .map_err(|e| self.d.transport_error(what, &e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            Err(status_error(what, status, &body))
        }
    }

    async fn json(
        &self,
        what: &str,
        resp: reqwest::Response,
    ) -> Result<(Value, Option<String>), LomError> {
        let etag = resp
            .headers()
            .get("ETag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let v: Value = resp
            .json()
            .await
            .map_err(|e| LomError::Protocol(format!("{what}: not JSON: {e}")))?;
        let etag = etag.or_else(|| {
            v.get("@odata.etag")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        Ok((v, etag))
    }

    async fn get_anonymous(&self, path: &str) -> Result<(Value, Option<String>), LomError> {
        let rb = self
            .d
            .client
            .get(self.d.url(path))
            .header("Accept", "application/json");
        let resp = self.send("service root", rb).await?;
        self.json("service root", resp).await
    }

    async fn get(&self, path: &str) -> Result<(Value, Option<String>), LomError> {
        let resp = self.send(path, self.request(Method::GET, path)).await?;
        self.json(path, resp).await
    }

    async fn logout(self) {
        if let Auth::Token {
            session: Some(session),
            ..
        } = &self.auth
        {
            let r = self.request(Method::DELETE, session).send().await;
            match r {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => tracing::warn!(status = %resp.status(), "Redfish logout refused"),
                Err(e) => tracing::warn!(error = %e, "Redfish logout failed"),
            }
        }
    }

    /// The system's path: the configured one, or the only member.
    async fn system_path(&self) -> Result<String, LomError> {
        let (root, _) = self.get("/redfish/v1/").await?;
        let systems = root
            .get("Systems")
            .and_then(odata_id)
            .ok_or_else(|| LomError::Unsupported("the service has no Systems".into()))?
            .to_owned();
        let (collection, _) = self.get(&systems).await?;
        let members: Vec<String> = collection
            .get("Members")
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(odata_id).map(str::to_owned).collect())
            .unwrap_or_default();
        match &self.d.config.system {
            Some(want) => members
                .iter()
                .find(|m| *m == want || m.trim_end_matches('/').rsplit('/').next() == Some(want))
                .cloned()
                .ok_or_else(|| LomError::Config(format!("no system {want:?} among {members:?}"))),
            None => {
                if members.len() > 1 {
                    tracing::warn!(?members, "several systems; driving the first");
                }
                members
                    .into_iter()
                    .next()
                    .ok_or_else(|| LomError::Protocol("the Systems collection is empty".into()))
            }
        }
    }

    /// Follow a `202 Accepted` to the end of its task.
    async fn finish(&self, what: &str, resp: reqwest::Response) -> Result<(), LomError> {
        if resp.status() != StatusCode::ACCEPTED {
            return Ok(());
        }
        let Some(monitor) = resp
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            // Accepted with nowhere to look: the BMC will do it.
            return Ok(());
        };
        let deadline = Instant::now() + self.d.config.task_timeout;
        loop {
            let resp = self.send(what, self.request(Method::GET, &monitor)).await?;
            if resp.status() != StatusCode::ACCEPTED {
                let body = resp.text().await.unwrap_or_default();
                let task: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                match task.get("TaskState").and_then(Value::as_str) {
                    None | Some("Completed") => return Ok(()),
                    Some("Exception" | "Killed" | "Cancelled" | "Interrupted") => {
                        let messages = task
                            .get("Messages")
                            .and_then(Value::as_array)
                            .map(|m| {
                                m.iter()
                                    .filter_map(|x| x.get("Message").and_then(Value::as_str))
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            })
                            .unwrap_or_default();
                        return Err(LomError::Protocol(format!(
                            "{what}: task {}: {messages}",
                            task["TaskState"]
                        )));
                    }
                    Some(_) => {} // New, Starting, Running, Pending, …
                }
            }
            if Instant::now() >= deadline {
                return Err(LomError::Timeout(self.d.config.task_timeout));
            }
            tokio::time::sleep(self.d.config.task_poll).await;
        }
    }

    async fn allowed_resets(&self, system: &Value) -> Result<Option<Vec<String>>, LomError> {
        let action = system.pointer("/Actions/#ComputerSystem.Reset");
        let Some(action) = action else {
            return Err(LomError::Unsupported(
                "the system has no ComputerSystem.Reset action".into(),
            ));
        };
        if let Some(v) = action.get("ResetType@Redfish.AllowableValues") {
            return Ok(strings(v));
        }
        if let Some(info) = action.get("@Redfish.ActionInfo").and_then(Value::as_str) {
            let (info, _) = self.get(info).await?;
            let values = info
                .get("Parameters")
                .and_then(Value::as_array)
                .and_then(|ps| {
                    ps.iter()
                        .find(|p| p.get("Name").and_then(Value::as_str) == Some("ResetType"))
                })
                .and_then(|p| p.get("AllowableValues"))
                .and_then(strings);
            return Ok(values);
        }
        Ok(None)
    }

    async fn reset(&self, action: PowerAction) -> Result<(), LomError> {
        let path = self.system_path().await?;
        let (system, _) = self.get(&path).await?;
        let state = parse_power(&system);
        // Cycling a machine that is off: power it on (Redfish BMCs refuse
        // or ignore a restart of a machine that is off).
        let action = if action == PowerAction::Cycle && state == PowerState::Off {
            PowerAction::On
        } else {
            action
        };
        let allowed = self.allowed_resets(&system).await?;
        let reset_type = choose_reset(action, allowed.as_deref())?;
        let target = system
            .pointer("/Actions/#ComputerSystem.Reset/target")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
        tracing::debug!(%reset_type, %target, "Redfish reset");
        let rb = self
            .request(Method::POST, &target)
            .json(&json!({ "ResetType": reset_type }));
        let resp = self.send("reset", rb).await?;
        self.finish("reset", resp).await
    }

    async fn set_boot(&self, boot: BootOverride) -> Result<(), LomError> {
        let path = self.system_path().await?;
        let (mut system, mut etag) = self.get(&path).await?;
        let target = boot_target(boot.device);
        let mode = match boot.mode {
            BootMode::Unchanged => None,
            BootMode::Uefi => Some("UEFI"),
            BootMode::Legacy => Some("Legacy"),
        };
        let allowed = |system: &Value| {
            system
                .pointer("/Boot/BootSourceOverrideTarget@Redfish.AllowableValues")
                .and_then(strings)
        };
        // Which targets a system allows can depend on its mode (UefiHttp
        // only in UEFI): switch the mode first when that is what is asked.
        if let (Some(list), Some(mode)) = (allowed(&system), mode)
            && !list.iter().any(|a| a == target)
            && system
                .pointer("/Boot/BootSourceOverrideMode")
                .and_then(Value::as_str)
                != Some(mode)
        {
            let boot = json!({ "BootSourceOverrideMode": mode });
            self.patch_boot("boot mode", &path, boot, etag.as_deref())
                .await?;
            (system, etag) = self.get(&path).await?;
        }
        if let Some(list) = allowed(&system)
            && !list.iter().any(|a| a == target)
        {
            return Err(LomError::Unsupported(format!(
                "boot from {target}: the system allows {list:?}"
            )));
        }
        let mut patch = json!({
            "BootSourceOverrideTarget": target,
            "BootSourceOverrideEnabled": if boot.persistent { "Continuous" } else { "Once" },
        });
        if let Some(mode) = mode {
            patch["BootSourceOverrideMode"] = json!(mode);
        }
        self.patch_boot("boot override", &path, patch, etag.as_deref())
            .await
    }

    /// PATCH the system's `Boot` with `boot`, with the system's ETag in
    /// `If-Match` when it has one, and follow a task if the BMC makes one.
    async fn patch_boot(
        &self,
        what: &str,
        path: &str,
        boot: Value,
        etag: Option<&str>,
    ) -> Result<(), LomError> {
        let mut rb = self
            .request(Method::PATCH, path)
            .json(&json!({ "Boot": boot }));
        if let Some(etag) = etag {
            rb = rb.header("If-Match", etag);
        }
        let resp = self.send(what, rb).await?;
        self.finish(what, resp).await
    }
}

fn parse_power(system: &Value) -> PowerState {
    match system.get("PowerState").and_then(Value::as_str) {
        Some("On") => PowerState::On,
        Some("Off") => PowerState::Off,
        _ => PowerState::Unknown,
    }
}

#[async_trait]
impl PowerDriver for RedfishDriver {
    fn kind(&self) -> &'static str {
        "redfish"
    }

    fn target(&self) -> String {
        self.base.clone()
    }

    async fn power_state(&self) -> Result<PowerState, LomError> {
        self.with_conn(async |c| {
            let path = c.system_path().await?;
            let (system, _) = c.get(&path).await?;
            Ok(parse_power(&system))
        })
        .await
    }

    async fn power(&self, action: PowerAction) -> Result<(), LomError> {
        self.with_conn(async |c| c.reset(action).await).await
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), LomError> {
        self.with_conn(async |c| c.set_boot(boot).await).await
    }

    async fn inventory(&self) -> Result<Inventory, LomError> {
        self.with_conn(async |c| {
            let path = c.system_path().await?;
            let (s, _) = c.get(&path).await?;
            let field = |k: &str| {
                s.get(k)
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            };
            Ok(Inventory {
                vendor: field("Manufacturer"),
                model: field("Model"),
                serial: field("SerialNumber"),
                uuid: field("UUID").map(|u| u.to_ascii_lowercase()),
            })
        })
        .await
    }
}

impl RedfishDriver {
    /// The system's boot override as the service reports it: target,
    /// enabled (`Once`, `Continuous`, `Disabled`) and mode.
    pub async fn boot_override(&self) -> Result<(String, String, String), LomError> {
        self.with_conn(async |c| {
            let path = c.system_path().await?;
            let (s, _) = c.get(&path).await?;
            let f = |k: &str| {
                s.pointer(&format!("/Boot/{k}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            Ok((
                f("BootSourceOverrideTarget"),
                f("BootSourceOverrideEnabled"),
                f("BootSourceOverrideMode"),
            ))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_types_follow_what_the_system_allows() {
        let sushy: Vec<String> = [
            "On",
            "ForceOff",
            "GracefulShutdown",
            "GracefulRestart",
            "ForceRestart",
            "Nmi",
            "ForceOn",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            choose_reset(PowerAction::Cycle, Some(&sushy)).unwrap(),
            "ForceRestart"
        );
        assert_eq!(
            choose_reset(PowerAction::Cycle, None).unwrap(),
            "PowerCycle"
        );
        assert_eq!(
            choose_reset(PowerAction::SoftOff, Some(&sushy)).unwrap(),
            "GracefulShutdown"
        );
        let only_on = vec!["On".to_owned()];
        assert!(matches!(
            choose_reset(PowerAction::Off, Some(&only_on)),
            Err(LomError::Unsupported(_))
        ));
    }

    #[test]
    fn errors_by_status() {
        let body = r#"{"error":{"@Message.ExtendedInfo":[{"Message":"bad reset"}]}}"#;
        let e = status_error("reset", StatusCode::BAD_REQUEST, body);
        assert!(
            matches!(&e, LomError::Protocol(m) if m.contains("bad reset")),
            "{e}"
        );
        assert_eq!(
            status_error("x", StatusCode::UNAUTHORIZED, "").label(),
            "auth"
        );
        assert!(status_error("x", StatusCode::SERVICE_UNAVAILABLE, "").is_transient());
    }
}
