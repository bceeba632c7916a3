//! The challenge of a `401` to the web UI's own calls.
//!
//! A browser shows its own login dialog for a `Basic` challenge, even to a
//! script's `fetch`, where the UI shows its login form instead. So the
//! UI's calls (they say `X-Requested-With: eventfeed-ui`) get their `401`
//! with `WWW-Authenticate: BasicCustom realm="ES"`, as v5's own UI did;
//! every other client keeps v5's `Basic` challenge.
//!
//! A hand-written layer whose future is not boxed: as an
//! `axum::middleware::from_fn` it would cost every request a boxed future
//! and a cloned router (2-3% of an uncached page read, measured for
//! another such layer).

use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use futures_util::FutureExt as _;
use futures_util::future::{Either, Map};
use tower::{Layer, Service};

/// The `X-Requested-With` value the web UI sends on every call it makes.
const UI_CALLER: &str = "eventfeed-ui";

/// Wraps a service in [`UiChallenge`].
#[derive(Debug, Clone, Copy)]
pub(super) struct UiChallengeLayer;

impl<S> Layer<S> for UiChallengeLayer {
    type Service = UiChallenge<S>;

    fn layer(&self, inner: S) -> UiChallenge<S> {
        UiChallenge { inner }
    }
}

/// See the module doc.
#[derive(Debug, Clone)]
pub(super) struct UiChallenge<S> {
    inner: S,
}

type Answer<B, E> = Result<Response<B>, E>;

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for UiChallenge<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    #[allow(clippy::type_complexity)]
    type Future = Either<
        Map<S::Future, fn(Answer<ResponseBody, S::Error>) -> Answer<ResponseBody, S::Error>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let from_ui = request
            .headers()
            .get("x-requested-with")
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(UI_CALLER.as_bytes()));
        let answer = self.inner.call(request);
        if from_ui { Either::Left(answer.map(challenge_custom as fn(_) -> _)) } else { Either::Right(answer) }
    }
}

fn challenge_custom<B, E>(mut answer: Answer<B, E>) -> Answer<B, E> {
    if let Ok(response) = &mut answer
        && response.status() == StatusCode::UNAUTHORIZED
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("BasicCustom realm=\"ES\""));
    }
    answer
}
