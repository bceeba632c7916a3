//! Security at the door: the `Authorization` header becomes a
//! [`Principal`] (an extractor every guarded handler takes; it also refuses
//! credentialed writes forged by other sites' pages), and each handler asks
//! one of the checks below before it acts: [`authorize_append`] before an
//! append (whose rules then travel with it to the writer, see
//! [`write_checked`]), [`authorize`] before a delete or a subscription
//! read, [`authorize_read`] between the store read and the ETag comparison
//! (so a `304` never confirms data to someone who may not read it),
//! [`authorize_task`] for work on the server. All of them decide through
//! `security::acl::may`.
//!
//! Every refusal is v5's: `401` with `WWW-Authenticate: Basic realm="ES"`,
//! for missing or wrong credentials and for credentials without the
//! permission alike (v5 clients read any 401 as "access denied"). Only
//! the web UI's own calls (`X-Requested-With: eventfeed-ui`) get
//! `BasicCustom` instead (the `challenge` layer), as v5 answered its UI.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};

use super::error::HttpError;
use super::metrics::AppendResult;
use super::{AppState, cors};
use crate::security::acl::{self, Access, Task};
use crate::security::credentials::{self, MAX_FAILURES};
use crate::security::{AuthError, Principal};
use crate::store::metadata::described_stream;
use crate::store::{AccessBasis, Append, AppendOutcome, StoreError, StreamSettings};

impl FromRequestParts<AppState> for Principal {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HttpError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Principal::Anonymous);
        };
        if cross_site_write(parts, &state.cors) {
            return Err(HttpError::new(StatusCode::FORBIDDEN, "Cross-site request refused").with_detail(
                "A page of another site asked the browser to change something with the credentials it \
                 keeps for this server. List the site with --cors-origin if it may.",
            ));
        }
        let credentials = credentials::parse_basic(value.as_bytes()).ok_or_else(|| {
            unauthorized(
                "The Authorization header is not valid Basic credentials (Basic base64(login:password)).",
            )
        })?;
        // Boxed: a request's extractors live in one future for as long as
        // it is served, a long-poll's for as long as it waits, and this
        // one (a store read, an argon2 verification) is the largest.
        Box::pin(state.security.authenticate(credentials)).await.map_err(|error| match error {
            AuthError::Invalid => unauthorized("The login or password is wrong, or the account is disabled."),
            AuthError::Throttled(retry_after) => {
                let seconds = retry_after.as_secs().max(1);
                HttpError::new(StatusCode::TOO_MANY_REQUESTS, "Too many failed logins")
                    .with_detail(format!(
                        "{MAX_FAILURES} logins with a wrong password in a short while: this login is refused \
                         for {seconds} more seconds."
                    ))
                    .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
            }
            AuthError::Store(error) => error.into(),
        })
    }
}

/// Whether a request that changes something, and carries credentials,
/// comes from a page of another site that `--cors-origin` does not list
/// (a cross-site request forgery).
///
/// CORS keeps such a page from reading answers, not from sending a
/// *simple* request (a `POST` with no body, say): a browser sends it,
/// with the Basic login it keeps for this server, and only hides the
/// answer. Browsers name the page's origin in `Origin` on every such
/// request; clients outside browsers send none. A page cannot make a
/// simple request carry a header of its own, so `Host` is the browser's.
fn cross_site_write(parts: &Parts, cors: &cors::Cors) -> bool {
    if parts.method.is_safe() {
        return false;
    }
    let Some(origin) = parts.headers.get(header::ORIGIN) else { return false };
    if cors.allows_credentials_from(origin) {
        return false;
    }
    let authority =
        origin.to_str().ok().and_then(|origin| origin.split_once("://")).map(|(_, authority)| authority);
    // Behind a proxy that rewrites `Host`, the one it was sent is in
    // `X-Forwarded-Host` (which a page cannot set on a simple request).
    let hosts = [header::HOST, HeaderName::from_static("x-forwarded-host")];
    let same_site = authority.is_some_and(|authority| {
        let mut sent = hosts.iter().filter_map(|name| parts.headers.get(name)?.to_str().ok());
        sent.any(|host| host.eq_ignore_ascii_case(authority))
    });
    !same_site
}

