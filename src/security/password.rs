//! Passwords: argon2id with OWASP's recommended parameters (19 MiB of
//! memory, 2 passes, 1 lane), a random salt per hash, stored as PHC
//! strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), so that the
//! parameters can be raised later without breaking stored hashes.
//!
//! Both functions take tens of milliseconds by design: call them on a
//! blocking thread (`tokio::task::spawn_blocking`).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The longest password accepted, in bytes: hashing cost grows with it, and
/// no passphrase needs more.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// OWASP's argon2id recommendation (Password Storage Cheat Sheet):
/// m=19456 KiB, t=2, p=1.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with a fresh random salt into a PHC string.
pub fn hash(password: &str) -> String {
    // 16 random bytes from the operating system's generator (uuid's v4
    // draws them from it), the salt length argon2's authors recommend.
    let random = uuid::Uuid::new_v4();
    let hashed = SaltString::encode_b64(random.as_bytes())
        .and_then(|salt| hasher().hash_password(password.as_bytes(), &salt).map(|hash| hash.to_string()));
    // Neither step can fail for a 16-byte salt and the parameters above.
    hashed.unwrap_or_else(|error| unreachable!("argon2 hashing failed: {error}"))
}

/// Whether `password` matches the PHC string `stored`. The comparison is
/// constant-time (the `password-hash` crate compares the outputs so); a
/// malformed `stored` matches nothing.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => hasher().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let first = hash("changeit");
        let second = hash("changeit");
        assert!(first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{first}");
        assert_ne!(first, second);
        assert!(verify("changeit", &first));
        assert!(verify("changeit", &second));
        assert!(!verify("changeit2", &first));
        assert!(!verify("", &first));
        assert!(!verify("changeit", "not a hash"));
    }
}
