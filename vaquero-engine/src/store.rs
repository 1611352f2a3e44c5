//! The `Store` trait: where the engine keeps host states, execution records
//! and plans — a key-value store with one global revision, the shape etcd
//! has, so an etcd store can implement it as it is.
//!
//! - Every committed write (a `put`, a `delete`, a transaction) raises the
//!   store's revision by one; each key remembers the revision that last
//!   wrote it (`mod_revision`).
//! - [`Store::txn`] is compare-and-swap over several keys: all compares
//!   hold (each key at the given revision, or absent) and all operations
//!   apply, or nothing does.
//! - Changes are polled by revision: [`Store::list_since`] lists the keys
//!   under a prefix written after a revision (deletes are seen by listing).
//!
//! [`MemoryStore`] is for tests and simulations; [`RedbStore`] is the
//! embedded default: one file, every acknowledged write on disk
//! (`Durability::Immediate`: committed means fsynced); `EtcdStore` (the
//! `etcd` feature) keeps it on an etcd cluster, for replicated servers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// A store revision.
pub type Revision = u64;

/// A key, its value, and the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the write that left this value.
    pub mod_revision: Revision,
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key.
    pub key: String,
    /// `Some(r)`: the key exists and was last written at `r`; `None`: the
    /// key does not exist.
    pub mod_revision: Option<Revision>,
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Set a key.
    Put(String, Vec<u8>),
    /// Remove a key (nothing if absent).
    Delete(String),
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnResult {
    /// Every compare held; the writes are committed at this revision.
    Committed(Revision),
    /// A compare failed; nothing was written.
    Conflict,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreFailure {
    /// The embedded database failed (I/O, corruption, lock).
    #[error("store: {0}")]
    Backend(String),
    /// The store cannot be reached (a remote store).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write was refused because this replica no longer leads: its
    /// term's campaign key is gone (another replica leads, or the lease
    /// expired). Nothing was written; the replica must stop acting.
    #[error("fenced: this replica no longer leads ({0})")]
    Fenced(String),
    /// The store's configuration is wrong (no endpoint, an unreadable
    /// certificate).
    #[error("store configuration: {0}")]
    Config(String),
}

fn backend(e: impl std::fmt::Display) -> StoreFailure {
    StoreFailure::Backend(e.to_string())
}

/// Where the engine persists. Implementations must make a write durable
/// before they return it as committed.
#[async_trait]
pub trait Store: Send + Sync {
    /// The value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreFailure>;

    /// Every key under `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreFailure>;

    /// The keys under `prefix` written after `revision`, in key order.
    async fn list_since(
        &self,
        prefix: &str,
        revision: Revision,
    ) -> Result<Vec<KeyValue>, StoreFailure> {
        let mut all = self.list(prefix).await?;
        all.retain(|kv| kv.mod_revision > revision);
        Ok(all)
    }

    /// The store's current revision (0 when nothing was ever written).
    async fn revision(&self) -> Result<Revision, StoreFailure>;

    /// Apply `ops` if every one of `compares` holds, atomically.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>)
    -> Result<TxnResult, StoreFailure>;

    /// Set `key`; returns the revision of the write.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreFailure> {
        match self
            .txn(Vec::new(), vec![TxnOp::Put(key.to_owned(), value)])
            .await?
        {
            TxnResult::Committed(r) => Ok(r),
            TxnResult::Conflict => Err(StoreFailure::Backend(
                "a transaction without compares conflicted".into(),
            )),
        }
    }

    /// Set `key` only if it is at `expected` (`None`: absent).
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: Vec<u8>,
    ) -> Result<TxnResult, StoreFailure> {
        self.txn(
            vec![Compare {
                key: key.to_owned(),
                mod_revision: expected,
            }],
            vec![TxnOp::Put(key.to_owned(), value)],
        )
        .await
    }

    /// Gives space the store no longer uses back to the file system,
    /// where it can (redb: [`RedbStore::compact`]); whether it did. Other
    /// calls wait meanwhile. The default does nothing.
    async fn compact(&self) -> Result<bool, StoreFailure> {
        Ok(false)
    }

    /// Remove `key`; returns the revision of the write.
    async fn delete(&self, key: &str) -> Result<Revision, StoreFailure> {
        match self
            .txn(Vec::new(), vec![TxnOp::Delete(key.to_owned())])
            .await?
        {
            TxnResult::Committed(r) => Ok(r),
            TxnResult::Conflict => Err(StoreFailure::Backend(
                "a transaction without compares conflicted".into(),
            )),
        }
    }
}

#[derive(Debug, Default)]
struct Mem {
    revision: Revision,
    data: BTreeMap<String, (Revision, Vec<u8>)>,
}

