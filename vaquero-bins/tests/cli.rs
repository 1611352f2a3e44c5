//! The `vaquero` binary as an operator runs it.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab")
}

fn vaquero(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vaquero"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

use vaquero_test_support::copy_dir;

fn git(dir: &Path, args: &[&str]) {
    let st = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@vaquero.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@vaquero.invalid")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .unwrap();
    assert!(st.success(), "git {args:?}");
}

#[test]
fn validate_the_lab() {
    let o = vaquero(&["validate", lab().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(
        out.contains(": valid (1 site(s), 6 host(s), 3 workflow(s), 4 OS"),
        "{out}"
    );
    let o = vaquero(&[
        "validate",
        "--sot",
        lab().to_str().unwrap(),
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["errors"].as_array().unwrap().len(), 0);
}

#[test]
fn validate_reports_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let sot = dir.path().join("sot");
    copy_dir(&lab(), &sot);
    let hosts = sot.join("sites/lab/bastion.yml");
    let text = std::fs::read_to_string(&hosts).unwrap();
    std::fs::write(
        &hosts,
        text.replace("workflow: bastion", "workflow: nope")
            .replace("ipv4: 10.99.0.31", "ipv4: 10.98.0.31"),
    )
    .unwrap();

    let o = vaquero(&["validate", "--sot", sot.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "sites/lab/bastion.yml:2:11: workflow: unknown workflow `nope`\n\
         sites/lab/bastion.yml:12:11: interfaces[0].ipv4: 10.98.0.31 is outside subnet `prov` (10.99.0.0/24)\n"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 error(s)"));

    let o = vaquero(&[
        "validate",
        "--sot",
        sot.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let e = &v["errors"][1];
    assert_eq!(e["file"], "sites/lab/bastion.yml");
    assert_eq!(e["line"], 12);
    assert_eq!(e["column"], 11);
    assert_eq!(e["path"], "interfaces[0].ipv4");
    assert_eq!(e["severity"], "error");
}

#[test]
fn validate_a_missing_directory_is_a_usage_error() {
    let o = vaquero(&["validate", "--sot", "/nonexistent/sot"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexistent/sot: no such directory"),
        "{o:?}"
    );
    // One level too high: no site is an error, not a green CI job.
    let o = vaquero(&["validate", lab().parent().unwrap().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.contains("sites:1:1: the SoT has no site (no `sites/<site>/env.yml`): is this the SoT's top directory? (SoTs seem to be in `demo/`, `lab/`)"),
        "{out}"
    );
}

#[test]
fn preview_ipxe_and_configs() {
    let sot = lab();
    let sot = sot.to_str().unwrap();
    let o = vaquero(&[
        "preview",
        "--sot",
        sot,
        "--mac",
        "52-54-00-00-01-21",
        "--ipxe",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The same script iPXE would get (whole scripts are snapshot-tested
    // in vaquero-ipxe): the stage's kernel, initrd and command line.
    let out = stdout(&o);
    for line in [
        "#!ipxe",
        "echo Vaquero: storage-01 stage 1/1 (rocky-install, rocky-9)",
        "kernel --name kernel http://10.99.0.2:8080/files/rocky-9/vmlinuz && goto fetch0_ok ||",
        "initrd --name initrd0 http://10.99.0.2:8080/files/rocky-9/initrd.img && goto fetch1_ok ||",
        "imgargs kernel initrd=initrd0 inst.repo=http://10.99.0.2:8080/files/rocky-9/os inst.ks=http://10.99.0.2:8080/config/52-54-00-00-01-21?boot=rocky-install ip=ens3:dhcp console=ttyS0,115200n8",
        "boot kernel || goto vaquero_failed",
    ] {
        assert!(out.lines().any(|l| l == line), "missing `{line}` in\n{out}");
    }
    // Second stage of a two-stage workflow.
    let o = vaquero(&[
        "preview",
        "--sot",
        sot,
        "--mac",
        "52:54:00:00:01:01",
        "--stage",
        "1",
    ]);
    assert!(stdout(&o).contains(
        "kernel --name kernel http://10.99.0.2:8080/files/flatcar/flatcar_production_pxe.vmlinuz && goto"
    ));
    // The unattended config of a boot.
    let o = vaquero(&[
        "preview",
        "--sot",
        sot,
        "--mac",
        "52:54:00:00:01:03",
        "--boot",
        "flatcar-install",
    ]);
    let ign: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ign["ignition"]["version"], "3.4.0");
    assert_eq!(
        ign["kubernetes"]["version"], "1.32",
        "the host overrides its class"
    );
    // A BMC's MAC never netboots.
    let o = vaquero(&["preview", "--sot", sot, "--mac", "52:54:00:00:02:01"]);
    assert!(stdout(&o).ends_with("exit\n"), "{}", stdout(&o));
    // Unknown MAC, and a boot the host does not use.
    let o = vaquero(&["preview", "--sot", sot, "--mac", "52:54:00:99:99:99"]);
    assert_eq!(o.status.code(), Some(2));
    let o = vaquero(&[
        "preview",
        "--sot",
        sot,
        "--mac",
        "52:54:00:00:01:03",
        "--boot",
        "rocky-install",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not use boot `rocky-install`"));
}

/// The lab as a Git repository under `dir`: tag `v1`, then `main` one
/// commit later with `from` replaced by `to` in `file`.
fn lab_repo(dir: &Path, file: &str, from: &str, to: &str) -> PathBuf {
    let sot = dir.join("sot");
    copy_dir(&lab(), &sot);
    git(&sot, &["init", "-q", "-b", "main"]);
    git(&sot, &["add", "-A"]);
    git(&sot, &["commit", "-qm", "v1"]);
    git(&sot, &["tag", "v1"]);
    let path = sot.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} lacks {from}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    git(&sot, &["commit", "-qam", "v2"]);
    sot
}

#[test]
fn diff_two_git_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let sot = lab_repo(
        dir.path(),
        "os/alpine.yml",
        "console: ttyS0",
        "console: ttyS1",
    );
    let repo = sot.to_str().unwrap();
    let o = vaquero(&["diff", "--sot", repo, "--from", "v1", "--to", "main"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(
        out.contains("  ~ k8s-01 (reprovision)\n      stages[0].cmdline: "),
        "{out}"
    );
    assert!(
        out.contains("0 added, 0 removed, 3 changed (3 to reprovision)"),
        "{out}"
    );

    let o = vaquero(&[
        "diff", "--sot", repo, "--from", "v1", "--to", "main", "--format", "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let changed = v["sites"][0]["changed"].as_array().unwrap();
    let hosts: Vec<&str> = changed
        .iter()
        .map(|c| c["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, vec!["k8s-01", "k8s-02", "k8s-03"]);
    assert_eq!(changed[0]["fields"][0]["path"], "stages[0].cmdline");
    assert_eq!(changed[0]["fields"][0]["reprovision"], true);

    let o = vaquero(&["diff", "--sot", repo, "--from", "v1", "--to", "v1"]);
    assert!(stdout(&o).contains("no changes"));
    let o = vaquero(&["diff", "--sot", repo, "--from", "v0", "--to", "v1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown revision `v0`"));
}

#[test]
fn power_through_an_exec_bmc_and_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let sot = tmp.path().join("sot");
    copy_dir(&lab(), &sot);
    // storage-01's PDU program, replaced by one of the test's own.
    let pdu = tmp.path().join("pdu-power");
    std::fs::write(
        &pdu,
        "#!/bin/sh\nstate=\"$(dirname \"$0\")/state\"\n\
         case \"$VAQUERO_ACTION\" in\n\
         status) cat \"$state\" 2>/dev/null || echo off ;;\n\
         on|cycle|reset) echo on > \"$state\" ;;\n\
         off|soft) echo off > \"$state\" ;;\n\
         boot) echo \"$VAQUERO_BOOT_DEVICE $VAQUERO_BOOT_PERSISTENT\" > \"$state.boot\" ;;\n\
         esac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pdu, std::fs::Permissions::from_mode(0o755)).unwrap();
    let storage = sot.join("sites/lab/storage.yml");
    let text = std::fs::read_to_string(&storage)
        .unwrap()
        .replace("/usr/local/bin/pdu-power", pdu.to_str().unwrap());
    std::fs::write(&storage, text).unwrap();
    let s = sot.to_str().unwrap();

    let o = vaquero(&["power", "--sot", s, "storage-01", "status"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).starts_with("lab/storage-01: power off ["),
        "{}",
        stdout(&o)
    );
    let o = vaquero(&["power", "--sot", s, "storage-01", "cycle"]);
    assert!(o.status.success(), "{o:?}");
    let o = vaquero(&[
        "power",
        "--sot",
        s,
        "storage-01",
        "status",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["result"]["power"], "on");
    assert_eq!(v["ok"], true);
    assert_eq!(
        (&v["site"], &v["host"]),
        (&"lab".into(), &"storage-01".into())
    );
    // SITE/HOST and --site name the same machine.
    let o = vaquero(&["power", "--sot", s, "lab/storage-01", "status"]);
    assert!(
        stdout(&o).starts_with("lab/storage-01: power on ["),
        "{o:?}"
    );
    let o = vaquero(&["power", "--sot", s, "--site", "lab", "storage-01", "status"]);
    assert!(
        stdout(&o).starts_with("lab/storage-01: power on ["),
        "{o:?}"
    );
    let o = vaquero(&["power", "--sot", s, "--site", "dc9", "storage-01", "status"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown site `dc9`"));
    let o = vaquero(&["power", "--sot", s, "storage-01", "pxe", "--persistent"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("next boot from pxe (every boot)"));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("state.boot")).unwrap(),
        "pxe true\n"
    );

    // Secrets come from the environment: a missing one is named, and
    // nothing is sent.
    let o = Command::new(env!("CARGO_BIN_EXE_vaquero"))
        .args(["power", "--sot", s, "k8s-01", "status"])
        .env_remove("LAB_IPMI_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("LAB_IPMI_PASSWORD"));
    let o = vaquero(&["power", "--sot", s, "no-such-host", "status"]);
    assert_eq!(o.status.code(), Some(2));
    // What the driver cannot do: exit 1 with the typed error.
    let o = vaquero(&["power", "--sot", s, "k8s-03", "on", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "unsupported");
}

#[test]
fn plan_between_git_revisions_and_of_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sot = lab_repo(
        dir.path(),
        "os/flatcar.yml",
        "flatcar.autologin: \"\"",
        "flatcar.autologin: \"tty0\"",
    );
    let repo = sot.to_str().unwrap();

    let o = vaquero(&["plan", "--sot", repo, "--from", "v1", "--to", "main"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(
        out.contains("3 to reprovision, 0 new, 2 unchanged, 1 skipped"),
        "{out}"
    );
    assert!(
        out.contains("stages[1].cmdline: -flatcar.autologin +flatcar.autologin=tty0"),
        "{out}"
    );

    // Without --to: the directory as it is (here the same as main).
    let o = vaquero(&["plan", "--sot", repo, "--from", "v1", "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let hosts = v["hosts"].as_array().unwrap();
    let row = |n: &str| hosts.iter().find(|h| h["name"] == n).unwrap().clone();
    assert_eq!(row("k8s-01")["action"], "reprovision");
    assert_eq!(row("k8s-01")["batch"], 1);
    assert_eq!(row("k8s-03")["batch"], 2);
    assert_eq!(row("k8s-03")["site"], "lab");
    assert_eq!(row("storage-01")["action"], "unchanged");
    assert_eq!(row("storage-02")["action"], "skip");
    assert_eq!(row("storage-02")["reasons"][0], "never_provision");
    assert_eq!(v["sites"][0]["batches"], 2);

    // No --from: every host is new.
    let o = vaquero(&["plan", "--sot", lab().to_str().unwrap(), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["action"] == "new" || h["action"] == "skip")
    );

    // --from needs a Git repository; an unknown revision is named.
    let o = vaquero(&["plan", "--sot", lab().to_str().unwrap(), "--from", "v1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a Git repository"));
    let o = vaquero(&["plan", "--sot", repo, "--from", "v0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown revision `v0`"));
}

/// Host names are unique within a site only: a name two sites use is
/// refused, never sent to the first site's BMC.
#[test]
fn power_refuses_a_host_name_two_sites_use() {
    let tmp = tempfile::tempdir().unwrap();
    let sot = tmp.path().join("sot");
    copy_dir(&lab(), &sot);
    // A second site `dc2`: the lab's hosts with other addresses.
    copy_dir(&sot.join("sites/lab"), &sot.join("sites/dc2"));
    for e in std::fs::read_dir(sot.join("sites/dc2")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let text = text
            .replace("id: lab", "id: dc2")
            .replace("10.99.", "10.98.")
            .replace("52:54:00:00:", "52:54:00:02:")
            .replace("52:54:00:10:", "52:54:00:12:")
            .replace("SN-", "DC2-");
        std::fs::write(&p, text).unwrap();
    }
    let s = sot.to_str().unwrap();
    let o = vaquero(&["validate", s]);
    assert!(o.status.success(), "{o:?}");
    let o = vaquero(&["power", "--sot", s, "storage-01", "off"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "host name `storage-01` is used in several sites (dc2, lab): name one as SITE/HOST or with --site"
        ),
        "{err}"
    );
    let o = vaquero(&["power", "--sot", s, "dc2/no-such", "status"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no host named `no-such` in site `dc2`"),
        "{o:?}"
    );
}

/// A site pinned by `release_tag` is planned, diffed and validated at the
/// revision it is served from, not at the branch head; the branch is the
/// one HEAD names unless --branch says otherwise.
#[test]
fn release_tag_and_branch_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    // v1: as the lab is; v2 (main): flatcar's cmdline changed.
    let sot = lab_repo(
        dir.path(),
        "os/flatcar.yml",
        "flatcar.autologin: \"\"",
        "flatcar.autologin: \"tty0\"",
    );
    git(&sot, &["tag", "v2"]);
    // v3: the site pinned back to v1: a rollback of the three workers.
    let env = sot.join("sites/lab/env.yml");
    let text = std::fs::read_to_string(&env).unwrap();
    std::fs::write(&env, format!("{text}release_tag: v1\n")).unwrap();
    git(&sot, &["commit", "-qam", "pin to v1"]);
    git(&sot, &["tag", "v3"]);
    let repo = sot.to_str().unwrap();

    let o = vaquero(&["plan", "--sot", repo, "--from", "v2", "--to", "v3"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.contains("3 to reprovision, 0 new, 2 unchanged, 1 skipped"),
        "{out}"
    );
    assert!(
        out.contains("stages[1].cmdline: -flatcar.autologin=tty0 +flatcar.autologin"),
        "{out}"
    );
    let o = vaquero(&["diff", "--sot", repo, "--from", "v2", "--to", "v3"]);
    assert!(stdout(&o).contains("~ k8s-01 (reprovision)"), "{o:?}");
    // The working tree (v3): planned as served, from v1.
    let o = vaquero(&["plan", "--sot", repo, "--from", "v1"]);
    assert!(
        stdout(&o).contains("0 to reprovision, 0 new, 5 unchanged, 1 skipped"),
        "{o:?}"
    );

    // A pin to a revision that does not validate fails validation.
    git(&sot, &["checkout", "-q", "-b", "broken", "v1"]);
    let bastion = sot.join("sites/lab/bastion.yml");
    let text = std::fs::read_to_string(&bastion).unwrap();
    std::fs::write(
        &bastion,
        text.replace("workflow: bastion", "workflow: nope"),
    )
    .unwrap();
    git(&sot, &["commit", "-qam", "broken"]);
    git(&sot, &["tag", "bad"]);
    git(&sot, &["checkout", "-q", "main"]);
    let text = std::fs::read_to_string(&env).unwrap();
    std::fs::write(&env, text.replace("release_tag: v1", "release_tag: bad")).unwrap();
    let o = vaquero(&["validate", repo]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.contains("sites/lab/env.yml:1:1: release_tag: the site is pinned to revision"),
        "{out}"
    );
    assert!(out.contains("unknown workflow `nope`"), "{out}");

    // A tag that does not exist: a warning, the site follows the head.
    std::fs::write(&env, text.replace("release_tag: v1", "release_tag: v9")).unwrap();
    let o = vaquero(&["validate", repo]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains("release_tag `v9` not found in git"),
        "{o:?}"
    );
    // --branch names a branch that does not exist: said so.
    let o = vaquero(&["validate", repo, "--branch", "production"]);
    assert!(stdout(&o).contains("(production)"), "{o:?}");
}

/// `vaquero hosts --sot DIR`: the SoT's machines by name, offline.
#[test]
fn hosts_of_a_sot_offline() {
    let lab = lab();
    let s = lab.to_str().unwrap();
    let o = vaquero(&["hosts", "--sot", s]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(out.starts_with("SITE  HOST"), "{out}");
    assert!(
        out.contains(
            "lab   k8s-01      k8s-worker  ipmi     physical 52:54:00:00:01:01 10.99.0.11"
        ),
        "{out}"
    );
    let o = vaquero(&["hosts", "--sot", s, "--site", "lab", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hosts"].as_array().unwrap().len(), 6);
    assert_eq!(v["hosts"][5]["name"], "storage-02");
    assert_eq!(v["hosts"][5]["never_provision"], true);
    let o = vaquero(&["hosts", "--sot", s, "--site", "dc9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown site `dc9`"));
}

/// `examples/lab` under `dir/sot` for a standalone on loopback: no DHCP
/// (so no TFTP), files served from `dir`.
fn standalone_lab(dir: &Path) -> PathBuf {
    let sot = dir.join("sot");
    copy_dir(&lab(), &sot);
    let env = sot.join("sites/lab/env.yml");
    let text = std::fs::read_to_string(&env)
        .unwrap()
        .replace(
            "dhcp_mode: server\n    interfaces: [vq-lab0]",
            "dhcp_mode: off",
        )
        .replace("/var/lib/vaquero/files", dir.to_str().unwrap());
    std::fs::write(&env, text).unwrap();
    sot
}

/// A live standalone (no DHCP, no TFTP: loopback only): the API over HTTPS
/// with a certificate of its own, the CLI trusting its CA; plain HTTP off
/// loopback refused at start-up.
#[test]
fn standalone_api_over_https_and_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let sot = standalone_lab(tmp.path());
    // A boot with a title: shown beside its id.
    let burnin = sot.join("boot/burnin.yml");
    let text = std::fs::read_to_string(&burnin)
        .unwrap()
        .replace("id: burnin\n", "id: burnin\nname: Burn-in\n");
    std::fs::write(&burnin, text).unwrap();
    // New hosts are rebooted: the first plan queues k8s-01..03.
    let env = sot.join("sites/lab/env.yml");
    let text = std::fs::read_to_string(&env)
        .unwrap()
        .replace("force_provision: false", "force_provision: true");
    std::fs::write(&env, text).unwrap();
    // A CA and the API's certificate from `vaquero certs init`; openssl,
    // an independent implementation, checks the chain.
    let certs = tmp.path().join("certs");
    let o = Command::new(env!("CARGO_BIN_EXE_vaquero"))
        .args(["certs", "init", "--out"])
        .arg(&certs)
        .args(["--host", "localhost", "--host", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("CA fingerprint: sha256:"), "{o:?}");
    let (ca, cert, key) = (
        certs.join("ca.pem"),
        certs.join("server.pem"),
        certs.join("server.key"),
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is the owner's alone");
    }
    let o = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&ca)
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    // A second init would orphan the first CA's certificates: refused.
    let o = Command::new(env!("CARGO_BIN_EXE_vaquero"))
        .args(["certs", "init", "--out"])
        .arg(&certs)
        .args(["--host", "localhost"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exists already"),
        "{o:?}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tmp.path().join("data");
    let standalone = |api: &str, tls: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vaquero"));
        c.args(["standalone", "--sot"])
            .arg(&sot)
            .arg("--data")
            .arg(&data)
            .args(["--api", api, "--http-listen", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if tls {
            c.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
        }
        c
    };
    // Plain HTTP off loopback: refused, saying what to do.
    let o = standalone(&format!("0.0.0.0:{port}"), false)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("give --tls-cert and --tls-key"),
        "{o:?}"
    );

    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Killed(
        standalone(&format!("127.0.0.1:{port}"), true)
            .spawn()
            .unwrap(),
    );
    let url = format!("https://127.0.0.1:{port}");
    let token = data.join("admin.token");
    let ca_pem = ca.clone();
    let cli = |args: &[&str], trust: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vaquero"));
        c.args(args)
            .args(["--api", &url, "--token-file"])
            .arg(&token);
        if trust {
            c.arg("--ca-cert").arg(&ca_pem);
        }
        c.output().unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = cli(&["status", "--format", "json"], true);
        if o.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["site"], "lab");
            assert_eq!(v["hosts"], 6);
            break;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            std::time::Instant::now() < deadline && !err.contains("certificate"),
            "{o:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // The plan waits (auto_apply is off): approve it with the CLI.
    let o = cli(&["plans"], true);
    assert!(stdout(&o).contains("(pending"), "{o:?}");
    // A reprovision while the plan waits starts the host named and no
    // other; the plan keeps waiting, with its id.
    let o = cli(&["reprovision", "storage-01"], true);
    assert_eq!(stdout(&o).trim(), "reprovisioning storage-01", "{o:?}");
    let o = cli(&["plans"], true);
    let text = stdout(&o);
    assert!(text.contains("rollout 1 (pending"), "{text}");
    assert!(
        text.contains("reprovision by an operator during rollout 1 (applied"),
        "{text}"
    );
    let o = cli(&["hosts", "--format", "json"], true);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for h in v["hosts"].as_array().unwrap() {
        if h["name"].as_str().unwrap().starts_with("k8s-") {
            assert_eq!(h["phase"], "queued", "{h:#}");
        }
    }
    let o = cli(&["status", "--format", "json"], true);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rollout"]["id"], 1, "{v:#}");
    assert_eq!(v["rollout"]["approval"], "pending", "{v:#}");
    let o = cli(&["approve"], true);
    assert!(stdout(&o).contains("rollout 1 approved"), "{o:?}");
    let o = cli(&["hosts", "--format", "json"], true);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hosts"].as_array().unwrap().len(), 6);
    assert!(
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["boot"] == "burnin" && h["boot_name"] == "Burn-in"),
        "{v:#}"
    );
    let o = cli(&["hosts"], true);
    assert!(stdout(&o).contains("burnin (Burn-in)"), "{}", stdout(&o));
    let o = cli(&["host", "storage-02"], true);
    assert!(stdout(&o).contains("skipped"), "{o:?}");
    let o = cli(&["executions"], true);
    assert!(o.status.success(), "{o:?}");
    let o = cli(&["reprovision", "no-such-host"], true);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no host named `no-such-host`"),
        "{o:?}"
    );
    // Tokens: a read token reads and changes nothing; a revoked one is
    // refused at once; a wrong one is refused; none leaks a secret.
    let o = cli(
        &["token", "create", "--role", "read", "--note", "dashboards"],
        true,
    );
    assert!(o.status.success(), "{o:?}");
    let read = stdout(&o).trim().to_owned();
    assert!(read.starts_with("vqt_"), "{read}");
    let read_file = tmp.path().join("read.token");
    std::fs::write(&read_file, format!("{read}\n")).unwrap();
    let as_read = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vaquero"))
            .args(args)
            .args(["--api", &url, "--token-file"])
            .arg(&read_file)
            .arg("--ca-cert")
            .arg(&ca_pem)
            .output()
            .unwrap()
    };
    assert!(as_read(&["status"]).status.success());
    let o = as_read(&["pause"]);
    assert!(!o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("role read cannot change anything"),
        "{o:?}"
    );
    let o = as_read(&["token", "list"]);
    assert!(!o.status.success(), "a read token lists no tokens: {o:?}");
    let o = cli(&["token", "list", "--format", "json"], true);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rec = &v["tokens"][0];
    assert_eq!(rec["role"], "read");
    assert_eq!(rec["note"], "dashboards");
    let id = rec["id"].as_str().unwrap().to_owned();
    assert!(
        !o.stdout
            .windows(20)
            .any(|w| read.as_bytes().windows(20).any(|r| r == w))
    );
    let o = cli(&["token", "revoke", &id], true);
    assert!(stdout(&o).contains("revoked"), "{o:?}");
    let o = as_read(&["status"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("wrong or revoked token"),
        "{o:?}"
    );
    std::fs::write(&read_file, "vqt_00000000_00\n").unwrap();
    assert!(!as_read(&["status"]).status.success());
    // Without the CA, the certificate is not trusted.
    let o = cli(&["status"], false);
    assert!(!o.status.success(), "{o:?}");

    // Operations. A backup while it runs: every key, checked.
    let backup = tmp.path().join("backup.redb");
    let o = cli(&["backup", "--to", backup.to_str().unwrap()], true);
    let said = stdout(&o);
    assert!(said.starts_with("backed up and checked: "), "{o:?}");
    let sum = said
        .split("sha256 ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let o = cli(&["backup", "--to", backup.to_str().unwrap()], true);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exists"),
        "a backup never overwrites: {o:?}"
    );
    let rotate = |what: &str| {
        Command::new(env!("CARGO_BIN_EXE_vaquero"))
            .args(["rotate", what, "--data"])
            .arg(&data)
            .output()
            .unwrap()
    };
    // Rotation needs it stopped: the running process keeps its secrets.
    let o = rotate("admin-token");
    assert!(!o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("stop it"),
        "{o:?}"
    );
    drop(_child);
    let old = std::fs::read_to_string(&token).unwrap();
    let o = rotate("admin-token");
    assert!(o.status.success(), "{o:?}");
    let new = std::fs::read_to_string(&token).unwrap();
    assert_ne!(old, new);
    assert_eq!(new.trim().len(), 64);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token is the owner's alone");
    }
    let key = data.join("checkpoint.key");
    let old_key = std::fs::read_to_string(&key).unwrap();
    assert!(rotate("checkpoint-key").status.success());
    assert_ne!(std::fs::read_to_string(&key).unwrap(), old_key);
    // Restore: the backup into the data directory, its store moved away.
    std::fs::rename(data.join("state.redb"), data.join("state.redb.old")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vaquero"))
        .args(["migrate", "--from"])
        .arg(format!("redb:{}", backup.display()))
        .arg("--to")
        .arg(format!("redb:{}", data.join("state.redb").display()))
        .output()
        .unwrap();
    assert!(
        stdout(&o).starts_with("copied and checked: ") && stdout(&o).contains(&sum),
        "{o:?}"
    );
    // Started again: the restored plans; the new token, not the old.
    let _child = Killed(
        standalone(&format!("127.0.0.1:{port}"), true)
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cli(&["status"], true).status.success() {
        assert!(std::time::Instant::now() < deadline, "restarted");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let o = cli(&["plans"], true);
    assert!(stdout(&o).contains("rollout 1 (applied"), "{o:?}");
    std::fs::write(&read_file, &old).unwrap();
    let o = as_read(&["status"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("wrong or revoked token"),
        "the rotated token is refused: {o:?}"
    );
}

/// Without the privilege to bind a port below 1024, standalone refuses at
/// start-up in one line naming the fix. It runs in a network namespace of
/// its own (`unshare -n`: nothing else listens there, and the kernel's
/// default `ip_unprivileged_port_start` of 1024 applies), as root without
/// CAP_NET_BIND_SERVICE and CAP_NET_RAW (`setpriv`).
#[test]
fn standalone_without_privileges_names_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let sot = standalone_lab(tmp.path());
    let o = Command::new("unshare")
        .args([
            "-n",
            "setpriv",
            "--bounding-set=-net_bind_service,-net_raw",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_vaquero"))
        .args(["standalone", "--sot"])
        .arg(&sot)
        .arg("--data")
        .arg(tmp.path().join("data"))
        .args(["--http-listen", "0.0.0.0:80"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("unshare and setpriv (util-linux)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(
            "HTTP: not allowed to bind 0.0.0.0:80: run as root, or grant CAP_NET_BIND_SERVICE and CAP_NET_RAW (setcap cap_net_bind_service,cap_net_raw+ep vaquero)"
        ),
        "{err}"
    );
}

/// `--detailed-exitcode` on plan and diff: 0 nothing changes, 2 something
/// does, 1 an error (2 stays "usage or I/O" without it).
#[test]
fn detailed_exit_codes_of_plan_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let sot = lab_repo(
        dir.path(),
        "os/alpine.yml",
        "console: ttyS0",
        "console: ttyS1",
    );
    let repo = sot.to_str().unwrap();
    let code = |args: &[&str]| vaquero(args).status.code();
    let d = "--detailed-exitcode";
    assert_eq!(
        code(&["diff", "--sot", repo, "--from", "v1", "--to", "v1", d]),
        Some(0)
    );
    assert_eq!(
        code(&["diff", "--sot", repo, "--from", "v1", "--to", "main", d]),
        Some(2)
    );
    assert_eq!(
        code(&["diff", "--sot", repo, "--from", "v1", "--to", "main"]),
        Some(0)
    );
    assert_eq!(
        code(&["plan", "--sot", repo, "--from", "v1", "--to", "v1", d]),
        Some(0)
    );
    assert_eq!(
        code(&["plan", "--sot", repo, "--from", "v1", "--to", "main", d]),
        Some(2)
    );
    // Every host is new without --from.
    assert_eq!(code(&["plan", "--sot", repo, d]), Some(2));
    assert_eq!(code(&["plan", "--sot", repo, "--from", "nope", d]), Some(1));
    assert_eq!(code(&["plan", "--sot", repo, "--from", "nope"]), Some(2));
}

/// `version`, `completions` and `man`; `preview --format json`; the SoT
/// from VAQUERO_SOT (a positional directory wins).
#[test]
fn version_completions_man_preview_json_and_vaquero_sot() {
    let o = vaquero(&["version"]);
    assert_eq!(
        stdout(&o),
        format!("vaquero {}\n", env!("CARGO_PKG_VERSION"))
    );
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&vaquero(&["version", "--format", "json"]))).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = vaquero(&["completions", shell]);
        assert!(o.status.success(), "{shell}");
        assert!(stdout(&o).contains("standalone"), "{shell}");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("vaquero.bash");
    std::fs::write(&script, vaquero(&["completions", "bash"]).stdout).unwrap();
    let st = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success(), "the bash completion script parses");
    let man = stdout(&vaquero(&["man"]));
    assert!(man.contains(".TH vaquero 1"), "{man}");

    let lab = lab();
    let lab = lab.to_str().unwrap();
    let o = vaquero(&[
        "preview",
        "--sot",
        lab,
        "--mac",
        "52:54:00:00:01:31",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["host"], "bastion-01");
    assert_eq!(v["site"], "lab");
    assert_eq!(v["type"], "ipxe");
    assert_eq!(v["kind"], "Preview");
    assert!(
        v["content"].as_str().unwrap().starts_with("#!ipxe\n"),
        "{v}"
    );

    // Every command names the SoT alike: a path or a file:// URL.
    let url = format!("file://{lab}");
    for args in [
        &["validate", &url][..],
        &["hosts", "--sot", &url],
        &["plan", "--sot", &url],
        &["preview", "--sot", &url, "--mac", "52:54:00:00:01:31"],
    ] {
        let o = vaquero(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    let with_env = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vaquero"))
            .args(args)
            .env("VAQUERO_SOT", lab)
            .output()
            .unwrap()
    };
    let o = with_env(&["validate"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).contains("valid (1 site(s), 6 host(s)"),
        "{}",
        stdout(&o)
    );
    let o = with_env(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "the positional directory wins");
}

/// A failed BMC operation is reported once (the retries are warnings, the
/// final failure is the error); `-q` leaves only the error.
#[test]
fn a_failure_is_reported_once_and_quiet_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let sot = dir.path().join("sot");
    copy_dir(&lab(), &sot);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hosts = sot.join("sites/lab/k8s.yml");
    let text = std::fs::read_to_string(&hosts).unwrap().replacen(
        "    bmc:\n      type: ipmi\n      port: 623\n",
        &format!("    bmc:\n      type: ipmi\n      address: 127.0.0.1\n      port: {port}\n"),
        1,
    );
    std::fs::write(&hosts, text).unwrap();
    let run = |quiet: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vaquero"));
        if quiet {
            c.arg("-q");
        }
        c.args(["power", "--sot"])
            .arg(&sot)
            .args(["k8s-01", "status"])
            .env("LAB_IPMI_PASSWORD", "x")
            .env_remove("RUST_LOG")
            .env_remove("VAQUERO_LOG")
            .output()
            .unwrap()
    };
    let o = run(false);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let out = stdout(&o);
    let all = format!("{out}{err}");
    assert_eq!(all.matches("lab/k8s-01: ").count(), 1, "{all}");
    assert!(!all.contains("BMC operation failed attempts="), "{all}");
    assert!(err.contains("retrying"), "{err}");
    let o = run(true);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("WARN"), "{err}");
    assert!(
        format!("{}{err}", stdout(&o)).contains("lab/k8s-01: unreachable"),
        "{err}"
    );
}

/// The README's `vaquero validate my-sot` example is what the binary
/// prints for those two mistakes.
#[test]
fn the_readme_validate_example_is_real_output() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != "$ vaquero validate my-sot")
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert!(!block.is_empty(), "the README lost its example");
    let dir = tempfile::tempdir().unwrap();
    let sot = dir.path().join("my-sot");
    copy_dir(&lab(), &sot);
    let edit = |file: &str, from: &str, to: &str| {
        let p = sot.join(file);
        let t = std::fs::read_to_string(&p).unwrap();
        assert_eq!(t.matches(from).count(), 1, "{file}: {from}");
        std::fs::write(&p, t.replace(from, to)).unwrap();
    };
    edit(
        "sites/lab/bastion.yml",
        "workflow: bastion\n",
        "workflow: bastoin\n",
    );
    edit(
        "sites/lab/k8s.yml",
        "ipv4: 10.99.0.11\n",
        "ipv4: 10.98.0.11\n",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_vaquero"))
        .args(["validate", "my-sot"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let got = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, block);
}

/// Every JSON document is in one envelope; `plan`'s matches its published
/// schema; an error with `--format json` is a document on stdout.
#[test]
fn json_documents_share_one_envelope_and_plan_has_a_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema/plan.v1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sot = lab_repo(
        dir.path(),
        "os/alpine.yml",
        "console: ttyS0",
        "console: ttyS1",
    );
    let repo = sot.to_str().unwrap();
    let doc = |args: &[&str]| -> serde_json::Value {
        let o = vaquero(args);
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
    };
    for args in [
        &["plan", "--sot", repo, "--format", "json"][..],
        &[
            "plan", "--sot", repo, "--from", "v1", "--to", "main", "--format", "json",
        ],
    ] {
        let v = doc(args);
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{args:?}: {errors:?}\n{v:#}");
    }
    // Batches are numbered from 1 where hosts are rebooted.
    let v = doc(&[
        "plan", "--sot", repo, "--from", "v1", "--to", "main", "--format", "json",
    ]);
    assert!(
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["batch"] == 1),
        "{v:#}"
    );
    // The schema judges: a wrong action is refused.
    let mut bad = v.clone();
    bad["hosts"][0]["action"] = "reinstall".into();
    assert!(!validator.is_valid(&bad));

    let lab = lab();
    let lab = lab.to_str().unwrap();
    for (args, kind) in [
        (&["validate", lab, "--format", "json"][..], "Validation"),
        (
            &[
                "diff", "--sot", repo, "--from", "v1", "--to", "main", "--format", "json",
            ],
            "Diff",
        ),
        (
            &[
                "preview",
                "--sot",
                lab,
                "--mac",
                "52:54:00:00:01:31",
                "--format",
                "json",
            ],
            "Preview",
        ),
        (&["hosts", "--sot", lab, "--format", "json"], "Hosts"),
        (&["version", "--format", "json"], "Version"),
    ] {
        let v = doc(args);
        assert_eq!(v["apiVersion"], "vaquero/v1", "{args:?}");
        assert_eq!(v["kind"], kind, "{args:?}");
    }
    let o = vaquero(&["plan", "--sot", repo, "--from", "nope", "--format", "json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "Error");
    assert_eq!(v["error"]["exit_code"], 2);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nope"),
        "{v}"
    );
}

/// A boot's title is shown beside its id where a plan lists stages.
#[test]
fn plan_shows_boot_titles() {
    let dir = tempfile::tempdir().unwrap();
    let sot = dir.path().join("sot");
    copy_dir(&lab(), &sot);
    let burnin = sot.join("boot/burnin.yml");
    let text = std::fs::read_to_string(&burnin).unwrap();
    std::fs::write(
        &burnin,
        text.replace("id: burnin\n", "id: burnin\nname: Burn-in\n"),
    )
    .unwrap();
    git(&sot, &["init", "-q", "-b", "main"]);
    git(&sot, &["add", "-A"]);
    git(&sot, &["commit", "-qm", "v1"]);
    git(&sot, &["tag", "v1"]);
    let wf = sot.join("workflows/k8s-worker.yml");
    let text = std::fs::read_to_string(&wf).unwrap();
    assert!(text.contains("  - boot: burnin\n"), "{text}");
    std::fs::write(&wf, text.replace("  - boot: burnin\n", "")).unwrap();
    git(&sot, &["commit", "-qam", "v2"]);
    let o = vaquero(&[
        "plan",
        "--sot",
        sot.to_str().unwrap(),
        "--from",
        "v1",
        "--to",
        "main",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("burnin (Burn-in)"), "{}", stdout(&o));
}

/// A reader that goes away (`vaquero hosts --format json | head -c 1`)
/// ends the process quietly: no panic, no message.
#[test]
fn a_closed_pipe_ends_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vaquero"))
        .args(["hosts", "--format", "json", "--sot"])
        .arg(lab())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reading end closed before the first write.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{:?}: {err}", o.status);
    assert!(err.is_empty(), "{err}");
}
