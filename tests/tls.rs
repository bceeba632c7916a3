//! HTTPS (`--tls-cert`, `--tls-key`): the real binary with a certificate
//! made for the test, and a client of hyper's over tokio-rustls that
//! trusts that certificate alone. Also what a start with a missing, broken
//! or lone file says, and what becomes of a client that speaks plain HTTP
//! or nothing at all to the TLS port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::{ATOM_JSON, BinaryServer, EVENTS_JSON};

/// A self-signed certificate for `localhost` and 127.0.0.1, as PEM files.
struct Certificate {
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Certificate {
    fn new() -> Self {
        let made = rcgen::generate_simple_self_signed(["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("a certificate");
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        Self { dir, cert, key, der: made.cert.der().clone() }
    }

    /// The options that turn TLS on with this certificate.
    fn args(&self) -> [&str; 4] {
        ["--tls-cert", path(&self.cert), "--tls-key", path(&self.key)]
    }

    /// A file beside the certificate, holding `text`.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let file = self.dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        file
    }
}

fn path(file: &Path) -> &str {
    file.to_str().expect("a UTF-8 temporary path")
}

/// An HTTPS client for one server: a connection per request, HTTP/1.1 by
/// ALPN, trusting only the test's certificate.
struct Https {
    addr: SocketAddr,
    connector: TlsConnector,
}

/// A response, read whole.
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |value| value.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl Https {
    fn new(addr: SocketAddr, certificate: &Certificate) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certificate.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self { addr, connector: TlsConnector::from(Arc::new(config)) }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let socket = TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let stream = self.connector.connect(name, socket).await.expect("a TLS handshake");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN agrees on HTTP/1.1");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("localhost:{}", self.addr.port()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer { status: parts.status.as_u16(), headers: parts.headers, body }
    }
}

/// Every `uri` in a JSON document, however deep.
fn uris(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::String(uri) if key == "uri" || key == "id" => found.push(uri.clone()),
                    other => uris(other, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| uris(item, found)),
        _ => {}
    }
}

#[tokio::test]
async fn https_serves_appends_and_reads_with_https_links() {
    let certificate = Certificate::new();
    let data = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(data.path(), &certificate.args());
    assert!(server.base.starts_with("https://"), "the listening line says https: {}", server.base);
    let https = Https::new(server.addr, &certificate);

    let ping = https.send("GET", "/ping", &[], "").await;
    assert_eq!(ping.status, 200);
    assert_eq!(ping.header("x-content-type-options"), "nosniff");

    let events = json!([common::event("Secured", json!({ "over": "tls" }))]).to_string();
    let append = https.send("POST", "/streams/secure", &[("content-type", EVENTS_JSON)], &events).await;
    assert_eq!(append.status, 201, "{:?}", append.body);
    let base = format!("https://localhost:{}", server.addr.port());
    assert_eq!(append.header("location"), format!("{base}/streams/secure/0"));

    let page = https.send("GET", "/streams/secure?embed=body", &[("accept", ATOM_JSON)], "").await;
    assert_eq!(page.status, 200);
    let page = page.json();
    assert_eq!(page["entries"][0]["eventType"], "Secured");
    let mut links = Vec::new();
    uris(&page, &mut links);
    assert!(links.len() > 3, "{page}");
    for link in &links {
        assert!(link.starts_with(&format!("{base}/streams/secure")), "{link}");
    }

    // A proxy in front that speaks plain HTTP to its clients still says so.
    let proxied = https
        .send("GET", "/streams/secure", &[("accept", ATOM_JSON), ("x-forwarded-proto", "http")], "")
        .await;
    let mut links = Vec::new();
    uris(&proxied.json(), &mut links);
    assert!(links.iter().all(|link| link.starts_with("http://localhost:")), "{links:?}");
}

/// Whether TLS is on is in the log; the warning about clear text beyond
/// loopback is `exposes_clear_text`'s, tested beside it (a test does not
/// listen beyond loopback).
#[tokio::test]
async fn the_start_says_whether_tls_is_on() {
    let certificate = Certificate::new();
    let data = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(data.path(), &certificate.args());
    assert!(server.logged("TLS on: HTTPS only", Duration::from_secs(5)).await);
    drop(server);

    let data = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(data.path(), &[]);
    assert!(server.base.starts_with("http://"));
    assert!(server.logged("TLS off: plain HTTP", Duration::from_secs(5)).await);
    assert!(!server.logged("clear text", Duration::from_millis(200)).await, "not on loopback");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_closed_not_left_hanging() {
    let certificate = Certificate::new();
    let data = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(data.path(), &certificate.args());
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closes the connection");
    assert!(!answer.starts_with(b"HTTP/"), "no HTTP answer in clear: {answer:?}");

    // The server still serves HTTPS afterwards.
    let https = Https::new(server.addr, &certificate);
    assert_eq!(https.send("GET", "/ping", &[], "").await.status, 200);
}

#[tokio::test]
async fn a_client_silent_after_connecting_is_closed_after_the_header_timeout() {
    let certificate = Certificate::new();
    let data = tempfile::tempdir().unwrap();
    let mut args = certificate.args().to_vec();
    args.extend(["--header-timeout-secs", "1"]);
    let server = BinaryServer::start(data.path(), &args);
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a silent client's connection is closed");
    assert!(answer.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the timeout: {:?}",
        started.elapsed()
    );
}

/// Runs the binary to its exit (it must not start); returns whether it
/// failed and what it wrote on stderr.
fn start_fails(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventfeed"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{args:?} exits non-zero; stderr: {stderr}");
    stderr
}

#[test]
fn unusable_files_stop_the_start_with_the_file_and_the_reason() {
    let certificate = Certificate::new();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let missing = certificate.dir.path().join("missing.pem");
    let garbage = certificate.file("garbage.pem", "this is no key\n");
    let broken = certificate.file("broken.pem", "-----BEGIN PRIVATE KEY-----\nnot base64!\n");
    let other_key = Certificate::new();

    let cases: [(&Path, &Path, &[&str]); 5] = [
        (&certificate.cert, &missing, &["TLS key file", "missing.pem", "No such file"]),
        (&certificate.cert, &garbage, &["TLS key file", "garbage.pem", "no private key in it"]),
        (&certificate.cert, &broken, &["TLS key file", "broken.pem", "not valid PEM"]),
        (&garbage, &certificate.key, &["TLS certificate file", "garbage.pem", "no certificate in it"]),
        (&certificate.cert, &other_key.key, &["cannot be used together", "cert.pem", "key.pem"]),
    ];
    for (cert, key, expected) in cases {
        let stderr = start_fails(&data_dir, &["--tls-cert", path(cert), "--tls-key", path(key)], &[]);
        for text in expected {
            assert!(stderr.contains(text), "{text:?} in: {stderr}");
        }
        assert!(!data_dir.exists(), "the store is not opened before TLS is ready");
    }
}

#[test]
fn one_tls_option_without_the_other_is_refused() {
    let certificate = Certificate::new();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let stderr = start_fails(&data_dir, &["--tls-cert", path(&certificate.cert)], &[]);
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let stderr = start_fails(&data_dir, &["--tls-key", path(&certificate.key)], &[]);
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    let stderr = start_fails(&data_dir, &[], &[("EVENTFEED_TLS_CERT", path(&certificate.cert))]);
    assert!(stderr.contains("--tls-key"), "the variables pair up too: {stderr}");
    assert!(!data_dir.exists());
}
