//! Cross-origin requests (CORS): which pages of other sites a browser lets
//! call eventfeed and read its answers, and whether with a user's
//! credentials. Every `OPTIONS` is a preflight answered here.
//!
//! Two settings ([`Cors`]), chosen at start:
//!
//! - **Anonymous**, the default: any origin (`Access-Control-Allow-Origin:
//!   *`), so that browser apps on other hosts can read public feeds; but
//!   never with credentials. The `*` alone keeps browsers from sending
//!   their stored credentials (cookies, a remembered Basic login): a
//!   request in credentials mode is refused unless the answer names its
//!   origin and says `Access-Control-Allow-Credentials: true`, which this
//!   setting never does. And `Authorization` is not among the headers a
//!   cross-origin request may carry, so a page cannot send credentials of
//!   its own either: not a password it talked a user into typing, nor
//!   guesses at one from every visitor's browser against a server behind
//!   their firewall.
//! - **Listed origins** (`--cors-origin`): only those origins, each echoed
//!   back, with credentials and `Authorization` allowed; a request from
//!   any other origin gets no CORS header at all. Answers then differ by
//!   origin, so they carry `Vary: Origin` for caches.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Which cross-origin requests browsers may make (see the module doc).
#[derive(Debug, Clone, Default)]
pub enum Cors {
    /// Any origin, without credentials.
    #[default]
    Anonymous,
    /// These origins only, with credentials: each as [`origin`] writes it,
    /// which is how browsers write the `Origin` header.
    Origins(Arc<[HeaderValue]>),
}

impl Cors {
    /// Whether pages of `origin` may act with a user's credentials.
    pub fn allows_credentials_from(&self, origin: &HeaderValue) -> bool {
        match self {
            Self::Anonymous => false,
            Self::Origins(origins) => origins.contains(origin),
        }
    }

    /// The setting for `--cors-origin`: none given, anonymous.
    pub fn for_origins(origins: &[String]) -> Result<Self, String> {
        if origins.is_empty() {
            return Ok(Self::Anonymous);
        }
        let values = origins
            .iter()
            .map(|text| {
                let normal = origin(text)?;
                HeaderValue::from_str(&normal).map_err(|error| format!("--cors-origin {text}: {error}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::Origins(values.into()))
    }
}

/// The request headers a cross-origin request may carry (v5's list, plus
/// what eventfeed adds), `Authorization` aside (see [`Cors`]).
const ALLOWED_HEADERS: [&str; 14] = [
    "content-type",
    "x-requested-with",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "if-none-match",
    "last-event-id",
    "es-longpoll",
    "es-expectedversion",
    "es-eventid",
    "es-eventtype",
    "es-requiremaster",
    "es-harddelete",
    "es-resolvelinktos",
    "es-consumer",
];

/// The response headers a cross-origin page may read, besides the few
/// every page may.
const EXPOSED_HEADERS: [&str; 4] = ["location", "es-position", "es-currentversion", "etag"];

/// The CORS layer of `cors`, and for listed origins the origins that
/// [`tidy_listed`] finishes its answers for (the caller puts it outside).
pub(super) fn layers(cors: &Cors) -> (CorsLayer, Option<Arc<[HeaderValue]>>) {
    let methods = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS];
    let layer =
        CorsLayer::new().allow_methods(methods).expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static));
    match cors {
        Cors::Anonymous => (
            layer
                .allow_origin(AllowOrigin::any())
                .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static)),
            None,
        ),
        // tower-http refuses `*` for anything alongside credentials, hence
        // the explicit lists; it adds `Vary: Origin` for a list of origins.
        Cors::Origins(origins) => {
            let headers =
                ALLOWED_HEADERS.map(HeaderName::from_static).into_iter().chain([header::AUTHORIZATION]);
            let listed = layer
                .allow_origin(AllowOrigin::list(origins.iter().cloned()))
                .allow_headers(headers.collect::<Vec<_>>())
                .allow_credentials(true);
            (listed, Some(Arc::clone(origins)))
        }
    }
}

