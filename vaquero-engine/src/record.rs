//! Execution records: every action the engine asks for, and how it went.
//!
//! A record is written *in progress* before the action is carried out
//! ([`Records::begin`]) and finished with its outcome, steps (one per try,
//! with start and end) and log ([`Records::finish`]). Records are queried
//! per host and per rollout and pruned by age.
//!
//! Keys (JSON values):
//! - `v1/records/{site}/hosts/{host}/{seq:020}`: the record
//! - `v1/records/{site}/rollouts/{rollout:020}/{host}/{seq:020}`: an index
//!   entry (the host key)

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::event::{Action, ActionKind, Outcome};
use crate::persist::PersistFailure;
use crate::store::{Store, TxnOp, TxnResult};

pub use crate::act::{RecordStatus, RecordStep};

/// How long execution records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Records that ended longer ago are deleted (default 90 days).
    pub max_age: std::time::Duration,
    /// A host's records of its newest this many boot attempts are kept,
    /// older ones deleted (default 20).
    pub attempts: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: std::time::Duration::from_secs(90 * 24 * 3600),
            attempts: 20,
        }
    }
}

impl Retention {
    /// Records kept `max_age`, and the newest `attempts` boot attempts of
    /// each host.
    pub fn new(max_age: std::time::Duration, attempts: usize) -> Self {
        Retention { max_age, attempts }
    }

    /// What ended (or was seen) before this instant is let go.
    pub fn cutoff(&self, now: Timestamp) -> Timestamp {
        now.checked_sub(self.max_age).unwrap_or(Timestamp::MIN)
    }
}

/// An action and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Record {
    /// `{host}/{seq}`: unique per site.
    pub id: String,
    /// The host.
    pub host: String,
    /// The rollout.
    pub rollout: Option<u64>,
    /// The stage.
    pub stage: usize,
    /// The boot attempt.
    pub attempt: u64,
    /// The host's action sequence number.
    pub seq: u64,
    /// What was asked (`power_cycle`, `set_boot_network`,
    /// `before_shutdown`, `validate`).
    pub action: String,
    /// Details (the job's command or URL, the boot).
    pub detail: String,
    /// Where it stands.
    pub status: RecordStatus,
    /// When it was issued.
    pub started: Timestamp,
    /// When its outcome arrived.
    pub ended: Option<Timestamp>,
    /// Its steps.
    pub steps: Vec<RecordStep>,
}

/// The execution records of one site in a store.
#[derive(Debug, Clone)]
pub struct Records<S: ?Sized> {
    store: Arc<S>,
    site: String,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record, PersistFailure> {
    serde_json::from_slice(bytes).map_err(|e| PersistFailure::Corrupt {
        key: key.to_owned(),
        error: e.to_string(),
    })
}

impl<S: Store + ?Sized> Records<S> {
    /// The records of `site` in `store`.
    pub fn new(store: Arc<S>, site: &str) -> Self {
        Records {
            store,
            site: site.to_owned(),
        }
    }

    fn host_key(&self, host: &str, seq: u64) -> String {
        format!("v1/records/{}/hosts/{host}/{seq:020}", self.site)
    }

    fn rollout_key(&self, rollout: u64, host: &str, seq: u64) -> String {
        format!(
            "v1/records/{}/rollouts/{rollout:020}/{host}/{seq:020}",
            self.site
        )
    }

    async fn write(&self, ops: Vec<TxnOp>) -> Result<(), PersistFailure> {
        match self.store.txn(Vec::new(), ops).await? {
            TxnResult::Committed(_) => Ok(()),
            TxnResult::Conflict => Err(PersistFailure::Conflict),
        }
    }

    /// Records `action` as in progress (before it is carried out); `None`
    /// for notices, which have no outcome.
    pub async fn begin(
        &self,
        action: &Action,
        now: Timestamp,
    ) -> Result<Option<Record>, PersistFailure> {
        let detail = match &action.kind {
            ActionKind::Notice(_) => return Ok(None),
            ActionKind::RunJob {
                boot, index, job, ..
            } => {
                let job = job.job();
                let what = job.url.clone().unwrap_or_else(|| job.command.join(" "));
                format!("{boot} job {index} ({:?}): {what}", job.kind).to_lowercase()
            }
            ActionKind::SetBootNetwork => "next boot from the network, once".into(),
            ActionKind::PowerCycle => "power cycle (on if off)".into(),
        };
        let r = Record {
            id: format!("{}/{}", action.host, action.seq),
            host: action.host.clone(),
            rollout: action.rollout,
            stage: action.stage,
            attempt: action.attempt,
            seq: action.seq,
            action: action.kind.name().to_owned(),
            detail,
            status: RecordStatus::InProgress,
            started: now,
            ended: None,
            steps: Vec::new(),
        };
        let key = self.host_key(&r.host, r.seq);
        let mut ops = vec![TxnOp::Put(key.clone(), encode(&r))];
        if let Some(ro) = r.rollout {
            ops.push(TxnOp::Put(
                self.rollout_key(ro, &r.host, r.seq),
                key.into_bytes(),
            ));
        }
        self.write(ops).await?;
        Ok(Some(r))
    }

