//! Access tokens: HS256 JWTs `{"sub","role","exp","iat","gen"}` (spec `auth.md` §3). Verification
//! pins the algorithm, checks the signature and expiry; every malformed shape is simply invalid.
//! `gen` is the user's token generation when the token was issued: signing out everywhere bumps
//! the user's generation, and the account check refuses tokens that carry an older one.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub exp: u64,
    pub iat: u64,
    /// Tokens issued before generations existed have none: they count as generation 0, which
    /// is every user's generation until they first sign out everywhere.
    #[serde(rename = "gen", default)]
    pub generation: u64,
}

/// What a presented token turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// Signature good and not expired: the user id, the expiry (seconds since the epoch) and
    /// the token generation it was issued in.
    Valid {
        user_id: String,
        exp: u64,
        generation: u64,
    },
    /// Signature good but `exp` has been reached.
    Expired {
        user_id: String,
    },
    Invalid,
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKeys {
    pub fn new(secret: &str) -> TokenKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below so that an expired token can be told apart from a bad one.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn issue(
        &self,
        user_id: &str,
        role: &str,
        generation: u64,
        ttl_secs: u64,
    ) -> Result<String, String> {
        let iat = now_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            role: role.to_string(),
            exp: iat + ttl_secs,
            iat,
            generation,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    pub fn verify(&self, token: &str) -> Verified {
        // Cheap shape check before any decoding work; also bounds the input size.
        if token.len() > 4096 || token.split('.').count() != 3 {
            return Verified::Invalid;
        }
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) if data.claims.exp > now_secs() => Verified::Valid {
                user_id: data.claims.sub,
                exp: data.claims.exp,
                generation: data.claims.generation,
            },
            Ok(data) => Verified::Expired {
                user_id: data.claims.sub,
            },
            Err(_) => Verified::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_verify() {
        let k = TokenKeys::new("secret");
        let t = k.issue("usr_1", "authenticated", 3, 60).unwrap();
        assert!(
            matches!(k.verify(&t), Verified::Valid { ref user_id, generation: 3, .. } if user_id == "usr_1")
        );
        assert_eq!(TokenKeys::new("other").verify(&t), Verified::Invalid);
        let expired = k.issue("usr_1", "authenticated", 0, 0).unwrap();
        assert_eq!(
            k.verify(&expired),
            Verified::Expired {
                user_id: "usr_1".into()
            }
        );
    }

    #[test]
    fn malformed_tokens_are_invalid_not_errors() {
        let k = TokenKeys::new("secret");
        let good = k.issue("usr_1", "authenticated", 0, 60).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let none_alg = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims {
                sub: "usr_1".into(),
                role: "admin".into(),
                exp: now_secs() + 60,
                iat: 0,
                generation: 0,
            },
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        for bad in [
            "",
            "garbage",
            "a.b",
            "a.b.c",
            "a.b.!!!",
            "a.b.c.d",
            &format!("{}.{}.", parts[0], parts[1]),
            &format!("{}.e30.{}", parts[0], parts[2]),
            &none_alg,
            &hs512,
            &format!("{}x", good),
            &"a".repeat(5000),
        ] {
            assert_eq!(k.verify(bad), Verified::Invalid, "{bad}");
        }
    }

    #[test]
    fn tokens_without_a_generation_are_generation_zero() {
        // Shaped like the tokens issued before `gen` existed: they must keep working.
        #[derive(Serialize)]
        struct OldClaims {
            sub: String,
            role: String,
            exp: u64,
            iat: u64,
        }
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &OldClaims {
                sub: "usr_1".into(),
                role: "authenticated".into(),
                exp: now_secs() + 60,
                iat: now_secs(),
            },
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(matches!(
            TokenKeys::new("secret").verify(&old),
            Verified::Valid { generation: 0, .. }
        ));
    }
}
