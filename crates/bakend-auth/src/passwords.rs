//! Password hashing: argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane),
//! PHC strings. Hashes written by Bakend v1 (bcrypt `$2b$10$…`, with passwords over 72 bytes
//! first reduced to their raw SHA-512 digest) still verify, and are upgraded on the next login.
//!
//! Hashing costs tens of milliseconds of CPU on purpose: callers run it off the async executor.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha512};

use crate::error::AuthError;

/// Parameters in force, documented in BENCHMARKS.md and docs/auth.md.
pub const ARGON2_M_KIB: u32 = argon2::Params::DEFAULT_M_COST;
pub const ARGON2_T: u32 = argon2::Params::DEFAULT_T_COST;
pub const ARGON2_P: u32 = argon2::Params::DEFAULT_P_COST;

pub fn hash(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("password hashing failed: {e}")))
}

/// Whether `password` matches `stored`, and whether `stored` should be re-hashed (legacy).
pub fn verify(password: &str, stored: &str) -> (bool, bool) {
    if stored.starts_with("$2") {
        let ok = if password.len() > 72 {
            let digest = Sha512::digest(password.as_bytes());
            bcrypt::verify(digest.as_slice(), stored).unwrap_or(false)
        } else {
            bcrypt::verify(password, stored).unwrap_or(false)
        };
        return (ok, ok);
    }
    let ok = PasswordHash::new(stored).ok().is_some_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    });
    (ok, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(verify("correct horse", &h), (true, false));
        assert_eq!(verify("wrong horse", &h), (false, false));
        assert_eq!(verify("x", "garbage"), (false, false));
    }

    #[test]
    fn v1_bcrypt_hashes_verify_and_ask_for_upgrade() {
        let legacy = bcrypt::hash_with_result("password123", 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoB);
        assert_eq!(verify("password123", &legacy), (true, true));
        assert_eq!(verify("password124", &legacy), (false, false));
        let long = "p".repeat(100);
        let digest = Sha512::digest(long.as_bytes());
        let legacy_long = bcrypt::hash_with_result(digest.as_slice(), 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoB);
        assert_eq!(verify(&long, &legacy_long), (true, true));
    }
}
