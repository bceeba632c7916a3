//! The settings of a subscription group: v5's names and defaults, parsing
//! with validation, and the JSON form shown in `info` and persisted in the
//! config stream.
//!
//! Parsing is strict where v5 was silently lenient: a key that is not a v5
//! setting (a typo such as `messageTimeoutMs`) or a value of the wrong type
//! is refused with an error naming the setting, instead of being ignored and
//! leaving the default in place. Key names match case-insensitively, as they
//! did in v5 (its JSON deserialiser did), so clients that send
//! `resolveLinkTos` keep working. `null` means "the default".

use std::time::Duration;

use serde_json::{Map, Value, json};

// v5's defaults (its `SubscriptionConfigData`), which the API reference
// repeats; clients rely on them, so they are not ours to tune.
/// v5's default `messageTimeoutMilliseconds`.
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 10_000;
/// v5's default `maxRetryCount`.
pub const DEFAULT_MAX_RETRY_COUNT: u32 = 10;
/// v5's default `liveBufferSize`.
pub const DEFAULT_LIVE_BUFFER_SIZE: usize = 500;
/// v5's default `bufferSize`.
pub const DEFAULT_BUFFER_SIZE: usize = 500;
/// v5's default `readBatchSize`.
pub const DEFAULT_READ_BATCH_SIZE: usize = 20;
/// v5's default `checkPointAfterMilliseconds`.
pub const DEFAULT_CHECK_POINT_AFTER_MS: u64 = 1_000;
/// v5's default `minCheckPointCount`.
pub const DEFAULT_MIN_CHECK_POINT_COUNT: u64 = 10;
/// v5's default `maxCheckPointCount`.
pub const DEFAULT_MAX_CHECK_POINT_COUNT: u64 = 500;
/// v5's default `maxSubscriberCount`.
pub const DEFAULT_MAX_SUBSCRIBER_COUNT: usize = 10;

/// The longest timeout setting accepted (one day). Keeps deadline
/// arithmetic far from overflow and catches seconds-for-milliseconds
/// mistakes of a thousand years.
const MAX_MILLISECONDS: u64 = 86_400_000;

/// The largest buffer accepted. A buffer holds whole events in memory, so
/// this bounds what one group can pin.
const MAX_BUFFER_SIZE: usize = 100_000;

/// The largest read batch: the store's largest page.
const MAX_READ_BATCH_SIZE: usize = crate::feed::MAX_PAGE_SIZE as usize;

/// How messages are shared between the consumers of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Any consumer that asks gets the next messages.
    #[default]
    RoundRobin,
    /// One consumer at a time (the one active longest) gets every message;
    /// the others stand by and take over when it goes.
    DispatchToSingle,
    /// Every message of one source stream goes to the same consumer.
    Pinned,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "RoundRobin",
            Self::DispatchToSingle => "DispatchToSingle",
            Self::Pinned => "Pinned",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::RoundRobin, Self::DispatchToSingle, Self::Pinned]
            .into_iter()
            .find(|strategy| strategy.name().eq_ignore_ascii_case(text))
    }
}

/// Where a group starts when it has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// `-1`: the end of the source when the group is created.
    Now,
    /// `n`: event number `n` (for `$all`, global position `n`).
    At(u64),
    /// A `$all` position written as 32 hex digits, kept in that form so it
    /// reads back the way it was given.
    Position(u64),
}

