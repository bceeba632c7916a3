//! `/subscriptions`: persistent subscriptions (competing consumers) over
//! HTTP, against real servers. One test binary with a module per part, so
//! the suite builds and links the harness once instead of four times:
//! - [`groups`]: creating, updating and deleting groups, their settings,
//!   the listings and `info`;
//! - [`messages`]: the competing messages feed, its sources and long-polls;
//! - [`acks`]: acks and nacks, redelivery, parking, replay and recovery;
//! - [`strategies`]: which consumer gets which message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod acks;
mod groups;
mod messages;
mod strategies;
