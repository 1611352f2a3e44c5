//! Leader election of replicated servers, on an etcd lease.
//!
//! Every replica campaigns in one etcd election. The winner's campaign
//! key is created with a lease the replica keeps alive; the key's create
//! revision is the term's **fencing number**. The leader's writes go
//! through [`Term::store`], a store whose every transaction also requires
//! the campaign key to still exist at that create revision, so a deposed
//! leader (its lease expired while it was paused, or cut off) cannot write
//! anything once a successor exists: its write is refused as
//! [`StoreFailure::Fenced`].
//!
//! - The lease's TTL is configurable (default 2 s); etcd raises a shorter
//!   one to about 1.5 times its election timeout, and the TTL it grants is
//!   the one used.
//! - It is kept alive about every TTL/3, over one member's connection at a
//!   time (the next member's when that one fails). A reply with a TTL of 0
//!   or less means the lease is gone.
//! - [`LeaseClock`] (pure) tells from the keep-alives that were answered
//!   how long the lease surely lives: until the send time of the last
//!   answered keep-alive plus the TTL it answered. Past it, the term is
//!   over, even before etcd says so: a paused process that wakes stops at
//!   once instead of acting on a lease that expired while it slept.
//! - The campaign runs on its own connection, with no per-request timeout
//!   (it waits as long as another replica leads).
//! - A campaign that returns is not yet leadership: the lease may have
//!   expired meanwhile. [`Election::lead`] confirms it with a guarded write
//!   (it records the term under `{prefix}term`) before it returns.

use std::time::{Duration, Instant};

use etcd_client::{Client, Compare as EtcdCompare, CompareOp, LeaderKey, Txn, TxnOp as EtcdTxnOp};
use tokio::sync::watch;

use crate::etcd::{EtcdConfig, EtcdStore, etcd_error};
use crate::store::StoreFailure;

/// How long a lease surely lives, from the keep-alives that were
/// answered. Pure: every time is an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseClock {
    ttl: Duration,
    valid_until: Instant,
}

impl LeaseClock {
    /// A lease granted with `ttl` by a request sent at `sent`.
    pub fn granted(sent: Instant, ttl: Duration) -> Self {
        LeaseClock {
            ttl,
            valid_until: sent + ttl,
        }
    }

    /// A keep-alive sent at `sent` was answered with `ttl_secs`. `false`
    /// when the answer says the lease is gone (`ttl_secs <= 0`).
    pub fn answered(&mut self, sent: Instant, ttl_secs: i64) -> bool {
        let Ok(secs) = u64::try_from(ttl_secs) else {
            return false;
        };
        if secs == 0 {
            return false;
        }
        self.ttl = Duration::from_secs(secs);
        self.valid_until = self.valid_until.max(sent + self.ttl);
        true
    }

    /// Whether the lease surely lives at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        now < self.valid_until
    }

    /// Until when the lease surely lives.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// How often to keep it alive: a third of the TTL.
    pub fn period(&self) -> Duration {
        self.ttl / 3
    }

    /// The TTL etcd granted (or last answered).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// One replica's part in the election.
pub struct Election {
    config: EtcdConfig,
    members: Vec<Client>,
    campaign: Client,
    name: String,
    id: String,
    ttl: Duration,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A term of leadership: from a confirmed campaign until the lease is
/// lost. While it lasts it may be suspended ([`TermState`]). Dropping it stops keeping the lease alive; [`Term::resign`] also
/// hands over at once.
pub struct Term {
    fence: u64,
    key: Vec<u8>,
    lease: i64,
    state: watch::Receiver<TermState>,
    keeper: tokio::task::JoinHandle<()>,
    members: Vec<Client>,
}

impl Election {
    /// Joins the election `{prefix}leader` of the cluster of `config` as
    /// `id` (the URL other replicas send clients to), with a lease of
    /// `ttl`.
    pub async fn new(config: &EtcdConfig, id: &str, ttl: Duration) -> Result<Self, StoreFailure> {
        let members = config.members().await?;
        let campaign = config.unbounded().await?;
        Ok(Election {
            config: config.clone(),
            members,
            campaign,
            name: format!("{}leader", config.prefix),
            id: id.to_owned(),
            ttl,
        })
    }

    /// The current leader's id, if any replica leads.
    pub async fn leader(&self) -> Result<Option<String>, StoreFailure> {
        let mut last = StoreFailure::Unavailable("no etcd member".into());
        for m in &self.members {
            match m.election_client().leader(self.name.clone()).await {
                Ok(r) => {
                    return Ok(r
                        .kv()
                        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()));
                }
                // No leader: etcd answers "election: no leader".
                Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => {
                    return Ok(None);
                }
                Err(e) => last = etcd_error(e),
            }
        }
        Err(last)
    }

