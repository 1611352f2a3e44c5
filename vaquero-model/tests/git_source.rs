//! The Git SoT source against real repositories made with the `git` CLI:
//! branch head, tag pin, missing-tag fallback, a revision that fails
//! validation, bare remotes via `file://`, and diffs between revisions.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a failure

use std::path::{Path, PathBuf};
use std::process::Command;

use vaquero_test_support as support;

use vaquero_model::{Error, GitSource, Severity, Sot, SotFiles, SotSource, diff, load_source};

/// A repository in a temp dir, filled from `examples/lab`.
struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Vaquero Test")
        .env("GIT_AUTHOR_EMAIL", "test@vaquero.invalid")
        .env("GIT_COMMITTER_NAME", "Vaquero Test")
        .env("GIT_COMMITTER_EMAIL", "test@vaquero.invalid")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("the git CLI must be installed (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

use vaquero_test_support::copy_dir;

impl Repo {
    fn lab() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sot");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab"),
            &path,
        );
        git(&path, &["init", "-q", "-b", "main"]);
        let r = Repo { _dir: dir, path };
        r.commit("lab");
        r
    }

    fn commit(&self, msg: &str) -> String {
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "-q", "--allow-empty", "-m", msg]);
        git(&self.path, &["rev-parse", "HEAD"])
    }

    fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.path.join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from} not in {file}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn source(&self) -> GitSource {
        GitSource::open(self.path.to_str().unwrap(), "main").unwrap()
    }
}

#[test]
fn branch_head_is_the_revision_and_matches_the_directory() {
    let repo = Repo::lab();
    let head = git(&repo.path, &["rev-parse", "HEAD"]);
    let src = repo.source();
    assert_eq!(src.head().unwrap(), head);
    let from_git = src.files(&head).unwrap();
    let from_dir = SotFiles::read_dir(&repo.path).unwrap();
    assert_eq!(
        from_git, from_dir,
        "a commit's tree reads like its checkout (.git skipped)"
    );
    let loaded = load_source(&src).unwrap();
    assert_eq!(loaded.head.revision.as_deref(), Some(head.as_str()));
    assert_eq!(loaded.sites["lab"].revision(), Some(head.as_str()));
    assert!(loaded.warnings.is_empty());
}

#[test]
fn a_new_commit_moves_the_head() {
    let repo = Repo::lab();
    let src = repo.source();
    let first = src.head().unwrap();
    repo.edit(
        "sites/lab/k8s.yml",
        "serial: SN-K8S-01",
        "serial: SN-K8S-01-B",
    );
    let second = repo.commit("serial");
    assert_ne!(first, second);
    assert_eq!(
        src.head().unwrap(),
        second,
        "a fresh handle sees the new ref"
    );
    let old = Sot::load(&src.files(&first).unwrap()).unwrap();
    let new = Sot::load(&src.files(&second).unwrap()).unwrap();
    let serial = |sot: &Sot| {
        let h = sot.sites["lab"]
            .hosts
            .iter()
            .find(|h| h.name == "k8s-01")
            .unwrap();
        h.serial.clone()
    };
    assert_eq!(serial(&old).as_deref(), Some("SN-K8S-01"));
    assert_eq!(serial(&new).as_deref(), Some("SN-K8S-01-B"));
}

#[test]
fn a_release_tag_pins_the_site() {
    let repo = Repo::lab();
    let v1 = git(&repo.path, &["rev-parse", "HEAD"]);
    git(&repo.path, &["tag", "-a", "v1", "-m", "release 1"]);
    // Head moves on: a new kernel for Rocky, and the site pinned to v1.
    repo.edit("os/rocky-9.yml", "rocky-9/vmlinuz", "rocky-9.5/vmlinuz");
    repo.edit(
        "sites/lab/env.yml",
        "name: Vaquero lab",
        "name: Vaquero lab\nrelease_tag: v1",
    );
    let head = repo.commit("new kernel, pin lab to v1");
    let loaded = load_source(&repo.source()).unwrap();
    assert_eq!(loaded.head.revision.as_deref(), Some(head.as_str()));
    let lab = &loaded.sites["lab"];
    assert_eq!(
        lab.revision(),
        Some(v1.as_str()),
        "the site follows its tag, not the head"
    );
    assert_eq!(
        lab.data().os["rocky-9"].boot.kernel,
        "{{ urls.assets }}/rocky-9/vmlinuz"
    );
    assert!(loaded.warnings.is_empty());
}

#[test]
fn a_missing_tag_falls_back_to_the_head_with_a_warning() {
    let repo = Repo::lab();
    repo.edit(
        "sites/lab/env.yml",
        "name: Vaquero lab",
        "name: Vaquero lab\nrelease_tag: v9",
    );
    let head = repo.commit("pin to a tag that does not exist");
    let loaded = load_source(&repo.source()).unwrap();
    assert_eq!(loaded.sites["lab"].revision(), Some(head.as_str()));
    let w: Vec<_> = loaded.warnings.warnings().collect();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].severity, Severity::Warning);
    assert_eq!(w[0].file, "sites/lab/env.yml");
    assert!(
        w[0].message
            .starts_with("release_tag `v9` not found in git "),
        "{}",
        w[0].message
    );
}

