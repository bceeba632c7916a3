//! The web UI: the files of `static/`, embedded in the binary at build
//! time, served at `/` (the entry page) and `/ui/{file}` (its modules and
//! styles). The UI is a client of the public API like any other; this
//! module only hands out its files.
//!
//! Every UI response carries a strict Content-Security-Policy: scripts,
//! styles and calls only from this origin, no inline script or style, no
//! framing. The files are not fingerprinted (no build step renames them),
//! so every one is `no-cache` with a strong ETag (a hash of its bytes): a
//! browser revalidates and gets a `304` until the file changes.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use include_dir::{Dir, include_dir};

use super::AppState;
use super::error::HttpError;

/// The UI's files (one folder, no subfolders), read by the compiler;
/// `build.rs` makes cargo rebuild when one changes.
static FILES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/static");

/// The page every view of the UI starts from.
const ENTRY_PAGE: &str = "index.html";

/// Scripts, styles, images and calls from this origin only (and a `data:`
/// image: the page's empty favicon, which spares a `404` in the console);
/// no inline script or style, no plugins, no `<base>` rewriting, no
/// framing by any site.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/", get(entry)).route("/ui/{file}", get(asset))
}

/// `GET /`: the entry page.
async fn entry(headers: HeaderMap) -> Result<Response, HttpError> {
    serve(&headers, ENTRY_PAGE)
}

/// `GET /ui/{file}`: a module or the style sheet.
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, HttpError> {
    serve(&headers, &file)
}

/// The entry page in answer to a browser that asked for a stream's page
/// or event as HTML: the UI reads the address and opens that view. `Vary:
/// Accept`, since the same URL gives feed readers their feed.
pub(super) fn entry_page_for(headers: &HeaderMap) -> Response {
    match serve(headers, ENTRY_PAGE) {
        Ok(mut response) => {
            response.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
            response
        }
        Err(error) => error.into_response(),
    }
}

/// Each file's ETag, hashed once: hashing a file on every request cost
/// about 2 µs per KiB of it, more than the rest of its answer.
static ETAGS: LazyLock<HashMap<&'static str, String>> = LazyLock::new(|| {
    FILES
        .files()
        .filter_map(|file| {
            let name = file.path().to_str()?;
            Some((name, format!("\"ui-{:016x}\"", crate::hash::fnv1a_64(file.contents()))))
        })
        .collect()
});

/// One file with the UI's headers, or `304` when `If-None-Match` names it.
fn serve(request: &HeaderMap, name: &str) -> Result<Response, HttpError> {
    let (Some(file), Some(etag)) = (FILES.get_file(name), ETAGS.get(name)) else {
        return Err(HttpError::not_found(format!("The web UI has no file '{name}'.")));
    };
    let body = file.contents();
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        // Weak comparison, as `If-None-Match` wants: the compression
        // layer marks the ETag of a gzipped answer weak.
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Bytes::from_static(body).into_response()
    };
    let headers = response.headers_mut();
    if !fresh {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    }
    if let Ok(etag) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    Ok(response)
}

/// The type of each kind of file `static/` holds.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_known_type() {
        for file in FILES.files() {
            let name = file.path().to_string_lossy();
            assert_ne!(content_type(&name), "text/plain; charset=utf-8", "{name}");
        }
        assert!(FILES.get_file(ENTRY_PAGE).is_some());
    }

    #[test]
    fn every_file_has_the_etag_of_its_bytes() {
        for file in FILES.files() {
            let name = file.path().to_string_lossy();
            let expected = format!("\"ui-{:016x}\"", crate::hash::fnv1a_64(file.contents()));
            assert_eq!(ETAGS.get(name.as_ref()), Some(&expected), "{name}");
        }
        assert_eq!(ETAGS.len(), FILES.files().count());
    }

    #[test]
    fn the_entry_page_has_no_inline_script_or_style() {
        let page = FILES.get_file(ENTRY_PAGE).and_then(|file| file.contents_utf8()).unwrap_or_default();
        assert!(!page.contains("<script>") && !page.contains("style="), "{page}");
        assert!(!page.contains("<style"), "{page}");
    }
}
