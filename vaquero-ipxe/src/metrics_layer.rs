//! Request metrics as a tower layer: requests by route and status,
//! response bytes and latency by route.
//!
//! Written out rather than with `axum::middleware::from_fn`, which boxes
//! the inner service and the future of every request: this runs on every
//! request that goes through the router. The same [`RouteMetrics`] record
//! the requests [`crate::serve`] answers without it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::response::Response;
use metrics::{Counter, Histogram};

/// Layer recording `vaquero_http_requests_total{route,status}`,
/// `vaquero_http_response_bytes_total{route}` and `vaquero_http_request_duration_seconds{route}`.
#[derive(Debug, Clone)]
pub(crate) struct MetricsLayer {
    metrics: Arc<RouteMetrics>,
}

impl MetricsLayer {
    /// Records into `metrics` (shared with the routes served without the
    /// router).
    pub(crate) fn new(metrics: Arc<RouteMetrics>) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MetricsLayer`] wraps around a route.
#[derive(Debug, Clone)]
pub(crate) struct Metrics<S> {
    inner: S,
    metrics: Arc<RouteMetrics>,
}

impl<S> tower_service::Service<Request> for Metrics<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = Label::of(req.extensions().get::<MatchedPath>());
        MetricsFuture {
            inner: self.inner.call(req),
            metrics: self.metrics.clone(),
            route,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a request under [`Metrics`].
    pub(crate) struct MetricsFuture<F> {
        #[pin]
        inner: F,
        metrics: Arc<RouteMetrics>,
        route: Label,
        started: Instant,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for MetricsFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(resp) = std::task::ready!(this.inner.poll(cx));
        this.metrics.record(*this.route, *this.started, &resp);
        Poll::Ready(Ok(resp))
    }
}

/// The `route` label of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Label {
    /// `/boot.ipxe`.
    Chain,
    /// `/ipxe`.
    Script,
    /// `/config/{mac}`.
    Config,
    /// `/files/{*path}`.
    Files,
    /// `/checkpoint/{token}`.
    Checkpoint,
    /// A route added by an embedding application.
    Other,
    /// No route matched.
    Unmatched,
}

const ROUTES: usize = 7;

/// The statuses with a `status` label of their own; any other is `other`.
const STATUSES: [(u16, &str); 11] = [
    (200, "200"),
    (206, "206"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (409, "409"),
    (416, "416"),
    (500, "500"),
    (502, "502"),
];

impl Label {
    /// The label of a matched path.
    fn of(m: Option<&MatchedPath>) -> Label {
        m.map_or(Label::Unmatched, |m| match m.as_str() {
            "/boot.ipxe" => Label::Chain,
            "/ipxe" => Label::Script,
            "/config/{mac}" => Label::Config,
            "/files/{*path}" => Label::Files,
            "/checkpoint/{token}" => Label::Checkpoint,
            _ => Label::Other,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Label::Chain => "boot.ipxe",
            Label::Script => "ipxe",
            Label::Config => "config",
            Label::Files => "files",
            Label::Checkpoint => "checkpoint",
            Label::Other => "other",
            Label::Unmatched => "unmatched",
        }
    }
}

/// The request metrics of one service, their handles registered with the
/// recorder on first use (a key built and looked up per request would
/// cost more than serving a small file).
#[derive(Debug, Default)]
pub(crate) struct RouteMetrics {
    requests: [[OnceLock<Counter>; STATUSES.len() + 1]; ROUTES],
    bytes: [OnceLock<Counter>; ROUTES],
    seconds: [OnceLock<Histogram>; ROUTES],
}

impl RouteMetrics {
    /// Records a request of `route` started at `started` and answered
    /// with `resp`.
    pub(crate) fn record(&self, route: Label, started: Instant, resp: &Response) {
        let r = route as usize;
        let code = resp.status().as_u16();
        let s = STATUSES
            .iter()
            .position(|&(c, _)| c == code)
            .unwrap_or(STATUSES.len());
        let status = STATUSES.get(s).map_or("other", |&(_, label)| label);
        let (Some(requests), Some(bytes), Some(seconds)) = (
            self.requests.get(r).and_then(|row| row.get(s)),
            self.bytes.get(r),
            self.seconds.get(r),
        ) else {
            return;
        };
        let route = route.as_str();
        requests
            .get_or_init(
                || metrics::counter!("vaquero_http_requests_total", "route" => route, "status" => status),
            )
            .increment(1);
        if let Some(n) = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            bytes
                .get_or_init(
                    || metrics::counter!("vaquero_http_response_bytes_total", "route" => route),
                )
                .increment(n);
        }
        seconds
            .get_or_init(
                || metrics::histogram!("vaquero_http_request_duration_seconds", "route" => route),
            )
            .record(started.elapsed().as_secs_f64());
    }
}
