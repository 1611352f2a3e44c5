//! Where a SoT comes from: the [`SotSource`] trait, a plain directory, and a
//! Git repository read with `gix`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::compiled::SiteModel;
use crate::diag::{Diagnostic, Diagnostics};
use crate::files::SotFiles;
use crate::{ModelError, Sot};

/// A source of SoT revisions.
///
/// A revision is identified by an opaque string: a commit id for Git, the
/// content hash for a directory.
pub trait SotSource: Send + Sync {
    /// A human-readable description (`git /srv/sot (main)`).
    fn describe(&self) -> String;
    /// The revision the source follows now (the branch head).
    fn head(&self) -> Result<String, ModelError>;
    /// Resolves a tag, branch or commit to a revision; `None` when unknown.
    fn resolve(&self, name: &str) -> Result<Option<String>, ModelError>;
    /// The files of a revision.
    fn files(&self, revision: &str) -> Result<SotFiles, ModelError>;
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

    fn head(&self) -> Result<String, ModelError> {
        Ok(SotFiles::read_dir(&self.root)?.content_hash())
    }

    fn resolve(&self, _name: &str) -> Result<Option<String>, ModelError> {
        Ok(None)
    }

    fn files(&self, revision: &str) -> Result<SotFiles, ModelError> {
        let files = SotFiles::read_dir(&self.root)?;
        if files.content_hash() != revision {
            return Err(ModelError::UnknownRevision(format!(
                "{revision} (the directory has changed since)"
            )));
        }
        Ok(files)
    }
}

/// A SoT in a Git repository (bare or not), read straight from its object
/// database: the working tree is never looked at.
///
/// The location is a path or a `file://` URL. Remote URLs (https, ssh) are
/// not fetched here: mirror them to disk first (e.g. `git clone --mirror`
/// and a periodic `git fetch`), and point the source at the mirror.
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
    pub fn open(location: &str, branch: &str) -> Result<Self, ModelError> {
        let path = match location.strip_prefix("file://") {
            Some(p) => Path::new(p).to_path_buf(),
            None if location.contains("://") => {
                return Err(ModelError::Git(format!(
                    "{location}: only local repositories (a path or file:// URL) are read; mirror remote repositories to disk"
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
    pub fn open_head(location: &str) -> Result<Self, ModelError> {
        let mut source = GitSource::open(location, "main")?;
        let repo = source.repo()?;
        match repo.head_name().map_err(git_err)? {
            Some(name) => source.branch = name.shorten().to_string(),
            None => {
                return Err(ModelError::Git(format!(
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
    fn repo(&self) -> Result<gix::Repository, ModelError> {
        gix::open(&self.location)
            .map_err(|e| ModelError::Git(format!("{}: {e}", self.location.display())))
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

fn git_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Git(e.to_string())
}

impl SotSource for GitSource {
    fn describe(&self) -> String {
        format!("git {} ({})", self.location.display(), self.branch)
    }

    fn head(&self) -> Result<String, ModelError> {
        let repo = self.repo()?;
        let name = format!("refs/heads/{}", self.branch);
        let mut r = repo
            .try_find_reference(name.as_str())
            .map_err(git_err)?
            .ok_or_else(|| ModelError::UnknownRevision(format!("branch {}", self.branch)))?;
        let id = r.peel_to_id().map_err(git_err)?;
        let commit = id
            .object()
            .map_err(git_err)?
            .peel_to_commit()
            .map_err(git_err)?;
        Ok(commit.id.to_string())
    }

    fn resolve(&self, name: &str) -> Result<Option<String>, ModelError> {
        let repo = self.repo()?;
        // Tags first: a tag named like a hex prefix must not be read as one.
        for spec in [format!("refs/tags/{name}"), name.to_owned()] {
            if let Some(c) = Self::commit_of(&repo, &spec) {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    fn files(&self, revision: &str) -> Result<SotFiles, ModelError> {
        let repo = self.repo()?;
        let id = gix::ObjectId::from_hex(revision.as_bytes())
            .map_err(|_| ModelError::UnknownRevision(revision.to_owned()))?;
        let commit = repo
            .find_commit(id)
            .map_err(|_| ModelError::UnknownRevision(revision.to_owned()))?;
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
            let text = std::str::from_utf8(&obj.data)
                .map_err(|_| ModelError::NotUtf8(PathBuf::from(&path)))?;
            files.insert(path, text);
        }
        Ok(files)
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
pub fn load_source(source: &dyn SotSource) -> Result<LoadedSot, ModelError> {
    load_revision(source, &source.head()?)
}

/// Loads `revision` of a source (a resolved id: see
/// [`SotSource::resolve`]), validates it, and compiles each site at the
/// revision it follows: its `release_tag`, resolved in the same source, or
/// `revision` itself. This is what a site is served from, so plans and
/// diffs are made from it too.
pub fn load_revision(source: &dyn SotSource, revision: &str) -> Result<LoadedSot, ModelError> {
    let mut head = Sot::load_owned(source.files(revision)?).map_err(ModelError::Invalid)?;
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
) -> Result<(BTreeMap<String, SiteModel>, Diagnostics), ModelError> {
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
                        Sot::load_owned(source.files(&rev)?).map_err(|d| ModelError::Pinned {
                            site: id.clone(),
                            revision: rev.clone(),
                            diagnostics: d,
                        })?;
                    sot.revision = Some(rev.clone());
                    pinned.insert(rev.clone(), sot);
                }
                let sot = &pinned[&rev];
                if !sot.sites.contains_key(id) {
                    return Err(ModelError::UnknownSite(format!(
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
