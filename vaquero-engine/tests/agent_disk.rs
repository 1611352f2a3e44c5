//! The agent's disk: the model cache and the observation spool, on a real
//! file system, across reopenings (what a restart does) and damage (what
//! a crash or a bad disk does).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;

use jiff::Timestamp;
use vaquero_engine::agent::{CacheFailure, ModelCache, Spool};
use vaquero_engine::{Observation, ObservationKind};
use vaquero_model::{SiteModel, Sot};

fn lab() -> SiteModel {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lab");
    let sot = Sot::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut m = sot.compile().unwrap().remove("lab").unwrap();
    m.set_revision(Some("abc123".into()));
    m
}

#[test]
fn the_model_cache_keeps_the_last_good_model_and_refuses_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(&dir.path().join("cache"));
    assert!(cache.load().unwrap().is_none(), "nothing stored yet");
    let model = lab();
    cache.store(&model).unwrap();
    let back = cache.load().unwrap().unwrap();
    assert_eq!(back.version(), model.version());
    assert_eq!(back.revision(), Some("abc123"));
    assert_eq!(back.data(), model.data());
    // A temporary file a crash left behind changes nothing.
    std::fs::write(dir.path().join("cache/.model.json.tmp"), b"half a mod").unwrap();
    assert_eq!(cache.load().unwrap().unwrap().version(), model.version());
    // Stored again over the old one: still one good model.
    cache.store(&model).unwrap();
    assert_eq!(cache.load().unwrap().unwrap().version(), model.version());

    // One byte changed: refused, saying why.
    let mut bytes = std::fs::read(cache.path()).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(cache.path(), &bytes).unwrap();
    let e = cache.load().unwrap_err();
    assert!(matches!(e, CacheFailure::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");
    // Cut short: refused.
    std::fs::write(cache.path(), &bytes[..at]).unwrap();
    assert!(matches!(cache.load(), Err(CacheFailure::Corrupt { .. })));
}

fn obs(i: u64) -> Observation {
    Observation {
        at: Timestamp::from_second(1_700_000_000 + i as i64).unwrap(),
        host: format!("h{}", i % 3),
        attempt: Some(i),
        kind: ObservationKind::Script,
        ok: true,
        detail: format!("observation {i}"),
    }
}

fn seqs(s: &Spool) -> Vec<u64> {
    s.pending(1000).unwrap().iter().map(|s| s.seq).collect()
}

#[test]
fn the_spool_keeps_observations_until_acknowledged_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    let mut s = Spool::open(&path, 1 << 30).unwrap();
    let batch: Vec<Observation> = (1..=10).map(obs).collect();
    assert_eq!(s.push(&batch).unwrap(), 10);
    let p = s.pending(1000).unwrap();
    assert_eq!(
        p.iter().map(|s| s.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(p[3].observation, obs(4));
    assert_eq!(s.pending(3).unwrap().len(), 3, "at most max, oldest first");
    s.ack(4).unwrap();
    assert_eq!(seqs(&s), (5..=10).collect::<Vec<_>>());

    // A restart: the same observations pending, numbers go on.
    drop(s);
    let mut s = Spool::open(&path, 1 << 30).unwrap();
    assert_eq!(s.acked(), 4);
    assert_eq!(seqs(&s), (5..=10).collect::<Vec<_>>());
    assert_eq!(s.next_seq(), 11);
    s.push(&[obs(11)]).unwrap();
    assert_eq!(*seqs(&s).last().unwrap(), 11);
    // An acknowledgement repeated, or late, changes nothing.
    s.ack(3).unwrap();
    assert_eq!(s.acked(), 4);

    // A crash in the middle of a write leaves half a line: cut off on
    // reopening, nothing acknowledged or complete is lost.
    drop(s);
    let seg = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".jsonl"))
        .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(br#"{"seq":12,"observation":{"at":"#)
        .unwrap();
    let mut s = Spool::open(&path, 1 << 30).unwrap();
    assert_eq!(seqs(&s), (5..=11).collect::<Vec<_>>());
    assert_eq!(s.next_seq(), 12);
    s.push(&[obs(12)]).unwrap();
    assert_eq!(seqs(&s), (5..=12).collect::<Vec<_>>());

    // Everything acknowledged: the files go, the numbers do not restart.
    s.ack(12).unwrap();
    assert!(seqs(&s).is_empty());
    assert_eq!(s.bytes(), 0);
    drop(s);
    let mut s = Spool::open(&path, 1 << 30).unwrap();
    assert_eq!(s.next_seq(), 13);
    s.push(&[obs(13)]).unwrap();
    assert_eq!(seqs(&s), vec![13]);
}

#[test]
fn a_full_spool_drops_new_observations_counts_them_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let one = serde_json::to_vec(&vaquero_engine::agent::Spooled {
        seq: 10,
        observation: obs(10),
    })
    .unwrap()
    .len() as u64
        + 1;
    let mut s = Spool::open(dir.path(), one * 5).unwrap();
    let batch: Vec<Observation> = (1..=8).map(obs).collect();
    let kept = s.push(&batch).unwrap();
    assert!((4..=5).contains(&kept), "kept {kept}");
    assert_eq!(s.dropped(), 8 - kept as u64);
    // The oldest are kept (they say what the engine waits for), and what
    // is kept is the first `kept` of the batch: a checkpoint's installer
    // is told by its place in it.
    let pending: Vec<_> = s.pending(100).unwrap();
    let want: Vec<Observation> = (1..=kept as u64).map(obs).collect();
    assert_eq!(
        pending
            .into_iter()
            .map(|p| p.observation)
            .collect::<Vec<_>>(),
        want
    );
    // Once the server has them, there is room again.
    s.ack(kept as u64).unwrap();
    assert_eq!(s.push(&[obs(20)]).unwrap(), 1);
    assert_eq!(s.pending(100).unwrap()[0].observation, obs(20));
}
