//! Stream metadata: the JSON document stored as the latest `$metadata` event
//! of stream `$${stream}`, and the settings the store enforces from it.
//!
//! Validation lives here, not in the HTTP layer, because every store must
//! refuse the same documents and derive the same settings from them.

use serde_json::{Map, Value};

use super::StreamSettings;
use crate::json::{self, Rejected};

/// The event type of metadata events.
pub const METADATA_EVENT_TYPE: &str = "$metadata";

/// The `$acl` keys v5 defines: read, write, delete, metadata read,
/// metadata write.
pub const ACL_KEYS: [&str; 5] = ["$r", "$w", "$d", "$mr", "$mw"];

/// The role lists of an `$acl` object, in the order of [`ACL_KEYS`];
/// `None` where a key is absent or `null`.
pub type AclRoles = [Option<Vec<String>>; 5];

/// The role that means "everyone, including anonymous readers".
pub const ALL_ROLE: &str = "$all";

/// The largest `$cacheControl`, in seconds: a year, the longest `max-age`
/// RFC 9111 suggests caches honour and what immutable pages get. A longer
/// one would promise more than any cache keeps.
pub const MAX_CACHE_CONTROL_SECS: u64 = 31_536_000;

/// The largest `$maxCount` and `$tb`: v5 holds them as a .NET `long`, and
/// its soft delete writes `$tb` = `long.MaxValue`, which clients copy back.
const MAX_LONG: u64 = i64::MAX as u64;

/// The largest `$maxAge`, in seconds: reads compare it in microseconds on
/// the clock's `i64` (about 292,000 years).
const MAX_AGE_SECS: u64 = MAX_LONG / 1_000_000;

/// The name of the stream holding `stream`'s metadata.
pub fn metadata_stream(stream: &str) -> String {
    format!("$${stream}")
}

/// For a metadata stream `$$s`, the stream `s` it describes.
pub fn described_stream(metadata_stream: &str) -> Option<&str> {
    metadata_stream.strip_prefix("$$")
}

/// A metadata document that cannot be accepted, naming the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMetadata {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for InvalidMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "Invalid metadata: {}", self.reason)
        } else {
            write!(f, "Invalid metadata: '{}' {}", self.key, self.reason)
        }
    }
}

/// Validates a metadata document and derives the enforced settings. Unknown
/// keys are allowed and kept (they are the user's own metadata); a `null`
/// value means the key is not set; a key given twice (at any depth) is
/// refused, since readers would disagree on which value holds.
pub fn parse(document: &[u8]) -> Result<StreamSettings, InvalidMetadata> {
    let value: Value = json::from_slice(document).map_err(|rejected| match rejected {
        Rejected::DuplicateKey(key) => InvalidMetadata { key, reason: "is given twice".into() },
        Rejected::Malformed(error) => {
            InvalidMetadata { key: String::new(), reason: format!("the body is not valid JSON ({error})") }
        }
    })?;
    let Value::Object(object) = value else {
        return Err(InvalidMetadata { key: String::new(), reason: "the body must be a JSON object".into() });
    };
    settings_from(&object)
}

fn settings_from(object: &Map<String, Value>) -> Result<StreamSettings, InvalidMetadata> {
    let mut settings = StreamSettings {
        max_count: whole_number(object, "$maxCount", 1, MAX_LONG)?,
        max_age_secs: whole_number(object, "$maxAge", 1, MAX_AGE_SECS)?,
        truncate_before: whole_number(object, "$tb", 0, MAX_LONG)?,
        cache_control_secs: whole_number(object, "$cacheControl", 1, MAX_CACHE_CONTROL_SECS)?,
        ..StreamSettings::default()
    };
    match object.get("$tmp") {
        None | Some(Value::Null | Value::Bool(_)) => {}
        Some(_) => return Err(invalid("$tmp", "must be true or false")),
    }
    match object.get("$acl") {
        None | Some(Value::Null) => {}
        Some(value) => {
            let [read, ..] = acl_roles(value, "$acl")?;
            settings.not_public = read.is_some_and(|roles| !roles.iter().any(|role| role == ALL_ROLE));
        }
    }
    Ok(settings)
}

