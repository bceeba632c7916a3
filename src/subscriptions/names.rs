//! The names of every system stream persistent subscriptions keep, and the
//! rules on group names that keep two groups' streams apart.
//!
//! v5 names a group's streams `$persistentsubscription-{stream}::{group}-checkpoint`
//! and `…-parked`, and v5 clients follow `parkedMessageUri` there, so
//! eventfeed keeps those names. Read as they stand they are ambiguous:
//! group `y::h` on `dA` and group `h` on `dA::y` both make `dA::y::h`, and
//! one group would resume from the other's checkpoint and replay the
//! other's parked messages. Any stream may have groups, so the rule falls
//! on group names: a group's name neither contains `::` nor starts with
//! `:`. Then the `::` between the stream and the group is the last `::` of
//! the name (a later one would lie inside the group's name, or be the
//! separator's second colon and the group's first), so a name reads back
//! as one (stream, group) only, and v5's names stay unchanged. The kinds
//! end in `-checkpoint` and `-parked`, which no name of the other kind ends
//! in, and a group's metadata streams are these names behind `$$`.
//!
//! Groups created before the rule may break it. Their streams are named
//! `$persistentsubscription-{stream}::{group, escaped}::checkpoint` (and
//! `::parked`), the group's `%` and `:` percent-encoded. These end in
//! `::checkpoint` or `::parked`, which no v5 name ends in (`-checkpoint`,
//! `-parked`), whatever its group: so they are never a valid group's, and
//! never what an older group left under v5's names and `migrate` moves to
//! them. And the escaped group has no `:`, so again the last `::` before
//! it ends the stream's name.

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// The stream holding every group definition.
pub const CONFIG_STREAM: &str = "$persistentSubscriptionConfig";

/// The prefix of every stream a group keeps.
const GROUP_STREAM_PREFIX: &str = "$persistentsubscription-";

/// The longest group name accepted, in bytes: the longest stream name's
/// length, since group names follow the rules of stream names.
pub const MAX_GROUP_NAME_BYTES: usize = 1024;

/// What is percent-encoded in the group part of the names of a group that
/// breaks the rule (see the module doc): `:` so that the part has none,
/// `%` so that the encoding reads back one way. Group names have no
/// control characters; encoding them too costs nothing.
const ESCAPED: &AsciiSet = &CONTROLS.add(b':').add(b'%');

/// A stream a group keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStream {
    /// `$SubscriptionCheckpoint` events, capped at one by `$maxCount`.
    Checkpoint,
    /// Links to parked messages; `$tb` moves past those replayed.
    Parked,
}

impl GroupStream {
    pub const ALL: [Self; 2] = [Self::Checkpoint, Self::Parked];

    fn kind(self) -> &'static str {
        match self {
            Self::Checkpoint => "checkpoint",
            Self::Parked => "parked",
        }
    }

    /// This stream of group `group` on `stream`, distinct for every pair.
    pub fn name(self, stream: &str, group: &str) -> String {
        if keeps_v5_names(group) {
            self.v5_name(stream, group)
        } else {
            let escaped = utf8_percent_encode(group, ESCAPED);
            format!("{GROUP_STREAM_PREFIX}{stream}::{escaped}::{}", self.kind())
        }
    }

    /// v5's name, which every group's stream had before the rule on group
    /// names, and which [`Self::name`] still gives every group keeping it.
    pub fn v5_name(self, stream: &str, group: &str) -> String {
        format!("{GROUP_STREAM_PREFIX}{stream}::{group}-{}", self.kind())
    }
}

pub fn checkpoint_stream(stream: &str, group: &str) -> String {
    GroupStream::Checkpoint.name(stream, group)
}

pub fn parked_stream(stream: &str, group: &str) -> String {
    GroupStream::Parked.name(stream, group)
}

/// Whether `group`'s streams have v5's names: it keeps the rule of the
/// module doc. Every group created since the rule does.
pub fn keeps_v5_names(group: &str) -> bool {
    !group.is_empty() && !group.starts_with(':') && !group.contains("::")
}

/// Whether `stream` (or the stream a metadata stream describes) is
/// bookkeeping of persistent subscriptions. `$all` groups leave these out:
/// a group would otherwise be delivered its own checkpoints.
pub fn is_bookkeeping(stream: &str) -> bool {
    let described = stream.strip_prefix("$$").unwrap_or(stream);
    described.starts_with(GROUP_STREAM_PREFIX) || described == CONFIG_STREAM
}

