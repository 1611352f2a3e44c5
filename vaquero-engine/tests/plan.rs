//! Plans of changes to `examples/lab`: text and JSON snapshots.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use vaquero_engine::{Plan, PlanAction, PlanSet};
use vaquero_model::{SiteModel, Sot};

fn lab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab")
}

fn copy(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&t).unwrap();
            copy(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

fn model(dir: &Path) -> SiteModel {
    let sot = Sot::load_dir(dir).unwrap_or_else(|e| panic!("{e}"));
    sot.compile().unwrap().remove("lab").unwrap()
}

/// The lab, and the lab after `change` edits a copy of it.
fn plan_change(change: impl FnOnce(&Path)) -> Plan {
    let dir = tempfile::tempdir().unwrap();
    copy(&lab(), dir.path());
    let old = model(dir.path());
    change(dir.path());
    let new = model(dir.path());
    stable(vaquero_engine::plan(Some(&old), &new))
}

/// Model versions are content hashes: fixed names keep snapshots stable.
fn stable(mut p: Plan) -> Plan {
    p.from = p.from.map(|_| "old-version".into());
    p.to = "new-version".into();
    p.revision = None;
    p
}

fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, s.replacen(from, to, 1)).unwrap();
}

fn json(p: &Plan) -> serde_json::Value {
    serde_json::to_value(PlanSet::new(None, None, vec![p.clone()])).unwrap()
}

#[test]
fn first_plan_every_host_is_new() {
    let p = stable(vaquero_engine::plan(None, &model(&lab())));
    assert!(
        p.hosts
            .iter()
            .all(|h| matches!(h.action, PlanAction::New | PlanAction::Skip))
    );
    insta::assert_snapshot!("first_plan", p.to_string());
}

#[test]
fn new_host() {
    let p = plan_change(|d| {
        let k8s = d.join("sites/lab/k8s.yml");
        let mut s = std::fs::read_to_string(&k8s).unwrap();
        s.push_str(
            "---\nname: k8s-04\nclasses: [rack.a, role.k8s-worker]\ninterfaces:\n  - type: physical\n    mac: \"52:54:00:00:01:04\"\n    subnet: prov\n    ipv4: 10.99.0.14\n",
        );
        std::fs::write(k8s, s).unwrap();
    });
    let h = p.host("k8s-04").unwrap();
    assert_eq!(h.action, PlanAction::New);
    assert_eq!(h.batch, None, "force_provision is off in the lab");
    insta::assert_snapshot!("new_host", p.to_string());
    insta::assert_snapshot!(
        "new_host_json",
        serde_json::to_string_pretty(&json(&p)).unwrap()
    );
}

#[test]
fn new_host_with_force_provision() {
    let p = plan_change(|d| {
        edit(
            &d.join("sites/lab/env.yml"),
            "force_provision: false",
            "force_provision: true",
        );
        let k8s = d.join("sites/lab/k8s.yml");
        let mut s = std::fs::read_to_string(&k8s).unwrap();
        s.push_str(
            "---\nname: k8s-04\nclasses: [rack.a, role.k8s-worker]\ninterfaces:\n  - type: physical\n    mac: \"52:54:00:00:01:04\"\n    subnet: prov\n    ipv4: 10.99.0.14\n",
        );
        std::fs::write(k8s, s).unwrap();
    });
    assert_eq!(p.host("k8s-04").unwrap().batch, Some(1));
    insta::assert_snapshot!("new_host_forced", p.to_string());
}

#[test]
fn os_change_reprovisions_its_hosts_in_batches() {
    let p = plan_change(|d| {
        edit(
            &d.join("os/flatcar.yml"),
            "minor_version: \"2.0\"",
            "minor_version: \"3.0\"",
        );
        edit(
            &d.join("os/flatcar.yml"),
            "flatcar.autologin: \"\"",
            "flatcar.autologin: \"tty0\"",
        );
    });
    let k8s: Vec<_> = p
        .hosts
        .iter()
        .filter(|h| h.workflow == "k8s-worker")
        .collect();
    assert!(k8s.iter().all(|h| h.action == PlanAction::Reprovision));
    // 3 hosts, max_concurrent 50 % → 2 at a time.
    let batches: Vec<_> = k8s.iter().map(|h| h.batch.unwrap()).collect();
    assert_eq!(batches, vec![1, 1, 2]);
    assert_eq!(p.host("storage-01").unwrap().action, PlanAction::Unchanged);
    insta::assert_snapshot!("os_change", p.to_string());
    // The README shows this plan: all but its first line (the model
    // versions) is this output.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let shown: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("site lab: "))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    let text = p.to_string();
    let real: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(shown, real, "README.md's plan example");
    insta::assert_snapshot!(
        "os_change_json",
        serde_json::to_string_pretty(&json(&p)).unwrap()
    );
}

#[test]
fn metadata_only_change_reprovisions_nothing() {
    let p = plan_change(|d| {
        // `row` is read by no template.
        edit(&d.join("classes/rack/a.yml"), "row: 1", "row: 2");
    });
    assert_eq!(p.summary.rebooted, 0);
    let h = p.host("k8s-01").unwrap();
    assert_eq!(h.action, PlanAction::Unchanged);
    assert_eq!(h.reasons, vec!["metadata.row: 1 → 2 (no reprovision)"]);
    insta::assert_snapshot!("metadata_only", p.to_string());
}

#[test]
fn workflow_dependency_orders_batches() {
    // storage and k8s both change; k8s-worker waits for storage
    // (block_deps) and storage goes one host at a time.
    let p = plan_change(|d| {
        edit(
            &d.join("sites/lab/env.yml"),
            "k8s_api: https://10.99.0.10:6443",
            "k8s_api: https://10.99.0.10:7443",
        );
        edit(
            &d.join("assets/kickstart/rocky.ks"),
            "# Rocky Linux 9",
            "# Rocky Linux 9.5",
        );
        edit(
            &d.join("sites/lab/storage.yml"),
            "never_provision: true\n",
            "",
        );
    });
    let storage: Vec<_> = ["storage-01", "storage-02"]
        .iter()
        .map(|n| p.host(n).unwrap().batch)
        .collect();
    assert_eq!(storage, vec![Some(1), Some(2)]);
    for n in ["k8s-01", "k8s-02", "k8s-03"] {
        // storage min_standing 1: k8s starts once one storage host is done.
        assert!(p.host(n).unwrap().batch.unwrap() >= 2, "{n}");
    }
    insta::assert_snapshot!("workflow_dependency", p.to_string());
}

#[test]
fn removed_and_never_provision_hosts() {
    let p = plan_change(|d| {
        std::fs::remove_file(d.join("sites/lab/bastion.yml")).unwrap();
        edit(
            &d.join("assets/kickstart/rocky.ks"),
            "# Rocky Linux 9",
            "# Rocky Linux 9.5",
        );
    });
    assert_eq!(p.host("bastion-01").unwrap().action, PlanAction::Removed);
    let s2 = p.host("storage-02").unwrap();
    assert_eq!(s2.action, PlanAction::Skip);
    assert_eq!(s2.batch, None);
    insta::assert_snapshot!("removed_and_skip", p.to_string());
}