/// A group's settings; see the module doc for the wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Deliver the targets of link events (`$ce-`, `$et-` streams) rather
    /// than the links.
    pub resolve_link_tos: bool,
    pub start_from: StartFrom,
    /// A delivered message not acknowledged within this is delivered again.
    pub message_timeout: Duration,
    /// Deliveries after the first before a message is parked.
    pub max_retry_count: u32,
    /// Read-ahead, in messages, once the group has caught up with its source.
    pub live_buffer_size: usize,
    /// Read-ahead, in messages, while the group catches up.
    pub buffer_size: usize,
    /// Events per read of the source.
    pub read_batch_size: usize,
    /// How often a checkpoint is considered.
    pub check_point_after: Duration,
    /// Processed messages needed before a timed checkpoint is written.
    pub min_check_point_count: u64,
    /// Processed messages that force a checkpoint at once; also the most
    /// messages ever redelivered after a crash beyond those in flight.
    pub max_check_point_count: u64,
    /// Consumers allowed at once; 0 means no limit.
    pub max_subscriber_count: usize,
    pub strategy: Strategy,
    /// Accepted and reported for v5 compatibility; statistics are always
    /// kept.
    pub extra_statistics: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            resolve_link_tos: false,
            start_from: StartFrom::At(0),
            message_timeout: Duration::from_millis(DEFAULT_MESSAGE_TIMEOUT_MS),
            max_retry_count: DEFAULT_MAX_RETRY_COUNT,
            live_buffer_size: DEFAULT_LIVE_BUFFER_SIZE,
            buffer_size: DEFAULT_BUFFER_SIZE,
            read_batch_size: DEFAULT_READ_BATCH_SIZE,
            check_point_after: Duration::from_millis(DEFAULT_CHECK_POINT_AFTER_MS),
            min_check_point_count: DEFAULT_MIN_CHECK_POINT_COUNT,
            max_check_point_count: DEFAULT_MAX_CHECK_POINT_COUNT,
            max_subscriber_count: DEFAULT_MAX_SUBSCRIBER_COUNT,
            strategy: Strategy::RoundRobin,
            extra_statistics: false,
        }
    }
}

/// A settings document that cannot be accepted, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    /// The offending key as v5 spells it; empty when the document itself is
    /// wrong.
    pub setting: String,
    pub reason: String,
}

impl std::fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.setting.is_empty() {
            write!(f, "Invalid settings: {}", self.reason)
        } else {
            write!(f, "Invalid setting '{}': {}", self.setting, self.reason)
        }
    }
}

fn invalid(setting: &str, reason: impl Into<String>) -> InvalidSetting {
    InvalidSetting { setting: setting.to_owned(), reason: reason.into() }
}

/// Every key v5's settings document has, as v5 spells it. `startPosition`
/// is v5's later string form of `startFrom`; `preferRoundRobin` its older
/// form of `namedConsumerStrategy`.
const KEYS: [&str; 15] = [
    "resolveLinktos",
    "startFrom",
    "startPosition",
    "messageTimeoutMilliseconds",
    "extraStatistics",
    "maxRetryCount",
    "liveBufferSize",
    "bufferSize",
    "readBatchSize",
    "preferRoundRobin",
    "checkPointAfterMilliseconds",
    "minCheckPointCount",
    "maxCheckPointCount",
    "maxSubscriberCount",
    "namedConsumerStrategy",
];

