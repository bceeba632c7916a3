//! A minimal HTTP/1.1 client, for `eventfeed backup`: one `GET` to a
//! running server, its body handed on a chunk at a time as it arrives (an
//! export is as large as the store, so it is never held whole). Plain
//! `http://` only: a backup talks to a server on its own host or network.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{AUTHORIZATION, HOST};
use hyper_util::rt::TokioIo;

/// The most of an error response's body kept for the message.
const ERROR_BODY: usize = 2_048;

/// GETs `url`, with `authorization` as the `Authorization` header, and
/// hands each chunk of a `200`'s body to `chunk`. Another status is an
/// error with its body's start; so is a body cut short.
pub async fn get_streamed(
    url: &str,
    authorization: Option<&str>,
    mut chunk: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let rest =
        url.strip_prefix("http://").ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|error| format!("cannot connect to {authority}: {error}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("{authority}: {error}"))?;
    tokio::spawn(connection);
    let mut request = Request::get(path).header(HOST, authority);
    if let Some(authorization) = authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|error| format!("{url}: {error}"))?;
    let response = sender.send_request(request).await.map_err(|error| format!("GET {url}: {error}"))?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let mut text = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                text.extend_from_slice(&data);
            }
            if text.len() > ERROR_BODY {
                break;
            }
        }
        text.truncate(ERROR_BODY);
        return Err(format!("GET {url} answered {status}: {}", String::from_utf8_lossy(&text).trim()));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| format!("GET {url}: the body was cut short: {error}"))?;
        if let Ok(data) = frame.into_data() {
            chunk(&data)?;
        }
    }
    Ok(())
}
