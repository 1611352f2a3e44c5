//! The `Store` contract, for the memory and the redb store alike; and redb
//! under `kill -9`: a child process (`testkit-redb-writer`) writes in a
//! loop, acknowledging each committed write on stdout; after it is killed
//! mid-stream, every acknowledged write is in the reopened file and the
//! file is sound. A kill cannot tell a sync from the page cache, so a
//! second test traces the writer's system calls (strace) and checks that
//! each acknowledgement follows a sync of the file it wrote.
#![allow(clippy::unwrap_used)]

#[path = "../../testkit/src/locate.rs"]
mod locate;
use locate::testkit;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vaquero_engine::{Compare, MemoryStore, RedbStore, Store, TxnOp, TxnResult};

async fn contract(s: &dyn Store) {
    assert_eq!(s.revision().await.unwrap(), 0);
    assert_eq!(s.get("hosts/a").await.unwrap(), None);

    let r1 = s.put("hosts/a", b"1".to_vec()).await.unwrap();
    let r2 = s.put("hosts/b", b"2".to_vec()).await.unwrap();
    let r3 = s.put("records/x", b"x".to_vec()).await.unwrap();
    assert_eq!((r1, r2, r3), (1, 2, 3));
    assert_eq!(s.revision().await.unwrap(), 3);
    let a = s.get("hosts/a").await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.mod_revision), (b"1".as_slice(), 1));

    // Prefix listing, in key order, nothing from outside the prefix.
    let keys: Vec<String> = s
        .list("hosts/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["hosts/a", "hosts/b"]);
    assert!(s.list("nothing/").await.unwrap().is_empty());

    // Compare-and-swap: right revision wins once, a stale one loses.
    assert_eq!(
        s.compare_and_swap("hosts/a", Some(1), b"1b".to_vec())
            .await
            .unwrap(),
        TxnResult::Committed(4)
    );
    assert_eq!(
        s.compare_and_swap("hosts/a", Some(1), b"stale".to_vec())
            .await
            .unwrap(),
        TxnResult::Conflict
    );
    assert_eq!(s.get("hosts/a").await.unwrap().unwrap().value, b"1b");
    // Create-only.
    assert_eq!(
        s.compare_and_swap("hosts/a", None, b"again".to_vec())
            .await
            .unwrap(),
        TxnResult::Conflict
    );
    assert_eq!(
        s.compare_and_swap("hosts/c", None, b"3".to_vec())
            .await
            .unwrap(),
        TxnResult::Committed(5)
    );
    assert_eq!(s.revision().await.unwrap(), 5, "a conflict writes nothing");

    // A transaction over several keys is all or nothing.
    let t = s
        .txn(
            vec![
                Compare {
                    key: "hosts/a".into(),
                    mod_revision: Some(4),
                },
                Compare {
                    key: "hosts/b".into(),
                    mod_revision: Some(1), // stale: b is at 2
                },
            ],
            vec![
                TxnOp::Put("hosts/a".into(), b"no".to_vec()),
                TxnOp::Delete("hosts/b".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(t, TxnResult::Conflict);
    assert_eq!(s.get("hosts/a").await.unwrap().unwrap().value, b"1b");
    let t = s
        .txn(
            vec![Compare {
                key: "hosts/b".into(),
                mod_revision: Some(2),
            }],
            vec![
                TxnOp::Put("hosts/a".into(), b"yes".to_vec()),
                TxnOp::Delete("hosts/b".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(t, TxnResult::Committed(6));
    assert_eq!(s.get("hosts/b").await.unwrap(), None);
    assert_eq!(s.get("hosts/a").await.unwrap().unwrap().mod_revision, 6);

    // Polling by revision.
    let since: Vec<String> = s
        .list_since("hosts/", 4)
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(since, ["hosts/a", "hosts/c"]);
    assert_eq!(s.delete("hosts/c").await.unwrap(), 7);
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new()).await;
}

#[tokio::test]
async fn redb_store_keeps_the_contract_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vaquero.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        contract(&s).await;
    }
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.revision().await.unwrap(), 7);
    assert_eq!(s.get("hosts/a").await.unwrap().unwrap().value, b"yes");
}

#[test]
fn redb_loses_no_acknowledged_write_under_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut acked: Vec<(String, u64)> = Vec::new();
    // Three crashes at different points of the stream.
    for (round, kill_after) in [37usize, 211, 5].into_iter().enumerate() {
        let mut child = Command::new(testkit("testkit-redb-writer"))
            .env("VAQUERO_REDB_WRITER", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut n = 0;
        while n < kill_after {
            assert!(
                Instant::now() < deadline,
                "round {round}: the writer acknowledged only {n} writes in 120 s"
            );
            let Some(line) = lines.next() else {
                panic!("round {round}: the writer stopped after {n} writes");
            };
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("ack ") else {
                continue;
            };
            let (key, rev) = rest.split_once(' ').unwrap();
            acked.push((key.to_owned(), rev.parse().unwrap()));
            n += 1;
        }
        // SIGKILL while it is still writing.
        child.kill().unwrap();
        child.wait().unwrap();

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = RedbStore::open(&path).unwrap();
            for (key, rev) in &acked {
                let kv = s
                    .get(key)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("round {round}: acknowledged {key} is lost"));
                assert_eq!(kv.mod_revision, *rev);
                let i: u64 = key[2..].parse().unwrap();
                assert_eq!(kv.value, format!("{i}:").repeat(200).into_bytes());
            }
            let all = s.list("k/").await.unwrap();
            let revision = s.revision().await.unwrap();
            assert!(revision >= acked.last().unwrap().1);
            assert_eq!(all.len() as u64, revision, "one key per committed write");
        });
    }
}

