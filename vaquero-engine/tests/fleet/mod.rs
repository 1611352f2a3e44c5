//! A generated SoT of N hosts for the simulation and the benchmark: one
//! site `sim` with four workflows that depend on each other.
//!
//! | workflow | share | stages           | policy                                            |
//! |----------|-------|------------------|---------------------------------------------------|
//! | db       | 5 %   | install          | max_concurrent 10 %, min_standing 90 %, max_fail 3 |
//! | storage  | 15 %  | install          | max_concurrent 5 %, min_standing 70 %, max_fail 2 % |
//! | compute  | 70 %  | burnin, install  | max_concurrent 10 %, block_deps storage, max_fail 3 % |
//! | edge     | 10 %  | install          | max_concurrent 25, block_deps db                  |
//!
//! Every 97th host is `never_provision`.
#![allow(dead_code, clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;

/// Workflow of host `i`.
pub fn workflow_of(i: usize) -> &'static str {
    match i % 20 {
        0 => "db",
        1..=3 => "storage",
        4..=5 => "edge",
        _ => "compute",
    }
}

/// Writes the SoT of `n` hosts under `dir`; `version` changes the
/// install's kernel command line (a change that reprovisions every host
/// using `install`), `windows` the site's reboot windows.
pub fn write(dir: &Path, n: usize, version: u32, windows: &[&str]) {
    let w = |p: &str, s: &str| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w(
        "os/linux.yml",
        &format!(
            "id: linux\nos_family: debian\nmajor_version: \"12\"\nboot:\n  kernel: \"{{{{ urls.assets }}}}/linux/vmlinuz\"\n  initrd: [\"{{{{ urls.assets }}}}/linux/initrd.img\"]\ncmdline:\n  - console: ttyS0\n  - hostname: \"{{{{ host.name }}}}\"\n  - build: \"{version}\"\n"
        ),
    );
    w(
        "os/tools.yml",
        "id: tools\nos_family: debian\nmajor_version: \"12\"\nboot:\n  kernel: \"{{ urls.assets }}/tools/vmlinuz\"\n  initrd: [\"{{ urls.assets }}/tools/initrd.img\"]\ncmdline:\n  - console: ttyS0\n",
    );
    w(
        "assets/untyped/install.sh",
        "#!/bin/sh\n# install {{ host.name }}\ncurl -fsS -X POST {{ urls.checkpoint }}\n",
    );
    w(
        "boot/install.yml",
        "id: install\noperating_system: linux\nunattended:\n  type: untyped\n  use: install.sh\nbefore_shutdown:\n  - type: exec\n    command: [\"drain\", \"{{ host.name }}\"]\n    timeout: 2m\nvalidate:\n  - type: http\n    url: \"http://{{ interface.ipv4 }}:9100/health\"\n    expect_status: 200\n    timeout: 30s\n  - type: exec\n    command: [\"check\", \"{{ host.name }}\"]\n    timeout: 1m\n",
    );
    w(
        "boot/burnin.yml",
        "id: burnin\noperating_system: tools\nvalidate:\n  - type: exec\n    command: [\"burnin-report\", \"{{ host.name }}\"]\n    timeout: 1m\n",
    );
    let count = |wf: &str| (0..n).filter(|&i| workflow_of(i) == wf).count();
    let pct = |c: usize, p: usize| (c * p).div_ceil(100).max(1);
    w(
        "workflows/db.yml",
        &format!(
            "id: db\nstages: [{{boot: install}}]\npolicy:\n  max_concurrent: \"10%\"\n  min_standing: {}\n  max_fail: 3\n",
            // 90 %: with 10 % in flight, every failure must hold one more
            // host back (min_standing counts failed hosts as down).
            count("db") * 90 / 100
        ),
    );
    w(
        "workflows/storage.yml",
        &format!(
            "id: storage\nstages: [{{boot: install}}]\npolicy:\n  max_concurrent: \"5%\"\n  min_standing: {}\n  max_fail: {}\n",
            count("storage") * 70 / 100,
            pct(count("storage"), 2)
        ),
    );
    w(
        "workflows/compute.yml",
        &format!(
            "id: compute\nstages: [{{boot: burnin}}, {{boot: install}}]\npolicy:\n  max_concurrent: \"10%\"\n  block_deps: [storage]\n  max_fail: {}\n",
            pct(count("compute"), 3)
        ),
    );
    w(
        "workflows/edge.yml",
        "id: edge\nstages: [{boot: install}]\npolicy:\n  max_concurrent: 25\n  block_deps: [db]\n",
    );
    let windows = windows
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ");
    w(
        "sites/sim/env.yml",
        &format!(
            "id: sim\nagents:\n  - id: sim-agent\n    asset_server: {{url: \"http://10.0.0.2:8080\"}}\nsubnets:\n  - id: prov\n    cidr: 10.0.0.0/8\n    dns: [10.0.0.1]\npolicy:\n  force_provision: true\n  auto_apply: true\n  windows: [{windows}]\n  timezone: America/New_York\n"
        ),
    );
    let mut doc = String::new();
    for i in 0..n {
        if i > 0 && i % 5000 == 0 {
            w(&format!("sites/sim/hosts-{:03}.yml", i / 5000 - 1), &doc);
            doc.clear();
        }
        let ip = 16 + i;
        let _ = write!(
            doc,
            "---\nname: node-{i:06}\nworkflow: {}\n{}interfaces:\n  - type: physical\n    mac: \"52:54:{:02x}:{:02x}:{:02x}:{:02x}\"\n    subnet: prov\n    ipv4: 10.{}.{}.{}\n",
            workflow_of(i),
            if i % 97 == 96 {
                "never_provision: true\n"
            } else {
                ""
            },
            (i >> 24) & 255,
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255,
            (ip >> 16) & 255,
            (ip >> 8) & 255,
            ip & 255,
        );
    }
    w(
        &format!("sites/sim/hosts-{:03}.yml", n.div_ceil(5000).max(1) - 1),
        &doc,
    );
}

/// The compiled model of the site of a SoT written by [`write`].
pub fn model(dir: &Path) -> vaquero_model::SiteModel {
    let sot = vaquero_model::Sot::load_dir(dir).unwrap_or_else(|d| panic!("{d}"));
    sot.compile().unwrap().remove("sim").unwrap()
}
