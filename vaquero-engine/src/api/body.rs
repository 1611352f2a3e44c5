//! The bodies the API answers with. Each is the type its handler
//! serializes, and the OpenAPI document's schema of it is derived from
//! that type, so the two cannot drift.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Role, TokenRecord};
use crate::control::{PlanEntry, Refused};
use crate::observe::{Observation, ObservationKind};
use crate::record::Record;
use crate::state::{HostState, Phase, Rollout};

/// A change that was carried out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Ok)]
pub(crate) struct Done {
    /// Always `true`.
    pub ok: bool,
    /// What was done.
    pub message: String,
}

/// `GET /leader`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct LeaderBody {
    /// The leader's URL (a replicated server's `--advertise`), if known.
    pub leader: Option<String>,
    /// The leader's term (its fencing number; 0: not replicated).
    pub fence: u64,
    /// Whether the process answering leads: always `true` here (a
    /// follower answers 503).
    pub this: bool,
}

/// One site, in brief.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct SiteRow {
    /// Its id.
    pub site: String,
    /// The SoT revision served.
    pub revision: Option<String>,
    /// The model version served (empty: none yet).
    pub version: String,
    /// Whether new hosts are held back by an operator.
    pub paused: bool,
    /// Why new hosts are held back by the site's link, if they are.
    pub held: Option<String>,
    /// The current rollout's id.
    pub rollout: Option<u64>,
    /// How many hosts it has.
    pub hosts: usize,
}

/// `GET /v1/sites`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct SitesBody {
    /// Every site served.
    pub sites: Vec<SiteRow>,
}

/// The plan that waits for approval, in brief.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct PendingPlan {
    /// The rollout it becomes once approved.
    pub rollout: u64,
    /// Its text, as `vaquero plan` prints it.
    pub text: String,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct StatusBody {
    /// The site.
    pub site: String,
    /// The SoT source.
    pub source: String,
    /// The SoT revision served.
    pub revision: Option<String>,
    /// The model version served (empty: none yet).
    pub version: String,
    /// Whether new hosts are held back by an operator.
    pub paused: bool,
    /// Why no new host starts: the site's agents are not heard from
    /// (server).
    pub held: Option<String>,
    /// The newest revision, if it was refused, and why.
    pub refused: Option<Refused>,
    /// The current rollout.
    pub rollout: Option<Rollout>,
    /// The plan that waits for approval.
    pub pending_plan: Option<PendingPlan>,
    /// How many hosts the site has.
    pub hosts: usize,
    /// How many hosts are in each phase.
    pub phases: BTreeMap<String, usize>,
}

/// A host as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostRow {
    /// Its name.
    pub name: String,
    /// Its site.
    pub site: String,
    /// Its workflow.
    pub workflow: String,
    /// The engine's phase.
    pub phase: Phase,
    /// The stage (0-based).
    pub stage: usize,
    /// The boot id of that stage.
    pub boot: Option<String>,
    /// Its title (the boot's `name`), when it has one.
    pub boot_name: Option<String>,
    /// The boot attempt.
    pub attempt: u64,
    /// When it entered the phase.
    pub since: Timestamp,
    /// Why it is where it is (waiting, failed), if said.
    pub reason: Option<String>,
    /// Its newest observation.
    pub last_event: Option<Observation>,
}

/// `GET /v1/hosts`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct HostsBody {
    /// Every host of the site.
    pub hosts: Vec<HostRow>,
}

/// One observation of a boot attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct AttemptEvent {
    /// When it was seen.
    pub at: Timestamp,
    /// Seconds since the attempt's first observation.
    pub after_seconds: f64,
    /// What was seen.
    pub kind: ObservationKind,
    /// Whether it was answered (or went) well.
    pub ok: bool,
    /// What was asked and answered.
    pub detail: String,
}

/// The observations of one boot attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Attempt {
    /// The attempt (`null`: seen before any attempt was known).
    pub attempt: Option<u64>,
    /// Its first observation.
    pub started: Timestamp,
    /// Its last observation.
    pub ended: Timestamp,
    /// Seconds from the first observation to the last.
    pub seconds: f64,
    /// What was seen, oldest first.
    pub events: Vec<AttemptEvent>,
}

/// `GET /v1/hosts/{name}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct HostBody {
    /// The host as listed.
    pub host: HostRow,
    /// The engine's whole state of it.
    pub state: HostState,
    /// The timeline of each boot attempt, oldest first.
    pub attempts: Vec<Attempt>,
}

/// `GET /v1/plans`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct PlansBody {
    /// Plans, newest last: pending, applied or superseded.
    pub plans: Vec<PlanEntry>,
}

/// `GET /v1/executions`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ExecutionsBody {
    /// Execution records with their steps and logs.
    pub executions: Vec<Record>,
}

/// `GET /v1/agents`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct AgentsBody {
    /// The site.
    pub site: String,
    /// Its agents: those its SoT names and those enrolled.
    pub agents: Vec<crate::server::routes::AgentRow>,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct TokensBody {
    /// Every token the store knows (never a secret: its hash).
    pub tokens: Vec<TokenRecord>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub(crate) struct NewToken {
    /// What it may do: `admin` (everything), `read` (`GET` only), or
    /// `agent` (a join token: it enrols one agent of a server's site).
    pub role: Role,
    /// What it is for.
    #[serde(default)]
    pub note: String,
    /// A join token's site.
    #[serde(default)]
    pub site: Option<String>,
    /// A join token's agent (default: the site's only agent).
    #[serde(default)]
    pub agent: Option<String>,
}

/// A token just made: its secret is in this answer only.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct TokenMade {
    /// The token (`Authorization: Bearer …`), or the join token an
    /// agent enrols with.
    pub token: String,
    /// What the store keeps of it.
    pub record: TokenRecord,
}

/// `POST /v1/approve`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct ApproveBody {
    /// The rollout approved (default: the one waiting); another one is
    /// refused.
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 0)]
    pub rollout: Option<u64>,
}

/// A whole number as JSON Schema counts them: `3` and `3.0` alike.
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..u64::MAX as f64).contains(f))
                .map(|f| f as u64)
        })
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{n}: a whole number, 0 or more, is expected")))
}

/// `POST /v1/hosts/{name}/reprovision`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct ReprovisionOne {
    /// Skip the site's reboot windows.
    #[serde(default)]
    pub now: bool,
}

/// `POST /v1/reprovision`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ReprovisionMany {
    /// The hosts: exactly these start, no others.
    #[schema(min_items = 1)]
    pub hosts: Vec<String>,
    /// Skip the site's reboot windows.
    #[serde(default)]
    pub now: bool,
}

/// The query of `GET /v1/executions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExecQuery {
    /// One host's records (every attempt kept).
    pub host: Option<String>,
    /// One rollout's records (default: the current rollout's).
    #[param(minimum = 0)]
    pub rollout: Option<u64>,
}
