//! [`EtcdStore`]: the [`Store`] on an etcd cluster, for replicated
//! servers (`vaquero server --etcd`).
//!
//! The store's contract is etcd's own shape, so each call is one etcd
//! request: a key is `{prefix}{key}`, a revision is etcd's cluster-wide
//! revision, [`Store::txn`] is one etcd transaction (a compare on a key's
//! `mod_revision`, or on `version == 0` for "absent"). A write etcd
//! acknowledges is committed on a quorum of members, on disk.
//!
//! Two things differ from the embedded store, both from etcd:
//! - The revision is the cluster's: other writers (another prefix, the
//!   leader election) raise it too. Revisions only ever grow, which is all
//!   the engine relies on.
//! - etcd bounds a transaction: `--max-txn-ops` operations (128 by
//!   default) and `--max-request-bytes` (1.5 MiB by default). An engine
//!   step writes every host it changes in one transaction, so a site of
//!   N hosts needs `--max-txn-ops` above N (docs/ha.md gives the flags).
//!   A refused transaction is [`StoreFailure::Backend`] naming the flag.
//!
//! Lists are read in pages at one revision, so a large prefix is one
//! consistent snapshot without one huge gRPC message.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Channel, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, GetOptions,
    Identity, KvClient, TlsOptions, Txn, TxnOp as EtcdTxnOp,
};

use crate::store::{Compare, KeyValue, Revision, Store, StoreFailure, TxnOp, TxnResult};

/// Keys read per request when listing a prefix.
const PAGE: i64 = 1000;

/// How to reach an etcd cluster.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// Client URLs of the members (`http://10.0.0.1:2379`, or `https://…`
    /// with [`EtcdConfig::ca`]).
    pub endpoints: Vec<String>,
    /// Every key is stored under this prefix (default `/vaquero/`), so
    /// one cluster can hold several installations.
    pub prefix: String,
    /// The CA that signed the members' certificates (PEM): TLS on.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for members that check
    /// client certificates.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// A user and password, for a cluster with authentication on.
    pub user: Option<(String, String)>,
    /// The bound on one try of a request (default 2 s). A request that
    /// may be tried again (see [`EtcdStore`]) is, on the next member,
    /// within three times this; past it, it is
    /// [`StoreFailure::Unavailable`].
    pub timeout: Duration,
}

impl EtcdConfig {
    /// The cluster at `endpoints`, default prefix and timeout, no TLS.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: "/vaquero/".into(),
            ca: None,
            identity: None,
            user: None,
            timeout: Duration::from_secs(2),
        }
    }

    /// Connection options: the user, and that a request needs the member
    /// to have a leader, so a member cut off from the quorum answers at
    /// once instead of holding the request.
    fn options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new().with_require_leader(true);
        if let Some((user, password)) = &self.user {
            o = o.with_user(user.clone(), password.clone());
        }
        o
    }

    /// A client of one member, `url`: its own connection, made on first
    /// use (an unreachable member fails a request, not this), with the
    /// timeouts, keep-alive and TLS of the configuration. A request to a
    /// member that cannot be reached fails at once, as a connection error.
    pub(crate) async fn member(&self, url: &str) -> Result<Client, StoreFailure> {
        let bad =
            |e: &dyn std::fmt::Display| StoreFailure::Config(format!("etcd endpoint {url}: {e}"));
        let mut ep = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| bad(&e))?
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(2)))
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        if url.starts_with("https://") || self.ca.is_some() || self.identity.is_some() {
            ep = ep.tls_config(self.tls()?).map_err(|e| bad(&e))?;
        }
        Client::from_channel(Channel::Tonic(ep.connect_lazy()), Some(self.options()))
            .await
            .map_err(etcd_error)
    }

    /// A client balanced over every member, with no per-request timeout:
    /// for calls that wait as long as they must (an election campaign).
    pub(crate) async fn unbounded(&self) -> Result<Client, StoreFailure> {
        if self.endpoints.is_empty() {
            return Err(StoreFailure::Config("no etcd endpoint given".into()));
        }
        let mut o = self
            .options()
            .with_connect_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if self.endpoints.iter().any(|e| e.starts_with("https://")) || self.ca.is_some() {
            o = o.with_tls(self.tls()?);
        }
        Client::connect(&self.endpoints, Some(o))
            .await
            .map_err(etcd_error)
    }

    fn tls(&self) -> Result<TlsOptions, StoreFailure> {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(tls)
    }

    /// A client of every member, one connection each.
    pub(crate) async fn members(&self) -> Result<Vec<Client>, StoreFailure> {
        if self.endpoints.is_empty() {
            return Err(StoreFailure::Config("no etcd endpoint given".into()));
        }
        let mut out = Vec::with_capacity(self.endpoints.len());
        for url in &self.endpoints {
            out.push(self.member(url).await?);
        }
        Ok(out)
    }
}

