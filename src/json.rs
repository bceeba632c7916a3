//! JSON as eventfeed takes it in: well-formed, and with no key given twice
//! in one object. RFC 8259 leaves such an object's meaning to each reader
//! (one keeps the first value, another the last), so two readers of one
//! stored event or metadata document could disagree; every document the
//! server accepts (events arrays, event data, metadata, subscription
//! settings) is checked here first.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a document was refused.
#[derive(Debug)]
pub enum Rejected {
    /// Not JSON (or not the JSON the caller expected).
    Malformed(serde_json::Error),
    /// This key appears twice in one object.
    DuplicateKey(String),
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(error) => write!(f, "{error}"),
            Self::DuplicateKey(key) => write!(f, "the key {key:?} appears twice in one object"),
        }
    }
}

/// Checks that `bytes` is one JSON value without a key given twice in any
/// of its objects, without building it.
pub fn check(bytes: &[u8]) -> Result<(), Rejected> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let checked =
        Unique { duplicate: &duplicate }.deserialize(&mut deserializer).and_then(|()| deserializer.end());
    match (checked, duplicate.into_inner()) {
        (_, Some(key)) => Err(Rejected::DuplicateKey(key)),
        (Err(error), None) => Err(Rejected::Malformed(error)),
        (Ok(()), None) => Ok(()),
    }
}

/// [`check`], then parses `bytes` as a `T`.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Rejected> {
    check(bytes)?;
    serde_json::from_slice(bytes).map_err(Rejected::Malformed)
}

/// Objects with more keys than this are checked with a hash set; smaller
/// ones (nearly all) by comparing with the keys seen so far, which costs
/// no allocation beyond the list.
const LINEAR_KEYS: usize = 16;

/// Visits any value, recording the first key given twice (which also
/// stops the parse).
#[derive(Clone, Copy)]
struct Unique<'a> {
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        let mut keys: Vec<Key<'de>> = Vec::new();
        let mut many: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(Key(key)) = members.next_key()? {
            let seen = match &mut many {
                Some(set) => !set.insert(key.clone()),
                None => keys.iter().any(|Key(seen)| *seen == key),
            };
            if seen {
                *self.duplicate.borrow_mut() = Some(key.into_owned());
                return Err(de::Error::custom("a key appears twice in one object"));
            }
            if many.is_none() {
                keys.push(Key(key));
                if keys.len() > LINEAR_KEYS {
                    many = Some(keys.drain(..).map(|Key(key)| key).collect());
                }
            }
            members.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// An object's key, borrowed from the document unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(text: &str) -> Option<String> {
        match check(text.as_bytes()) {
            Err(Rejected::DuplicateKey(key)) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn a_key_given_twice_is_named_at_any_depth() {
        assert_eq!(duplicate(r#"{"a":1,"a":2}"#).as_deref(), Some("a"));
        assert_eq!(duplicate(r#"[{"x":{"b":[{"c":1,"d":2,"c":3}]}}]"#).as_deref(), Some("c"));
        assert_eq!(duplicate(r#"{"\u0061":1,"a":2}"#).as_deref(), Some("a"), "escapes are decoded first");
        let many: Vec<String> = (0..40).map(|n| format!("\"k{n}\":{n}")).collect();
        assert_eq!(duplicate(&format!("{{{},\"k3\":0}}", many.join(","))).as_deref(), Some("k3"));
    }

    #[test]
    fn distinct_keys_and_every_kind_of_value_pass() {
        for text in [r#"{"a":1,"A":2,"b":{"a":3}}"#, "[1,2.5,-3,true,null,\"s\",[],{}]", "\"x\"", "0"] {
            assert!(check(text.as_bytes()).is_ok(), "{text}");
        }
        let many: Vec<String> = (0..40).map(|n| format!("\"k{n}\":{n}")).collect();
        assert!(check(format!("{{{}}}", many.join(",")).as_bytes()).is_ok());
    }

    #[test]
    fn malformed_documents_are_refused() {
        for text in ["", "{", "[1,]", "{\"a\":1} x", "{'a':1}"] {
            assert!(matches!(check(text.as_bytes()), Err(Rejected::Malformed(_))), "{text}");
        }
        let value: serde_json::Value = from_slice(br#"{"a":[1]}"#).expect("valid");
        assert_eq!(value["a"][0], 1);
        assert!(matches!(
            from_slice::<serde_json::Value>(br#"{"a":1,"a":1}"#),
            Err(Rejected::DuplicateKey(_))
        ));
    }
}
