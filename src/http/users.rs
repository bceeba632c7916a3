//! `/users`: v5's user management API. Accounts live in `security::users`;
//! this module maps requests to it and answers as v5 does. Managing users
//! takes `$admins`; a user may read their own account and change their own
//! password. No answer ever holds a password or its hash.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::AppState;
use super::auth::authorize_task;
use super::base_url::RequestUrls;
use super::caching::header_value;
use super::error::HttpError;
use super::events_body::read_body;
use super::params::Segments;
use crate::feed::Urls;
use crate::security::acl::Task;
use crate::security::users::{Account, Changes, UserError};
use crate::security::{Principal, password};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/", get(list).post(create))
        .route("/users/{login}", get(one).put(update).delete(delete))
        .route("/users/{login}/command/{command}", post(command))
}

/// The largest request body these routes read.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewUser {
    login_name: String,
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Details {
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResetPassword {
    new_password: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// `GET /users/`: every account.
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::ManageUsers)?;
    let accounts = state.security.accounts().await?;
    let data: Vec<Value> = accounts.iter().map(|account| described(&urls, account)).collect();
    Ok(answer(StatusCode::OK, &json!({ "data": data, "links": [link(&urls.absolute("/users/"), "self")] })))
}

/// `GET /users/{login}`: one account, for `$admins` and for its user.
async fn one(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    Segments((login,)): Segments<(String,)>,
) -> Result<Response, HttpError> {
    if principal.login() != Some(login.as_str()) {
        authorize_task(&principal, Task::ManageUsers)?;
    }
    let account = state.security.account(&login).await?.ok_or_else(|| user_error(UserError::NotFound))?;
    let self_link = link(&user_url(&urls, &login), "self");
    Ok(answer(StatusCode::OK, &json!({ "data": described(&urls, &account), "links": [self_link] })))
}

/// `POST /users/`: creates an account (`201`, its `Location`).
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    RequestUrls(urls): RequestUrls,
    body: Body,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::ManageUsers)?;
    let new: NewUser = json_body(body).await?;
    let full_name = new.full_name.unwrap_or_else(|| new.login_name.clone());
    let created = state.security.create_account(&new.login_name, &full_name, new.groups, &new.password).await;
    created.map_err(user_error)?;
    let location = user_url(&urls, &new.login_name);
    let mut response = answer(StatusCode::CREATED, &done(&new.login_name));
    response.headers_mut().insert(header::LOCATION, header_value(&location));
    Ok(response)
}

/// `PUT /users/{login}`: new full name and groups.
async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Segments((login,)): Segments<(String,)>,
    body: Body,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::ManageUsers)?;
    let details: Details = json_body(body).await?;
    let changes = Changes { full_name: details.full_name, groups: details.groups, ..Changes::default() };
    state.security.change_account(&login, changes).await.map_err(user_error)?;
    Ok(answer(StatusCode::OK, &done(&login)))
}

/// `DELETE /users/{login}`.
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Segments((login,)): Segments<(String,)>,
) -> Result<Response, HttpError> {
    authorize_task(&principal, Task::ManageUsers)?;
    state.security.delete_account(&login).await.map_err(user_error)?;
    Ok(answer(StatusCode::OK, &done(&login)))
}

/// `POST /users/{login}/command/{enable|disable|reset-password|change-password}`.
async fn command(
    State(state): State<AppState>,
    principal: Principal,
    Segments((login, command)): Segments<(String, String)>,
    body: Body,
) -> Result<Response, HttpError> {
    let security = &state.security;
    let changed = match command.as_str() {
        "change-password" => {
            // The user themself, who proves it twice: with the credentials
            // of the request and with the current password in the body.
            if principal.login() != Some(login.as_str()) {
                return Err(super::auth::unauthorized(
                    "A password is changed by its own user, authenticated as that user; \
                     $admins use reset-password.",
                ));
            }
            let change: ChangePassword = json_body(body).await?;
            security.change_own_password(&login, &change.current_password, &change.new_password).await
        }
        "enable" | "disable" | "reset-password" => {
            authorize_task(&principal, Task::ManageUsers)?;
            let changes = match command.as_str() {
                "reset-password" => {
                    let reset: ResetPassword = json_body(body).await?;
                    Changes { password: Some(reset.new_password), ..Changes::default() }
                }
                other => Changes { disabled: Some(other == "disable"), ..Changes::default() },
            };
            security.change_account(&login, changes).await
        }
        _ => return Err(HttpError::no_route()),
    };
    changed.map_err(user_error)?;
    Ok(answer(StatusCode::OK, &done(&login)))
}

/// An account as `/users` shows it: never its password hash.
fn described(urls: &Urls, account: &Account) -> Value {
    let url = user_url(urls, &account.login_name);
    let command = |name: &str| format!("{url}/command/{name}");
    json!({
        "loginName": account.login_name,
        "fullName": account.full_name,
        "groups": account.groups,
        "disabled": account.disabled,
        "links": [
            link(&url, "edit"),
            link(&url, "delete"),
            link(&command("reset-password"), "reset-password"),
            link(&command("change-password"), "change-password"),
            link(&command(if account.disabled { "enable" } else { "disable" }), if account.disabled { "enable" } else { "disable" }),
        ],
    })
}

fn user_url(urls: &Urls, login: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(login, percent_encoding::NON_ALPHANUMERIC);
    urls.absolute(&format!("/users/{encoded}"))
}

fn link(href: &str, rel: &str) -> Value {
    json!({ "href": href, "rel": rel })
}

fn done(login: &str) -> Value {
    json!({ "loginName": login, "success": true })
}

fn answer(status: StatusCode, value: &Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON request body (no key given twice), as `T`.
async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, HttpError> {
    let bytes = read_body(body, MAX_BODY_BYTES).await?;
    crate::json::from_slice(&bytes).map_err(|rejected| {
        HttpError::bad_request("Invalid user details").with_detail(format!(
            "The body must be a JSON object with the fields this command takes ({rejected}); passwords are \
             1 to {} bytes.",
            password::MAX_PASSWORD_BYTES
        ))
    })
}

fn user_error(error: UserError) -> HttpError {
    match error {
        UserError::NotFound => HttpError::not_found("No user has this login."),
        UserError::AlreadyExists => HttpError::new(StatusCode::CONFLICT, "Conflict")
            .with_detail("A user with this login exists already."),
        UserError::Invalid(problem) => HttpError::bad_request(problem),
        UserError::WrongPassword => HttpError::new(StatusCode::UNAUTHORIZED, "Unauthorized")
            .with_detail("The current password is wrong; the password was not changed."),
        UserError::Store(error) => error.into(),
    }
}
