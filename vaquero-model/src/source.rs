//! Where a SoT comes from: the [`SotSource`] trait, a plain directory, and a
//! Git repository read with `gix`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::compiled::SiteModel;
use crate::diag::{Diagnostic, Diagnostics};
use crate::files::SotFiles;
use crate::{Error, Sot};

/// A source of SoT revisions.
///
/// A revision is identified by an opaque string: a commit id for Git, the
/// content hash for a directory.
pub trait SotSource: Send + Sync {
    /// A human-readable description (`git /srv/sot (main)`).
    fn describe(&self) -> String;
    /// The revision the source follows now (the branch head).
    fn head(&self) -> Result<String, Error>;
    /// Resolves a tag, branch or commit to a revision; `None` when unknown.
    fn resolve(&self, name: &str) -> Result<Option<String>, Error>;
    /// The files of a revision.
    fn files(&self, revision: &str) -> Result<SotFiles, Error>;
    /// Brings the source up to date with where it comes from: a remote
    /// repository is fetched. Local sources have nothing to do. Blocking;
    /// bounded by the source's own timeout.
    fn refresh(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// A SoT in a local directory. Its revision is the content hash of its
/// files; it has no tags, so a site's `release_tag` cannot be honoured and
/// is reported as a warning.
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    /// A source reading `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirSource { root: root.into() }
    }
}

impl SotSource for DirSource {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    fn head(&self) -> Result<String, Error> {
        Ok(SotFiles::read_dir(&self.root)?.content_hash())
    }

    fn resolve(&self, _name: &str) -> Result<Option<String>, Error> {
        Ok(None)
    }

    fn files(&self, revision: &str) -> Result<SotFiles, Error> {
        let files = SotFiles::read_dir(&self.root)?;
        if files.content_hash() != revision {
            return Err(Error::UnknownRevision(format!(
                "{revision} (the directory has changed since)"
            )));
        }
        Ok(files)
    }
}

/// A SoT in a Git repository (bare or not), read straight from its object
/// database: the working tree is never looked at.
///
/// The location is a path or a `file://` URL. A remote repository (https,
/// ssh, git) is read through a [`GitRemote`], which keeps a mirror of it
/// on disk.
pub struct GitSource {
    location: PathBuf,
    branch: String,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("location", &self.location)
            .field("branch", &self.branch)
            .finish()
    }
}

impl GitSource {
    /// Opens the repository at `location` (a path or `file://` URL),
    /// following `branch`.
    pub fn open(location: &str, branch: &str) -> Result<Self, Error> {
        let path = match location.strip_prefix("file://") {
            Some(p) => Path::new(p).to_path_buf(),
            None if location.contains("://") => {
                return Err(Error::Git(format!(
                    "{}: a remote repository: read it through a mirror (GitRemote)",
                    redact(location)
                )));
            }
            None => Path::new(location).to_path_buf(),
        };
        let source = GitSource {
            location: path,
            branch: branch.to_owned(),
        };
        source.repo()?;
        Ok(source)
    }

    /// Opens the repository at `location`, following the branch its `HEAD`
    /// names (the default branch of a mirror or bare clone; the branch
    /// checked out in a working copy).
    pub fn open_head(location: &str) -> Result<Self, Error> {
        let mut source = GitSource::open(location, "main")?;
        let repo = source.repo()?;
        match repo.head_name().map_err(git_err)? {
            Some(name) => source.branch = name.shorten().to_string(),
            None => {
                return Err(Error::Git(format!(
                    "{}: HEAD is detached; name the branch to follow",
                    source.location.display()
                )));
            }
        }
        Ok(source)
    }

    /// The branch this source follows.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Opens the repository. Opening is cheap (no objects are read), and a
    /// fresh handle sees refs updated since by `git fetch`.
    fn repo(&self) -> Result<gix::Repository, Error> {
        gix::open(&self.location)
            .map_err(|e| Error::Git(format!("{}: {e}", self.location.display())))
    }

