//! The agent routes of `vaquero server` ([`crate::agent::wire`]): each
//! call's site and agent come from its client certificate, verified by
//! the TLS layer against the server's CA; the store says whether that
//! certificate is still the agent's (revoking an agent refuses it at
//! once).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::agent::wire::{
    self, EnrolRequest, Enrolled, ObservationAck, ObservationBatch, RenewRequest, ResultsAck,
    ResultsBody, WorkRequest,
};
use crate::api::reply::error;
use crate::auth::{AuthFailure, Tokens};
use crate::pki::{self, AgentId};
use crate::server::hub::SiteHub;
use crate::store::Store;

/// The CA that signs agents' certificates.
#[derive(Debug, Clone)]
pub struct Ca {
    /// Its certificate (PEM).
    pub cert: String,
    /// Its key (PEM).
    pub key: String,
    /// [`pki::fingerprint`] of its certificate.
    pub fingerprint: String,
}

/// What the agent routes need.
#[derive(Clone)]
pub struct AgentApi {
    /// Each site's hub.
    pub hubs: Arc<BTreeMap<String, Arc<SiteHub>>>,
    /// The CA.
    pub ca: Arc<Ca>,
    /// Join tokens.
    pub tokens: Tokens,
    /// Where agents' certificates are recorded.
    pub store: Arc<dyn Store>,
    /// The URL agents reach the server at, for join tokens (`None`: the
    /// `Host` the admin used).
    pub advertise: Option<String>,
}

impl std::fmt::Debug for AgentApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentApi")
            .field("sites", &self.hubs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The client certificate of a TLS connection (DER of its leaf), as the
/// connection handler puts it in each request's extensions.
#[derive(Debug, Clone)]
pub struct PeerCert(pub Arc<[u8]>);

/// The certificates an agent may use: the newest and, during a renewal,
/// the one before.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AgentRecord {
    certs: Vec<String>,
    enrolled: Option<Timestamp>,
}

fn agent_key(site: &str, agent: &str) -> String {
    format!("v1/agents/{site}/{agent}/certs")
}

impl AgentApi {
    async fn record(&self, site: &str, agent: &str) -> Result<Option<AgentRecord>, Response> {
        match self.store.get(&agent_key(site, agent)).await {
            Ok(Some(kv)) => Ok(serde_json::from_slice(&kv.value).ok()),
            Ok(None) => Ok(None),
            Err(e) => Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store",
                e.to_string(),
            )),
        }
    }

    /// Records `cert` as `agent`'s newest certificate.
    async fn remember(&self, site: &str, agent: &str, cert: &str) -> Result<(), Response> {
        let mut rec = self.record(site, agent).await?.unwrap_or_default();
        let fp = pki::first_der(cert)
            .map(|d| pki::fingerprint(&d))
            .unwrap_or_default();
        rec.certs.retain(|c| *c != fp);
        rec.certs.push(fp);
        let n = rec.certs.len();
        rec.certs.drain(..n.saturating_sub(2));
        rec.enrolled.get_or_insert(Timestamp::now());
        let value = serde_json::to_vec(&rec).unwrap_or_default();
        self.store
            .put(&agent_key(site, agent), value)
            .await
            .map(|_| ())
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()))
    }

    /// The agents of `site`: those its model names and those enrolled.
    pub async fn agents(&self, site: &str) -> Result<Vec<AgentRow>, crate::store::StoreFailure> {
        let mut rows: BTreeMap<String, AgentRow> = BTreeMap::new();
        let hub = self.hubs.get(site);
        if let Some(m) = hub.and_then(|h| h.site_model()) {
            for a in &m.site().agents {
                rows.entry(a.id.clone())
                    .or_insert_with(|| AgentRow::new(&a.id))
                    .in_sot = true;
            }
        }
        let prefix = format!("v1/agents/{site}/");
        for kv in self.store.list(&prefix).await? {
            let Some(agent) = kv
                .key
                .strip_prefix(&prefix)
                .and_then(|k| k.strip_suffix("/certs"))
            else {
                continue;
            };
            let rec: AgentRecord = serde_json::from_slice(&kv.value).unwrap_or_default();
            let row = rows
                .entry(agent.to_owned())
                .or_insert_with(|| AgentRow::new(agent));
            row.enrolled = rec.enrolled.or(Some(Timestamp::UNIX_EPOCH));
            row.certificates = rec.certs.len();
        }
        if let Some(h) = hub {
            for (agent, at) in h.heard_at() {
                rows.entry(agent.clone())
                    .or_insert_with(|| AgentRow::new(&agent))
                    .last_call = Some(at);
            }
        }
        Ok(rows.into_values().collect())
    }

    /// Forgets `agent` of `site`: its certificates are refused from now
    /// on (it must enrol again with a new join token).
    pub async fn revoke(
        &self,
        site: &str,
        agent: &str,
    ) -> Result<bool, crate::store::StoreFailure> {
        let key = agent_key(site, agent);
        let had = self.store.get(&key).await?.is_some();
        self.store.delete(&key).await?;
        Ok(had)
    }
}

