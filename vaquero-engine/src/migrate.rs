//! Copying every key of one [`Store`] into another: moving a lab's redb
//! file onto etcd, a backup of etcd into a redb file, and its restore
//! (`vaquero migrate`).
//!
//! Every key of the engine's state is under [`STATE`] (`v1/`): those are
//! copied, and nothing else (an etcd store's election keys are not
//! state). Keys and values are copied as they are; revisions are the destination's
//! own (nothing the engine stores depends on a store's revision numbers).
//! A key that already exists at the destination is refused unless the
//! caller overwrites. Writes go in transactions of [`BATCH`] keys (under
//! etcd's default `--max-txn-ops`). Afterwards every copied key is read
//! back: the count and a SHA-256 over the keys and values must match the
//! source's.

use sha2::{Digest, Sha256};

use crate::store::{KeyValue, Store, StoreFailure, TxnOp, TxnResult};

/// The prefix of every key of Vaquero's state.
pub const STATE: &str = "v1/";

/// Keys written per transaction.
pub const BATCH: usize = 100;

/// What a copy did (or would do, dry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Keys at the source.
    pub keys: usize,
    /// Bytes of values at the source.
    pub bytes: u64,
    /// SHA-256 (hex) over every key and value at the source, in key order.
    pub checksum: String,
    /// Source keys that already existed at the destination.
    pub existing: usize,
    /// Whether anything was written (not a dry run).
    pub written: bool,
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateFailure {
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// Keys exist at the destination, and overwriting was not asked for.
    #[error(
        "{count} of the keys already exist at the destination (the first: {first}); nothing was written (overwrite them on purpose, or migrate into an empty store)"
    )]
    Exists {
        /// How many.
        count: usize,
        /// The first, in key order.
        first: String,
    },
    /// The destination does not hold what was copied.
    #[error("the copy does not match its source: {0}")]
    Mismatch(String),
}

/// The SHA-256 (hex) of `kvs` (keys and values, in the order given).
pub fn checksum(kvs: &[KeyValue]) -> String {
    let mut h = Sha256::new();
    for kv in kvs {
        h.update((kv.key.len() as u64).to_be_bytes());
        h.update(kv.key.as_bytes());
        h.update((kv.value.len() as u64).to_be_bytes());
        h.update(&kv.value);
    }
    hex::encode(h.finalize())
}

/// Copies every key of the state in `from` into `to` (nothing when `dry_run`), then
/// checks the copy.
pub async fn migrate(
    from: &dyn Store,
    to: &dyn Store,
    overwrite: bool,
    dry_run: bool,
) -> Result<Copied, MigrateFailure> {
    let source = from.list(STATE).await?;
    let target = to.list(STATE).await?;
    let present: std::collections::HashSet<&str> =
        target.iter().map(|kv| kv.key.as_str()).collect();
    let existing: Vec<&str> = source
        .iter()
        .map(|kv| kv.key.as_str())
        .filter(|k| present.contains(k))
        .collect();
    let copied = Copied {
        keys: source.len(),
        bytes: source.iter().map(|kv| kv.value.len() as u64).sum(),
        checksum: checksum(&source),
        existing: existing.len(),
        written: !dry_run,
    };
    if let Some(first) = existing.first()
        && !overwrite
    {
        return Err(MigrateFailure::Exists {
            count: existing.len(),
            first: (*first).to_owned(),
        });
    }
    if dry_run {
        return Ok(copied);
    }
    for chunk in source.chunks(BATCH) {
        let ops = chunk
            .iter()
            .map(|kv| TxnOp::Put(kv.key.clone(), kv.value.clone()))
            .collect();
        if to.txn(Vec::new(), ops).await? == TxnResult::Conflict {
            return Err(MigrateFailure::Mismatch(
                "a write without conditions conflicted".into(),
            ));
        }
    }
    // Read back exactly the source's keys.
    let keys: std::collections::HashSet<&str> = source.iter().map(|kv| kv.key.as_str()).collect();
    let back: Vec<KeyValue> = to
        .list(STATE)
        .await?
        .into_iter()
        .filter(|kv| keys.contains(kv.key.as_str()))
        .collect();
    if back.len() != source.len() {
        return Err(MigrateFailure::Mismatch(format!(
            "{} keys read back, {} copied",
            back.len(),
            source.len()
        )));
    }
    let sum = checksum(&back);
    if sum != copied.checksum {
        return Err(MigrateFailure::Mismatch(format!(
            "checksum {sum} read back, {} copied",
            copied.checksum
        )));
    }
    Ok(copied)
}

/// The format name of a [`Snapshot`].
pub const SNAPSHOT_FORMAT: &str = "vaquero-state/1";

/// Every key of the state at one moment, as `GET /v1/backup` hands it out
/// (`vaquero backup` writes it into a redb file): keys and values as
/// stored, with their count, size and checksum ([`checksum`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Snapshot {
    /// [`SNAPSHOT_FORMAT`].
    pub format: String,
    /// How many keys.
    pub keys: usize,
    /// Bytes of values.
    pub bytes: u64,
    /// SHA-256 (hex) over every key and value, in key order.
    pub checksum: String,
    /// The keys and values, in key order.
    pub entries: Vec<Entry>,
}

/// One key of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value, base64 (standard alphabet, padded).
    #[serde(with = "b64")]
    #[cfg_attr(feature = "server", schema(value_type = String, content_encoding = "base64"))]
    pub value: Vec<u8>,
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

impl Snapshot {
    /// The state in `store` now (one consistent read: one read
    /// transaction of redb, one revision of etcd).
    pub async fn take(store: &dyn Store) -> Result<Snapshot, StoreFailure> {
        let kvs = store.list(STATE).await?;
        Ok(Snapshot {
            format: SNAPSHOT_FORMAT.to_owned(),
            keys: kvs.len(),
            bytes: kvs.iter().map(|kv| kv.value.len() as u64).sum(),
            checksum: checksum(&kvs),
            entries: kvs
                .into_iter()
                .map(|kv| Entry {
                    key: kv.key,
                    value: kv.value,
                })
                .collect(),
        })
    }

    /// Writes the snapshot into `to` as [`migrate`] does (refusing keys
    /// that exist unless `overwrite`), after checking that it is whole:
    /// its format, count and checksum.
    pub async fn write_into(
        self,
        to: &dyn Store,
        overwrite: bool,
    ) -> Result<Copied, MigrateFailure> {
        if self.format != SNAPSHOT_FORMAT {
            return Err(MigrateFailure::Mismatch(format!(
                "format `{}`, not `{SNAPSHOT_FORMAT}`",
                self.format
            )));
        }
        let kvs: Vec<KeyValue> = self
            .entries
            .into_iter()
            .map(|e| KeyValue {
                key: e.key,
                value: e.value,
                mod_revision: 0,
            })
            .collect();
        let sum = checksum(&kvs);
        if kvs.len() != self.keys || sum != self.checksum {
            return Err(MigrateFailure::Mismatch(format!(
                "the snapshot is damaged: {} keys with sha256 {sum}, it says {} with {}",
                kvs.len(),
                self.keys,
                self.checksum
            )));
        }
        let from = crate::store::MemoryStore::new();
        for chunk in kvs.chunks(BATCH) {
            let ops = chunk
                .iter()
                .map(|kv| TxnOp::Put(kv.key.clone(), kv.value.clone()))
                .collect();
            from.txn(Vec::new(), ops).await?;
        }
        migrate(&from, to, overwrite, false).await
    }
}