impl Settings {
    /// Parses a request body. An empty body means every default. `is_all`:
    /// the group reads `$all`, where `startFrom` may also be a position.
    pub fn parse(body: &[u8], is_all: bool) -> Result<Self, InvalidSetting> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let value: Value = crate::json::from_slice(body).map_err(|rejected| match rejected {
            crate::json::Rejected::DuplicateKey(key) => invalid(&key, "is given twice"),
            malformed => invalid("", format!("the body is not valid JSON ({malformed})")),
        })?;
        match value {
            Value::Null => Ok(Self::default()),
            Value::Object(object) => Self::from_object(&object, is_all),
            _ => Err(invalid("", "the body must be a JSON object of settings")),
        }
    }

    /// Validates a settings object (see [`Settings::parse`]).
    pub fn from_object(object: &Map<String, Value>, is_all: bool) -> Result<Self, InvalidSetting> {
        let mut found: [Option<&Value>; KEYS.len()] = [None; KEYS.len()];
        let mut given = [false; KEYS.len()];
        for (key, value) in object {
            let index = KEYS
                .iter()
                .position(|known| known.eq_ignore_ascii_case(key))
                .ok_or_else(|| invalid(key, "is not a subscription setting"))?;
            // Keys match case-insensitively: `bufferSize` and `BufferSize`
            // are one setting given twice.
            if std::mem::replace(&mut given[index], true) {
                return Err(invalid(KEYS[index], "is given twice"));
            }
            if !value.is_null() {
                found[index] = Some(value);
            }
        }
        let get = |key: &str| KEYS.iter().position(|known| *known == key).and_then(|index| found[index]);

        let defaults = Self::default();
        let mut settings = Self {
            resolve_link_tos: boolean(get("resolveLinktos"), "resolveLinktos", defaults.resolve_link_tos)?,
            start_from: start_from(get("startFrom"), get("startPosition"), is_all)?,
            message_timeout: Duration::from_millis(integer(
                get("messageTimeoutMilliseconds"),
                "messageTimeoutMilliseconds",
                DEFAULT_MESSAGE_TIMEOUT_MS,
                1,
                MAX_MILLISECONDS,
            )?),
            max_retry_count: u32::try_from(integer(
                get("maxRetryCount"),
                "maxRetryCount",
                u64::from(DEFAULT_MAX_RETRY_COUNT),
                0,
                u64::from(u32::MAX),
            )?)
            .unwrap_or(u32::MAX),
            live_buffer_size: size(
                get("liveBufferSize"),
                "liveBufferSize",
                DEFAULT_LIVE_BUFFER_SIZE,
                MAX_BUFFER_SIZE,
            )?,
            buffer_size: size(get("bufferSize"), "bufferSize", DEFAULT_BUFFER_SIZE, MAX_BUFFER_SIZE)?,
            read_batch_size: size(
                get("readBatchSize"),
                "readBatchSize",
                DEFAULT_READ_BATCH_SIZE,
                MAX_READ_BATCH_SIZE,
            )?,
            check_point_after: Duration::from_millis(integer(
                get("checkPointAfterMilliseconds"),
                "checkPointAfterMilliseconds",
                DEFAULT_CHECK_POINT_AFTER_MS,
                1,
                MAX_MILLISECONDS,
            )?),
            min_check_point_count: integer(
                get("minCheckPointCount"),
                "minCheckPointCount",
                DEFAULT_MIN_CHECK_POINT_COUNT,
                0,
                u64::from(u32::MAX),
            )?,
            max_check_point_count: integer(
                get("maxCheckPointCount"),
                "maxCheckPointCount",
                DEFAULT_MAX_CHECK_POINT_COUNT,
                1,
                u64::from(u32::MAX),
            )?,
            max_subscriber_count: usize::try_from(integer(
                get("maxSubscriberCount"),
                "maxSubscriberCount",
                DEFAULT_MAX_SUBSCRIBER_COUNT as u64,
                0,
                u64::from(u32::MAX),
            )?)
            .unwrap_or(usize::MAX),
            strategy: defaults.strategy,
            extra_statistics: boolean(get("extraStatistics"), "extraStatistics", false)?,
        };
        settings.strategy = match (get("namedConsumerStrategy"), get("preferRoundRobin")) {
            (Some(Value::String(name)), _) => Strategy::parse(name).ok_or_else(|| {
                invalid("namedConsumerStrategy", "must be RoundRobin, DispatchToSingle or Pinned")
            })?,
            (Some(_), _) => {
                return Err(invalid(
                    "namedConsumerStrategy",
                    "must be a string: RoundRobin, DispatchToSingle or Pinned",
                ));
            }
            (None, prefer) => {
                if boolean(prefer, "preferRoundRobin", true)? {
                    Strategy::RoundRobin
                } else {
                    Strategy::DispatchToSingle
                }
            }
        };
        if settings.buffer_size <= settings.read_batch_size {
            return Err(invalid(
                "bufferSize",
                format!(
                    "must be larger than readBatchSize ({}), got {}",
                    settings.read_batch_size, settings.buffer_size
                ),
            ));
        }
        if settings.min_check_point_count > settings.max_check_point_count {
            return Err(invalid(
                "minCheckPointCount",
                format!(
                    "must not be larger than maxCheckPointCount ({}), got {}",
                    settings.max_check_point_count, settings.min_check_point_count
                ),
            ));
        }
        Ok(settings)
    }

    /// The settings as v5 shows them (`config` in `info`), which is also
    /// the form persisted in the config stream.
    pub fn to_json(&self) -> Value {
        let start_from = match self.start_from {
            StartFrom::Now => json!(-1),
            StartFrom::At(number) => json!(number),
            StartFrom::Position(position) => json!(crate::feed::format_position(position)),
        };
        json!({
            "resolveLinktos": self.resolve_link_tos,
            "startFrom": start_from,
            "messageTimeoutMilliseconds": millis(self.message_timeout),
            "extraStatistics": self.extra_statistics,
            "maxRetryCount": self.max_retry_count,
            "liveBufferSize": self.live_buffer_size,
            "bufferSize": self.buffer_size,
            "readBatchSize": self.read_batch_size,
            "preferRoundRobin": self.strategy == Strategy::RoundRobin,
            "checkPointAfterMilliseconds": millis(self.check_point_after),
            "minCheckPointCount": self.min_check_point_count,
            "maxCheckPointCount": self.max_check_point_count,
            "maxSubscriberCount": self.max_subscriber_count,
            "namedConsumerStrategy": self.strategy.name(),
        })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn boolean(value: Option<&Value>, key: &str, default: bool) -> Result<bool, InvalidSetting> {
    match value {
        None => Ok(default),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(_) => Err(invalid(key, "must be true or false")),
    }
}

fn integer(
    value: Option<&Value>,
    key: &str,
    default: u64,
    minimum: u64,
    maximum: u64,
) -> Result<u64, InvalidSetting> {
    match value {
        None => Ok(default),
        Some(value) => match value.as_u64() {
            Some(number) if (minimum..=maximum).contains(&number) => Ok(number),
            _ => Err(invalid(key, format!("must be an integer from {minimum} to {maximum}, got {value}"))),
        },
    }
}

/// A buffer or batch size: a positive integer.
fn size(value: Option<&Value>, key: &str, default: usize, maximum: usize) -> Result<usize, InvalidSetting> {
    let number = integer(value, key, default as u64, 1, maximum as u64)?;
    Ok(usize::try_from(number).unwrap_or(maximum))
}

fn start_from(
    start_from: Option<&Value>,
    start_position: Option<&Value>,
    is_all: bool,
) -> Result<StartFrom, InvalidSetting> {
    let expected = if is_all {
        "must be -1 (from now), 0 or a position in $all (an integer, or 32 hex digits as in $all's page links)"
    } else {
        "must be -1 (from now) or an event number"
    };
    let (key, value) = match (start_position, start_from) {
        (Some(value), _) => ("startPosition", value),
        (None, Some(value)) => ("startFrom", value),
        (None, None) => return Ok(StartFrom::At(0)),
    };
    let parsed = match value {
        Value::Number(number) => number.as_i64().and_then(number_start),
        // v5's `startPosition` is a string; `$all` positions are 32 hex
        // digits (tried first: some are all decimal digits).
        Value::String(text) => {
            let text = text.trim();
            let position = if is_all { crate::feed::parse_position(text) } else { None };
            match position {
                Some(position) => Some(StartFrom::Position(position)),
                None => text.parse::<i64>().ok().and_then(number_start),
            }
        }
        _ => None,
    };
    parsed.ok_or_else(|| invalid(key, format!("{expected}, got {value}")))
}

fn number_start(number: i64) -> Option<StartFrom> {
    match number {
        -1 => Some(StartFrom::Now),
        n => u64::try_from(n).ok().map(StartFrom::At),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Settings, InvalidSetting> {
        Settings::parse(body.as_bytes(), false)
    }

    #[test]
    fn empty_bodies_and_nulls_mean_the_defaults() {
        assert_eq!(parse("").ok(), Some(Settings::default()));
        assert_eq!(parse("{}").ok(), Some(Settings::default()));
        assert_eq!(parse("null").ok(), Some(Settings::default()));
        assert_eq!(parse(r#"{"bufferSize":null}"#).ok(), Some(Settings::default()));
    }

    #[test]
    fn keys_match_case_insensitively_as_in_v5() {
        let settings = parse(r#"{"resolveLinkTos":true,"MessageTimeoutMilliseconds":500}"#).expect("valid");
        assert!(settings.resolve_link_tos);
        assert_eq!(settings.message_timeout, Duration::from_millis(500));
    }

    #[test]
    fn every_error_names_its_setting() {
        let cases = [
            (r#"{"bufferSize":0}"#, "bufferSize"),
            (r#"{"liveBufferSize":-5}"#, "liveBufferSize"),
            (r#"{"readBatchSize":0}"#, "readBatchSize"),
            (r#"{"bufferSize":20}"#, "bufferSize"),
            (r#"{"bufferSize":10,"readBatchSize":10}"#, "bufferSize"),
            (r#"{"messageTimeoutMilliseconds":0}"#, "messageTimeoutMilliseconds"),
            (r#"{"messageTimeoutMilliseconds":"1000"}"#, "messageTimeoutMilliseconds"),
            (r#"{"maxRetryCount":-1}"#, "maxRetryCount"),
            (r#"{"maxRetryCount":1.5}"#, "maxRetryCount"),
            (r#"{"checkPointAfterMilliseconds":0}"#, "checkPointAfterMilliseconds"),
            (r#"{"minCheckPointCount":600}"#, "minCheckPointCount"),
            (r#"{"maxCheckPointCount":0}"#, "maxCheckPointCount"),
            (r#"{"maxSubscriberCount":-1}"#, "maxSubscriberCount"),
            (r#"{"namedConsumerStrategy":"Random"}"#, "namedConsumerStrategy"),
            (r#"{"namedConsumerStrategy":1}"#, "namedConsumerStrategy"),
            (r#"{"resolveLinktos":"yes"}"#, "resolveLinktos"),
            (r#"{"startFrom":-2}"#, "startFrom"),
            (r#"{"startFrom":"000000000000000A000000000000000A"}"#, "startFrom"),
            (r#"{"messageTimeoutMs":1000}"#, "messageTimeoutMs"),
            (r#"{"bufferSize":100,"bufferSize":200}"#, "bufferSize"),
            (r#"{"bufferSize":100,"BufferSize":null}"#, "bufferSize"),
        ];
        for (body, setting) in cases {
            let error = parse(body).expect_err(body);
            assert_eq!(error.setting, setting, "{body}");
            assert!(error.to_string().contains(setting), "{error}");
        }
        assert!(parse("[1]").is_err());
        assert!(parse("{").is_err());
    }

    #[test]
    fn start_from_forms() {
        assert_eq!(parse(r#"{"startFrom":-1}"#).map(|s| s.start_from), Ok(StartFrom::Now));
        assert_eq!(parse(r#"{"startFrom":7}"#).map(|s| s.start_from), Ok(StartFrom::At(7)));
        assert_eq!(parse(r#"{"startPosition":"7"}"#).map(|s| s.start_from), Ok(StartFrom::At(7)));
        let all = Settings::parse(br#"{"startFrom":"000000000000001A000000000000001A"}"#, true);
        assert_eq!(all.map(|s| s.start_from), Ok(StartFrom::Position(26)));
        assert_eq!(
            Settings::parse(br#"{"startFrom":26}"#, true).map(|s| s.start_from),
            Ok(StartFrom::At(26))
        );
        let decimal_looking = Settings::parse(br#"{"startFrom":"00000000000000010000000000000001"}"#, true);
        assert_eq!(decimal_looking.map(|s| s.start_from), Ok(StartFrom::Position(1)));
        assert_eq!(parse(r#"{"startFrom":"5"}"#).map(|s| s.start_from), Ok(StartFrom::At(5)));
    }

    #[test]
    fn strategies_and_the_legacy_flag() {
        assert_eq!(parse(r#"{"namedConsumerStrategy":"pinned"}"#).map(|s| s.strategy), Ok(Strategy::Pinned));
        assert_eq!(
            parse(r#"{"preferRoundRobin":false}"#).map(|s| s.strategy),
            Ok(Strategy::DispatchToSingle)
        );
        assert_eq!(
            parse(r#"{"preferRoundRobin":false,"namedConsumerStrategy":"RoundRobin"}"#).map(|s| s.strategy),
            Ok(Strategy::RoundRobin)
        );
    }

    #[test]
    fn the_json_form_reads_back_the_same() {
        let settings = Settings::parse(
            br#"{"startFrom":"000000000000001A000000000000001A","namedConsumerStrategy":"Pinned",
                "messageTimeoutMilliseconds":1234,"bufferSize":40,"readBatchSize":5,"maxSubscriberCount":0}"#,
            true,
        )
        .expect("valid");
        let json = settings.to_json();
        assert_eq!(json["namedConsumerStrategy"], "Pinned");
        assert_eq!(json["messageTimeoutMilliseconds"], 1234);
        let Value::Object(object) = json else { panic!("an object") };
        assert_eq!(Settings::from_object(&object, true), Ok(settings));
    }
}
