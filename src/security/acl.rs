//! Who may do what: v5's access control lists and the one function that
//! decides every request, [`may`].
//!
//! A stream's `$acl` (in its metadata) names, for each kind of access, the
//! roles allowed: user names, group names, or `$all` for everyone,
//! anonymous readers included. What a stream's `$acl` leaves unset comes
//! from the defaults in the `$settings` stream (`$userStreamAcl` for user
//! streams, `$systemStreamAcl` for streams whose names start with `$`), and
//! what those leave unset from the built-in defaults ([`DefaultAcls::builtin`]).
//! Members of `$admins` may do everything.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::Principal;
use crate::store::metadata::{self, ALL_ROLE, InvalidMetadata};
use crate::store::projections::is_system_stream;

/// The group whose members may do everything.
pub const ADMINS: &str = "$admins";
/// The group of operators: scavenges and persistent subscriptions.
pub const OPS: &str = "$ops";

/// A kind of access to a stream, with its `$acl` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `$r`: read its events, pages and live reads.
    Read,
    /// `$w`: append.
    Write,
    /// `$d`: delete, soft or hard.
    Delete,
    /// `$mr`: read its metadata.
    MetaRead,
    /// `$mw`: write its metadata.
    MetaWrite,
}

impl Access {
    pub const ALL: [Access; 5] = [Self::Read, Self::Write, Self::Delete, Self::MetaRead, Self::MetaWrite];

    /// The `$acl` key.
    pub fn key(self) -> &'static str {
        metadata::ACL_KEYS[self.index()]
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Work on the server rather than on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// The `/users` API beyond one's own account: `$admins`.
    ManageUsers,
    /// Start or look up a scavenge: `$admins` and `$ops`.
    Scavenge,
    /// Stop the server (`POST /admin/shutdown`): `$admins` and `$ops`.
    Shutdown,
    /// Create, update, delete persistent subscriptions, replay their parked
    /// messages, list them: `$admins` and `$ops`.
    ManageSubscriptions,
    /// Read the server's metrics (`GET /metrics`): `$admins` and `$ops`
    /// (or anyone, with `--metrics-public`).
    ReadMetrics,
    /// Export the whole store (`GET /admin/export`, what `eventfeed
    /// backup` reads): `$admins` only, since it holds every stream,
    /// whatever its `$acl`, and the users' password hashes.
    Export,
}

/// The roles an `$acl` key names.
pub type Roles = Arc<[String]>;

/// One `$acl`: for each kind of access, the roles named, or `None` where
/// the key is not set (a default applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    roles: [Option<Roles>; 5],
}

impl Acl {
    /// Every access for exactly these roles.
    fn all_for(roles: &[&str]) -> Self {
        let roles: Roles = roles.iter().map(|role| (*role).to_owned()).collect();
        Self { roles: std::array::from_fn(|_| Some(Arc::clone(&roles))) }
    }

    /// The roles for `access`, `None` when not set here.
    pub fn get(&self, access: Access) -> Option<&Roles> {
        self.roles[access.index()].as_ref()
    }

    /// Reads an `$acl` object (the rules are `store::metadata`'s, which
    /// every stored document passed); errors name the key.
    pub fn from_value(value: &Value, name: &str) -> Result<Self, InvalidMetadata> {
        let roles = metadata::acl_roles(value, name)?;
        Ok(Self { roles: roles.map(|roles| roles.map(Roles::from)) })
    }

    /// The `$acl` of a stored metadata document. One that cannot be read
    /// (it was validated when written, so only damage does that) allows
    /// nobody but `$admins`: access fails closed.
    pub fn from_metadata(document: &[u8]) -> Self {
        let parsed = serde_json::from_slice::<Map<String, Value>>(document);
        match parsed.as_ref().map(|object| object.get("$acl")) {
            Ok(None | Some(Value::Null)) => Self::default(),
            Ok(Some(value)) => Self::from_value(value, "$acl").unwrap_or_else(|_| Self::all_for(&[])),
            Err(_) => Self::all_for(&[]),
        }
    }
}

/// The defaults for what a stream's `$acl` leaves unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultAcls {
    user: Acl,
    system: Acl,
}

/// The event type v5's clients write to `$settings`.
pub const SETTINGS_STREAM: &str = "$settings";

impl DefaultAcls {
    /// Without `$settings`: user streams are read and written by everyone,
    /// so feeds work without credentials; their metadata is read by
    /// everyone; deleting them and writing their metadata takes `$admins`.
    /// System streams take `$admins` for everything. (v5 lets everyone
    /// delete user streams and write their metadata; see docs/security.md.)
    pub fn builtin() -> Self {
        let all = || Some(Roles::from([ALL_ROLE.to_owned()]));
        let admins = || Some(Roles::from([ADMINS.to_owned()]));
        Self {
            user: Acl { roles: [all(), all(), admins(), all(), admins()] },
            system: Acl::all_for(&[ADMINS]),
        }
    }

