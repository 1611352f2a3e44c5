//! Request metrics as a tower layer: requests by route and status,
//! response bytes and latency by route.
//!
//! Written out rather than with `axum::middleware::from_fn`, which boxes
//! the inner service and the future of every request: this runs on every
//! file and script request, the service's hot path.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::response::Response;

/// Layer recording `http_requests_total{route,status}`,
/// `http_response_bytes_total{route}` and `http_request_seconds{route}`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MetricsLayer;

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics { inner }
    }
}

/// The service [`MetricsLayer`] wraps around a route.
#[derive(Debug, Clone)]
pub(crate) struct Metrics<S> {
    inner: S,
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
        let route = route_of(req.extensions().get::<MatchedPath>());
        MetricsFuture {
            inner: self.inner.call(req),
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
        route: &'static str,
        started: Instant,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for MetricsFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(resp) = std::task::ready!(this.inner.poll(cx));
        record(this.route, *this.started, &resp);
        Poll::Ready(Ok(resp))
    }
}

/// The route label of a matched path.
fn route_of(m: Option<&MatchedPath>) -> &'static str {
    m.map_or("unmatched", |m| match m.as_str() {
        "/boot.ipxe" => "boot.ipxe",
        "/ipxe" => "ipxe",
        "/config/{mac}" => "config",
        "/files/{*path}" => "files",
        "/checkpoint/{token}" => "checkpoint",
        _ => "other",
    })
}

fn record(route: &'static str, started: Instant, resp: &Response) {
    let status = match resp.status().as_u16() {
        200 => "200",
        206 => "206",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        409 => "409",
        416 => "416",
        500 => "500",
        502 => "502",
        _ => "other",
    };
    metrics::counter!("http_requests_total", "route" => route, "status" => status).increment(1);
    if let Some(n) = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        metrics::counter!("http_response_bytes_total", "route" => route).increment(n);
    }
    metrics::histogram!("http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
}