    /// Finishes the record of `host`'s action `seq` with its outcome and
    /// steps (none given: one step with the outcome's output or error).
    /// `None` when there is no such record.
    pub async fn finish(
        &self,
        host: &str,
        seq: u64,
        outcome: &Outcome,
        steps: Vec<RecordStep>,
        now: Timestamp,
    ) -> Result<Option<Record>, PersistFailure> {
        let key = self.host_key(host, seq);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let mut r = decode(&key, &kv.value)?;
        if r.status != RecordStatus::InProgress {
            // A late or repeated result never overwrites the first.
            return Ok(Some(r));
        }
        r.status = if outcome.is_ok() {
            RecordStatus::Done
        } else {
            RecordStatus::Error
        };
        r.ended = Some(now);
        r.steps = steps;
        if r.steps.is_empty() {
            let log = match outcome {
                Outcome::Ok { output } => output.clone(),
                Outcome::Failed { message, .. } => message.clone(),
            };
            r.steps.push(RecordStep {
                name: r.action.clone(),
                started: r.started,
                ended: Some(now),
                status: r.status,
                log,
            });
        }
        self.write(vec![TxnOp::Put(key, encode(&r))]).await?;
        Ok(Some(r))
    }

    /// The records of `host`, oldest first.
    pub async fn for_host(&self, host: &str) -> Result<Vec<Record>, PersistFailure> {
        let prefix = format!("v1/records/{}/hosts/{host}/", self.site);
        self.store
            .list(&prefix)
            .await?
            .iter()
            .map(|kv| decode(&kv.key, &kv.value))
            .collect()
    }

    /// The records of `rollout`, by host then oldest first.
    pub async fn for_rollout(&self, rollout: u64) -> Result<Vec<Record>, PersistFailure> {
        let prefix = format!("v1/records/{}/rollouts/{rollout:020}/", self.site);
        let mut out = Vec::new();
        for idx in self.store.list(&prefix).await? {
            let key = String::from_utf8_lossy(&idx.value).into_owned();
            if let Some(kv) = self.store.get(&key).await? {
                out.push(decode(&key, &kv.value)?);
            }
        }
        Ok(out)
    }

    /// Deletes the records `retention` lets go: those that ended before
    /// `now - max_age`, and those of a host's boot attempts older than its
    /// newest `attempts` (records in progress are always kept); returns how
    /// many were deleted.
    pub async fn prune_retained(
        &self,
        retention: &Retention,
        now: Timestamp,
    ) -> Result<usize, PersistFailure> {
        self.prune_where(retention.cutoff(now), Some(retention.attempts.max(1)))
            .await
    }

    /// Deletes records that ended before `cutoff` (records in progress are
    /// kept); returns how many.
    pub async fn prune(&self, cutoff: Timestamp) -> Result<usize, PersistFailure> {
        self.prune_where(cutoff, None).await
    }

    /// Deletes finished records that ended before `cutoff`, or that belong
    /// to a host's boot attempts older than its newest `attempts`.
    async fn prune_where(
        &self,
        cutoff: Timestamp,
        attempts: Option<usize>,
    ) -> Result<usize, PersistFailure> {
        let prefix = format!("v1/records/{}/hosts/", self.site);
        let all = self.store.list(&prefix).await?;
        let mut records = Vec::with_capacity(all.len());
        for kv in &all {
            records.push(decode(&kv.key, &kv.value)?);
        }
        // Per host: the attempts to keep (all, without a bound).
        let mut keep: std::collections::HashMap<&str, std::collections::BTreeSet<u64>> =
            std::collections::HashMap::new();
        if let Some(max) = attempts {
            for r in &records {
                keep.entry(r.host.as_str()).or_default().insert(r.attempt);
            }
            for kept in keep.values_mut() {
                while kept.len() > max {
                    kept.pop_first();
                }
            }
        }
        let mut ops = Vec::new();
        let mut n = 0;
        for (kv, r) in all.iter().zip(&records) {
            let Some(ended) = r.ended else { continue };
            let surplus = keep
                .get(r.host.as_str())
                .is_some_and(|k| !k.contains(&r.attempt));
            if ended < cutoff || surplus {
                if let Some(ro) = r.rollout {
                    ops.push(TxnOp::Delete(self.rollout_key(ro, &r.host, r.seq)));
                }
                ops.push(TxnOp::Delete(kv.key.clone()));
                n += 1;
            }
        }
        if !ops.is_empty() {
            self.write(ops).await?;
        }
        Ok(n)
    }
}
