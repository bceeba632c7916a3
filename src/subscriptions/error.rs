//! Why a subscription operation failed. Nothing here knows about HTTP.

use std::time::Duration;

use super::settings::InvalidSetting;
use crate::store::StoreError;

/// Why a subscription operation failed. Nothing here knows about HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionError {
    /// No such group.
    NotFound,
    /// Creating a group that exists.
    AlreadyExists,
    /// The settings are invalid.
    Invalid(InvalidSetting),
    /// The group name breaks a rule of [`names::check_group_name`]: which.
    InvalidName(&'static str),
    /// The group has `maxSubscriberCount` consumers and this one is new.
    GroupFull {
        retry_after: Duration,
    },
    /// The subscriptions stopped running on this server (another server
    /// of those sharing the store runs them now, see [`owner`]).
    Moved,
    Store(StoreError),
}

impl std::fmt::Display for SubscriptionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("no such subscription group"),
            Self::AlreadyExists => f.write_str("the subscription group already exists"),
            Self::Invalid(invalid) => invalid.fmt(f),
            Self::InvalidName(problem) => f.write_str(problem),
            Self::GroupFull { .. } => f.write_str("the group has its maximum number of consumers"),
            Self::Moved => f.write_str("the persistent subscriptions are moving to another server"),
            Self::Store(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for SubscriptionError {}

impl From<StoreError> for SubscriptionError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}