    /// The defaults a `$settings` document sets (`$userStreamAcl`,
    /// `$systemStreamAcl`), over the built-in ones for what it leaves out.
    pub fn from_settings(document: &[u8]) -> Result<Self, String> {
        let object: Map<String, Value> = crate::json::from_slice(document)
            .map_err(|_| "the settings must be a JSON object, without a key given twice".to_owned())?;
        let mut defaults = Self::builtin();
        for (key, target) in
            [("$userStreamAcl", &mut defaults.user), ("$systemStreamAcl", &mut defaults.system)]
        {
            match object.get(key) {
                None | Some(Value::Null) => {}
                Some(value) => {
                    let acl = Acl::from_value(value, key)
                        .map_err(|invalid| format!("'{}' {}", invalid.key, invalid.reason))?;
                    for access in Access::ALL {
                        if let Some(roles) = acl.get(access) {
                            target.roles[access.index()] = Some(Arc::clone(roles));
                        }
                    }
                }
            }
        }
        Ok(defaults)
    }

    fn for_stream(&self, stream: &str) -> &Acl {
        if is_system_stream(stream) { &self.system } else { &self.user }
    }
}

/// Streams the store fills from other streams: `$all` and the system
/// projections. Their events come from every stream, so only `$admins`
/// read them, whatever their `$acl` or the defaults say: a reader allowed
/// one of them would see events of streams it may not read.
pub fn reads_other_streams(stream: &str) -> bool {
    stream == "$all" || stream == "$streams" || stream.starts_with("$ce-") || stream.starts_with("$et-")
}

/// Whether `principal` may have `access` to `stream`, whose own `$acl` is
/// `acl`. For a metadata stream `$$s`, callers ask about `s` with
/// [`Access::MetaRead`] or [`Access::MetaWrite`].
pub fn may(principal: &Principal, access: Access, stream: &str, acl: &Acl, defaults: &DefaultAcls) -> bool {
    if principal.is_admin() {
        return true;
    }
    if access == Access::Read && reads_other_streams(stream) {
        return false;
    }
    let roles = acl.get(access).or_else(|| defaults.for_stream(stream).get(access));
    roles.is_some_and(|roles| roles.iter().any(|role| principal.has_role(role)))
}