    /// Whether `location` looks like a Git repository (has a `.git`, or is
    /// a bare repository).
    pub fn is_repository(location: &Path) -> bool {
        location.join(".git").exists()
            || (location.join("HEAD").is_file() && location.join("objects").is_dir())
    }

    fn commit_of(repo: &gix::Repository, spec: &str) -> Option<String> {
        let id = repo.rev_parse_single(spec).ok()?;
        let commit = id.object().ok()?.peel_to_commit().ok()?;
        Some(commit.id.to_string())
    }
}

fn git_err(e: impl std::fmt::Display) -> Error {
    Error::Git(e.to_string())
}

impl SotSource for GitSource {
    fn describe(&self) -> String {
        format!("git {} ({})", self.location.display(), self.branch)
    }

    fn head(&self) -> Result<String, Error> {
        let repo = self.repo()?;
        let name = format!("refs/heads/{}", self.branch);
        let mut r = repo
            .try_find_reference(name.as_str())
            .map_err(git_err)?
            .ok_or_else(|| Error::UnknownRevision(format!("branch {}", self.branch)))?;
        let id = r.peel_to_id().map_err(git_err)?;
        let commit = id
            .object()
            .map_err(git_err)?
            .peel_to_commit()
            .map_err(git_err)?;
        Ok(commit.id.to_string())
    }

    fn resolve(&self, name: &str) -> Result<Option<String>, Error> {
        let repo = self.repo()?;
        // Tags first: a tag named like a hex prefix must not be read as one.
        for spec in [format!("refs/tags/{name}"), name.to_owned()] {
            if let Some(c) = Self::commit_of(&repo, &spec) {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    fn files(&self, revision: &str) -> Result<SotFiles, Error> {
        let repo = self.repo()?;
        let id = gix::ObjectId::from_hex(revision.as_bytes())
            .map_err(|_| Error::UnknownRevision(revision.to_owned()))?;
        let commit = repo
            .find_commit(id)
            .map_err(|_| Error::UnknownRevision(revision.to_owned()))?;
        let tree = commit.tree().map_err(git_err)?;
        let entries = tree.traverse().breadthfirst.files().map_err(git_err)?;
        let mut files = SotFiles::new();
        for e in entries {
            if !e.mode.is_blob() {
                continue;
            }
            let path = e.filepath.to_string();
            if path.split('/').any(|c| c.starts_with('.')) {
                continue;
            }
            let obj = repo.find_object(e.oid).map_err(git_err)?;
            let text =
                std::str::from_utf8(&obj.data).map_err(|_| Error::NotUtf8(PathBuf::from(&path)))?;
            files.insert(path, text);
        }
        Ok(files)
    }
}

/// A SoT in a remote Git repository (`https://`, `ssh://`, `git://`, or
/// scp-like `git@host:path`), read from a mirror of it on disk that
/// [`refresh`](SotSource::refresh) fetches into. Everything else reads
/// the mirror, so the source keeps answering from what it last fetched
/// while the remote is unreachable.
///
/// The `git` program does the network part: an operator's SSH keys,
/// `known_hosts`, credential helpers and proxy settings apply as they do
/// to `git` itself. It never prompts (`GIT_TERMINAL_PROMPT=0`), and each
/// run is bounded by [`GitRemote::TIMEOUT`]. Credentials written in the
/// URL never appear in descriptions or errors.
pub struct GitRemote {
    url: String,
    mirror: PathBuf,
    local: GitSource,
}

impl std::fmt::Debug for GitRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRemote")
            .field("url", &redact(&self.url))
            .field("mirror", &self.mirror)
            .field("branch", &self.local.branch)
            .finish()
    }
}

impl GitRemote {
    /// How long one `git clone` or `git fetch` may take before it is
    /// stopped.
    pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

