//! Serves the lab site's DHCP on one interface until killed, printing
//! `serving site lab` once bound and every rogue-server event as a line
//! `ROGUE <server id> <client MAC>`.
//!
//! `VAQUERO_DHCP_TEST_SERVE=<interface>`, `VAQUERO_DHCP_TEST_MODE=server|proxy`.
//! Exits with 3 and `cannot bind: …` on stderr when it cannot bind.
#![allow(clippy::unwrap_used)] // a test helper: a panic fails the test

use std::io::Write;

fn main() {
    let iface = std::env::var("VAQUERO_DHCP_TEST_SERVE").expect("VAQUERO_DHCP_TEST_SERVE");
    let mode = match std::env::var("VAQUERO_DHCP_TEST_MODE").as_deref() {
        Ok("proxy") => vaquero_model::DhcpMode::Proxy,
        _ => vaquero_model::DhcpMode::Server,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sot = vaquero_model::Sot::load_dir(&vaquero_testkit::lab_sot()).unwrap();
        let model = std::sync::Arc::new(vaquero_model::SiteModel::compile(&sot, "lab").unwrap());
        let (_tx, rx) = tokio::sync::watch::channel(model);
        let config =
            vaquero_dhcp::ServerConfig::new(Some(iface), "10.99.0.2".parse().unwrap(), mode);
        let (etx, mut erx) = tokio::sync::mpsc::channel(64);
        let server = match vaquero_dhcp::Server::bind(config, rx, Some(etx)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot bind: {e}");
                std::process::exit(3);
            }
        };
        tokio::spawn(async move {
            while let Some(e) = erx.recv().await {
                if let vaquero_dhcp::DhcpEvent::Rogue(r) = e {
                    println!("ROGUE {} {}", r.server_id, r.client);
                    let _ = std::io::stdout().flush();
                }
            }
        });
        println!("serving site lab");
        let _ = std::io::stdout().flush();
        server.run(std::future::pending()).await.unwrap();
    });
}