#[test]
fn a_commit_id_works_as_a_pin() {
    let repo = Repo::lab();
    let first = git(&repo.path, &["rev-parse", "HEAD"]);
    repo.edit(
        "sites/lab/env.yml",
        "name: Vaquero lab",
        &format!("name: Vaquero lab\nrelease_tag: \"{}\"", &first[..12]),
    );
    repo.commit("pin to a short commit id");
    let loaded = load_source(&repo.source()).unwrap();
    assert_eq!(loaded.sites["lab"].revision(), Some(first.as_str()));
}

#[test]
fn a_revision_that_fails_validation_is_rejected_whole() {
    let repo = Repo::lab();
    repo.edit(
        "sites/lab/bastion.yml",
        "workflow: bastion",
        "workflow: nope",
    );
    repo.commit("break it");
    match load_source(&repo.source()) {
        Err(Error::Invalid(d)) => {
            assert_eq!(
                d.to_string().trim(),
                "sites/lab/bastion.yml:2:11: workflow: unknown workflow `nope`"
            );
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn a_pinned_revision_that_fails_validation_is_an_error_too() {
    let repo = Repo::lab();
    repo.edit(
        "sites/lab/bastion.yml",
        "workflow: bastion",
        "workflow: nope",
    );
    repo.commit("broken");
    git(&repo.path, &["tag", "broken"]);
    repo.edit(
        "sites/lab/bastion.yml",
        "workflow: nope",
        "workflow: bastion",
    );
    repo.edit(
        "sites/lab/env.yml",
        "name: Vaquero lab",
        "name: Vaquero lab\nrelease_tag: broken",
    );
    repo.commit("fixed head, but pinned to the broken tag");
    match load_source(&repo.source()) {
        Err(Error::Pinned { site, .. }) => assert_eq!(site, "lab"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bare_remote_over_file_url() {
    let repo = Repo::lab();
    let bare = repo.path.parent().unwrap().join("sot.git");
    git(
        repo.path.parent().unwrap(),
        &["clone", "-q", "--bare", "sot", "sot.git"],
    );
    let src = GitSource::open(&format!("file://{}", bare.display()), "main").unwrap();
    let head = git(&repo.path, &["rev-parse", "HEAD"]);
    assert_eq!(src.head().unwrap(), head);
    assert!(load_source(&src).is_ok());
    assert!(matches!(
        GitSource::open("https://example.invalid/sot.git", "main"),
        Err(Error::Git(_))
    ));
}

#[test]
fn unknown_branch_and_revision() {
    let repo = Repo::lab();
    let src = GitSource::open(repo.path.to_str().unwrap(), "production").unwrap();
    assert!(matches!(src.head(), Err(Error::UnknownRevision(_))));
    assert_eq!(repo.source().resolve("no-such-tag").unwrap(), None);
    assert!(
        repo.source()
            .files("0123456789abcdef0123456789abcdef01234567")
            .is_err()
    );
}

#[test]
fn diff_between_revisions() {
    let repo = Repo::lab();
    let src = repo.source();
    let v1 = src.head().unwrap();
    // Metadata no template reads: in place. The kernel of Rocky: reprovision.
    repo.edit(
        "sites/lab/storage.yml",
        "name: storage-01\n",
        "name: storage-01\nmetadata:\n  owner: team-storage\n",
    );
    repo.edit(
        "os/rocky-9.yml",
        "console: ttyS0,115200n8",
        "console: ttyS1,115200n8",
    );
    // A metadata change a template reads: the k8s labels are in the ignition.
    repo.edit(
        "classes/role/k8s-worker.yml",
        "node-role.kubernetes.io/worker: \"\"",
        "node-role.kubernetes.io/worker: \"yes\"",
    );
    // A new host, and one removed.
    repo.edit(
        "sites/lab/bastion.yml",
        "name: bastion-01",
        "name: bastion-02",
    );
    let v2 = repo.commit("changes");
    let m1 = Sot::load(&src.files(&v1).unwrap())
        .unwrap()
        .compile()
        .unwrap();
    let m2 = Sot::load(&src.files(&v2).unwrap())
        .unwrap()
        .compile()
        .unwrap();
    let d = diff(&m1["lab"], &m2["lab"]);
    assert_eq!(d.added, vec!["bastion-02"]);
    assert_eq!(d.removed, vec!["bastion-01"]);
    let by_host = |h: &str| {
        d.changed
            .iter()
            .find(|c| c.host == h)
            .unwrap_or_else(|| panic!("{h} changed"))
    };
    let s1 = by_host("storage-01");
    assert!(s1.reprovision, "the rocky cmdline changed");
    let paths: Vec<(&str, bool)> = s1
        .fields
        .iter()
        .map(|f| (f.path.as_str(), f.reprovision))
        .collect();
    assert_eq!(
        paths,
        vec![("metadata.owner", false), ("stages[0].cmdline", true)]
    );
    let k = by_host("k8s-01");
    assert!(k.reprovision);
    let paths: Vec<(&str, bool)> = k
        .fields
        .iter()
        .map(|f| (f.path.as_str(), f.reprovision))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("metadata.labels.node-role.kubernetes.io/worker", false),
            ("stages[1].unattended", true)
        ]
    );
    assert_eq!(
        d.reprovision().collect::<Vec<_>>(),
        vec!["k8s-01", "k8s-02", "k8s-03", "storage-01", "storage-02"]
    );
    // storage-02 is never_provision: the diff still says what changed; the
    // engine decides not to act on it.
    let text = d.to_string();
    assert!(text.contains("  ~ storage-01 (reprovision)"), "{text}");
    assert!(
        text.contains("      metadata.owner: (none) → team-storage"),
        "{text}"
    );
}

#[test]
fn metadata_no_template_reads_changes_nothing_that_matters() {
    let repo = Repo::lab();
    let src = repo.source();
    let v1 = src.head().unwrap();
    repo.edit("classes/rack/a.yml", "row: 1", "row: 2");
    let v2 = repo.commit("row");
    let m1 = Sot::load(&src.files(&v1).unwrap())
        .unwrap()
        .compile()
        .unwrap();
    let m2 = Sot::load(&src.files(&v2).unwrap())
        .unwrap()
        .compile()
        .unwrap();
    let d = diff(&m1["lab"], &m2["lab"]);
    assert_eq!(
        d.changed.len(),
        3,
        "k8s-01, k8s-02, bastion-01 are in rack a"
    );
    assert!(d.changed.iter().all(|c| !c.reprovision));
    assert_eq!(d.reprovision().count(), 0);
    assert_ne!(m1["lab"].version(), m2["lab"].version());
}

#[test]
fn the_branch_defaults_to_the_one_head_names() {
    let repo = Repo::lab();
    git(&repo.path, &["checkout", "-q", "-b", "production"]);
    let head = repo.commit("on production");
    let src = GitSource::open_head(repo.path.to_str().unwrap()).unwrap();
    assert_eq!(src.branch(), "production");
    assert_eq!(src.head().unwrap(), head);
    git(&repo.path, &["checkout", "-q", "--detach"]);
    assert!(matches!(
        GitSource::open_head(repo.path.to_str().unwrap()),
        Err(Error::Git(m)) if m.contains("HEAD is detached")
    ));
}

#[test]
fn a_remote_is_mirrored_fetched_and_read_while_unreachable() {
    let repo = Repo::lab();
    let first = git(&repo.path, &["rev-parse", "HEAD"]);
    let base = repo.path.parent().unwrap().to_path_buf();
    let daemon = support::GitDaemon::serve(&base);
    let url = daemon.url("sot");
    assert!(vaquero_model::GitRemote::is_remote(&url));
    let data = tempfile::tempdir().unwrap();
    let mirror = data.path().join("sot.git");

    // Cloned the first time, on the remote's default branch.
    let remote = vaquero_model::GitRemote::open(&url, &mirror, None).unwrap();
    assert_eq!(remote.branch(), "main");
    assert_eq!(remote.head().unwrap(), first);
    assert!(load_source(&remote).unwrap().sites.contains_key("lab"));
    assert!(remote.describe().contains(&url));

    // A push upstream is seen after a refresh, not before.
    let second = repo.commit("second");
    assert_ne!(second, first);
    assert_eq!(remote.head().unwrap(), first);
    remote.refresh().unwrap();
    assert_eq!(remote.head().unwrap(), second);

    // Opened again (a restart): the mirror is fetched, not cloned again.
    let third = repo.commit("third");
    let again = vaquero_model::GitRemote::open(&url, &mirror, Some("main")).unwrap();
    assert_eq!(again.head().unwrap(), third);

    // A mirror of another URL is refused, naming both.
    let other = daemon.url("elsewhere");
    let e = vaquero_model::GitRemote::open(&other, &mirror, None).unwrap_err();
    assert!(e.to_string().contains("elsewhere"), "{e}");

    // The remote gone: a refresh fails and says so; reading goes on from
    // the mirror.
    drop(daemon);
    let e = again.refresh().unwrap_err();
    assert!(e.to_string().contains("git fetch"), "{e}");
    assert_eq!(again.head().unwrap(), third);
    assert!(again.files(&third).is_ok());
}

#[test]
fn remote_locations_are_told_from_local_ones_and_credentials_never_shown() {
    use vaquero_model::GitRemote;
    for remote in [
        "https://github.com/acme/sot.git",
        "ssh://git@github.com/acme/sot.git",
        "git@github.com:acme/sot.git",
        "git://127.0.0.1/sot",
    ] {
        assert!(GitRemote::is_remote(remote), "{remote}");
    }
    for local in ["/srv/sot", "file:///srv/sot", "sot", "./a:b/c"] {
        assert!(!GitRemote::is_remote(local), "{local}");
    }
    // A clone that fails names the URL without its password.
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://user:s3cret@127.0.0.1:{port}/sot.git");
    let e = GitRemote::open(&url, &data.path().join("m"), None).unwrap_err();
    let text = e.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("***@127.0.0.1"), "{text}");
    assert!(!data.path().join("m").exists(), "no half mirror is left");
}