    /// Whether `location` names a remote repository rather than a local
    /// path or `file://` URL.
    pub fn is_remote(location: &str) -> bool {
        if location.starts_with("file://") {
            return false;
        }
        if location.contains("://") {
            return true;
        }
        // scp-like `[user@]host:path`: no `/` before the first `:`.
        match location.split_once(':') {
            Some((host, _)) => {
                !host.is_empty() && !host.contains('/') && !Path::new(location).exists()
            }
            None => false,
        }
    }

    /// Mirrors `url` into `mirror` (cloned the first time, fetched after),
    /// following `branch` (default: the remote's default branch). A
    /// mirror of another URL is refused, not overwritten.
    pub fn open(url: &str, mirror: &Path, branch: Option<&str>) -> Result<Self, Error> {
        if GitSource::is_repository(mirror) {
            let origin = git(Some(mirror), &["config", "--get", "remote.origin.url"], url)?;
            if origin.trim() != url {
                return Err(Error::Git(format!(
                    "{} is a mirror of {}, not of {}: remove it, or give another data directory",
                    mirror.display(),
                    redact(origin.trim()),
                    redact(url)
                )));
            }
            fetch(mirror, url)?;
        } else {
            clone(url, mirror)?;
        }
        let location = mirror.to_string_lossy();
        let local = match branch {
            Some(b) => GitSource::open(&location, b)?,
            None => GitSource::open_head(&location)?,
        };
        Ok(GitRemote {
            url: url.to_owned(),
            mirror: mirror.to_path_buf(),
            local,
        })
    }

    /// The branch this source follows.
    pub fn branch(&self) -> &str {
        self.local.branch()
    }
}

impl SotSource for GitRemote {
    fn describe(&self) -> String {
        format!("git {} ({})", redact(&self.url), self.local.branch)
    }

    fn head(&self) -> Result<String, Error> {
        self.local.head()
    }

    fn resolve(&self, name: &str) -> Result<Option<String>, Error> {
        self.local.resolve(name)
    }

    fn files(&self, revision: &str) -> Result<SotFiles, Error> {
        self.local.files(revision)
    }

    fn refresh(&self) -> Result<(), Error> {
        fetch(&self.mirror, &self.url)
    }
}

/// `git clone --mirror url mirror`, through a temporary sibling that is
/// renamed once complete: an interrupted clone leaves no half mirror.
fn clone(url: &str, mirror: &Path) -> Result<(), Error> {
    let parent = mirror.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| Error::Io {
        path: parent.to_path_buf(),
        source,
    })?;
    let name = mirror
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sot.git".to_owned());
    let partial = parent.join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    let target = partial.to_string_lossy().into_owned();
    let r = git(
        None,
        &["clone", "--mirror", "--quiet", "--", url, &target],
        url,
    );
    if let Err(e) = r {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, mirror).map_err(|source| Error::Io {
        path: mirror.to_path_buf(),
        source,
    })
}

/// `git fetch` in the mirror: every branch and tag, removed ones pruned.
fn fetch(mirror: &Path, url: &str) -> Result<(), Error> {
    git(
        Some(mirror),
        &["fetch", "--prune", "--quiet", "origin"],
        url,
    )
    .map(|_| ())
}

