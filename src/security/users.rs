//! User accounts, kept as events as v5 keeps them: the account's current
//! state is the last event of `$user-{login}` (type `$user`, or
//! `$UserDeleted` once deleted), and `$users` lists every login ever
//! created (`$UserCreated`). A new account is written to both in one
//! atomic multi-stream append.
//!
//! The built-in accounts `admin` (in `$admins`) and `ops` (in `$ops`) exist
//! with the default password `changeit` for as long as their stream was
//! never written: a fresh store holds no event it was not given, and the
//! first change to either account (or `--admin-password` at the first
//! start) writes it out.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::acl::{ADMINS, OPS};
use super::{Security, password};
use crate::store::{Append, Direction, ExpectedVersion, ProposedEvent, StoreError, StreamRead};

/// Where every login ever created is listed.
pub const USERS_STREAM: &str = "$users";
/// The type of an account's state in `$user-{login}`.
pub const USER_EVENT_TYPE: &str = "$user";
/// The type of the event that deletes an account.
pub const USER_DELETED_EVENT_TYPE: &str = "$UserDeleted";
/// The type of the events in `$users`.
pub const USER_CREATED_EVENT_TYPE: &str = "$UserCreated";
/// v5's default password of the built-in accounts.
pub const DEFAULT_PASSWORD: &str = "changeit";

/// The built-in accounts: login, full name, group.
const BUILT_IN: [(&str, &str, &str); 2] =
    [("admin", "Event Store Administrator", ADMINS), ("ops", "Event Store Operations", OPS)];

/// The stream holding `login`'s account.
pub fn user_stream(login: &str) -> String {
    format!("$user-{login}")
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub login_name: String,
    pub full_name: String,
    pub groups: Vec<String>,
    pub disabled: bool,
    /// argon2id, PHC string. Never leaves the server through `/users`.
    pub password_hash: String,
}

/// Why a change to an account was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserError {
    NotFound,
    AlreadyExists,
    Invalid(String),
    /// `change-password` with a wrong current password.
    WrongPassword,
    Store(StoreError),
}

impl From<StoreError> for UserError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// What `$user-{login}` holds.
enum Stored {
    Never,
    Deleted { version: u64 },
    Present { account: Account, version: u64 },
}

/// A change to an existing account.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub full_name: Option<String>,
    pub groups: Option<Vec<String>>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

impl Security {
    /// The account `login` has now, built-in defaults included; `None` for
    /// an unknown or deleted login.
    pub async fn account(&self, login: &str) -> Result<Option<Account>, StoreError> {
        Ok(match self.stored(login).await? {
            Stored::Present { account, .. } => Some(account),
            Stored::Deleted { .. } => None,
            Stored::Never => match built_in(login) {
                Some((full_name, group)) => Some(Account {
                    login_name: login.to_owned(),
                    full_name: full_name.to_owned(),
                    groups: vec![group.to_owned()],
                    disabled: false,
                    password_hash: self.default_hash().await,
                }),
                None => None,
            },
        })
    }