/// `401` asking for credentials.
pub(super) fn unauthorized(detail: &str) -> HttpError {
    HttpError::new(StatusCode::UNAUTHORIZED, "Unauthorized")
        .with_detail(detail)
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"ES\""))
}

/// `401` for a principal without the permission (v5's answer).
fn denied(principal: &Principal, what: &str) -> HttpError {
    let who = match principal.login() {
        Some(login) => format!("User '{login}'"),
        None => "An anonymous request (send credentials with Basic authentication)".to_owned(),
    };
    HttpError::new(StatusCode::UNAUTHORIZED, "Access denied")
        .with_detail(format!("{who} may not {what}."))
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"ES\""))
}

/// What a check is about: `$$s` is `s`'s metadata.
fn target(stream: &str, access: Access) -> (&str, Access) {
    match (described_stream(stream), access) {
        (Some(described), Access::Read) => (described, Access::MetaRead),
        (Some(described), Access::Write | Access::Delete) => (described, Access::MetaWrite),
        _ => (stream, access),
    }
}

fn describe(access: Access, stream: &str) -> String {
    let verb = match access {
        Access::Read => "read",
        Access::Write => "write to",
        Access::Delete => "delete",
        Access::MetaRead => "read the metadata of",
        Access::MetaWrite => "write the metadata of",
    };
    format!("{verb} stream '{stream}' ({} in its $acl)", access.key())
}

/// Checks `access` to `stream` against its access rules as they stand
/// now: before a delete, or a read of subscription messages. Returns the
/// rules it checked against (`None` for `$admins`, whom no rule limits).
pub(super) async fn authorize(
    state: &AppState,
    principal: &Principal,
    access: Access,
    stream: &str,
) -> Result<Option<AccessBasis>, HttpError> {
    check(state, principal, access, stream, Rules::Current).await
}

/// Checks an append (or metadata write) to `stream`, for the append to
/// carry the rules it was allowed by. Those may be the ones last seen for
/// the stream rather than read again: the writer refuses the append if
/// they are not the stream's when it is written (see [`write_checked`]),
/// so the usual append costs no store read here. A refusal is always
/// confirmed against the current rules.
pub(super) async fn authorize_append(
    state: &AppState,
    principal: &Principal,
    stream: &str,
) -> Result<Option<AccessBasis>, HttpError> {
    let checked = check(state, principal, Access::Write, stream, Rules::LastSeen).await;
    if checked.as_ref().is_err_and(|error| error.status == StatusCode::UNAUTHORIZED) {
        // Its events are not counted: the body is not read.
        state.metrics.append(AppendResult::Denied, 0);
    }
    checked
}

/// Which rules [`check`] may decide by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rules {
    Current,
    LastSeen,
}

async fn check(
    state: &AppState,
    principal: &Principal,
    access: Access,
    stream: &str,
    rules: Rules,
) -> Result<Option<AccessBasis>, HttpError> {
    if principal.is_admin() {
        return Ok(None);
    }
    let (stream, access) = target(stream, access);
    let security = &state.security;
    let last_seen = if rules == Rules::LastSeen { security.last_seen_metadata(stream) } else { None };
    let metadata_number = match last_seen {
        Some(number) => number,
        None => {
            let number = state.store.metadata_number(stream).await?;
            security.saw_metadata(stream, number);
            number
        }
    };
    let acl = security.acl(stream, metadata_number).await?;
    if acl::may(principal, access, stream, &acl, &security.defaults()) {
        return Ok(Some(AccessBasis { stream: stream.to_owned(), metadata_number }));
    }
    if last_seen.is_some() {
        // Refused by rules last seen: confirm with the current ones.
        return Box::pin(check(state, principal, access, stream, Rules::Current)).await;
    }
    Err(denied(principal, &describe(access, stream)))
}