/// Finishes tower-http's answer for listed origins:
/// - takes every CORS header off an answer to an origin not listed (or to
///   no origin): tower-http leaves out only `Access-Control-Allow-Origin`,
///   which is enough for a browser, but `Allow-Credentials: true` and the
///   lists would suggest otherwise to anyone reading the answer;
/// - joins tower-http's `Vary: origin` to the page's own `Vary`, as one
///   header: some caches read only the first.
pub(super) async fn tidy_listed(
    State(origins): State<Arc<[HeaderValue]>>,
    request: Request,
    next: Next,
) -> Response {
    let listed = request.headers().get(header::ORIGIN).is_some_and(|origin| origins.contains(origin));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !listed {
        let names: Vec<HeaderName> =
            headers.keys().filter(|name| name.as_str().starts_with("access-control-")).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
    let vary: Vec<&str> =
        headers.get_all(header::VARY).iter().filter_map(|value| value.to_str().ok()).collect();
    if vary.len() > 1 {
        if let Ok(joined) = HeaderValue::from_str(&vary.join(", ")) {
            headers.insert(header::VARY, joined);
        }
    }
    response
}

/// Checks a `--cors-origin` value, `scheme://host[:port]`, and writes it
/// as browsers write an `Origin` header, which must match it byte for
/// byte: in lower case, without the scheme's default port.
pub fn origin(text: &str) -> Result<String, String> {
    let wrong = |why: &str| {
        format!("not an origin ({why}); write scheme://host[:port], e.g. https://app.example.com")
    };
    if text == "*" || text.eq_ignore_ascii_case("null") {
        return Err(wrong("any origin is the default, without credentials: leave --cors-origin out for it"));
    }
    let lower = text.to_ascii_lowercase();
    let (scheme, authority) = lower.split_once("://").ok_or_else(|| wrong("no scheme:// at its start"))?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err(wrong("its scheme is not one"));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(wrong("an origin has no path, query or fragment, not even a final /"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let bracketed = host.len() > 2
        && host.starts_with('[')
        && host.ends_with(']')
        && host[1..host.len() - 1].bytes().all(|b| b.is_ascii_hexdigit() || b":.".contains(&b));
    let named = !host.is_empty()
        && !host.starts_with(['.', '-'])
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b));
    if !(bracketed || named) {
        return Err(wrong("its host is not a name, an IPv4 address or a bracketed IPv6 address"));
    }
    let Some(port) = port else { return Ok(lower) };
    let number = port.parse::<u16>().ok().filter(|n| *n > 0 && !port.starts_with('0'));
    match number {
        None => Err(wrong("its port is not a number from 1 to 65535")),
        Some(443) if scheme == "https" => Ok(format!("{scheme}://{host}")),
        Some(80) if scheme == "http" => Ok(format!("{scheme}://{host}")),
        Some(_) => Ok(lower),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_written_as_browsers_write_them() {
        assert_eq!(origin("https://app.example.com").unwrap(), "https://app.example.com");
        assert_eq!(origin("HTTPS://App.Example.COM").unwrap(), "https://app.example.com");
        assert_eq!(origin("https://app.example.com:443").unwrap(), "https://app.example.com");
        assert_eq!(origin("http://localhost:80").unwrap(), "http://localhost");
        assert_eq!(origin("http://localhost:8080").unwrap(), "http://localhost:8080");
        assert_eq!(origin("https://127.0.0.1:8443").unwrap(), "https://127.0.0.1:8443");
        assert_eq!(origin("http://[::1]:3000").unwrap(), "http://[::1]:3000");
        assert_eq!(origin("http://[::1]").unwrap(), "http://[::1]");
        assert_eq!(origin("chrome-extension://abcdef").unwrap(), "chrome-extension://abcdef");
    }

    #[test]
    fn what_is_not_an_origin_is_refused_with_the_reason() {
        for (text, reason) in [
            ("*", "leave --cors-origin out"),
            ("null", "leave --cors-origin out"),
            ("app.example.com", "no scheme://"),
            ("https://app.example.com/", "no path"),
            ("https://app.example.com/app", "no path"),
            ("https://app.example.com?x", "no path"),
            ("https://", "host"),
            ("https://user@app.example.com", "host"),
            ("https://app example.com", "host"),
            ("https://app.example.com:0", "port"),
            ("https://app.example.com:65536", "port"),
            ("https://app.example.com:", "port"),
            ("https://app.example.com:08", "port"),
            ("1http://app", "scheme"),
            ("https://[::1", "host"),
        ] {
            let error = origin(text).unwrap_err();
            assert!(error.contains(reason) && error.contains("scheme://host[:port]"), "{text}: {error}");
        }
    }

    #[test]
    fn no_origins_is_the_anonymous_setting() {
        assert!(matches!(Cors::for_origins(&[]), Ok(Cors::Anonymous)));
        let Ok(Cors::Origins(origins)) = Cors::for_origins(&["HTTPS://A.example:443".to_owned()]) else {
            panic!("a list");
        };
        assert_eq!(origins.as_ref(), [HeaderValue::from_static("https://a.example")]);
        assert!(Cors::for_origins(&["https://a.example/".to_owned()]).is_err());
    }
}