    /// Every account, in the order they were created (built-in ones first).
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut logins: Vec<String> = BUILT_IN.iter().map(|(login, ..)| (*login).to_owned()).collect();
        let mut from = 0;
        loop {
            let read = StreamRead {
                stream: USERS_STREAM.to_owned(),
                from: Some(from),
                direction: Direction::Forward,
                count: 1000,
                resolve_links: false,
            };
            let slice = match self.store.read_stream(read).await {
                Ok(slice) => slice,
                Err(StoreError::StreamNotFound) => break,
                Err(other) => return Err(other),
            };
            let Some(last) = slice.events.last().map(|read| read.event.number) else { break };
            for read in &slice.events {
                if let Ok(created) = serde_json::from_slice::<Created>(&read.event.data)
                    && !logins.contains(&created.login_name)
                {
                    logins.push(created.login_name);
                }
            }
            from = last + 1;
        }
        let mut accounts = Vec::with_capacity(logins.len());
        for login in logins {
            if let Some(account) = self.account(&login).await? {
                accounts.push(account);
            }
        }
        Ok(accounts)
    }

    /// Creates an account (`POST /users/`).
    pub async fn create_account(
        &self,
        login: &str,
        full_name: &str,
        groups: Vec<String>,
        new_password: &str,
    ) -> Result<(), UserError> {
        check_login(login)?;
        check_groups(&groups)?;
        check_password(new_password)?;
        let expected = match self.stored(login).await? {
            Stored::Never if built_in(login).is_none() => ExpectedVersion::NoStream,
            Stored::Deleted { version } => ExpectedVersion::Exact(version),
            Stored::Never | Stored::Present { .. } => return Err(UserError::AlreadyExists),
        };
        let account = Account {
            login_name: login.to_owned(),
            full_name: full_name.to_owned(),
            groups,
            disabled: false,
            password_hash: hash(new_password).await,
        };
        self.write_account(account, expected, true).await
    }

    /// Changes an account (details, enabled state or password).
    pub async fn change_account(&self, login: &str, changes: Changes) -> Result<(), UserError> {
        if let Some(groups) = &changes.groups {
            check_groups(groups)?;
        }
        if let Some(password) = &changes.password {
            check_password(password)?;
        }
        let (mut account, expected, listed) = self.existing(login).await?;
        if let Some(full_name) = changes.full_name {
            account.full_name = full_name;
        }
        if let Some(groups) = changes.groups {
            account.groups = groups;
        }
        if let Some(disabled) = changes.disabled {
            account.disabled = disabled;
        }
        if let Some(password) = changes.password {
            account.password_hash = hash(&password).await;
        }
        self.write_account(account, expected, !listed).await
    }

    /// `change-password`: the user's own, given the current one.
    pub async fn change_own_password(
        &self,
        login: &str,
        current: &str,
        new_password: &str,
    ) -> Result<(), UserError> {
        check_password(new_password)?;
        let (account, ..) = self.existing(login).await?;
        let (current, stored) = (current.to_owned(), account.password_hash.clone());
        let verified = tokio::task::spawn_blocking(move || password::verify(&current, &stored)).await;
        if !verified.unwrap_or(false) {
            return Err(UserError::WrongPassword);
        }
        let changes = Changes { password: Some(new_password.to_owned()), ..Changes::default() };
        self.change_account(login, changes).await
    }

    /// Deletes an account; its login may be created again later.
    pub async fn delete_account(&self, login: &str) -> Result<(), UserError> {
        let (_, expected, _) = self.existing(login).await?;
        let event = proposed(USER_DELETED_EVENT_TYPE, &serde_json::json!({ "loginName": login }));
        let append = Append { stream: user_stream(login), expected, events: vec![event], access: None };
        self.store.append(append).await?;
        self.forget(login);
        *self.lock_default_passwords() = None;
        Ok(())
    }

    /// The built-in accounts whose password is still the default one
    /// (remembered until an account changes: each check costs a hash).
    pub async fn default_passwords(&self) -> Result<Vec<String>, StoreError> {
        if let Some(logins) = self.lock_default_passwords().clone() {
            return Ok(logins);
        }
        let logins = self.check_default_passwords().await?;
        *self.lock_default_passwords() = Some(logins.clone());
        Ok(logins)
    }

    async fn check_default_passwords(&self) -> Result<Vec<String>, StoreError> {
        let mut logins = Vec::new();
        for (login, ..) in BUILT_IN {
            let stored_hash = match self.stored(login).await? {
                Stored::Never => {
                    logins.push(login.to_owned());
                    continue;
                }
                Stored::Present { account, .. } => account.password_hash,
                Stored::Deleted { .. } => continue,
            };
            let check = tokio::task::spawn_blocking(move || password::verify(DEFAULT_PASSWORD, &stored_hash));
            if check.await.unwrap_or(false) {
                logins.push(login.to_owned());
            }
        }
        Ok(logins)
    }

    /// `--admin-password`: sets `admin`'s password when the account was
    /// never written; later it is changed through `/users` instead.
    pub(super) async fn set_initial_admin_password(&self, new_password: &str) -> Result<(), StoreError> {
        if !matches!(self.stored("admin").await?, Stored::Never) {
            tracing::info!(
                "--admin-password is ignored: the admin account exists already (change its password \
                 with POST /users/admin/command/reset-password)"
            );
            return Ok(());
        }
        check_password(new_password).map_err(|_| {
            StoreError::Invalid(format!(
                "--admin-password must be 1 to {} bytes",
                password::MAX_PASSWORD_BYTES
            ))
        })?;
        let changes = Changes { password: Some(new_password.to_owned()), ..Changes::default() };
        self.change_account("admin", changes).await.map_err(|error| match error {
            UserError::Store(error) => error,
            other => StoreError::Invalid(format!("{other:?}")),
        })
    }

    /// An account that exists, the expected version to change it at, and
    /// whether `$users` lists it already.
    async fn existing(&self, login: &str) -> Result<(Account, ExpectedVersion, bool), UserError> {
        match self.stored(login).await? {
            Stored::Present { account, version } => Ok((account, ExpectedVersion::Exact(version), true)),
            Stored::Never => match self.account(login).await? {
                Some(account) => Ok((account, ExpectedVersion::NoStream, false)),
                None => Err(UserError::NotFound),
            },
            Stored::Deleted { .. } => Err(UserError::NotFound),
        }
    }

    async fn stored(&self, login: &str) -> Result<Stored, StoreError> {
        let mut slice = match self.store.read_stream(StreamRead::last(&user_stream(login))).await {
            Ok(slice) => slice,
            Err(StoreError::StreamNotFound) => return Ok(Stored::Never),
            Err(other) => return Err(other),
        };
        let version = slice.view.last_number;
        let Some(last) = slice.events.pop() else { return Ok(Stored::Never) };
        if &*last.event.event_type == USER_DELETED_EVENT_TYPE {
            return Ok(Stored::Deleted { version });
        }
        let account = serde_json::from_slice(&last.event.data)
            .map_err(|error| StoreError::Corrupt(format!("account '{login}' cannot be read: {error}")))?;
        Ok(Stored::Present { account, version })
    }

    /// Writes an account's new state; a new one is listed in `$users` in
    /// the same commit.
    async fn write_account(
        &self,
        account: Account,
        expected: ExpectedVersion,
        list: bool,
    ) -> Result<(), UserError> {
        let login = account.login_name.clone();
        let state = serde_json::to_value(&account).map_err(|error| StoreError::Invalid(error.to_string()))?;
        let update = Append {
            stream: user_stream(&login),
            expected,
            events: vec![proposed(USER_EVENT_TYPE, &state)],
            access: None,
        };
        let written = if list {
            let created = proposed(USER_CREATED_EVENT_TYPE, &serde_json::json!({ "loginName": login }));
            let listing = Append {
                stream: USERS_STREAM.to_owned(),
                expected: ExpectedVersion::Any,
                events: vec![created],
                access: None,
            };
            self.store.append_all(vec![update, listing]).await.map(drop)
        } else {
            self.store.append(update).await.map(drop)
        };
        self.forget(&login);
        *self.lock_default_passwords() = None;
        written.map_err(|error| match error {
            StoreError::WrongExpectedVersion { .. } | StoreError::Conflicts(_) => UserError::Invalid(
                "the account was changed by another request at the same time; read it and try again".into(),
            ),
            other => UserError::Store(other),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    login_name: String,
}

fn built_in(login: &str) -> Option<(&'static str, &'static str)> {
    BUILT_IN.iter().find(|(name, ..)| *name == login).map(|(_, full_name, group)| (*full_name, *group))
}

fn proposed(event_type: &str, data: &serde_json::Value) -> ProposedEvent {
    ProposedEvent {
        id: Uuid::new_v4(),
        event_type: event_type.to_owned(),
        is_json: true,
        data: Bytes::from(data.to_string()),
        metadata_is_json: false,
        metadata: Bytes::new(),
    }
}

async fn hash(new_password: &str) -> String {
    let new_password = new_password.to_owned();
    tokio::task::spawn_blocking(move || password::hash(&new_password)).await.unwrap_or_default()
}

/// The longest login and group name, in bytes.
const MAX_NAME_BYTES: usize = 128;

/// A login: 1 to 128 bytes of text, not starting with `$` (the prefix of
/// groups like `$admins` and of `$all`), without `:` (Basic credentials end
/// the login at the first one), `/`, control characters or outer spaces.
pub fn check_login(login: &str) -> Result<(), UserError> {
    let problem = if login.is_empty() || login.len() > MAX_NAME_BYTES {
        Some(format!("a login is 1 to {MAX_NAME_BYTES} bytes"))
    } else if login.starts_with('$') {
        Some("a login may not start with '$' (that prefix is for groups such as $admins)".to_owned())
    } else if login.contains([':', '/']) || login.chars().any(char::is_control) || login.trim() != login {
        Some("a login may not contain ':', '/', control characters, or start or end with a space".to_owned())
    } else {
        None
    };
    problem
        .map_or(Ok(()), |problem| Err(UserError::Invalid(format!("Invalid loginName '{login}': {problem}"))))
}

fn check_groups(groups: &[String]) -> Result<(), UserError> {
    match groups
        .iter()
        .find(|group| group.is_empty() || group.len() > MAX_NAME_BYTES || group.chars().any(char::is_control))
    {
        Some(group) => Err(UserError::Invalid(format!(
            "Invalid group '{group}': a group is 1 to {MAX_NAME_BYTES} bytes, without control characters"
        ))),
        None => Ok(()),
    }
}

fn check_password(candidate: &str) -> Result<(), UserError> {
    if candidate.is_empty() || candidate.len() > password::MAX_PASSWORD_BYTES {
        return Err(UserError::Invalid(format!("A password is 1 to {} bytes", password::MAX_PASSWORD_BYTES)));
    }
    Ok(())
}
