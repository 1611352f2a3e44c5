//! The site agent for vaquero-ipxe's QEMU test, run in the test's
//! namespace with `VAQUERO_IPXE_TEST_AGENT=<tap>|<files dir>`: DHCP on the
//! tap, the boot service on 10.99.0.2:8080, k8s-01 at its first stage.
//! Prints `READY`, then one line per DHCP decision and HTTP request.
#![allow(clippy::unwrap_used)] // a test helper: a panic fails the test

use std::sync::Arc;

fn main() {
    let spec = std::env::var("VAQUERO_IPXE_TEST_AGENT").expect("VAQUERO_IPXE_TEST_AGENT");
    let (tap, files) = spec.split_once('|').unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sot = vaquero_model::Sot::load_dir(&vaquero_testkit::lab_sot()).unwrap();
        let model = Arc::new(vaquero_model::SiteModel::compile(&sot, "lab").unwrap());
        let (_swap, rx) = tokio::sync::watch::channel(model);
        let state = Arc::new(vaquero_ipxe::MemoryBootState::new());
        state.set(
            "k8s-01",
            vaquero_ipxe::Current::Stage {
                stage: 0,
                boot: "burnin".into(),
                attempt: 1,
            },
        );
        let (dtx, mut drx) = tokio::sync::mpsc::channel(256);
        let dhcp = vaquero_dhcp::Server::bind(
            vaquero_dhcp::ServerConfig::new(
                Some(tap.to_owned()),
                "10.99.0.2".parse().unwrap(),
                vaquero_model::DhcpMode::Server,
            ),
            rx.clone(),
            Some(dtx),
        )
        .unwrap();
        tokio::spawn(dhcp.run(std::future::pending()));
        let (htx, mut hrx) = tokio::sync::mpsc::channel(256);
        let config = vaquero_ipxe::ServiceConfig::new(
            Some(files.into()),
            vaquero_ipxe::TokenKey::new(*b"qemu test key..."),
        );
        let service = vaquero_ipxe::BootService::new(rx, state, config, Some(htx)).unwrap();
        let listener = tokio::net::TcpListener::bind("10.99.0.2:8080").await.unwrap();
        tokio::spawn(vaquero_ipxe::serve(listener, service, std::future::pending()));
        println!("READY");
        loop {
            tokio::select! {
                Some(e) = drx.recv() => {
                    if let vaquero_dhcp::DhcpEvent::Decided(d) = e {
                        println!("DHCP {} {:?} offered={:?}", d.mac, d.msg_type, d.offered);
                    }
                }
                Some(e) = hrx.recv() => {
                    println!("HTTP {:?} {} host={} {}", e.route, e.status, e.host.as_deref().unwrap_or("-"), e.detail);
                }
            }
        }
    });
}
