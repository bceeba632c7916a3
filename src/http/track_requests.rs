//! The layer that counts and times every request for `/metrics`
//! (installed by `http::router` only when metrics are on).
//!
//! Hand-written, as `challenge` is: as an `axum::middleware::from_fn` it
//! cost every request a boxed future of about 1.1 KiB and a cloned router,
//! and a long-poll keeps that future for as long as it waits (measured with
//! valgrind's massif on 1,000 idle long-polls).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use tower::{Layer, Service};

use super::metrics::{Metrics, Route, method_label};

/// Wraps a service in [`TrackRequests`].
#[derive(Debug, Clone)]
pub(super) struct TrackRequestsLayer {
    pub metrics: Arc<Metrics>,
}

impl<S> Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> TrackRequests<S> {
        TrackRequests { inner, metrics: Arc::clone(&self.metrics) }
    }
}

/// See the module doc.
#[derive(Debug, Clone)]
pub(super) struct TrackRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for TrackRequests<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let route = match request.extensions().get::<MatchedPath>() {
            Some(path) => Route::Matched(path.clone()),
            None => Route::Unmatched,
        };
        let method = method_label(request.method());
        let started = Instant::now();
        let answer = self.inner.call(request);
        Tracked {
            answer,
            tracking: Some(Tracking { metrics: Arc::clone(&self.metrics), route, method, started }),
        }
    }
}

/// What is recorded once the answer is ready.
#[derive(Debug)]
struct Tracking {
    metrics: Arc<Metrics>,
    route: Route,
    method: &'static str,
    started: Instant,
}

pin_project_lite::pin_project! {
    /// The inner service's answer, recorded when it is ready.
    #[derive(Debug)]
    pub(super) struct Tracked<F> {
        #[pin]
        answer: F,
        tracking: Option<Tracking>,
    }
}

impl<F, B, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.answer.poll(cx));
        if let (Ok(response), Some(tracking)) = (&answer, this.tracking.take()) {
            let Tracking { metrics, route, method, started } = tracking;
            metrics.request(route, method, response.status(), started.elapsed());
        }
        Poll::Ready(answer)
    }
}