/// Runs `git args` (in `dir`), bounded by [`GitRemote::TIMEOUT`]; its
/// standard output, or an error with its standard error. `url` is
/// redacted from what is reported.
fn git(dir: Option<&Path>, args: &[&str], url: &str) -> Result<String, Error> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("git {}", args.first().copied().unwrap_or_default());
    let mut child = cmd.spawn().map_err(|e| {
        Error::Git(format!(
            "cannot run the `git` program ({e}): install Git to read a remote SoT"
        ))
    })?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + GitRemote::TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Git(format!(
                    "{what} {}: no answer within {} s",
                    redact(url),
                    GitRemote::TIMEOUT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => return Err(Error::Git(format!("{what}: {e}"))),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if status.success() {
        return Ok(out);
    }
    let err = err.replace(url, &redact(url));
    Err(Error::Git(format!(
        "{what} {}: {}",
        redact(url),
        err.trim()
    )))
}

/// `url` without the credentials written in it (`https://user:token@host`
/// becomes `https://***@host`).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// A SoT loaded from a source: the head revision, and one compiled model per
/// site at the revision that site follows (its `release_tag`, or the head).
#[derive(Debug)]
pub struct LoadedSot {
    /// The validated head revision.
    pub head: Sot,
    /// Per-site models; each knows its revision.
    pub sites: BTreeMap<String, SiteModel>,
    /// Warnings (e.g. a `release_tag` that does not exist).
    pub warnings: Diagnostics,
}

/// Loads the head of a source, validates it, and compiles each site at the
/// revision it follows ([`load_revision`] of the head).
pub fn load_source(source: &dyn SotSource) -> Result<LoadedSot, Error> {
    load_revision(source, &source.head()?)
}

/// Loads `revision` of a source (a resolved id: see
/// [`SotSource::resolve`]), validates it, and compiles each site at the
/// revision it follows: its `release_tag`, resolved in the same source, or
/// `revision` itself. This is what a site is served from, so plans and
/// diffs are made from it too.
pub fn load_revision(source: &dyn SotSource, revision: &str) -> Result<LoadedSot, Error> {
    let mut head = Sot::load_owned(source.files(revision)?).map_err(Error::Invalid)?;
    head.revision = Some(revision.to_owned());
    let (sites, warnings) = compile_pinned(&head, source)?;
    Ok(LoadedSot {
        head,
        sites,
        warnings,
    })
}

/// Compiles each site of `head` at the revision it follows: a site's
/// `release_tag` resolved in `source`, else `head` itself. A tag the source
/// cannot resolve falls back to `head` with a warning; a pinned revision
/// that does not validate, or lacks the site, is an error (nothing invalid
/// reaches an agent). Returns the models and the warnings (`head`'s own
/// included).
pub fn compile_pinned(
    head: &Sot,
    source: &dyn SotSource,
) -> Result<(BTreeMap<String, SiteModel>, Diagnostics), Error> {
    let head_rev = head.revision.clone().unwrap_or_default();
    let mut warnings = head.warnings.clone();
    let mut pinned: BTreeMap<String, Sot> = BTreeMap::new();
    let mut sites = BTreeMap::new();
    for (id, s) in &head.sites {
        let rev = match &s.site.release_tag {
            None => None,
            Some(tag) => match source.resolve(tag)? {
                Some(rev) if rev == head_rev => None,
                Some(rev) => Some(rev),
                None => {
                    let msg = format!(
                        "release_tag `{tag}` not found in {}; site `{id}` follows the branch head {head_rev}",
                        source.describe()
                    );
                    tracing::warn!(site = %id, tag = %tag, "{msg}");
                    warnings.push(
                        Diagnostic::error(&format!("sites/{id}/env.yml"), 1, 1, "release_tag", msg)
                            .into_warning(),
                    );
                    None
                }
            },
        };
        let model = match rev {
            None => SiteModel::compile(head, id)?,
            Some(rev) => {
                if !pinned.contains_key(&rev) {
                    let mut sot =
                        Sot::load_owned(source.files(&rev)?).map_err(|d| Error::Pinned {
                            site: id.clone(),
                            revision: rev.clone(),
                            diagnostics: d,
                        })?;
                    sot.revision = Some(rev.clone());
                    pinned.insert(rev.clone(), sot);
                }
                let sot = &pinned[&rev];
                if !sot.sites.contains_key(id) {
                    return Err(Error::UnknownSite(format!(
                        "{id} (pinned to revision {rev}, which has no such site)"
                    )));
                }
                SiteModel::compile(sot, id)?
            }
        };
        sites.insert(id.clone(), model);
    }
    Ok((sites, warnings))
}