/// Whether the request failed before it reached a member (so a write
/// did not happen): the connection failed, or the member has no leader
/// (it refuses before proposing anything).
fn not_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable
                && (s.message().contains("connect") || s.message().contains("no leader"))
        }
        _ => false,
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, StoreFailure> {
    std::fs::read(path).map_err(|e| StoreFailure::Config(format!("{}: {e}", path.display())))
}

/// An etcd error as a store error: one the cluster may heal (no leader, a
/// member down, a timeout) is [`StoreFailure::Unavailable`].
pub(crate) fn etcd_error(e: etcd_client::Error) -> StoreFailure {
    use etcd_client::Error as E;
    match &e {
        E::TransportError(_) | E::IoError(_) => StoreFailure::Unavailable(format!("etcd: {e}")),
        E::GRpcStatus(s) => match s.code() {
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
            | tonic::Code::Unknown
                if !s.message().contains("too many operations") =>
            {
                StoreFailure::Unavailable(format!("etcd: {}", s.message()))
            }
            _ if s.message().contains("too many operations") => StoreFailure::Backend(format!(
                "etcd refused a transaction: {} (raise the members' --max-txn-ops above the \
                 site's host count)",
                s.message()
            )),
            _ if s.message().contains("request is too large") => StoreFailure::Backend(format!(
                "etcd refused a transaction: {} (raise the members' --max-request-bytes)",
                s.message()
            )),
            _ => StoreFailure::Backend(format!("etcd: {}", s.message())),
        },
        _ => StoreFailure::Backend(format!("etcd: {e}")),
    }
}

/// The [`Store`] on etcd. Clones share the connection.
///
/// It holds one connection per member and sends each request to one
/// member, the last that answered; a member that cannot be reached (or
/// has no leader) is passed over for the next. (One connection balanced
/// over every member would keep sending requests to a dead member until
/// they time out.)
#[derive(Clone)]
pub struct EtcdStore {
    kvs: Arc<[KvClient]>,
    current: Arc<AtomicUsize>,
    prefix: String,
    timeout: Duration,
    /// A leader's term: every transaction requires this key (the term's
    /// campaign key, a full etcd key) at this create revision.
    guard: Option<(Vec<u8>, i64)>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A store on the cluster of `config`. Nothing is read yet.
    pub async fn connect(config: &EtcdConfig) -> Result<Self, StoreFailure> {
        let clients = config.members().await?;
        Ok(EtcdStore::with_clients(
            &clients,
            &config.prefix,
            config.timeout,
        ))
    }

    /// A store over clients of the members (one each), keys under
    /// `prefix`; a request is tried again, on the next member, for at most
    /// `timeout`.
    pub fn with_clients(clients: &[Client], prefix: &str, timeout: Duration) -> Self {
        EtcdStore {
            kvs: clients
                .iter()
                .map(|c| {
                    c.kv_client()
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(usize::MAX)
                })
                .collect(),
            current: Arc::new(AtomicUsize::new(0)),
            prefix: prefix.to_owned(),
            timeout,
            guard: None,
        }
    }

    /// This store, fenced: each transaction also requires the etcd key
    /// `key` (outside the prefix) to exist with create revision `fence`,
    /// and fails with [`StoreFailure::Fenced`] when it does not.
    pub fn fenced(&self, key: Vec<u8>, fence: u64) -> Self {
        EtcdStore {
            guard: Some((key, i64::try_from(fence).unwrap_or(i64::MAX))),
            ..self.clone()
        }
    }

    /// Whether the guard of a fenced store still holds.
    async fn guard_holds(&self) -> Result<bool, StoreFailure> {
        let Some((key, fence)) = &self.guard else {
            return Ok(true);
        };
        let r = self
            .call(true, |mut kv| {
                let key = key.clone();
                async move { kv.get(key, None).await }
            })
            .await?;
        Ok(r.kvs().first().map(|kv| kv.create_revision()) == Some(*fence))
    }

    /// Runs a request, again while it fails in a way another try may
    /// heal, within three times the timeout: any unavailability when the
    /// request is `idempotent` (a read; a write that a second application
    /// leaves as the first did), otherwise only a request never sent
    /// (the connection to a member failed, the member has no leader).
    async fn call<T, F, Fut>(&self, idempotent: bool, mut f: F) -> Result<T, StoreFailure>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout * 3;
        let mut wait = Duration::from_millis(10);
        let n = self.kvs.len();
        let mut tried = 0;
        loop {
            let i = self.current.load(Ordering::Relaxed) % n;
            let e = match f(self.kvs[i].clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let unsent = not_sent(&e);
            let e = etcd_error(e);
            let again = unsent || (idempotent && matches!(e, StoreFailure::Unavailable(_)));
            if !again || tokio::time::Instant::now() + wait >= deadline {
                return Err(e);
            }
            // The next member; a pause once every member was tried.
            let _ =
                self.current
                    .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
            tried += 1;
            if tried % n == 0 {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(250));
            }
        }
    }

    /// The prefix every key is stored under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn own(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreFailure> {
        let key = std::str::from_utf8(kv.key())
            .ok()
            .and_then(|k| k.strip_prefix(self.prefix.as_str()))
            .ok_or_else(|| {
                StoreFailure::Backend("etcd returned a key outside the prefix".into())
            })?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            mod_revision: revision(kv.mod_revision()),
        })
    }
}

