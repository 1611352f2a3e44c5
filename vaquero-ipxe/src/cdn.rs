//! A caching reverse proxy for `/files` when the site points at a CDN:
//! each object is fetched upstream once into a content-addressed on-disk
//! cache (concurrent requests for the same uncached object wait for that
//! one fetch) and served locally afterwards — with the same ranges and
//! validators as local files. The cache has a size cap; the least
//! recently used objects are evicted. An upstream failure is a 502 (404
//! stays 404) and leaves nothing in the cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use crate::files::{join_safely, serve_path};

/// The CDN cache of `/files`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CdnConfig {
    /// Upstream base URL (`/files/{path}` is fetched from `{upstream}/{path}`).
    pub upstream: String,
    /// Where cached objects live (content-addressed).
    pub cache_dir: PathBuf,
    /// Cache size cap in bytes; least recently used objects are evicted.
    pub max_bytes: u64,
}

impl CdnConfig {
    /// A cache of `upstream` in `cache_dir`, at most `max_bytes`.
    pub fn new(upstream: impl Into<String>, cache_dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        CdnConfig {
            upstream: upstream.into(),
            cache_dir: cache_dir.into(),
            max_bytes,
        }
    }
}

/// Why an object could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Miss {
    NotFound,
    Upstream(String),
}

type Fetch = Shared<BoxFuture<'static, Result<PathBuf, Miss>>>;

/// The cache.
pub(crate) struct Cdn {
    base: reqwest::Url,
    objects: PathBuf,
    tmp: PathBuf,
    max_bytes: u64,
    client: reqwest::Client,
    inflight: Arc<Mutex<HashMap<String, Fetch>>>,
}

impl Cdn {
    pub(crate) fn new(c: CdnConfig) -> Result<Self, String> {
        let base = reqwest::Url::parse(&c.upstream)
            .map_err(|e| format!("upstream `{}`: {e}", c.upstream))?;
        if base.cannot_be_a_base() {
            return Err(format!("upstream `{}` cannot be a base URL", c.upstream));
        }
        let objects = c.cache_dir.join("objects");
        let tmp = c.cache_dir.join("tmp");
        for d in [&objects, &tmp] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Cdn {
            base,
            objects,
            tmp,
            max_bytes: c.max_bytes,
            client,
            inflight: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn url(&self, rel: &str) -> reqwest::Url {
        let mut u = self.base.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty();
            segs.extend(rel.split('/'));
        }
        u
    }

    /// The response for `rel`, fetching it first if it is not cached.
    pub(crate) async fn serve(
        &self,
        rel: &str,
        headers: &HeaderMap,
        head: bool,
        zero_copy: Option<&crate::files::ZeroCopy>,
    ) -> Response {
        if join_safely(Path::new("/"), rel).is_err() {
            return (StatusCode::BAD_REQUEST, "Bad Request").into_response();
        }
        let url = self.url(rel);
        let key = hex::encode(Sha256::digest(url.as_str().as_bytes()));
        let path = self.objects.join(&key);
        if tokio::fs::metadata(&path).await.is_ok() {
            metrics::counter!("vaquero_cdn_cache_lookups_total", "outcome" => "hit").increment(1);
            touch(&path);
            return serve_path(&path, headers, head, zero_copy).await;
        }
        metrics::counter!("vaquero_cdn_cache_lookups_total", "outcome" => "miss").increment(1);
        match self.fetch_once(key, url).await {
            Ok(p) => serve_path(&p, headers, head, zero_copy).await,
            Err(Miss::NotFound) => (StatusCode::NOT_FOUND, "Not Found").into_response(),
            Err(Miss::Upstream(e)) => {
                (StatusCode::BAD_GATEWAY, format!("upstream: {e}\n")).into_response()
            }
        }
    }

    /// One upstream fetch per key at a time; everyone asking meanwhile
    /// shares its result.
    async fn fetch_once(&self, key: String, url: reqwest::Url) -> Result<PathBuf, Miss> {
        let fut = {
            let Ok(mut map) = self.inflight.lock() else {
                return Err(Miss::Upstream("cache lock poisoned".into()));
            };
            map.entry(key.clone())
                .or_insert_with(|| {
                    let job = Job {
                        client: self.client.clone(),
                        url,
                        dest: self.objects.join(&key),
                        tmp: self.tmp.join(format!("{key}.{}", std::process::id())),
                        objects: self.objects.clone(),
                        max_bytes: self.max_bytes,
                    };
                    let inflight = self.inflight.clone();
                    let k = key.clone();
                    async move {
                        let r = job.run().await;
                        if let Ok(mut m) = inflight.lock() {
                            m.remove(&k);
                        }
                        r
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        fut.await
    }
}

struct Job {
    client: reqwest::Client,
    url: reqwest::Url,
    dest: PathBuf,
    tmp: PathBuf,
    objects: PathBuf,
    max_bytes: u64,
}

impl Job {
    async fn run(self) -> Result<PathBuf, Miss> {
        // Someone may have finished it between our check and our turn.
        if tokio::fs::metadata(&self.dest).await.is_ok() {
            return Ok(self.dest);
        }
        metrics::counter!("vaquero_cdn_upstream_fetches_total").increment(1);
        let r = self.download().await;
        if r.is_err() {
            let _ = tokio::fs::remove_file(&self.tmp).await;
        }
        r?;
        tokio::fs::rename(&self.tmp, &self.dest)
            .await
            .map_err(|e| Miss::Upstream(format!("caching: {e}")))?;
        info!(url = %self.url, "cached from upstream");
        evict(&self.objects, self.max_bytes, &self.dest);
        Ok(self.dest)
    }

    async fn download(&self) -> Result<(), Miss> {
        let resp = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| Miss::Upstream(e.to_string()))?;
        match resp.status() {
            s if s.is_success() => {}
            reqwest::StatusCode::NOT_FOUND => return Err(Miss::NotFound),
            s => return Err(Miss::Upstream(format!("{} answered {s}", self.url))),
        }
        let mut f = tokio::fs::File::create(&self.tmp)
            .await
            .map_err(|e| Miss::Upstream(format!("caching: {e}")))?;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Miss::Upstream(e.to_string()))?;
            f.write_all(&chunk)
                .await
                .map_err(|e| Miss::Upstream(format!("caching: {e}")))?;
        }
        f.flush()
            .await
            .map_err(|e| Miss::Upstream(format!("caching: {e}")))?;
        Ok(())
    }
}

/// Marks an object as used now (eviction is least recently used first).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Removes the least recently used objects until the cache fits
/// `max_bytes` (never `keep`, the object just fetched).
fn evict(objects: &Path, max_bytes: u64, keep: &Path) {
    let Ok(rd) = std::fs::read_dir(objects) else {
        return;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, p) in files {
        if total <= max_bytes {
            break;
        }
        if p == keep {
            continue;
        }
        match std::fs::remove_file(&p) {
            Ok(()) => {
                total -= len;
                metrics::counter!("vaquero_cdn_evictions_total").increment(1);
            }
            Err(e) => warn!(path = %p.display(), error = %e, "evicting a cached object"),
        }
    }
}
