//! Observations buffered on disk until the server has them.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::observe::Observation;

/// The spool could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolFailure {
    /// The file system.
    #[error("observation spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// An observation with its number in the spool: the server keeps the
/// highest number it has of each agent, so a batch sent twice is taken
/// once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spooled {
    /// Its number, from 1, raised by one per observation, never reused.
    pub seq: u64,
    /// The observation.
    pub observation: Observation,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// The number of its last observation.
    last: u64,
    bytes: u64,
}

/// Observations on disk, append-only, in segment files of numbered JSON
/// lines, until [`ack`](Self::ack)nowledged; read back oldest first. A
/// push is synced before it returns, so what the services saw survives
/// `kill -9` and a power loss. Past `bound` bytes not yet acknowledged,
/// new observations are dropped and counted (a metric and a log line),
/// never a crash; the oldest are kept, since they tell what the engine
/// is waiting for.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    next: u64,
    acked: u64,
    bytes: u64,
    bound: u64,
    dropped: u64,
    warned: bool,
}

/// A segment is closed past this size and a new one started.
const SEGMENT: u64 = 8 << 20;
const ACKED: &str = "acked";

fn io(path: &Path) -> impl Fn(std::io::Error) -> SpoolFailure + '_ {
    move |source| SpoolFailure::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    /// Opens (or makes) the spool in `dir`, keeping at most `bound` bytes
    /// not yet acknowledged. A line torn by a crash in the middle of a
    /// write (the end of the last segment) is cut off.
    pub fn open(dir: &Path, bound: u64) -> Result<Spool, SpoolFailure> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let acked = match std::fs::read_to_string(dir.join(ACKED)) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&dir.join(ACKED))(e)),
        };
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let first = name.strip_prefix("seg-")?.strip_suffix(".jsonl")?;
                Some((first.parse().ok()?, e.path()))
            })
            .collect();
        names.sort();
        let mut segments = VecDeque::new();
        let mut next = acked + 1;
        let count = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            let mut good = 0u64;
            let mut last = first.saturating_sub(1);
            let mut line = String::new();
            let mut r = BufReader::new(&mut f);
            loop {
                line.clear();
                let n = r.read_line(&mut line).map_err(io(&path))?;
                if n == 0 {
                    break;
                }
                match serde_json::from_str::<Spooled>(line.trim_end()) {
                    Ok(s) if line.ends_with('\n') => {
                        last = s.seq;
                        good += n as u64;
                    }
                    _ if i + 1 == count => break,
                    _ => {
                        tracing::warn!(path = %path.display(), "spool: an unreadable line skipped");
                        good += n as u64;
                    }
                }
            }
            drop(r);
            let len = f.metadata().map_err(io(&path))?.len();
            if good < len {
                tracing::warn!(
                    path = %path.display(),
                    "spool: a line torn by a crash cut off ({} bytes)",
                    len - good
                );
                f.set_len(good).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
            }
            next = next.max(last + 1);
            segments.push_back(Segment {
                path,
                last,
                bytes: good,
            });
        }
        let mut s = Spool {
            dir: dir.to_path_buf(),
            segments,
            next,
            acked,
            bytes: 0,
            bound,
            dropped: 0,
            warned: false,
        };
        s.forget_acked()?;
        s.bytes = s.segments.iter().map(|g| g.bytes).sum();
        Ok(s)
    }

    /// The number the next observation gets.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The highest number acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Bytes on disk (acknowledged observations of a segment still in
    /// use included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Observations dropped since the spool was opened because it was
    /// full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends `batch` (synced before it returns); returns how many were
    /// kept: the first ones, the rest were dropped (the spool is full).
    pub fn push(&mut self, batch: &[Observation]) -> Result<usize, SpoolFailure> {
        let mut out = Vec::new();
        let mut kept = 0;
        for o in batch {
            let s = Spooled {
                seq: self.next,
                observation: o.clone(),
            };
            let line = serde_json::to_vec(&s).ok().map(|mut l| {
                l.push(b'\n');
                l
            });
            let fits = |l: &Vec<u8>| self.bytes + (out.len() + l.len()) as u64 <= self.bound;
            let Some(line) = line.filter(fits) else {
                // This one and every later one: what is kept is a prefix.
                let lost = (batch.len() - kept) as u64;
                self.dropped += lost;
                metrics::counter!("vaquero_agent_spool_dropped_total").increment(lost);
                if !self.warned {
                    self.warned = true;
                    tracing::error!(
                        bound = self.bound,
                        "observation spool full: new observations are dropped until the server takes the old ones"
                    );
                }
                break;
            };
            self.next += 1;
            kept += 1;
            out.extend_from_slice(&line);
        }
        if out.is_empty() {
            return Ok(0);
        }
        let first = self.next - kept as u64;
        let roll = self.segments.back().is_none_or(|g| g.bytes >= SEGMENT);
        if roll {
            let path = self.dir.join(format!("seg-{first:020}.jsonl"));
            self.segments.push_back(Segment {
                path,
                last: first - 1,
                bytes: 0,
            });
        }
        let Some(seg) = self.segments.back_mut() else {
            return Ok(0);
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&seg.path)
            .map_err(io(&seg.path))?;
        f.write_all(&out)
            .and_then(|()| f.sync_data())
            .map_err(io(&seg.path))?;
        if roll {
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        seg.last = self.next - 1;
        seg.bytes += out.len() as u64;
        self.bytes += out.len() as u64;
        metrics::gauge!("vaquero_agent_spool_bytes").set(self.bytes as f64);
        Ok(kept)
    }

    /// Up to `max` observations not acknowledged yet, oldest first.
    pub fn pending(&self, max: usize) -> Result<Vec<Spooled>, SpoolFailure> {
        let mut out = Vec::new();
        for seg in &self.segments {
            if seg.last <= self.acked {
                continue;
            }
            let f = std::fs::File::open(&seg.path).map_err(io(&seg.path))?;
            let r = BufReader::new(f.take(seg.bytes));
            for line in r.lines() {
                let line = line.map_err(io(&seg.path))?;
                if let Ok(s) = serde_json::from_str::<Spooled>(&line)
                    && s.seq > self.acked
                {
                    out.push(s);
                    if out.len() == max {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The server has every observation up to `seq`: they are not sent
    /// again, and segments holding only those are removed.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolFailure> {
        let seq = seq.min(self.next - 1);
        if seq <= self.acked {
            return Ok(());
        }
        let path = self.dir.join(ACKED);
        let tmp = self.dir.join(".acked.tmp");
        std::fs::write(&tmp, format!("{seq}\n"))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io(&path))?;
        self.acked = seq;
        self.forget_acked()?;
        self.warned = false;
        Ok(())
    }

    /// Removes segments whose observations are all acknowledged (the next
    /// push starts a new one).
    fn forget_acked(&mut self) -> Result<(), SpoolFailure> {
        while self.segments.front().is_some_and(|g| g.last <= self.acked) {
            if let Some(seg) = self.segments.pop_front() {
                match std::fs::remove_file(&seg.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&seg.path)(e)),
                }
                self.bytes = self.bytes.saturating_sub(seg.bytes);
            }
        }
        Ok(())
    }
}
