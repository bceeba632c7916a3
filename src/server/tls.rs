//! HTTPS: the certificate chain and key read from PEM files at start, the
//! TLS configuration every connection's handshake uses, and the warning
//! for a server that listens beyond loopback without it.
//!
//! rustls with ring as its crypto provider, TLS 1.2 and 1.3 with rustls'
//! safe defaults, and ALPN announcing HTTP/1.1, the one protocol the server
//! speaks. The files are read once: a renewed certificate takes a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::{Accept, TlsAcceptor};

/// The handshake of every HTTPS connection.
#[derive(Clone)]
pub(super) struct TlsHandshake {
    acceptor: TlsAcceptor,
    /// The certificate's file, for the log.
    pub(super) cert: Arc<Path>,
}

impl TlsHandshake {
    /// The handshake on a socket just accepted; it resolves to the stream
    /// to serve HTTP on.
    pub(super) fn accept(&self, socket: TcpStream) -> Accept<TcpStream> {
        self.acceptor.accept(socket)
    }
}

// By hand: tokio-rustls' acceptor has no `Debug`.
impl std::fmt::Debug for TlsHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsHandshake").field("cert", &self.cert).finish_non_exhaustive()
    }
}

/// Why the certificate and key cannot serve HTTPS.
#[derive(Debug)]
pub enum TlsError {
    /// One of `--tls-cert` and `--tls-key` without the other.
    Incomplete,
    /// A file that cannot be read, or holds nothing usable.
    File {
        /// Which option named it: "certificate" or "key".
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// Both files read, but rustls refuses them together (a key that is
    /// not the certificate's, a key type it cannot sign with).
    Refused { cert: PathBuf, key: PathBuf, reason: rustls::Error },
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Incomplete => f.write_str("--tls-cert and --tls-key go together: give both, or neither"),
            Self::File { what, path, reason } => {
                write!(f, "cannot use the TLS {what} file {}: {reason}", path.display())
            }
            Self::Refused { cert, key, reason } => write!(
                f,
                "the TLS certificate {} and key {} cannot be used together: {reason}",
                cert.display(),
                key.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// The handshake for the certificate chain in `cert` (leaf first) and its
/// private key in `key`.
pub(super) fn handshake(cert: &Path, key: &Path) -> Result<TlsHandshake, TlsError> {
    let chain = certificate_chain(cert)?;
    let private_key = private_key(key)?;
    let refused = |reason| TlsError::Refused { cert: cert.to_owned(), key: key.to_owned(), reason };
    // rustls deprecates ring's provider for lacking post-quantum key
    // exchange (X25519MLKEM768), which only aws-lc-rs has; but aws-lc-rs
    // needs cmake and a C build of minutes. Classical X25519 and P-256
    // remain, as in every browser until recently.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(refused)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsHandshake { acceptor: TlsAcceptor::from(Arc::new(config)), cert: cert.into() })
}

fn certificate_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |reason: String| TlsError::File { what: "certificate", path: path.to_owned(), reason };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|error| failed(pem_reason(&error)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failed(pem_reason(&error)))?;
    if chain.is_empty() {
        return Err(failed("no certificate in it (a PEM `BEGIN CERTIFICATE` block)".to_owned()));
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| TlsError::File {
        what: "key",
        path: path.to_owned(),
        reason: match error {
            pem::Error::NoItemsFound => {
                "no private key in it (a PEM `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or \
                 `BEGIN EC PRIVATE KEY` block)"
                    .to_owned()
            }
            other => pem_reason(&other),
        },
    })
}

/// What is wrong with a PEM file, in words.
fn pem_reason(error: &pem::Error) -> String {
    match error {
        pem::Error::Io(error) => error.to_string(),
        pem::Error::NoItemsFound => "nothing of the expected kind in it".to_owned(),
        pem::Error::MissingSectionEnd { .. } => "not valid PEM: a BEGIN line without its END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "not valid PEM: a malformed BEGIN line".to_owned(),
        pem::Error::Base64Decode(error) => format!("not valid PEM: broken base64 ({error})"),
        other => format!("not valid PEM: {other}"),
    }
}

/// Whether a server on `bind` would take requests from other machines in
/// clear text: anyone on the path could read them, credentials included.
/// Loopback is spared (the usual place behind a proxy that terminates
/// TLS), and so is any address when TLS is on.
pub(super) fn exposes_clear_text(bind: SocketAddr, tls: bool) -> bool {
    !tls && !bind.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clear_text_beyond_loopback_is_exposed() {
        let exposed = |address: &str, tls| exposes_clear_text(address.parse().unwrap(), tls);
        assert!(!exposed("127.0.0.1:2113", false));
        assert!(!exposed("127.8.9.10:2113", false));
        assert!(!exposed("[::1]:2113", false));
        assert!(!exposed("[::ffff:127.0.0.1]:2113", false));
        assert!(exposed("0.0.0.0:2113", false));
        assert!(exposed("[::]:2113", false));
        assert!(exposed("192.0.2.7:2113", false));
        assert!(exposed("[2001:db8::1]:2113", false));
        assert!(!exposed("0.0.0.0:2113", true));
        assert!(!exposed("[2001:db8::1]:443", true));
    }

    #[test]
    fn unreadable_files_are_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a key\n").unwrap();

        let error = handshake(&missing, &garbage).unwrap_err().to_string();
        assert!(error.contains("certificate file") && error.contains("missing.pem"), "{error}");
        let error = certificate_chain(&garbage).unwrap_err().to_string();
        assert!(error.contains("no certificate in it"), "{error}");
        let error = private_key(&garbage).unwrap_err().to_string();
        assert!(error.contains("key file") && error.contains("no private key in it"), "{error}");
    }
}
