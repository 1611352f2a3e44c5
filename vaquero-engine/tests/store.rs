//! The `Store` contract, for the memory and the redb store alike; and redb
//! under `kill -9`: a child process (`testkit-redb-writer`) writes in a
//! loop, acknowledging each committed write on stdout; after it is killed
//! mid-stream, every acknowledged write is in the reopened file and the
//! file is sound. A kill cannot tell a sync from the page cache, so a
//! second test traces the writer's system calls (strace) and checks that
//! each acknowledgement follows a sync of the file it wrote.
#![allow(clippy::unwrap_used)]

use locate::testkit;
use vaquero_test_support as locate;
#[cfg(feature = "etcd")]
use vaquero_test_support as support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vaquero_engine::{Compare, MemoryStore, RedbStore, Store, TxnOp, TxnResult};
#[cfg(feature = "etcd")]
use vaquero_engine::{EtcdConfig, EtcdStore, StoreFailure};

/// The contract every store keeps. Revisions are compared with each
/// other, not with constants: etcd's revision is its cluster's, and starts
/// wherever the cluster is.
async fn contract(s: &dyn Store) {
    let r0 = s.revision().await.unwrap();
    assert_eq!(s.get("hosts/a").await.unwrap(), None);

    let r1 = s.put("hosts/a", b"1".to_vec()).await.unwrap();
    let r2 = s.put("hosts/b", b"2".to_vec()).await.unwrap();
    let r3 = s.put("records/x", b"x".to_vec()).await.unwrap();
    assert!(r0 < r1 && r1 < r2 && r2 < r3, "{r0} {r1} {r2} {r3}");
    assert_eq!(s.revision().await.unwrap(), r3);
    let a = s.get("hosts/a").await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.mod_revision), (b"1".as_slice(), r1));

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
    let TxnResult::Committed(r4) = s
        .compare_and_swap("hosts/a", Some(r1), b"1b".to_vec())
        .await
        .unwrap()
    else {
        panic!("a compare-and-swap at the right revision conflicted");
    };
    assert!(r4 > r3);
    assert_eq!(
        s.compare_and_swap("hosts/a", Some(r1), b"stale".to_vec())
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
    let TxnResult::Committed(r5) = s
        .compare_and_swap("hosts/c", None, b"3".to_vec())
        .await
        .unwrap()
    else {
        panic!("a create of an absent key conflicted");
    };
    assert_eq!(s.revision().await.unwrap(), r5, "a conflict writes nothing");

    // A transaction over several keys is all or nothing.
    let t = s
        .txn(
            vec![
                Compare {
                    key: "hosts/a".into(),
                    mod_revision: Some(r4),
                },
                Compare {
                    key: "hosts/b".into(),
                    mod_revision: Some(r1), // stale: b is at r2
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
                mod_revision: Some(r2),
            }],
            vec![
                TxnOp::Put("hosts/a".into(), b"yes".to_vec()),
                TxnOp::Delete("hosts/b".into()),
            ],
        )
        .await
        .unwrap();
    let TxnResult::Committed(r6) = t else {
        panic!("a transaction whose compares hold conflicted");
    };
    assert!(r6 > r5);
    assert_eq!(s.get("hosts/b").await.unwrap(), None);
    assert_eq!(s.get("hosts/a").await.unwrap().unwrap().mod_revision, r6);

    // Polling by revision.
    let since: Vec<String> = s
        .list_since("hosts/", r4)
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(since, ["hosts/a", "hosts/c"]);
    assert!(s.delete("hosts/c").await.unwrap() > r6);

    // A key written twice in one transaction: the last write counts.
    let t = s
        .txn(
            Vec::new(),
            vec![
                TxnOp::Put("hosts/d".into(), b"first".to_vec()),
                TxnOp::Delete("hosts/d".into()),
                TxnOp::Put("hosts/e".into(), b"gone".to_vec()),
                TxnOp::Put("hosts/d".into(), b"last".to_vec()),
                TxnOp::Delete("hosts/e".into()),
            ],
        )
        .await
        .unwrap();
    assert!(matches!(t, TxnResult::Committed(_)));
    assert_eq!(s.get("hosts/d").await.unwrap().unwrap().value, b"last");
    assert_eq!(s.get("hosts/e").await.unwrap(), None);
    s.delete("hosts/d").await.unwrap();
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
    assert_eq!(s.revision().await.unwrap(), 9);
    assert_eq!(s.get("hosts/a").await.unwrap().unwrap().value, b"yes");
}

