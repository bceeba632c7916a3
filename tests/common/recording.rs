//! The recording proxy the cache harnesses (`varnish`, `nginx`) put in
//! front of eventfeed: a small HTTP/1.1 relay that records every request
//! the cache sent (method, path, headers) and the status eventfeed
//! answered ([`Exchange`]), so that a test can say what actually reached
//! eventfeed, whatever the cache's own headers claim.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request that reached eventfeed, and its answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    /// eventfeed's status; `None` while it has not answered.
    pub status: Option<u16>,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }
}

/// An HTTP/1.1 relay that records every exchange. It forwards bytes as they
/// come (so long-polls and event streams behave as without it) and parses
/// only what it needs to find where each message ends.
pub struct RecordingProxy {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
    task: JoinHandle<()>,
}

impl RecordingProxy {
    pub async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let task_log = Arc::clone(&log);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = Arc::clone(&task_log);
                tokio::spawn(async move {
                    // A connection ends when either side closes it; errors
                    // there are the end of a connection, not of the test.
                    let _ = relay_connection(client, backend, log).await;
                });
            }
        });
        Self { addr, log, task }
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_connection(
    client: TcpStream,
    backend: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
) -> std::io::Result<()> {
    let upstream = TcpStream::connect(backend).await?;
    let (client_read, mut client_write) = client.into_split();
    let (upstream_read, mut upstream_write) = upstream.into_split();
    let mut client_read = BufReader::new(client_read);
    let mut upstream_read = BufReader::new(upstream_read);
    loop {
        let Some(request_head) = read_head(&mut client_read).await? else { return Ok(()) };
        let (request_line, headers) = parse_head(&request_head);
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        upstream_write.write_all(&request_head).await?;
        relay_body(&mut client_read, &mut upstream_write, &headers, true).await?;
        let index = {
            let mut log = log.lock().unwrap();
            log.push(Exchange { method: method.clone(), path, headers, status: None });
            log.len() - 1
        };

        let Some(response_head) = read_head(&mut upstream_read).await? else { return Ok(()) };
        let (status_line, response_headers) = parse_head(&response_head);
        let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        log.lock().unwrap()[index].status = Some(status);
        client_write.write_all(&response_head).await?;
        client_write.flush().await?;
        let bodiless = method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
        if !bodiless && !relay_body(&mut upstream_read, &mut client_write, &response_headers, false).await? {
            return Ok(()); // the body ran to the end of the connection
        }
    }
}

/// Reads a message head (start line and headers, through the blank line);
/// `None` at a clean end of the connection.
async fn read_head(reader: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let line_start = head.len();
        if reader.read_until(b'\n', &mut head).await? == 0 {
            return if head.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        if head[line_start..] == *b"\r\n" || head[line_start..] == *b"\n" {
            return Ok(Some(head));
        }
    }
}

fn parse_head(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let start_line = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (start_line, headers)
}

/// Copies one message body, framed by `Content-Length` or chunked encoding,
/// flushing as it goes. Without either, a request has no body and a
/// response runs to the end of the connection: returns `false` then.
async fn relay_body(
    reader: &mut (impl AsyncBufRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    headers: &[(String, String)],
    is_request: bool,
) -> std::io::Result<bool> {
    let value = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_ascii_lowercase());
    if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size_line = Vec::new();
            reader.read_until(b'\n', &mut size_line).await?;
            writer.write_all(&size_line).await?;
            let size_text = String::from_utf8_lossy(&size_line);
            let size_hex = size_text.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size_hex, 16)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, through the blank line.
                let trailers = read_head(reader).await?.unwrap_or_default();
                writer.write_all(&trailers).await?;
                writer.flush().await?;
                return Ok(true);
            }
            copy_exactly(reader, writer, size + 2).await?; // the data and its CRLF
            writer.flush().await?;
        }
    }
    if let Some(length) = value("content-length").and_then(|v| v.parse::<u64>().ok()) {
        copy_exactly(reader, writer, length).await?;
        writer.flush().await?;
        return Ok(true);
    }
    if is_request {
        return Ok(true);
    }
    tokio::io::copy(reader, writer).await?;
    writer.flush().await?;
    Ok(false)
}

async fn copy_exactly(
    reader: &mut (impl AsyncRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    length: u64,
) -> std::io::Result<()> {
    let copied = tokio::io::copy(&mut reader.take(length), writer).await?;
    if copied < length {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}