/// Reads an `$acl` object (or one of `$settings`' defaults, named `name`
/// in errors): each key one of [`ACL_KEYS`], each value a role name, an
/// array of them, or `null` (not set).
pub fn acl_roles(value: &Value, name: &str) -> Result<AclRoles, InvalidMetadata> {
    let Value::Object(acl) = value else {
        return Err(invalid(name, "must be an object"));
    };
    let mut roles: AclRoles = Default::default();
    for (key, value) in acl {
        let index = ACL_KEYS.iter().position(|known| known == key).ok_or_else(|| {
            invalid(&format!("{name}.{key}"), "is not an ACL key (expected $r, $w, $d, $mr or $mw)")
        })?;
        roles[index] = match value {
            Value::Null => None,
            Value::String(role) => Some(vec![role.clone()]),
            Value::Array(items) => Some(
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| invalid(&format!("{name}.{key}"), ROLES_EXPECTED))?,
            ),
            _ => return Err(invalid(&format!("{name}.{key}"), ROLES_EXPECTED)),
        };
    }
    Ok(roles)
}

const ROLES_EXPECTED: &str = "must be a role name or an array of role names";

fn whole_number(
    object: &Map<String, Value>,
    key: &str,
    minimum: u64,
    maximum: u64,
) -> Result<Option<u64>, InvalidMetadata> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(number) if (minimum..=maximum).contains(&number) => Ok(Some(number)),
            _ => Err(invalid(key, &format!("must be an integer from {minimum} to {maximum}"))),
        },
    }
}

fn invalid(key: &str, reason: &str) -> InvalidMetadata {
    InvalidMetadata { key: key.to_owned(), reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_enforced_key() {
        let settings = parse(
            br#"{"$maxCount":5,"$maxAge":60,"$tb":3,"$cacheControl":10,"$tmp":true,
                "$acl":{"$r":["$all","ops"],"$w":"ops"},"owner":"team-a"}"#,
        )
        .expect("valid");
        assert_eq!(settings.max_count, Some(5));
        assert_eq!(settings.max_age_secs, Some(60));
        assert_eq!(settings.truncate_before, Some(3));
        assert_eq!(settings.cache_control_secs, Some(10));
        assert!(!settings.not_public);
    }

    #[test]
    fn a_read_acl_without_all_makes_the_stream_private() {
        let settings = parse(br#"{"$acl":{"$r":"ops"}}"#).expect("valid");
        assert!(settings.not_public);
    }

    #[test]
    fn errors_name_the_bad_key() {
        let cases: [(&[u8], &str); 15] = [
            (br#"{"$maxCount":0}"#, "$maxCount"),
            (br#"{"$maxCount":9223372036854775808}"#, "$maxCount"),
            (br#"{"$maxAge":9223372036855}"#, "$maxAge"),
            (br#"{"$tb":18446744073709551615}"#, "$tb"),
            (br#"{"$cacheControl":31536001}"#, "$cacheControl"),
            (br#"{"$maxCount":1,"$maxCount":2}"#, "$maxCount"),
            (br#"{"owner":{"a":1,"a":2}}"#, "a"),
            (br#"{"$maxCount":-1}"#, "$maxCount"),
            (br#"{"$maxAge":"60"}"#, "$maxAge"),
            (br#"{"$tb":1.5}"#, "$tb"),
            (br#"{"$cacheControl":0}"#, "$cacheControl"),
            (br#"{"$tmp":"yes"}"#, "$tmp"),
            (br#"{"$acl":[]}"#, "$acl"),
            (br#"{"$acl":{"$r":5}}"#, "$acl.$r"),
            (br#"{"$acl":{"$x":"a"}}"#, "$acl.$x"),
        ];
        for (document, key) in cases {
            let error = parse(document).expect_err("invalid");
            assert_eq!(error.key, key, "{}", String::from_utf8_lossy(document));
            assert!(error.to_string().contains(key));
        }
        assert!(parse(b"[1]").is_err());
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn the_largest_values_are_accepted() {
        let settings =
            parse(br#"{"$maxCount":9223372036854775807,"$tb":9223372036854775807,"$cacheControl":31536000}"#)
                .expect("valid");
        assert_eq!(settings.truncate_before, Some(i64::MAX as u64));
        assert_eq!(settings.cache_control_secs, Some(MAX_CACHE_CONTROL_SECS));
    }

    #[test]
    fn nulls_and_unknown_keys_are_fine() {
        let settings = parse(br#"{"$maxCount":null,"anything":{"x":1}}"#).expect("valid");
        assert_eq!(settings, StreamSettings::default());
    }

    #[test]
    fn metadata_stream_names() {
        assert_eq!(metadata_stream("Order-1"), "$$Order-1");
        assert_eq!(described_stream("$$Order-1"), Some("Order-1"));
        assert_eq!(described_stream("Order-1"), None);
    }
}