/// Checks the name of a group being created, naming the first rule it
/// breaks. The rules of stream names (`http::params::stream_name`: `.` and
/// `..` are path segments every client and proxy resolves away), and the
/// rule that keeps the group's streams its own.
pub fn check_group_name(name: &str) -> Result<(), &'static str> {
    let problem = if name.is_empty() {
        "Group name must not be empty."
    } else if name.len() > MAX_GROUP_NAME_BYTES {
        "Group name is too long."
    } else if name.chars().any(char::is_control) {
        "Group name must not contain control characters."
    } else if name == "." || name == ".." {
        "Group name must not be '.' or '..'."
    } else if !keeps_v5_names(name) {
        "Group name must not contain '::' or start with ':'."
    } else {
        return Ok(());
    };
    Err(problem)
}

/// Every rule [`check_group_name`] checks, for error messages.
pub fn group_name_rules() -> String {
    format!(
        "Group names are 1 to {MAX_GROUP_NAME_BYTES} bytes of UTF-8 without control characters, are not \
         '.' or '..', and neither contain '::' nor start with ':' (a group's streams are named \
         {GROUP_STREAM_PREFIX}{{stream}}::{{group}}-checkpoint and -parked, which such a name would share \
         with another group's)."
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn valid_groups_keep_v5s_names() {
        assert_eq!(checkpoint_stream("Order-1", "g"), "$persistentsubscription-Order-1::g-checkpoint");
        assert_eq!(parked_stream("$all", "g"), "$persistentsubscription-$all::g-parked");
        assert_eq!(parked_stream("dA::y", "h"), "$persistentsubscription-dA::y::h-parked");
        assert_eq!(parked_stream("dA", "y::h"), "$persistentsubscription-dA::y%3A%3Ah::parked");
        assert!(is_bookkeeping("$persistentsubscription-a::b-parked"));
        assert!(is_bookkeeping("$$$persistentsubscription-a::b-checkpoint"));
        assert!(is_bookkeeping(&checkpoint_stream("a", ":b")));
        assert!(is_bookkeeping(CONFIG_STREAM));
        assert!(!is_bookkeeping("$ce-Order"));
    }

    /// Every pair of names made of up to four of the pieces that matter
    /// (`:`, `%` and an escaped `:`, and the `-` before a kind), groups
    /// that break the rule included: no two pairs, and no two kinds, share
    /// a name, and no group that breaks the rule moves to a name that any
    /// group had under v5's names.
    #[test]
    fn no_two_groups_share_a_stream() {
        let pieces = [":", "-", "%", "%3A"];
        let mut texts = Vec::new();
        let mut last = vec![String::new()];
        for _ in 0..4 {
            last = last.iter().flat_map(|text| pieces.map(|piece| format!("{text}{piece}"))).collect();
            texts.extend(last.iter().cloned());
        }
        let pairs = || texts.iter().flat_map(|stream| texts.iter().map(move |group| (stream, group)));
        let mut owners = HashMap::new();
        for (stream, group) in pairs() {
            for kind in GroupStream::ALL {
                let name = kind.name(stream, group);
                if let Some(other) = owners.insert(name.clone(), (stream, group, kind)) {
                    panic!("{stream:?}/{group:?} and {other:?} share {name}");
                }
            }
        }
        for (stream, group) in pairs() {
            for kind in GroupStream::ALL {
                let old = kind.v5_name(stream, group);
                if let Some(&(owner_stream, owner_group, _)) = owners.get(&old) {
                    let owner = format!("{owner_stream:?}/{owner_group:?}");
                    assert!(
                        keeps_v5_names(owner_group),
                        "{owner} moves to {old}, {stream:?}/{group:?}'s v5 name"
                    );
                }
            }
        }
    }

    #[test]
    fn group_names_follow_the_rules_of_stream_names_and_keep_streams_apart() {
        for valid in ["g", "a:b", "b:", "é/x%", "-", &"g".repeat(MAX_GROUP_NAME_BYTES)] {
            assert_eq!(check_group_name(valid), Ok(()), "{valid:?}");
        }
        for (invalid, problem) in [
            ("", "empty"),
            (&"g".repeat(MAX_GROUP_NAME_BYTES + 1), "too long"),
            ("a\nb", "control"),
            (".", "'.' or '..'"),
            ("..", "'.' or '..'"),
            ("y::h", "'::'"),
            (":h", "':'"),
        ] {
            let refused = check_group_name(invalid).expect_err(invalid);
            assert!(refused.contains(problem), "{invalid:?}: {refused}");
        }
    }
}