    /// Grants a lease, trying each member in turn.
    async fn grant(&self) -> Result<(i64, LeaseClock), StoreFailure> {
        let secs = i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut last = StoreFailure::Unavailable("no etcd member".into());
        for m in &self.members {
            let sent = Instant::now();
            match m.lease_client().grant(secs, None).await {
                Ok(r) => {
                    let ttl = Duration::from_secs(u64::try_from(r.ttl()).unwrap_or(1).max(1));
                    return Ok((r.id(), LeaseClock::granted(sent, ttl)));
                }
                Err(e) => last = etcd_error(e),
            }
        }
        Err(last)
    }

    /// Campaigns until this replica leads, and returns the confirmed
    /// term. While etcd cannot be reached it tries again every TTL/2, for
    /// as long as the caller waits (drop the future to stop).
    pub async fn lead(&self) -> Term {
        loop {
            match self.try_lead().await {
                Ok(Some(term)) => {
                    metrics::counter!("vaquero_server_leader_changes_total").increment(1);
                    metrics::gauge!("vaquero_server_leader").set(1.0);
                    #[allow(clippy::cast_precision_loss)]
                    metrics::gauge!("vaquero_server_fence").set(term.fence as f64);
                    tracing::info!(fence = term.fence, id = %self.id, "election: leading");
                    return term;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "election: cannot campaign; trying again");
                    tokio::time::sleep(self.ttl / 2).await;
                }
            }
        }
    }

    /// One campaign on a fresh lease: `None` when the lease was lost
    /// before leadership was confirmed.
    async fn try_lead(&self) -> Result<Option<Term>, StoreFailure> {
        let (lease, clock) = self.grant().await?;
        let (state_tx, mut state) = watch::channel(TermState::Active);
        let keeper = tokio::spawn(keep_alive(self.members.clone(), lease, clock, state_tx));
        let abort = AbortOnDrop(Some(keeper));
        let mut election = self.campaign.election_client();
        let won = tokio::select! {
            r = election.campaign(self.name.clone(), self.id.clone(), lease) => r.map_err(etcd_error)?,
            _ = state.wait_for(|s| *s == TermState::Lost) => return Ok(None),
        };
        let Some(key) = won.leader().cloned() else {
            return Err(StoreFailure::Backend(
                "etcd: a campaign won without a key".into(),
            ));
        };
        let fence = u64::try_from(key.rev()).unwrap_or(0);
        if !self.confirm(&key).await? || *state.borrow() != TermState::Active {
            tracing::warn!(fence, "election: won a campaign on a lease already lost");
            self.revoke(lease).await;
            return Ok(None);
        }
        let Some(keeper) = abort.disarm() else {
            return Ok(None);
        };
        Ok(Some(Term {
            fence,
            key: key.key().to_vec(),
            lease,
            state,
            keeper,
            members: self.members.clone(),
        }))
    }

    /// The guarded write that makes a won campaign a term: the campaign
    /// key still exists at its create revision.
    async fn confirm(&self, key: &LeaderKey) -> Result<bool, StoreFailure> {
        let term = format!("{}term", self.config.prefix);
        let value = format!("{{\"fence\":{},\"id\":{:?}}}", key.rev(), self.id);
        let txn = Txn::new()
            .when(vec![EtcdCompare::create_revision(
                key.key().to_vec(),
                CompareOp::Equal,
                key.rev(),
            )])
            .and_then(vec![EtcdTxnOp::put(term, value, None)]);
        let mut last = StoreFailure::Unavailable("no etcd member".into());
        for m in &self.members {
            match m.kv_client().txn(txn.clone()).await {
                Ok(r) => return Ok(r.succeeded()),
                Err(e) => last = etcd_error(e),
            }
        }
        Err(last)
    }

    async fn revoke(&self, lease: i64) {
        revoke(&self.members, lease).await;
    }
}

async fn revoke(members: &[Client], lease: i64) {
    for m in members {
        if m.lease_client().revoke(lease).await.is_ok() {
            return;
        }
    }
}

/// Aborts a task when dropped, unless disarmed.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    fn disarm(mut self) -> Option<tokio::task::JoinHandle<()>> {
        self.0.take()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// Where a term stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermState {
    /// The lease surely lives: the leader acts.
    Active,
    /// No keep-alive was answered for a whole TTL (etcd is electing a
    /// leader, or lost its quorum): the lease may have expired, so the
    /// leader does not act. If a keep-alive is answered later with the
    /// lease alive, no other replica can have led meanwhile (its campaign
    /// key lived), and the term is active again.
    Suspended,
    /// The lease is gone (etcd said so): the term is over for good.
    Lost,
}

/// Whether an etcd error says the lease does not exist any more.
fn lease_gone(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        etcd_client::Error::GRpcStatus(s) => s.message().contains("lease not found"),
        _ => false,
    }
}