/// A store in memory (tests, simulations). Clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Mem>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn kv(key: &str, (rev, value): &(Revision, Vec<u8>)) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.clone(),
        mod_revision: *rev,
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreFailure> {
        Ok(self.lock().data.get(key).map(|v| kv(key, v)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreFailure> {
        let m = self.lock();
        Ok(m.data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| kv(k, v))
            .collect())
    }

    async fn revision(&self) -> Result<Revision, StoreFailure> {
        Ok(self.lock().revision)
    }

    async fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<TxnResult, StoreFailure> {
        let mut m = self.lock();
        for c in &compares {
            if m.data.get(&c.key).map(|(r, _)| *r) != c.mod_revision {
                return Ok(TxnResult::Conflict);
            }
        }
        m.revision += 1;
        let rev = m.revision;
        for op in ops {
            match op {
                TxnOp::Put(k, v) => {
                    m.data.insert(k, (rev, v));
                }
                TxnOp::Delete(k) => {
                    m.data.remove(&k);
                }
            }
        }
        Ok(TxnResult::Committed(rev))
    }
}

const DATA: TableDefinition<'_, &str, (u64, &[u8])> = TableDefinition::new("data");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// The embedded store: one redb file. Every committed transaction is
/// durable (redb's default `Durability::Immediate`) before it returns, so
/// a crash at any instant loses no acknowledged write; redb's copy-on-write
/// commit leaves the file consistent whatever instant the crash hits.
#[derive(Debug, Clone)]
pub struct RedbStore {
    // Every call reads the lock; compaction alone writes it (redb
    // compacts through `&mut Database`, and a rewrite replaces it).
    db: Arc<std::sync::RwLock<Database>>,
    path: Arc<std::path::PathBuf>,
}

/// A file this many times larger than what it holds (and past
/// [`REWRITE_FLOOR`]) is rewritten at compaction.
const REWRITE_RATIO: u64 = 2;

/// Files smaller than this are never rewritten.
const REWRITE_FLOOR: u64 = 16 << 20;

/// Keys copied per transaction of a rewrite.
const REWRITE_BATCH: usize = 20_000;

/// Where a rewrite builds the new file, beside the store's.
fn rewrite_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".rewrite");
    path.with_file_name(name)
}