fn revision(r: i64) -> Revision {
    Revision::try_from(r).unwrap_or(0)
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, |h| revision(h.revision()))
}

/// The first key after every key that starts with `prefix` (etcd's
/// range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreFailure> {
        let key = self.full(key);
        let r = self
            .call(true, |mut kv| {
                let key = key.clone();
                async move { kv.get(key, None).await }
            })
            .await?;
        r.kvs().first().map(|kv| self.own(kv)).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreFailure> {
        self.list_since(prefix, 0).await
    }

    async fn list_since(
        &self,
        prefix: &str,
        since: Revision,
    ) -> Result<Vec<KeyValue>, StoreFailure> {
        let start = self.full(prefix).into_bytes();
        let end = prefix_end(&start);
        let mut from = start;
        let mut at = 0i64;
        let mut out = Vec::new();
        loop {
            let mut o = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if at > 0 {
                o = o.with_revision(at);
            }
            if since > 0 {
                o = o.with_min_mod_revision(i64::try_from(since + 1).unwrap_or(i64::MAX));
            }
            let r = self
                .call(true, |mut kv| {
                    let (from, o) = (from.clone(), o.clone());
                    async move { kv.get(from, Some(o)).await }
                })
                .await?;
            if at == 0 {
                at = r.header().map_or(0, |h| h.revision());
            }
            for item in r.kvs() {
                out.push(self.own(item)?);
            }
            match r.kvs().last() {
                Some(last) if r.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    async fn revision(&self) -> Result<Revision, StoreFailure> {
        let r = self
            .call(true, |mut kv| {
                let key = self.prefix.clone();
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        Ok(header_revision(r.header()))
    }

    async fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<TxnResult, StoreFailure> {
        let mut when: Vec<EtcdCompare> = compares
            .iter()
            .map(|c| match c.mod_revision {
                Some(r) => EtcdCompare::mod_revision(
                    self.full(&c.key),
                    CompareOp::Equal,
                    i64::try_from(r).unwrap_or(i64::MAX),
                ),
                None => EtcdCompare::version(self.full(&c.key), CompareOp::Equal, 0),
            })
            .collect();
        if let Some((key, fence)) = &self.guard {
            when.push(EtcdCompare::create_revision(
                key.clone(),
                CompareOp::Equal,
                *fence,
            ));
        }
        // etcd refuses a key twice in one transaction; applied in order,
        // only each key's last operation counts.
        let mut last = std::collections::HashMap::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let key = match op {
                TxnOp::Put(k, _) | TxnOp::Delete(k) => k.as_str(),
            };
            last.insert(key, i);
        }
        let then: Vec<EtcdTxnOp> = ops
            .iter()
            .enumerate()
            .filter(|(i, op)| {
                let key = match op {
                    TxnOp::Put(k, _) | TxnOp::Delete(k) => k.as_str(),
                };
                last.get(key) == Some(i)
            })
            .map(|(_, op)| match op {
                TxnOp::Put(k, v) => EtcdTxnOp::put(self.full(k), v.clone(), None),
                TxnOp::Delete(k) => EtcdTxnOp::delete(self.full(k), None),
            })
            .collect();
        // A write that compares none of the keys it writes leaves the same
        // keys and values if applied twice: it may be tried again when its
        // outcome is unknown (a member lost a proposal when its leader died,
        // and the try timed out). One that compares a key it writes would
        // conflict with its own first application: it is not.
        let written: std::collections::HashSet<&str> = last.keys().copied().collect();
        let idempotent = compares.iter().all(|c| !written.contains(c.key.as_str()));
        let txn = Txn::new().when(when).and_then(then);
        let r = self
            .call(idempotent, |mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
        if r.succeeded() {
            Ok(TxnResult::Committed(header_revision(r.header())))
        } else if !self.guard_holds().await? {
            metrics::counter!("vaquero_server_fenced_writes_total").increment(1);
            Err(StoreFailure::Fenced(
                "its term's campaign key is gone or was replaced".into(),
            ))
        } else {
            Ok(TxnResult::Conflict)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_at_the_next_key() {
        assert_eq!(prefix_end(b"/vaquero/"), b"/vaquero0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
    }
}