/// Keeps `lease` alive every TTL/3 over one member at a time, and says in
/// `state` whether the term is active, suspended or lost (see
/// [`TermState`]). Ends when the lease is lost.
async fn keep_alive(
    members: Vec<Client>,
    lease: i64,
    mut clock: LeaseClock,
    state: watch::Sender<TermState>,
) {
    let mut member = 0;
    let mut stream = None;
    loop {
        let now = Instant::now();
        if !clock.valid(now) && *state.borrow() == TermState::Active {
            tracing::warn!(
                lease,
                "election: no keep-alive answered for a TTL; not acting"
            );
            let _ = state.send(TermState::Suspended);
            metrics::gauge!("vaquero_server_leader").set(0.0);
        }
        let sent = Instant::now();
        let current = i64::try_from(clock.ttl().as_secs()).unwrap_or(1);
        // One try is bounded by a third of the TTL, so a member that
        // holds it (no leader) is left for the next, and the lease's
        // end is noticed within that.
        let answer = tokio::time::timeout(clock.period(), async {
            match stream.as_mut() {
                None => {
                    // Opening the stream sends one keep-alive and checks
                    // its answer (a lease gone is an error): it lives.
                    stream = Some(members[member].lease_client().keep_alive(lease).await?);
                    Ok::<_, etcd_client::Error>(Some(current))
                }
                Some((keeper, replies)) => {
                    keeper.keep_alive().await?;
                    Ok(replies.message().await?.map(|r| r.ttl()))
                }
            }
        })
        .await;
        match answer {
            Ok(Ok(Some(ttl))) if clock.answered(sent, ttl) => {
                metrics::histogram!("vaquero_etcd_keepalive_duration_seconds")
                    .record(sent.elapsed().as_secs_f64());
                if *state.borrow() == TermState::Suspended && clock.valid(Instant::now()) {
                    tracing::info!(lease, "election: the lease lived; acting again");
                    let _ = state.send(TermState::Active);
                    metrics::gauge!("vaquero_server_leader").set(1.0);
                }
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!(lease, "election: the lease is gone");
                break;
            }
            Ok(Err(e)) if lease_gone(&e) => {
                tracing::warn!(lease, "election: the lease is gone");
                break;
            }
            Ok(Ok(None) | Err(_)) | Err(_) => {
                // This member's stream ended, failed or held the try: the
                // next member.
                stream = None;
                member = (member + 1) % members.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        // The next keep-alive a third of the TTL after this one was sent.
        tokio::time::sleep(clock.period().saturating_sub(sent.elapsed())).await;
    }
    let _ = state.send(TermState::Lost);
    metrics::gauge!("vaquero_server_leader").set(0.0);
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Term")
            .field("fence", &self.fence)
            .field("lease", &self.lease)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Term {
    /// The fencing number: the campaign key's create revision. It grows
    /// with every term.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The term's etcd lease.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Where the term stands now.
    pub fn state(&self) -> TermState {
        *self.state.borrow()
    }

    /// Whether the leader may act now.
    pub fn is_active(&self) -> bool {
        self.state() == TermState::Active
    }

    /// Whether the term is over for good (the lease is gone).
    pub fn is_lost(&self) -> bool {
        self.state() == TermState::Lost
    }

    /// Completes when the term is no longer active (suspended or lost).
    pub async fn inactive(&mut self) {
        let _ = self.state.wait_for(|s| *s != TermState::Active).await;
    }

    /// Completes when the term is active again, or lost: its state then.
    pub async fn settled(&mut self) -> TermState {
        self.state
            .wait_for(|s| *s != TermState::Suspended)
            .await
            .map_or(TermState::Lost, |s| *s)
    }

    /// Completes when the term is over for good.
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|s| *s == TermState::Lost).await;
    }

    /// `store`, fenced by this term: each of its transactions also
    /// requires the campaign key at this term's create revision.
    pub fn store(&self, store: &EtcdStore) -> EtcdStore {
        store.fenced(self.key.clone(), self.fence)
    }

    /// Ends the term now and frees the election for another replica.
    pub async fn resign(self) {
        self.keeper.abort();
        revoke(&self.members, self.lease).await;
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lives_from_the_send_time_of_its_last_answer() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = LeaseClock::granted(t0, 2 * s);
        assert!(c.valid(t0 + s));
        assert!(
            !c.valid(t0 + 2 * s),
            "granted at t0 with 2 s: gone at t0+2s"
        );
        assert_eq!(c.period(), 2 * s / 3);
        // A keep-alive sent at t0+1s, answered late: from its send time.
        assert!(c.answered(t0 + s, 2));
        assert!(c.valid(t0 + 2 * s) && !c.valid(t0 + 3 * s));
        // An older answer arriving late does not shorten the lease.
        assert!(c.answered(t0, 2));
        assert!(c.valid(t0 + 2 * s));
        // A TTL of 0 or less: the lease is gone.
        assert!(!c.answered(t0 + 2 * s, 0));
        assert!(!c.answered(t0 + 2 * s, -1));
        // etcd may grant more than asked.
        assert!(c.answered(t0 + 2 * s, 5));
        assert_eq!(c.ttl(), 5 * s);
        assert!(c.valid(t0 + 6 * s));
    }
}