/// Whether `principal` may run `task`.
pub fn may_run(principal: &Principal, task: Task) -> bool {
    match task {
        Task::ManageUsers | Task::Export => principal.is_admin(),
        Task::Scavenge | Task::Shutdown | Task::ManageSubscriptions | Task::ReadMetrics => {
            principal.is_admin() || principal.has_role(OPS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::User;

    fn user(login: &str, groups: &[&str]) -> Principal {
        Principal::User(Arc::new(User {
            login: login.to_owned(),
            groups: groups.iter().map(|group| (*group).to_owned()).collect(),
        }))
    }

    fn acl(json: &str) -> Acl {
        Acl::from_value(&serde_json::from_str(json).expect("json"), "$acl").expect("acl")
    }

    #[test]
    fn builtin_defaults() {
        let defaults = DefaultAcls::builtin();
        let none = Acl::default();
        let anonymous = Principal::Anonymous;
        assert!(may(&anonymous, Access::Read, "Order-1", &none, &defaults));
        assert!(may(&anonymous, Access::Write, "Order-1", &none, &defaults));
        assert!(may(&anonymous, Access::MetaRead, "Order-1", &none, &defaults));
        assert!(!may(&anonymous, Access::Delete, "Order-1", &none, &defaults));
        assert!(!may(&anonymous, Access::MetaWrite, "Order-1", &none, &defaults));
        assert!(!may(&anonymous, Access::Read, "$settings", &none, &defaults));
        assert!(!may(&user("ops", &[OPS]), Access::Read, "$users", &none, &defaults));
        assert!(may(&user("admin", &[ADMINS]), Access::Delete, "$settings", &none, &defaults));
        assert!(may(&Principal::System, Access::Write, "$user-x", &none, &defaults));
    }

    #[test]
    fn a_stream_acl_names_users_groups_or_everyone() {
        let defaults = DefaultAcls::builtin();
        let rules = acl(r#"{"$r":["alice","readers"],"$w":"writers","$d":"$all"}"#);
        assert!(may(&user("alice", &[]), Access::Read, "s", &rules, &defaults));
        assert!(may(&user("bob", &["readers"]), Access::Read, "s", &rules, &defaults));
        assert!(!may(&user("carol", &["writers"]), Access::Read, "s", &rules, &defaults));
        assert!(!may(&Principal::Anonymous, Access::Read, "s", &rules, &defaults));
        assert!(may(&user("carol", &["writers"]), Access::Write, "s", &rules, &defaults));
        assert!(!may(&user("alice", &[]), Access::Write, "s", &rules, &defaults));
        assert!(may(&Principal::Anonymous, Access::Delete, "s", &rules, &defaults));
        // Unset keys fall back to the defaults.
        assert!(!may(&user("alice", &[]), Access::MetaWrite, "s", &rules, &defaults));
        assert!(may(&user("admin", &[ADMINS]), Access::Read, "s", &rules, &defaults));
        // An empty list allows nobody but admins.
        let nobody = acl(r#"{"$r":[]}"#);
        assert!(!may(&user("alice", &["$all"]), Access::Read, "s", &nobody, &defaults));
    }

    #[test]
    fn settings_override_the_builtin_defaults() {
        let defaults = DefaultAcls::from_settings(br#"{"$userStreamAcl":{"$r":"readers","$w":"writers"}}"#)
            .expect("valid");
        let none = Acl::default();
        assert!(!may(&Principal::Anonymous, Access::Read, "s", &none, &defaults));
        assert!(may(&user("x", &["readers"]), Access::Read, "s", &none, &defaults));
        assert!(may(&user("x", &["writers"]), Access::Write, "s", &none, &defaults));
        assert!(may(&Principal::Anonymous, Access::MetaRead, "s", &none, &defaults));
        let opened = DefaultAcls::from_settings(br#"{"$systemStreamAcl":{"$r":"$all"}}"#).expect("valid");
        assert!(may(&Principal::Anonymous, Access::Read, "$settings", &none, &opened));
        // Projections and $all stay with admins whatever the settings say.
        for stream in ["$all", "$ce-Order", "$et-Created", "$streams"] {
            assert!(!may(&Principal::Anonymous, Access::Read, stream, &acl(r#"{"$r":"$all"}"#), &opened));
        }
        assert!(DefaultAcls::from_settings(br#"{"$userStreamAcl":{"$x":"a"}}"#).is_err());
        assert!(DefaultAcls::from_settings(b"[1]").is_err());
    }

    #[test]
    fn tasks() {
        assert!(may_run(&user("o", &[OPS]), Task::Scavenge));
        assert!(may_run(&user("o", &[OPS]), Task::ManageSubscriptions));
        assert!(may_run(&user("o", &[OPS]), Task::ReadMetrics));
        assert!(!may_run(&user("u", &[]), Task::ReadMetrics));
        assert!(!may_run(&Principal::Anonymous, Task::ReadMetrics));
        assert!(!may_run(&user("o", &[OPS]), Task::ManageUsers));
        assert!(!may_run(&user("u", &[]), Task::Scavenge));
        assert!(!may_run(&Principal::Anonymous, Task::Scavenge));
        assert!(may_run(&user("a", &[ADMINS]), Task::ManageUsers));
    }

    /// Random JSON for `$acl` values: scalars, arrays and objects, nested.
    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            prop_oneof![Just("$r".to_owned()), Just("$all".to_owned()), "\\PC{0,8}"].prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("$r".to_owned()),
                            Just("$w".to_owned()),
                            Just("$mw".to_owned()),
                            "\\PC{0,4}"
                        ],
                        inner
                    ),
                    0..4
                )
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(crate::security::property_test_config())]

        /// Any `$acl` value: no panic; what parses grants only what it
        /// names, and what does not parse is refused by the metadata rules
        /// too (so it can never be stored).
        #[test]
        fn any_acl_value(value in json()) {
            // A null `$acl` is no `$acl`: not an ACL to parse.
            proptest::prop_assume!(!value.is_null());
            let parsed = Acl::from_value(&value, "$acl");
            let document = serde_json::json!({ "$acl": value }).to_string();
            let validated = crate::store::metadata::parse(document.as_bytes());
            proptest::prop_assert_eq!(parsed.is_ok(), validated.is_ok(), "{}", document);
            if let Ok(acl) = parsed {
                let stranger = user("stranger-not-named", &[]);
                let named = Access::ALL.into_iter().any(|access| {
                    acl.get(access).is_some_and(|roles| roles.iter().any(|role| role == "$all" || role == "stranger-not-named"))
                });
                let allowed = Access::ALL.into_iter().any(|access| may(&stranger, access, "s", &acl, &DefaultAcls { user: Acl::all_for(&[]), system: Acl::all_for(&[]) }));
                proptest::prop_assert_eq!(allowed, named);
            }
        }

        /// Any bytes as a stored metadata document: no panic.
        #[test]
        fn any_metadata_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Acl::from_metadata(&bytes);
            let _ = DefaultAcls::from_settings(&bytes);
        }
    }

    #[test]
    fn damaged_metadata_fails_closed() {
        let damaged = Acl::from_metadata(br#"{"$acl":{"$r":5}}"#);
        assert!(!may(&Principal::Anonymous, Access::Read, "s", &damaged, &DefaultAcls::builtin()));
        assert_eq!(Acl::from_metadata(br#"{"$maxCount":3}"#), Acl::default());
    }
}
