//! A raw HTTP/1.1 client on one TCP connection, for what a client library
//! will not do: send half a request, trickle a body, keep a socket idle,
//! and see exactly when the server closes it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// One response as read off the socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection.
#[derive(Debug)]
pub struct RawSocket {
    stream: TcpStream,
    /// Bytes read but not yet consumed as part of a response.
    buffered: Vec<u8>,
}

impl RawSocket {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Self { stream, buffered: Vec::new() }
    }

    /// Writes `bytes`; an error means the server has closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Sends a complete request with `Host` and `Content-Length` added.
    pub async fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send(request.as_bytes()).await.expect("request sent");
    }

    /// Reads one whole response; `None` if the connection closed (or was
    /// reset) before one arrived. Fails the test if nothing decisive
    /// happens within `within`.
    pub async fn response(&mut self, within: Duration) -> Option<RawResponse> {
        timeout(within, self.read_response())
            .await
            .unwrap_or_else(|_| panic!("no response within {within:?}"))
    }

    /// Whether the server closes the connection within `within`, reading
    /// (and dropping) whatever it sends before that.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        timeout(within, async {
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// Reads until the server closes the connection; returns how many
    /// bytes arrived, or `None` if it is still open after `within`.
    pub async fn read_to_end(&mut self, within: Duration) -> Option<usize> {
        let mut chunk = vec![0u8; 1 << 16];
        let mut received = self.buffered.len();
        timeout(within, async {
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return received,
                    Ok(read) => received += read,
                }
            }
        })
        .await
        .ok()
    }

    /// Reads until the bytes received contain `text`; fails the test if
    /// they do not within `within` or the connection closes first.
    pub async fn read_until(&mut self, text: &str, within: Duration) -> String {
        let found = timeout(within, async {
            loop {
                let seen = String::from_utf8_lossy(&self.buffered).into_owned();
                if seen.contains(text) {
                    return seen;
                }
                assert!(self.fill().await, "closed before {text:?} arrived; got {seen:?}");
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("{text:?} did not arrive within {within:?}"))
    }

    /// Reads more into the buffer; false at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(read) => {
                self.buffered.extend_from_slice(&chunk[..read]);
                true
            }
        }
    }

    async fn read_response(&mut self) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(at) = find(&self.buffered, b"\r\n\r\n") {
                break at;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buffered[..head_end]).into_owned();
        self.buffered.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let header = |name: &str| headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
        let body = if header("transfer-encoding").is_some_and(|coding| coding.contains("chunked")) {
            self.read_chunked().await?
        } else {
            let length = header("content-length").map_or(0, |length| length.parse().unwrap());
            self.read_exactly(length).await?
        };
        Some(RawResponse { status, headers, body })
    }

    async fn read_exactly(&mut self, length: usize) -> Option<Vec<u8>> {
        while self.buffered.len() < length {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buffered.drain(..length).collect())
    }

    async fn read_chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = find(&self.buffered, b"\r\n") {
                    break at;
                }
                if !self.fill().await {
                    return None;
                }
            };
            let size_line = String::from_utf8_lossy(&self.buffered[..line_end]).into_owned();
            self.buffered.drain(..line_end + 2);
            let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
            let chunk = self.read_exactly(size + 2).await?;
            if size == 0 {
                return Some(body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