/// "Committed means fsynced", seen from the system calls (a kill -9
/// cannot tell: the killed process's writes survive in the page cache).
/// The writer runs under strace; between any two acknowledgements on its
/// stdout, it wrote the database file and then synced it (fsync or
/// fdatasync of that file) before acknowledging.
#[test]
fn redb_syncs_the_file_before_each_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synced.redb");
    let log = dir.path().join("strace.log");
    let writes = 40;
    let out = Command::new("strace")
        .args(["-f", "-qq", "-y", "-s", "16", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=write,writev,pwrite64,pwritev,pwritev2,fsync,fdatasync,sync_file_range,msync",
        ])
        .arg(testkit("testkit-redb-writer"))
        .env("VAQUERO_REDB_WRITER", &path)
        .env("VAQUERO_REDB_WRITES", writes.to_string())
        .output()
        .expect("strace must be installed: run scripts/setup");
    assert!(
        out.status.success(),
        "strace/writer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acks = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(acks, writes, "the writer acknowledged {acks} writes");
    let db = path.to_str().unwrap();
    let trace = std::fs::read_to_string(&log).unwrap();
    // Per acknowledgement: the database written since the last one, and a
    // sync of it after its last write.
    let (mut wrote, mut synced, mut seen) = (false, false, 0);
    for line in trace.lines() {
        let call = line.split_once(' ').map_or(line, |(_, c)| c).trim_start();
        let on_db = call.contains(&format!("<{db}>"));
        if on_db && (call.starts_with("fsync(") || call.starts_with("fdatasync(")) {
            synced = wrote;
        } else if on_db && (call.starts_with("pwrite") || call.starts_with("write")) {
            wrote = true;
            synced = false;
        } else if call.starts_with("write(1") && call.contains("\"ack ") {
            assert!(
                wrote && synced,
                "acknowledgement {seen} without a sync of the written file before it:\n{line}"
            );
            (wrote, synced) = (false, false);
            seen += 1;
        }
    }
    assert_eq!(seen, writes, "acknowledgements seen in the trace");
}
