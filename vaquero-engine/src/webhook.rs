//! `POST /v1/webhook/github`: a push to the SoT's repository makes the
//! server look at the branch tip now rather than at its next poll.
//!
//! The signature (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body with
//! the shared secret) is checked in constant time before anything of the
//! body is read. The answer is 202 at once. A delivery seen already
//! (`X-GitHub-Delivery`) is not acted on again. The payload's `before` and
//! `after` are not trusted: the server fetches the branch tip and compares
//! it with the last revision it applied, so a late or reordered delivery
//! can do no harm. Polling stays the backstop for lost deliveries.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::api::reply::error;

/// How many delivery ids are remembered for de-duplication.
const REMEMBERED: usize = 4096;

/// The largest payload taken (GitHub caps theirs at 25 MB).
pub(crate) const MAX_BODY: usize = 25 << 20;

/// The webhook's secret, the deliveries seen, and who is told of a push.
pub struct Webhook {
    secret: Vec<u8>,
    seen: Mutex<(VecDeque<String>, HashSet<String>)>,
    pushed: mpsc::UnboundedSender<()>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").finish_non_exhaustive()
    }
}

impl Webhook {
    /// A webhook checked with `secret`; each new push delivery is sent to
    /// the returned receiver.
    pub fn new(secret: Vec<u8>) -> (Webhook, mpsc::UnboundedReceiver<()>) {
        let (pushed, rx) = mpsc::unbounded_channel();
        let w = Webhook {
            secret,
            seen: Mutex::default(),
            pushed,
        };
        (w, rx)
    }

    /// Whether `signature` (`sha256=<hex>`) is the HMAC of `body`,
    /// compared in constant time.
    pub fn verify(&self, signature: Option<&str>, body: &[u8]) -> bool {
        let Some(sig) = signature
            .and_then(|s| s.trim().strip_prefix("sha256="))
            .and_then(|h| hex::decode(h).ok())
        else {
            return false;
        };
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    }

    /// Remembers `delivery`; `false` when it was seen already.
    fn first(&self, delivery: &str) -> bool {
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (order, set) = &mut *g;
        if !set.insert(delivery.to_owned()) {
            return false;
        }
        order.push_back(delivery.to_owned());
        if order.len() > REMEMBERED
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }
}

/// What a delivery did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Delivery {
    /// Whether it was acted on (a new push; not a repeated delivery or
    /// another event).
    pub accepted: bool,
    /// Its `X-GitHub-Delivery` id.
    pub delivery: String,
    /// What was done.
    pub message: String,
}

/// A GitHub delivery: on a push, the SoT's branch tip is read now.
///
/// Signed with the webhook secret (`X-Hub-Signature-256`); no bearer
/// token. Without a secret configured (`--webhook-secret-file`), every
/// delivery is refused (401).
/// The webhook a process has, as the handler's state, taken from the
/// API's shared state (`None`: no secret is configured).
#[derive(Clone)]
pub(crate) struct Hook(pub(crate) Option<std::sync::Arc<Webhook>>);

#[utoipa::path(
    post,
    path = "/v1/webhook/github",
    params(
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the body's HMAC-SHA256 with the secret, in hex", pattern = "^sha256=[0-9a-f]{64}$"),
        ("X-GitHub-Event" = Option<String>, Header, description = "The event: only `push` is acted on"),
        ("X-GitHub-Delivery" = Option<String>, Header, description = "The delivery's id: a repeated one is not acted on again"),
    ),
    request_body(content = Object, description = "GitHub's payload (only its signature is read)", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: acted on for a new push", body = Delivery),
        (status = 401, description = "Missing or wrong signature, or no webhook secret is configured", body = crate::api::reply::ErrorBody),
        (status = 413, description = "Body over 25 MiB", body = crate::api::reply::ErrorBody),
    )
)]
pub(crate) async fn github(State(hook): State<Hook>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(hook) = &hook.0 else {
        // Nothing can be verified: every delivery is refused, saying why.
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no webhook secret is configured (--webhook-secret-file): deliveries are refused",
        );
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !hook.verify(header("x-hub-signature-256"), &body) {
        metrics::counter!("vaquero_webhook_deliveries_total", "outcome" => "refused").increment(1);
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong X-Hub-Signature-256",
        );
    }
    let event = header("x-github-event").unwrap_or("");
    let delivery = header("x-github-delivery").unwrap_or("").to_owned();
    if !delivery.is_empty() && !hook.first(&delivery) {
        metrics::counter!("vaquero_webhook_deliveries_total", "outcome" => "duplicate")
            .increment(1);
        return (
            StatusCode::ACCEPTED,
            Json(Delivery {
                accepted: false,
                delivery,
                message: "delivery seen already".into(),
            }),
        )
            .into_response();
    }
    let acted = event == "push";
    if acted {
        let _ = hook.pushed.send(());
    }
    metrics::counter!("vaquero_webhook_deliveries_total", "outcome" => if acted { "push" } else { "ignored" })
        .increment(1);
    tracing::info!(%event, %delivery, acted, "webhook delivery");
    let message = if acted {
        "the branch tip is fetched and compared with the revision applied"
    } else {
        "only push events are acted on"
    };
    (
        StatusCode::ACCEPTED,
        Json(Delivery {
            accepted: acted,
            delivery,
            message: message.into(),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signatures_and_deliveries() {
        let (w, _rx) = Webhook::new(b"It's a Secret to Everybody".to_vec());
        // GitHub's documented example.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(w.verify(Some(sig), b"Hello, World!"));
        assert!(!w.verify(Some(sig), b"Hello, World?"));
        assert!(!w.verify(None, b"Hello, World!"));
        assert!(!w.verify(Some("sha1=00"), b"Hello, World!"));
        assert!(!w.verify(Some("sha256=zz"), b"Hello, World!"));
        assert!(w.first("a") && w.first("b") && !w.first("a"));
    }
}