/// The etcd store on a real 3-member cluster (Debian's etcd-server on
/// loopback): the contract; prefixes kept apart; a transaction of
/// thousands of keys and a list read in pages at one revision; a member
/// down tolerated; quorum lost is `Unavailable` within the timeout, and
/// every acknowledged write is there once the cluster is back, even after
/// every member was killed.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_keeps_the_contract_on_a_real_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = support::EtcdCluster::start(dir.path(), 3);
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.prefix = "/t1/".into();
    // A write that a dying etcd leader loses times out (2 s) and is tried
    // again on the next member, which has a new leader by then.
    let s = EtcdStore::connect(&config).await.unwrap();
    contract(&s).await;

    // Another prefix is another store.
    let mut other = config.clone();
    other.prefix = "/t2/".into();
    let o = EtcdStore::connect(&other).await.unwrap();
    assert!(o.list("hosts/").await.unwrap().is_empty());
    assert_eq!(o.get("hosts/a").await.unwrap(), None);

    // One transaction of 2,500 keys (an engine step of a large site), read
    // back in key order across pages.
    let ops: Vec<TxnOp> = (0..2500)
        .map(|i| TxnOp::Put(format!("big/{i:05}"), format!("v{i}").into_bytes()))
        .collect();
    let TxnResult::Committed(big) = s.txn(Vec::new(), ops).await.unwrap() else {
        panic!("a transaction without compares conflicted");
    };
    let all = s.list("big/").await.unwrap();
    assert_eq!(all.len(), 2500);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    assert!(all.iter().all(|kv| kv.mod_revision == big));
    assert_eq!(all[1234].value, b"v1234");

    // One member of three down: the store goes on.
    cluster.kill(2);
    let mut acked = Vec::new();
    for i in 0..20 {
        let key = format!("acked/{i:03}");
        let r = s.put(&key, vec![b'x'; 64]).await.unwrap();
        acked.push((key, r));
    }

    // Quorum lost: a write fails as unavailable, within the bound.
    cluster.kill(1);
    let started = Instant::now();
    let e = s.put("acked/lost", b"?".to_vec()).await.unwrap_err();
    assert!(matches!(e, StoreFailure::Unavailable(_)), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a write without quorum hung for {:?}",
        started.elapsed()
    );

    // Every member killed, then all back: every acknowledged write is there.
    cluster.kill(0);
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_healthy(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        match s.list("acked/").await {
            Ok(kvs) => break kvs,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the store did not come back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let back: Vec<(String, u64)> = back
        .into_iter()
        .filter(|kv| kv.key != "acked/lost")
        .map(|kv| (kv.key, kv.mod_revision))
        .collect();
    assert_eq!(back, acked);
    assert_eq!(s.list("big/").await.unwrap().len(), 2500);
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

/// `migrate`: every key of the state copied and checked; keys existing
/// at the destination refused unless overwritten; a dry run writes
/// nothing; keys outside the state are left.
#[tokio::test]
async fn migrate_copies_the_state_and_refuses_to_overwrite() {
    use vaquero_engine::migrate::{MigrateFailure, checksum, migrate};
    let dir = tempfile::tempdir().unwrap();
    let from = MemoryStore::new();
    for i in 0..250 {
        from.put(
            &format!("v1/sites/s/hosts/h{i:03}"),
            format!("state {i}").into_bytes(),
        )
        .await
        .unwrap();
    }
    from.put("leader/1234", b"not state".to_vec())
        .await
        .unwrap();
    let to = RedbStore::open(&dir.path().join("to.redb")).unwrap();

    let dry = migrate(&from, &to, false, true).await.unwrap();
    assert_eq!((dry.keys, dry.written), (250, false));
    assert!(to.list("").await.unwrap().is_empty(), "a dry run wrote");

    let done = migrate(&from, &to, false, false).await.unwrap();
    assert_eq!((done.keys, done.existing, done.written), (250, 0, true));
    assert_eq!(done.checksum, dry.checksum);
    let copied = to.list("").await.unwrap();
    assert_eq!(copied.len(), 250, "only the state is copied");
    assert_eq!(checksum(&copied), done.checksum);

    // Again: every key exists now.
    let e = migrate(&from, &to, false, false).await.unwrap_err();
    assert!(
        matches!(e, MigrateFailure::Exists { count: 250, .. }),
        "{e}"
    );
    from.put("v1/sites/s/hosts/h000", b"newer".to_vec())
        .await
        .unwrap();
    let again = migrate(&from, &to, true, false).await.unwrap();
    assert_eq!(again.existing, 250);
    assert_eq!(
        to.get("v1/sites/s/hosts/h000")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"newer"
    );
}

/// Compaction gives what was deleted back to the file system; the store
/// keeps what it holds, and works on.
#[tokio::test]
async fn redb_compaction_shrinks_the_file_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = RedbStore::open(&path).unwrap();
    for chunk in 0..20 {
        let ops = (0..250)
            .map(|i| TxnOp::Put(format!("v1/k{chunk:02}-{i:03}"), vec![7u8; 1024]))
            .collect();
        store.txn(Vec::new(), ops).await.unwrap();
    }
    for chunk in 1..20 {
        let ops = (0..250)
            .map(|i| TxnOp::Delete(format!("v1/k{chunk:02}-{i:03}")))
            .collect();
        store.txn(Vec::new(), ops).await.unwrap();
    }
    let before = std::fs::metadata(&path).unwrap().len();
    let kept = store.list("v1/").await.unwrap();
    assert_eq!(kept.len(), 250);
    assert!(Store::compact(&store).await.unwrap());
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after < before, "{after} bytes after, {before} before");
    assert_eq!(store.list("v1/").await.unwrap(), kept);
    store.put("v1/after", b"x".to_vec()).await.unwrap();
    assert_eq!(store.list("v1/").await.unwrap().len(), 251);
    // The memory store has nothing to give back.
    assert!(!MemoryStore::new().compact().await.unwrap());
}