/// Appends as `principal` (see [`write_checked`]).
pub(super) async fn append_checked(
    state: &AppState,
    principal: &Principal,
    append: Append,
) -> Result<AppendOutcome, HttpError> {
    let store = &state.store;
    let events = append.events.len();
    let written = write_checked(state, principal, vec![append], |mut appends| async move {
        match appends.pop() {
            Some(append) => store.append(append).await,
            None => Err(StoreError::Invalid("nothing to append".into())),
        }
    });
    let written = written.await?;
    state.metrics.append(AppendResult::of_append(&written), events);
    Ok(written?)
}

/// How often an append whose stream's rules changed while it waited is
/// checked again against the new ones before the client is told to retry.
const ACCESS_RECHECKS: usize = 3;

/// Writes `appends` with `write` (an append, or a multi-stream append).
/// Each carries the rules it was allowed by ([`authorize`]), so that the
/// writer refuses it if they changed before it is written; then every part
/// is checked again, against the new rules, and written if still allowed.
pub(super) async fn write_checked<T, Fut>(
    state: &AppState,
    principal: &Principal,
    mut appends: Vec<Append>,
    write: impl Fn(Vec<Append>) -> Fut,
) -> Result<Result<T, StoreError>, HttpError>
where
    Fut: Future<Output = Result<T, StoreError>>,
{
    for attempt in 0.. {
        if appends.iter().all(|append| append.access.is_none()) {
            // No rules to change under it ($admins): written as it is.
            return Ok(write(appends).await);
        }
        match write(appends.clone()).await {
            Err(StoreError::AccessChanged) if attempt < ACCESS_RECHECKS => {
                for append in &mut appends {
                    append.access = authorize(state, principal, Access::Write, &append.stream).await?;
                }
            }
            written => return Ok(written),
        }
    }
    unreachable!("the loop returns")
}

/// Checks a read of `stream`, done with `settings` (those the read came
/// with; `None` when the read failed or is yet to be done, and the
/// stream's rules as they stand decide).
/// Returns the settings to cache the answer by: `not_public` unless
/// everyone may read it.
pub(super) async fn authorize_read(
    state: &AppState,
    principal: &Principal,
    stream: &str,
    settings: Option<StreamSettings>,
) -> Result<StreamSettings, HttpError> {
    let security = &state.security;
    let (target_stream, access) = target(stream, Access::Read);
    if access == Access::Read && acl::reads_other_streams(stream) {
        // $admins only, whatever the rules say: no rules to read.
        if !principal.is_admin() {
            return Err(denied(principal, &describe(access, stream)));
        }
        return Ok(StreamSettings { not_public: true, ..settings.unwrap_or_default() });
    }
    let acl = match settings {
        Some(settings) if access == Access::Read => security.acl(stream, settings.metadata_number).await?,
        // A metadata stream's rules are its stream's; a failed read's are
        // those of the stream as it stands (its metadata may exist).
        _ => security.current_acl(target_stream).await?,
    };
    let defaults = security.defaults();
    if !acl::may(principal, access, target_stream, &acl, &defaults) {
        return Err(denied(principal, &describe(access, target_stream)));
    }
    let mut settings = settings.unwrap_or_default();
    settings.not_public = !acl::may(&Principal::Anonymous, access, target_stream, &acl, &defaults);
    Ok(settings)
}

/// Checks work on the server itself.
pub(super) fn authorize_task(principal: &Principal, task: Task) -> Result<(), HttpError> {
    if acl::may_run(principal, task) {
        return Ok(());
    }
    let what = match task {
        Task::ManageUsers => "manage users (members of $admins may)",
        Task::Scavenge => "run or look up scavenges (members of $admins and $ops may)",
        Task::Shutdown => "stop the server (members of $admins and $ops may)",
        Task::ManageSubscriptions => "manage persistent subscriptions (members of $admins and $ops may)",
        Task::ReadMetrics => {
            "read the metrics (members of $admins and $ops may, or anyone with --metrics-public)"
        }
        Task::Export => "export the store (members of $admins may)",
    };
    Err(denied(principal, what))
}
