//! `/subscriptions`: persistent subscriptions (competing consumers) over
//! HTTP, against real servers. One test binary with a module per part, so
//! the suite builds and links the harness once instead of once per part:
//! - [`groups`]: creating, updating and deleting groups, their settings,
//!   the listings and `info`;
//! - [`messages`]: the competing messages feed, its sources and long-polls;
//! - [`acks`]: acks and nacks, redelivery, parking, replay and recovery;
//! - [`strategies`]: which consumer gets which message;
//! - [`names`]: group names, and the streams a group keeps apart from every
//!   other group's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod acks;
mod groups;
mod messages;
mod names;
mod strategies;