/// Deletes spread across the keys leave the B-trees' pages part empty,
/// which compaction cannot give back; a rewrite copies the keys in order
/// into a new file (compaction does it by itself for a file still more
/// than twice what it holds; bench/state-growth shows it). Nothing is
/// lost, revisions go on, and a rewrite's file left by a crash is
/// removed at open.
#[tokio::test]
async fn redb_rewrite_keeps_everything_in_a_smaller_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let store = RedbStore::open(&path).unwrap();
    // Hosts' keys interleaved, as timelines and records are.
    for round in 0..60 {
        let ops = (0..1000)
            .map(|h| TxnOp::Put(format!("v1/h{h:04}/{round:03}"), vec![round as u8; 600]))
            .collect();
        store.txn(Vec::new(), ops).await.unwrap();
    }
    for round in 0..60 {
        if round % 3 == 0 {
            continue;
        }
        let ops = (0..1000)
            .map(|h| TxnOp::Delete(format!("v1/h{h:04}/{round:03}")))
            .collect();
        store.txn(Vec::new(), ops).await.unwrap();
    }
    let kept = store.list("v1/").await.unwrap();
    assert_eq!(kept.len(), 20_000);
    let held: u64 = kept
        .iter()
        .map(|kv| (kv.key.len() + kv.value.len()) as u64)
        .sum();
    let before = std::fs::metadata(&path).unwrap().len();
    let rev = store.put("v1/before", b"x".to_vec()).await.unwrap();
    assert!(Store::compact(&store).await.unwrap());
    let compacted = std::fs::metadata(&path).unwrap().len();
    store.rewrite().await.unwrap();
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(
        after < compacted && compacted < before && after < 2 * held,
        "{after} bytes rewritten, {compacted} compacted, {before} before, {held} held"
    );
    assert!(!path.with_file_name("state.redb.rewrite").exists());
    let mut now = store.list("v1/").await.unwrap();
    now.retain(|kv| kv.key != "v1/before");
    assert_eq!(now, kept, "the same keys, values and revisions");
    let next = store.put("v1/after", b"y".to_vec()).await.unwrap();
    assert!(next > rev, "revisions go on: {next} after {rev}");
    drop(store);
    // A crash mid-rewrite leaves its file: removed at open, the store whole.
    std::fs::write(path.with_file_name("state.redb.rewrite"), b"partial").unwrap();
    let store = RedbStore::open(&path).unwrap();
    assert!(!path.with_file_name("state.redb.rewrite").exists());
    assert_eq!(store.list("v1/").await.unwrap().len(), 20_002);
}

