//! Requests and responses: the media types, the HTTP client every test
//! uses, event bodies, header and reason-phrase readers, and raw HTTP/1.1
//! for paths a URL library would normalise.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Client, Response};
use serde_json::Value;

pub const EVENTS_JSON: &str = "application/vnd.eventstore.events+json";
pub const ATOM_JSON: &str = "application/vnd.eventstore.atom+json";
pub const ATOM_XML: &str = "application/atom+xml";

/// Tests that open a thousand client sockets need more than the common
/// default soft limit of 1024 open files; raise it to the hard limit.
pub fn raise_open_file_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// The built-in administrator's credentials on a fresh store, as an
/// `Authorization` header value (`admin:changeit`).
pub const ADMIN_AUTHORIZATION: &str = "Basic YWRtaW46Y2hhbmdlaXQ=";

/// A client that does not follow redirects (tests look at them) and acts
/// as the built-in administrator, as an operator's scripts do: most tests
/// are about what the server does, not about who may ask.
/// `tests/security.rs` is about who may ask, and uses
/// [`anonymous_client`].
pub fn client() -> Client {
    let mut headers = HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, ADMIN_AUTHORIZATION.parse().unwrap());
    builder().default_headers(headers).build().unwrap()
}

/// A client that sends no credentials.
pub fn anonymous_client() -> Client {
    builder().build().unwrap()
}

fn builder() -> reqwest::ClientBuilder {
    raise_open_file_limit();
    Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(60))
}

/// One element of an events array with a fresh id.
pub fn event(event_type: &str, data: Value) -> Value {
    serde_json::json!({ "eventId": uuid::Uuid::new_v4().to_string(), "eventType": event_type, "data": data })
}

/// What carries response headers: a response, or headers kept from one.
pub trait Headers {
    fn header_map(&self) -> &HeaderMap;
}

impl Headers for Response {
    fn header_map(&self) -> &HeaderMap {
        self.headers()
    }
}

impl Headers for HeaderMap {
    fn header_map(&self) -> &HeaderMap {
        self
    }
}

/// A response header as text, if present.
pub fn header(response: &impl Headers, name: &str) -> Option<String> {
    response.header_map().get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// The HTTP reason phrase the server sent. The client keeps a phrase only
/// when it is not the status's canonical one, so without it the phrase
/// was the canonical one.
pub async fn reason(response: Response) -> String {
    match response.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(phrase) => String::from_utf8_lossy(phrase.as_bytes()).into_owned(),
        None => response.status().canonical_reason().unwrap_or_default().to_owned(),
    }
}

/// Sends one raw HTTP/1.1 request (for paths a URL library would
/// normalise), as the built-in administrator, and returns the status code.
pub async fn raw_status(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\
         Authorization: {ADMIN_AUTHORIZATION}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}
