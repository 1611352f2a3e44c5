//! The `custom_power` example, run in-process on the SoT beside it (DHCP
//! off; the boot service and the API on loopback): its driver is called
//! for the hosts that name it, with the operations a provision needs, and
//! a SoT it cannot serve is refused at start with the errors at
//! file:line.
#![allow(clippy::unwrap_used)]

#[path = "../examples/custom_power.rs"]
#[allow(dead_code)]
mod custom_power;

use std::path::Path;
use std::time::{Duration, Instant};

use vaquero_engine::standalone::{Standalone, StandaloneConfig};

use vaquero_test_support::copy_dir;

use vaquero_test_support::free_tcp_port as free_port;

/// The example's SoT, copied to `dir`.
fn sot(dir: &Path) -> std::path::PathBuf {
    let sot = dir.join("sot");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/custom-power-sot"),
        &sot,
    );
    sot
}

fn config(sot: &Path, data: &Path) -> StandaloneConfig {
    let mut config = StandaloneConfig::new(sot.to_str().unwrap());
    config.data = data.to_path_buf();
    config.api = ([127, 0, 0, 1], free_port()).into();
    config.ports.http = Some(([127, 0, 0, 1], 0).into());
    config.tick = Duration::from_millis(50);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registered_driver_powers_the_hosts_that_name_it() {
    let tmp = tempfile::tempdir().unwrap();
    let sot = sot(tmp.path());
    let pdu = tmp.path().join("pdu");
    let config = config(&sot, &tmp.path().join("data"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pdu2 = pdu.clone();
    let server = tokio::spawn(async move {
        custom_power::run(config, &pdu2, async {
            let _ = stopped.await;
        })
        .await
    });

    // The site applies its plans at once and reboots every host: both
    // hosts with a BMC get their boot device set, then a power cycle.
    let log = pdu.join("requests.log");
    let want = [
        "node-1 outlet 3 boot pxe (left to the firmware)",
        "node-1 outlet 3 cycle",
        "node-2 outlet 4 boot pxe (left to the firmware)",
        "node-2 outlet 4 cycle",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if want.iter().all(|w| text.lines().any(|l| l == *w)) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the driver's requests within 30 s: {text:?}"
        );
        assert!(
            !server.is_finished(),
            "standalone stopped: {:?}",
            server.await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Each host's boot device is set before its power is cycled, and
    // nothing else was asked: node-3 has no BMC.
    for host in ["node-1 outlet 3", "node-2 outlet 4"] {
        let mine: Vec<&str> = text.lines().filter(|l| l.starts_with(host)).collect();
        assert_eq!(
            mine,
            [
                format!("{host} boot pxe (left to the firmware)"),
                format!("{host} cycle")
            ],
            "{text}"
        );
    }
    assert!(
        text.lines()
            .all(|l| l.starts_with("node-1 ") || l.starts_with("node-2 ")),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(pdu.join("outlet-3")).unwrap(),
        "on\n"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn a_driver_the_process_lacks_or_params_it_refuses_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let sot = sot(tmp.path());
    let hosts = sot.join("sites/pdu-lab/hosts.yml");
    let text = std::fs::read_to_string(&hosts).unwrap();
    std::fs::write(
        &hosts,
        text.replace("params: {outlet: 4}", "params: {outlet: 99}"),
    )
    .unwrap();

    // Without the driver registered: both hosts name a driver it lacks.
    let e = Standalone::builder(config(&sot, &tmp.path().join("d1")))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sites/pdu-lab/hosts.yml:11:15: interfaces[1].bmc: no power driver")
            && e.contains("no power driver `file-pdu` in this process (it has: none registered)"),
        "{e}"
    );
    assert_eq!(e.matches("no power driver `file-pdu`").count(), 2, "{e}");

    // With it: the outlet it refuses, at node-2's BMC entry.
    let e = Standalone::builder(config(&sot, &tmp.path().join("d2")))
        .power_driver(
            custom_power::DRIVER,
            custom_power::FilePdu {
                dir: tmp.path().join("pdu"),
            },
        )
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "sites/pdu-lab/hosts.yml:24:15: interfaces[1].bmc: params for driver `file-pdu`: outlet 99 does not exist (1 to 48)"
        ),
        "{e}"
    );
    assert!(!e.contains(":11:"), "{e}");
}

/// An embedding program serves the user API from its own axum app,
/// under a prefix of its own, beside its own routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_mounts_in_a_program_s_own_app() {
    let tmp = tempfile::tempdir().unwrap();
    let sot = sot(tmp.path());
    let data = tmp.path().join("data");
    let started = Standalone::builder(config(&sot, &data))
        .power_driver(
            custom_power::DRIVER,
            custom_power::FilePdu {
                dir: tmp.path().join("pdu"),
            },
        )
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let app = axum::Router::new()
        .route("/mine", axum::routing::get(|| async { "my own route" }))
        .nest("/vaquero", started.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move { axum::serve(listener, app).await });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(started.run_without_api(async {
        let _ = stopped.await;
    }));

    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let client = reqwest::Client::new();
    let mine = client
        .get(format!("http://{addr}/mine"))
        .send()
        .await
        .unwrap();
    assert_eq!(mine.text().await.unwrap(), "my own route");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let r = client
            .get(format!("http://{addr}/vaquero/v1/status"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        if v["revision"].is_string() {
            break v;
        }
        assert!(Instant::now() < deadline, "no revision within 30 s: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["site"], "pdu-lab", "{status}");
    // Without the token: refused, as on the API's own listener.
    let r = client
        .get(format!("http://{addr}/vaquero/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    served.abort();
}