impl RedbStore {
    /// Open (or create) the store in `path`. A rewrite's file left by a
    /// crash (`path` + `.rewrite`) is removed: the store's own file is
    /// whole until a rewrite's rename replaces it.
    pub fn open(path: &Path) -> Result<Self, StoreFailure> {
        match std::fs::remove_file(rewrite_path(path)) {
            Ok(()) => tracing::info!(path = %path.display(), "an unfinished rewrite removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(backend(e)),
        }
        let db = Database::create(path).map_err(backend)?;
        let tx = db.begin_write().map_err(backend)?;
        {
            tx.open_table(DATA).map_err(backend)?;
            tx.open_table(META).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(RedbStore {
            db: Arc::new(std::sync::RwLock::new(db)),
            path: Arc::new(path.to_owned()),
        })
    }

    /// The bytes the file holds (keys, values, and the B-trees' own),
    /// beside the file's size.
    fn occupancy(db: &Database, path: &Path) -> Result<(u64, u64), StoreFailure> {
        let tx = db.begin_write().map_err(backend)?;
        let stats = tx.stats().map_err(backend)?;
        tx.abort().map_err(backend)?;
        let held = stats.stored_bytes() + stats.metadata_bytes();
        let file = std::fs::metadata(path).map_err(backend)?.len();
        Ok((held, file))
    }

    /// Copies every key of `db` into a new file at `path` + `.rewrite`,
    /// then renames it over `path` and opens it: keys written in order
    /// fill the B-trees' pages, where years of deletes and inserts in
    /// the middle leave them half empty (which compaction cannot undo).
    /// SQLite's VACUUM does the same. A crash before the rename leaves
    /// the old file whole; after it, the new one.
    fn rewrite_file(db: &mut Database, path: &Path) -> Result<(), StoreFailure> {
        let tmp = rewrite_path(path);
        let _ = std::fs::remove_file(&tmp);
        let new = match Self::copy_into(db, &tmp) {
            Ok(new) => new,
            Err(e) => {
                // The store's own file is untouched.
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            backend(e)
        })?;
        // The new file, open already, replaces the old one at once: from
        // the rename on, `path` is the new file (the old one, unlinked,
        // closes here).
        *db = new;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(backend)?;
        }
        Ok(())
    }

    /// A new store at `tmp` with every key of `db`, written in order and
    /// committed, then compacted (redb grows a file by whole regions).
    fn copy_into(db: &Database, tmp: &Path) -> Result<Database, StoreFailure> {
        let mut new = Database::create(tmp).map_err(backend)?;
        {
            let read = db.begin_read().map_err(backend)?;
            let meta = read.open_table(META).map_err(backend)?;
            let tx = new.begin_write().map_err(backend)?;
            {
                let mut t = tx.open_table(META).map_err(backend)?;
                for row in meta.iter().map_err(backend)? {
                    let (k, v) = row.map_err(backend)?;
                    t.insert(k.value(), v.value()).map_err(backend)?;
                }
                tx.open_table(DATA).map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            let data = read.open_table(DATA).map_err(backend)?;
            let mut rows = data.iter().map_err(backend)?.peekable();
            while rows.peek().is_some() {
                let tx = new.begin_write().map_err(backend)?;
                {
                    let mut t = tx.open_table(DATA).map_err(backend)?;
                    for row in rows.by_ref().take(REWRITE_BATCH) {
                        let (k, v) = row.map_err(backend)?;
                        t.insert(k.value(), v.value()).map_err(backend)?;
                    }
                }
                tx.commit().map_err(backend)?;
            }
        }
        new.compact().map_err(backend)?;
        Ok(new)
    }

    /// Rewrites the file now: every key copied in order into a new file
    /// that replaces it (compaction does this by itself when a file
    /// stays more than twice what it holds). Every other call waits
    /// until it is done.
    pub async fn rewrite(&self) -> Result<(), StoreFailure> {
        let db = self.db.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = db.write().unwrap_or_else(|p| p.into_inner());
            Self::rewrite_file(&mut db, &path)
        })
        .await
        .map_err(|e| StoreFailure::Backend(format!("store worker: {e}")))?
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreFailure> + Send + 'static,
    ) -> Result<T, StoreFailure> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let db = db.read().unwrap_or_else(|p| p.into_inner());
            f(&db)
        })
        .await
        .map_err(|e| StoreFailure::Backend(format!("store worker: {e}")))?
    }

    /// Rewrites the file without the pages it no longer uses, and gives
    /// them back to the file system (redb's compaction: a copy-on-write
    /// store keeps freed pages for reuse, and its file never shrinks by
    /// itself). Every other call waits until it is done.
    ///
    /// A file still more than twice the size of what it holds is then
    /// rewritten: its keys copied in order into a new file that replaces it.
    pub async fn compact(&self) -> Result<bool, StoreFailure> {
        let db = self.db.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = db.write().unwrap_or_else(|p| p.into_inner());
            let compacted = db.compact().map_err(backend)?;
            let (held, file) = Self::occupancy(&db, &path)?;
            if file < REWRITE_FLOOR || file <= REWRITE_RATIO * held {
                return Ok(compacted);
            }
            let started = std::time::Instant::now();
            Self::rewrite_file(&mut db, &path)?;
            let (_, after) = Self::occupancy(&db, &path)?;
            tracing::info!(
                before = file,
                after,
                held,
                ms = started.elapsed().as_millis() as u64,
                "store file rewritten"
            );
            Ok(true)
        })
        .await
        .map_err(|e| StoreFailure::Backend(format!("store worker: {e}")))?
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn compact(&self) -> Result<bool, StoreFailure> {
        RedbStore::compact(self).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreFailure> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(DATA).map_err(backend)?;
            let v = t.get(key.as_str()).map_err(backend)?;
            Ok(v.map(|g| {
                let (rev, value) = g.value();
                KeyValue {
                    key: key.clone(),
                    value: value.to_vec(),
                    mod_revision: rev,
                }
            }))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreFailure> {
        let prefix = prefix.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(DATA).map_err(backend)?;
            let mut out = Vec::new();
            for item in t.range(prefix.as_str()..).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                let (rev, value) = v.value();
                out.push(KeyValue {
                    key: key.to_owned(),
                    value: value.to_vec(),
                    mod_revision: rev,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn revision(&self) -> Result<Revision, StoreFailure> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(META).map_err(backend)?;
            Ok(t.get(REVISION).map_err(backend)?.map_or(0, |g| g.value()))
        })
        .await
    }

    async fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<TxnResult, StoreFailure> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            let rev;
            {
                let mut data = tx.open_table(DATA).map_err(backend)?;
                for c in &compares {
                    let now = data
                        .get(c.key.as_str())
                        .map_err(backend)?
                        .map(|g| g.value().0);
                    if now != c.mod_revision {
                        return Ok(TxnResult::Conflict);
                    }
                }
                let mut meta = tx.open_table(META).map_err(backend)?;
                rev = meta
                    .get(REVISION)
                    .map_err(backend)?
                    .map_or(0, |g| g.value())
                    + 1;
                meta.insert(REVISION, rev).map_err(backend)?;
                for op in &ops {
                    match op {
                        TxnOp::Put(k, v) => {
                            data.insert(k.as_str(), (rev, v.as_slice()))
                                .map_err(backend)?;
                        }
                        TxnOp::Delete(k) => {
                            data.remove(k.as_str()).map_err(backend)?;
                        }
                    }
                }
            }
            tx.commit().map_err(backend)?;
            Ok(TxnResult::Committed(rev))
        })
        .await
    }
}