/// A snapshot (what `GET /v1/backup` hands out) goes through JSON and
/// into a redb file whole; one damaged on the way is refused, nothing
/// written.
#[tokio::test]
async fn a_snapshot_round_trips_and_a_damaged_one_is_refused() {
    use vaquero_engine::migrate::{MigrateFailure, Snapshot};
    let dir = tempfile::tempdir().unwrap();
    let from = MemoryStore::new();
    for i in 0..150u8 {
        from.put(&format!("v1/k{i:03}"), vec![i, 0, 255, i])
            .await
            .unwrap();
    }
    from.put("leader/x", b"not state".to_vec()).await.unwrap();
    let snap = Snapshot::take(&from).await.unwrap();
    assert_eq!((snap.keys, snap.bytes), (150, 600));
    let json = serde_json::to_string(&snap).unwrap();
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snap);

    let mut damaged = back.clone();
    damaged.entries[7].value[1] = 1;
    let to = RedbStore::open(&dir.path().join("a.redb")).unwrap();
    let e = damaged.write_into(&to, false).await.unwrap_err();
    assert!(matches!(e, MigrateFailure::Mismatch(_)), "{e}");
    assert!(to.list("").await.unwrap().is_empty(), "nothing written");
    let mut short = back.clone();
    short.entries.pop();
    assert!(short.write_into(&to, false).await.is_err());

    let done = back.write_into(&to, false).await.unwrap();
    assert_eq!(
        (done.keys, done.checksum.as_str()),
        (150, snap.checksum.as_str())
    );
    assert_eq!(to.list("").await.unwrap().len(), 150);
}

/// The etcd store over TLS (the members' certificate signed by a CA of
/// `vaquero certs init`'s, pinned by the client) with authentication on:
/// the contract holds as the user with the right password; a wrong
/// password, or no CA, is refused.
#[cfg(all(feature = "etcd", feature = "server"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_over_tls_as_a_user() {
    use vaquero_engine::pki;
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    pki::init(&certs, &["127.0.0.1".to_owned()], jiff::Timestamp::now()).unwrap();
    let tls = [
        certs.join(pki::SERVER_CERT),
        certs.join(pki::SERVER_KEY),
        certs.join(pki::CA_CERT),
    ];
    let cluster = support::EtcdCluster::start_with(&dir.path().join("etcd"), 1, Some(tls));
    let mut config = EtcdConfig::new(cluster.endpoints());
    config.ca = Some(certs.join(pki::CA_CERT));
    config.prefix = "/tls/".into();

    // Authentication on: a root user with a password.
    let admin_tls = etcd_client::TlsOptions::new().ca_certificate(
        etcd_client::Certificate::from_pem(std::fs::read(certs.join(pki::CA_CERT)).unwrap()),
    );
    let mut admin = etcd_client::Client::connect(
        cluster.endpoints(),
        Some(etcd_client::ConnectOptions::new().with_tls(admin_tls)),
    )
    .await
    .unwrap();
    admin.user_add("root", "s3cret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    config.user = Some(("root".into(), "s3cret".into()));
    let s = EtcdStore::connect(&config).await.unwrap();
    contract(&s).await;

    let mut wrong = config.clone();
    wrong.user = Some(("root".into(), "guess".into()));
    assert!(
        EtcdStore::connect(&wrong).await.is_err(),
        "a wrong password was taken"
    );
    let mut no_ca = config.clone();
    no_ca.ca = None;
    let refused = match EtcdStore::connect(&no_ca).await {
        Err(_) => true,
        Ok(s) => s.get("hosts/a").await.is_err(),
    };
    assert!(refused, "a member's certificate was trusted without its CA");
}