/// One agent of a site, as `GET /v1/sites/{site}/agents` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct AgentRow {
    /// Its id.
    pub agent: String,
    /// Whether the site's SoT names it.
    pub in_sot: bool,
    /// When it enrolled (`None`: never, or revoked).
    pub enrolled: Option<Timestamp>,
    /// How many of its certificates are accepted (2 during a renewal).
    pub certificates: usize,
    /// When it last called since this server started.
    pub last_call: Option<Timestamp>,
}

impl AgentRow {
    fn new(agent: &str) -> Self {
        AgentRow {
            agent: agent.to_owned(),
            in_sot: false,
            enrolled: None,
            certificates: 0,
            last_call: None,
        }
    }
}

/// A verified agent's call: who it is and its site's hub.
struct Caller {
    id: AgentId,
    hub: Arc<SiteHub>,
}

impl FromRequestParts<AgentApi> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &AgentApi,
    ) -> Result<Self, Response> {
        let version = parts
            .headers
            .get(wire::VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !wire::compatible(version) {
            return Err(error(
                StatusCode::UPGRADE_REQUIRED,
                "protocol",
                format!(
                    "agent protocol `{version}` is not served: this server speaks {}.{} and takes agents of that version or one minor below (upgrade servers first, then agents)",
                    wire::PROTOCOL.0,
                    wire::PROTOCOL.1
                ),
            ));
        }
        let Some(cert) = parts.extensions.get::<PeerCert>() else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an agent's client certificate is needed (enrol with a join token first)",
            ));
        };
        let Some(id) = pki::agent_of(&cert.0) else {
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the client certificate names no agent",
            ));
        };
        let known = api
            .record(&id.site, &id.agent)
            .await?
            .is_some_and(|r| r.certs.contains(&id.fingerprint));
        if !known {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!(
                    "the certificate of agent {} of site {} is revoked or replaced",
                    id.agent, id.site
                ),
            ));
        }
        let Some(hub) = api.hubs.get(&id.site).cloned() else {
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("site `{}` is not served here", id.site),
            ));
        };
        Ok(Caller { id, hub })
    }
}

/// The agent routes.
pub fn router<S: Clone + Send + Sync + 'static>(api: AgentApi) -> Router<S> {
    Router::new()
        .route("/v1/agent/ca", get(ca))
        .route("/v1/agent/enrol", post(enrol))
        .route("/v1/agent/renew", post(renew))
        .route("/v1/agent/model", get(model))
        .route("/v1/agent/work", post(work))
        .route("/v1/agent/results", post(results))
        .route("/v1/agent/observations", post(observations))
        .with_state(api)
}

async fn ca(State(api): State<AgentApi>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        api.ca.cert.clone(),
    )
        .into_response()
}

