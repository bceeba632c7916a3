//! Request bodies in a content coding (`Content-Encoding`). gzip and
//! deflate are decoded here, below every route, so each route that takes
//! a body takes them alike; the handlers' size limits then count decoded
//! bytes, so a small bomb meets `413` long before memory does, and the
//! encoded bytes are held to `--max-request-bytes` too (deflate can encode
//! endless nothing). Any other coding is `415` with `Accept-Encoding`
//! naming those accepted (RFC 9110, section 15.5.16): storing the bytes
//! as they came would store them compressed. A request without a body (a
//! read) is left alone, whatever its headers say.
//!
//! Only gzip and deflate: their decoders are the ones response compression
//! already builds, and brotli or zstd would add large dependencies for
//! producers that can send gzip as easily.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::io;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{GzipDecoder, ZlibDecoder};
use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use futures_util::future::Either;
use http_body_util::{BodyExt, Limited};
use tokio_util::io::{ReaderStream, StreamReader};
use tower::{Layer, Service};

use super::error::HttpError;

/// The codings a request body may come in, as `Accept-Encoding` says it.
pub const ACCEPTED: &str = "gzip, deflate, identity";

/// The layer [`super::router`] applies: decodes request bodies, or refuses
/// them.
#[derive(Debug, Clone, Copy)]
pub struct DecodeBodiesLayer {
    /// The most encoded bytes read from one request.
    pub encoded_limit: usize,
}

impl<S> Layer<S> for DecodeBodiesLayer {
    type Service = DecodeBodies<S>;

    fn layer(&self, inner: S) -> DecodeBodies<S> {
        DecodeBodies { inner, encoded_limit: self.encoded_limit }
    }
}

/// A hand-written service rather than `axum::middleware::from_fn`, whose
/// boxed future and cloned router per request cost 2-3% of every page
/// read (see `caching::weak_etag_when_encoded`); this one costs a header
/// lookup on a request without `Content-Encoding`.
#[derive(Debug, Clone)]
pub struct DecodeBodies<S> {
    inner: S,
    encoded_limit: usize,
}

impl<S> Service<Request<Body>> for DecodeBodies<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match decoded(request, self.encoded_limit) {
            Ok(request) => Either::Right(self.inner.call(request)),
            Err(refusal) => Either::Left(ready(Ok(refusal.into_response()))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
}

/// The one coding a request names. Names are case-insensitive, and
/// `x-gzip` is gzip (RFC 9110, section 8.4.1.3); a list of codings (a body
/// encoded twice) is refused like an unknown one.
fn coding(headers: &HeaderMap) -> Result<Coding, HttpError> {
    let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
    let named = values.next().and_then(|value| value.to_str().ok()).unwrap_or_default().trim();
    let coding = match named.to_ascii_lowercase().as_str() {
        _ if values.next().is_some() => None,
        "identity" => Some(Coding::Identity),
        "gzip" | "x-gzip" => Some(Coding::Gzip),
        "deflate" => Some(Coding::Deflate),
        _ => None,
    };
    coding.ok_or_else(|| {
        HttpError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type")
            .with_detail(format!(
                "Content-Encoding '{named}' is not supported: send the body as gzip, deflate or identity."
            ))
            .with_header(header::ACCEPT_ENCODING, HeaderValue::from_static(ACCEPTED))
    })
}

/// The request with its body decoded and `Content-Encoding` (and the
/// encoded `Content-Length`) gone, or why not.
fn decoded(request: Request<Body>, encoded_limit: usize) -> Result<Request<Body>, HttpError> {
    if !request.headers().contains_key(header::CONTENT_ENCODING) {
        return Ok(request);
    }
    let (mut parts, body) = request.into_parts();
    let coding = if body.is_end_stream() { Coding::Identity } else { coding(&parts.headers)? };
    parts.headers.remove(header::CONTENT_ENCODING);
    if coding == Coding::Identity {
        return Ok(Request::from_parts(parts, body));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    let encoded = Limited::new(body, encoded_limit).into_data_stream().map_err(io::Error::other);
    let reader = StreamReader::new(encoded);
    let body = match coding {
        Coding::Gzip => {
            let mut decoder = GzipDecoder::new(reader);
            decoder.multiple_members(true);
            Body::from_stream(ReaderStream::new(decoder))
        }
        _ => Body::from_stream(ReaderStream::new(ZlibDecoder::new(reader))),
    };
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn codings_are_named_as_rfc_9110_names_them() {
        for (value, expected) in [
            ("gzip", Coding::Gzip),
            (" GZip ", Coding::Gzip),
            ("x-gzip", Coding::Gzip),
            ("deflate", Coding::Deflate),
            ("identity", Coding::Identity),
        ] {
            assert_eq!(coding(&named(value)).ok(), Some(expected), "{value}");
        }
        for value in ["br", "zstd", "gzip, gzip", "", "compress"] {
            let refusal = coding(&named(value)).expect_err(value);
            assert_eq!(refusal.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert!(refusal.headers.iter().any(|(name, _)| name == header::ACCEPT_ENCODING));
        }
        let mut twice = named("gzip");
        twice.append(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(coding(&twice).is_err(), "a body encoded twice");
    }
}
