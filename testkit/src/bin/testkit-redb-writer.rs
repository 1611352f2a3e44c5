//! Writes to the redb store at `VAQUERO_REDB_WRITER` in a loop, printing
//! `ack <key> <revision>` after each committed write: until killed, or
//! `VAQUERO_REDB_WRITES` writes.
#![allow(clippy::unwrap_used)] // a test helper: a panic fails the test

use std::io::Write;
use std::path::PathBuf;

use vaquero_engine::{RedbStore, Store};

fn main() {
    let path = std::env::var_os("VAQUERO_REDB_WRITER").expect("VAQUERO_REDB_WRITER");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = RedbStore::open(&PathBuf::from(path)).unwrap();
        let mut out = std::io::stdout().lock();
        let start = s.revision().await.unwrap();
        let writes: u64 = std::env::var("VAQUERO_REDB_WRITES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX);
        for i in start..start.saturating_add(writes) {
            let key = format!("k/{i:08}");
            // A sizeable value, so a kill often lands inside a write.
            let value = format!("{i}:").repeat(200).into_bytes();
            let rev = s.put(&key, value).await.unwrap();
            writeln!(out, "ack {key} {rev}").unwrap();
            out.flush().unwrap();
        }
    });
}