/// The fingerprint of a CSR's public key.
fn csr_key(csr: &str) -> Option<String> {
    let req = rcgen::CertificateSigningRequestParams::from_pem(csr).ok()?;
    use rcgen::PublicKeyData;
    Some(pki::fingerprint(req.public_key.der_bytes()))
}

async fn enrol(State(api): State<AgentApi>, Json(req): Json<EnrolRequest>) -> Response {
    let Some(key) = csr_key(&req.csr) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the CSR does not parse or its signature does not verify",
        );
    };
    let rec = match api.tokens.redeem(&req.token, &key, Timestamp::now()).await {
        Ok(Some(rec)) => rec,
        Ok(None) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong, revoked or not a join token",
            );
        }
        Err(e @ AuthFailure::Used(_)) => {
            return error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string());
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()),
    };
    let (Some(site), Some(agent)) = (rec.site, rec.agent) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the join token names no site",
        );
    };
    if !api.hubs.contains_key(&site) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("site `{site}` is not served here"),
        );
    }
    sign(&api, &req.csr, &site, &agent).await
}

async fn sign(api: &AgentApi, csr: &str, site: &str, agent: &str) -> Response {
    let cert = match pki::sign_agent(
        &api.ca.cert,
        &api.ca.key,
        csr,
        site,
        agent,
        Timestamp::now(),
    ) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    if let Err(r) = api.remember(site, agent, &cert).await {
        return r;
    }
    tracing::info!(%site, %agent, "agent enrolled");
    Json(Enrolled {
        cert,
        ca: api.ca.cert.clone(),
        site: site.to_owned(),
        agent: agent.to_owned(),
    })
    .into_response()
}

async fn renew(
    State(api): State<AgentApi>,
    caller: Caller,
    Json(req): Json<RenewRequest>,
) -> Response {
    sign(&api, &req.csr, &caller.id.site, &caller.id.agent).await
}

#[derive(Debug, Deserialize)]
struct Wait {
    #[serde(default)]
    wait: u64,
}

/// The longest a long-poll waits.
const MAX_WAIT: u64 = 30;

async fn model(caller: Caller, headers: HeaderMap, Query(q): Query<Wait>) -> Response {
    caller.hub.heard(&caller.id.agent, Timestamp::now());
    let have = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_owned()
        });
    let wait = Duration::from_secs(q.wait.min(MAX_WAIT));
    match caller.hub.model_after(have.as_deref(), wait).await {
        Some(m) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::ETAG, format!("\"{}\"", m.version)),
            ],
            m.json.clone(),
        )
            .into_response(),
        None if have.is_some() => StatusCode::NOT_MODIFIED.into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_model",
            "the site has no model yet",
        ),
    }
}

async fn work(caller: Caller, Json(req): Json<WorkRequest>) -> Response {
    let wait = Duration::from_secs(req.wait.min(MAX_WAIT));
    let w = caller
        .hub
        .work_wait(&caller.id.agent, &req, wait, Timestamp::now)
        .await;
    Json(w).into_response()
}

/// How long a result or an observation batch waits to be committed
/// before the agent is told to send it again.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

fn not_committed() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_committed",
        "taken but not committed yet: send it again",
    )
}

async fn results(caller: Caller, Json(b): Json<ResultsBody>) -> Response {
    let (taken, ignored, step) = caller
        .hub
        .results(&caller.id.agent, b.results, Timestamp::now());
    if !taken.is_empty() && !caller.hub.committed(step, COMMIT_WAIT).await {
        return not_committed();
    }
    Json(ResultsAck { taken, ignored }).into_response()
}

async fn observations(caller: Caller, Json(b): Json<ObservationBatch>) -> Response {
    let (high, step) =
        caller
            .hub
            .observations(&caller.id.agent, &b.spool, b.items, Timestamp::now());
    // The spool's number is committed with the step that takes the batch.
    if !caller.hub.committed(step, COMMIT_WAIT).await {
        return not_committed();
    }
    Json(ObservationAck { acked: high }).into_response()
}
