//! The Redfish driver against `sushy-emulator --fake` (PyPI sushy-tools,
//! in the venv `scripts/setup` makes), with HTTP basic auth from an
//! htpasswd file — sushy has no session service, so this is the driver's
//! basic-auth fallback. Session auth and a `202 Accepted` task are tested
//! through a thin front the test puts before sushy: it adds a session
//! service (as iDRAC, iLO and OpenBMC have) and answers resets the way
//! asynchronous BMCs do, while sushy still carries them out.
#![allow(clippy::unwrap_used)]

use vaquero_test_support as common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use vaquero_lom::{
    BootDevice, BootMode, BootOverride, LomError, PowerAction, PowerDriver, PowerState,
    RedfishConfig, RedfishDriver,
};

const USER: &str = "admin";
const PASSWORD: &str = "redfish-pw";

fn venv() -> PathBuf {
    std::env::var_os("VAQUERO_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/peers-venv"))
}

/// A sushy-emulator process; killed by PID on drop.
struct Sushy {
    _peer: common::Peer,
    _dir: tempfile::TempDir,
    base: String,
}

impl Sushy {
    fn start() -> Sushy {
        let venv = venv();
        let python = venv.join("bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/setup (it makes the sushy-tools venv)",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let hash = Command::new(&python)
            .args([
                "-c",
                "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
                PASSWORD,
            ])
            .output()
            .unwrap();
        assert!(hash.status.success());
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(
            &htpasswd,
            format!("{USER}:{}", String::from_utf8_lossy(&hash.stdout)),
        )
        .unwrap();
        let conf = dir.path().join("emulator.conf");
        std::fs::write(
            &conf,
            format!(
                "SUSHY_EMULATOR_AUTH_FILE = {:?}\n",
                htpasswd.display().to_string()
            ),
        )
        .unwrap();
        let port = common::free_tcp_port();
        let child = Command::new(venv.join("bin/sushy-emulator"))
            .args([
                "--fake",
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--config",
            ])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sushy = Sushy {
            _peer: common::Peer(child),
            _dir: dir,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sushy-emulator did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sushy
    }
}

fn config(base: &str, password: &str) -> RedfishConfig {
    let mut c = RedfishConfig::new(base, USER, password);
    c.task_poll = Duration::from_millis(100);
    c.task_timeout = Duration::from_secs(20);
    c
}

/// Poll until the system reports `want` (sushy's fake driver applies power
/// changes 1–11 s after the request).
async fn wait_for(d: &RedfishDriver, want: PowerState) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = d.power_state().await.unwrap();
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {now} after 30 s, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_boot_override_against_sushy() {
    let sushy = Sushy::start();
    let d = RedfishDriver::new(config(&sushy.base, PASSWORD)).unwrap();

    let inv = d.inventory().await.unwrap();
    assert_eq!(inv.vendor.as_deref(), Some("Sushy Emulator"));
    assert!(inv.uuid.is_some());

    // The fake system starts off.
    wait_for(&d, PowerState::Off).await;
    d.power(PowerAction::On).await.unwrap();
    wait_for(&d, PowerState::On).await;
    d.power(PowerAction::SoftOff).await.unwrap();
    wait_for(&d, PowerState::Off).await;
    // A cycle of a machine that is off powers it on.
    d.power(PowerAction::Cycle).await.unwrap();
    wait_for(&d, PowerState::On).await;
    // Cycle (no PowerCycle advertised: ForceRestart) and Reset of a running
    // machine: sushy shows it off, then on again.
    d.power(PowerAction::Cycle).await.unwrap();
    wait_for(&d, PowerState::On).await;
    d.power(PowerAction::Reset).await.unwrap();
    wait_for(&d, PowerState::On).await;
    d.power(PowerAction::Off).await.unwrap();
    wait_for(&d, PowerState::Off).await;

    // Boot override read back. sushy stores target and mode but always
    // reads `BootSourceOverrideEnabled` back as Continuous.
    d.set_boot_device(BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Legacy,
    })
    .await
    .unwrap();
    let (target, _enabled, mode) = d.boot_override().await.unwrap();
    assert_eq!((target.as_str(), mode.as_str()), ("Pxe", "Legacy"));
    d.set_boot_device(BootOverride {
        device: BootDevice::Http,
        persistent: true,
        mode: BootMode::Uefi,
    })
    .await
    .unwrap();
    // UefiHttp is allowed only in UEFI mode: the driver switched the mode
    // from Legacy first. sushy records UefiHttp without an HttpBootUri as
    // Pxe (its fake driver cannot boot from a URL the DHCP server gives).
    let (target, enabled, mode) = d.boot_override().await.unwrap();
    assert_eq!(
        (target.as_str(), enabled.as_str(), mode.as_str()),
        ("Pxe", "Continuous", "UEFI")
    );
    // BiosSetup is not among the targets the system allows: refused
    // before anything is sent.
    assert!(matches!(
        d.set_boot_device(BootOverride::once(BootDevice::BiosSetup))
            .await,
        Err(LomError::Unsupported(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_closed_port_and_stalled_service() {
    let sushy = Sushy::start();
    let wrong = RedfishDriver::new(config(&sushy.base, "nope")).unwrap();
    match wrong.power_state().await {
        Err(LomError::AuthFailed(_)) => {}
        other => panic!("wrong password must be AuthFailed, got {other:?}"),
    }

    let closed = RedfishDriver::new(config(
        &format!("http://127.0.0.1:{}", common::free_tcp_port()),
        PASSWORD,
    ))
    .unwrap();
    assert!(matches!(
        closed.power_state().await,
        Err(LomError::Unreachable(_))
    ));

    // Accepts connections, never answers.
    let stall = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", stall.local_addr().unwrap());
    let stalled = RedfishDriver::new({
        let mut c = config(&base, PASSWORD);
        c.timeout = Duration::from_secs(2);
        c
    })
    .unwrap();
    let started = Instant::now();
    match stalled.power_state().await {
        Err(LomError::Timeout(_)) => {}
        other => panic!("a stalled service must be Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(6));
    drop(stall);

    assert!(matches!(
        RedfishDriver::new(config("10.0.0.5", PASSWORD)),
        Err(LomError::Config(_))
    ));
}

/// The front: a session service and asynchronous resets before sushy.
#[derive(Clone)]
struct Front {
    sushy: String,
    client: reqwest::Client,
    logins: Arc<AtomicUsize>,
    logouts: Arc<AtomicUsize>,
    polls: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

fn json_response(v: serde_json::Value) -> Response {
    (
        [("Content-Type", "application/json")],
        serde_json::to_vec(&v).unwrap(),
    )
        .into_response()
}

const TOKEN: &str = "tok-0123456789";

async fn front(State(f): State<Front>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    if path == "/redfish/v1/SessionService/Sessions" && method == Method::POST {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if v["UserName"] != USER || v["Password"] != PASSWORD {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        f.logins.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::CREATED,
            [
                ("X-Auth-Token", TOKEN),
                ("Location", "/redfish/v1/SessionService/Sessions/1"),
            ],
            "{}",
        )
            .into_response();
    }
    let authed = headers.get("X-Auth-Token").and_then(|v| v.to_str().ok()) == Some(TOKEN);
    if path.trim_end_matches('/') != "/redfish/v1" && !authed {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if path == "/redfish/v1/SessionService/Sessions/1" && method == Method::DELETE {
        f.logouts.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NO_CONTENT.into_response();
    }
    if path == "/taskmon/1" {
        // Running for two polls, then the task resource, completed.
        return if f.polls.fetch_add(1, Ordering::SeqCst) < 2 {
            (StatusCode::ACCEPTED, [("Location", "/taskmon/1")]).into_response()
        } else {
            json_response(serde_json::json!({"TaskState": "Completed", "TaskStatus": "OK"}))
        };
    }
    let resp = f
        .client
        .request(method.clone(), format!("{}{}", f.sushy, path))
        .basic_auth(USER, Some(PASSWORD))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let bytes: Bytes = resp.bytes().await.unwrap();
    if path.ends_with("ComputerSystem.Reset") && status.is_success() {
        f.accepted.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::ACCEPTED, [("Location", "/taskmon/1")]).into_response();
    }
    if path.trim_end_matches('/') == "/redfish/v1" {
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["SessionService"] = serde_json::json!({"@odata.id": "/redfish/v1/SessionService"});
        v["Links"] =
            serde_json::json!({"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}});
        return json_response(v);
    }
    let mut h = HeaderMap::new();
    h.insert("Content-Type", "application/json".parse().unwrap());
    (StatusCode::from_u16(status.as_u16()).unwrap(), h, bytes).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_auth_and_a_202_task() {
    let sushy = Sushy::start();
    let f = Front {
        sushy: sushy.base.clone(),
        client: reqwest::Client::new(),
        logins: Arc::default(),
        logouts: Arc::default(),
        polls: Arc::default(),
        accepted: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(front).with_state(f.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let d = RedfishDriver::new(config(&base, PASSWORD)).unwrap();
    d.power(PowerAction::On).await.unwrap();
    assert_eq!(f.accepted.load(Ordering::SeqCst), 1);
    assert!(
        f.polls.load(Ordering::SeqCst) >= 3,
        "the task monitor was followed"
    );
    wait_for(&d, PowerState::On).await;
    // Every session made was deleted.
    let logins = f.logins.load(Ordering::SeqCst);
    assert!(logins >= 2);
    assert_eq!(f.logouts.load(Ordering::SeqCst), logins);

    let wrong = RedfishDriver::new(config(&base, "nope")).unwrap();
    assert!(matches!(
        wrong.power_state().await,
        Err(LomError::AuthFailed(_))
    ));
    server.abort();
}
