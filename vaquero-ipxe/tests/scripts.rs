//! The scripts iPXE gets, as snapshots: every stage of every host of
//! `examples/lab` (each of its operating systems), the chain script, the
//! exit-to-disk script, and hostile values that must never reach a script.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::path::Path;

use vaquero_ipxe::{Script, ScriptFailure, boot_script, chain_script, local_boot_script};
use vaquero_model::{RenderedBoot, SiteModel, Sot};

fn lab() -> SiteModel {
    let sot =
        Sot::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab")).unwrap();
    SiteModel::compile(&sot, "lab").unwrap()
}

#[test]
fn every_stage_of_every_lab_host() {
    let m = lab();
    let mut oses = std::collections::BTreeSet::new();
    for host in m.hosts() {
        let h = m.by_name(&host.name).unwrap();
        for (i, boot) in m.stages(host).into_iter().enumerate() {
            let urls = m.urls(h, boot, "TOKEN");
            let ctx = m.context(h, boot, urls.as_ref());
            let rendered = m.render_boot(boot, &ctx).unwrap();
            oses.insert(rendered.os.clone());
            let title = format!(
                "Vaquero: {} stage {} ({boot}, {})",
                host.name,
                i + 1,
                rendered.os
            );
            let script = boot_script(&title, &rendered).unwrap().render();
            insta::assert_snapshot!(format!("{}-stage{}", host.name, i + 1), script);
        }
    }
    // The lab's every operating system is covered.
    assert!(oses.len() >= 3, "{oses:?}");
}

#[test]
fn chain_and_local_disk() {
    insta::assert_snapshot!(
        "boot.ipxe",
        chain_script("http://10.99.0.2:8080/").unwrap().render()
    );
    insta::assert_snapshot!(
        "local-disk",
        local_boot_script("k8s-01 has nothing to do").render()
    );
}

#[test]
fn hostile_values_never_reach_a_script() {
    let boot = |kernel: &str, cmdline: &str| RenderedBoot {
        boot: "b".into(),
        os: "o".into(),
        kernel: kernel.into(),
        initrds: vec!["http://a/initrd".into()],
        cmdline: cmdline.into(),
    };
    let unsafe_ = |r: Result<Script, ScriptFailure>| matches!(r, Err(ScriptFailure::Unsafe { .. }));
    // A value that would expand an iPXE setting, split a command, or add one.
    assert!(unsafe_(boot_script(
        "t",
        &boot("http://a/k${root-path}", "")
    )));
    assert!(unsafe_(boot_script("t", &boot("http://a/k x", ""))));
    assert!(unsafe_(boot_script(
        "t",
        &boot("http://a/k", "ro\nchain http://evil/")
    )));
    assert!(unsafe_(boot_script(
        "t",
        &boot("http://a/k", "x=${net0/ip}")
    )));
    assert!(unsafe_(chain_script("http://a b")));
    assert!(unsafe_(boot_script(
        "t",
        &boot("http://a/k", "a=1 || shell")
    )));
    assert!(unsafe_(boot_script(
        "t",
        &boot("http://a/k?x=1&&shell", "")
    )));
    // Spaces in a command line are fine: they are imgargs' arguments.
    assert!(boot_script("t", &boot("http://a/k", "ro quiet console=ttyS0,115200")).is_ok());
    // A title is echoed, never executed.
    let s = local_boot_script("x\nshell ${evil} && shell || shell").render();
    assert!(!s.contains("\nshell"), "{s}");
    let echo = s.lines().nth(1).unwrap();
    assert!(!echo.contains("&&") && !echo.contains("||"), "{echo}");
    assert!(!s.contains("${evil}"), "{s}");
}
