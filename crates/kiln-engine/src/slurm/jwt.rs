//! The tokens slurmrestd takes (`auth/jwt`): HS256 JWTs with the claims `iat`, `exp` and `sun`
//! (the Slurm user), signed with the cluster's key (`AuthAltParameters=jwt_key=...`). kiln mints
//! short-lived ones itself, as `scontrol token` would, so no long-lived token has to be stored.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signed token for `user`, valid from `now` for `lifetime_seconds`.
pub fn mint(key: &[u8], user: &str, now: i64, lifetime_seconds: i64) -> String {
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    // Written out rather than through a map, so the bytes signed do not depend on serde_json's
    // key order.
    let user = serde_json::Value::from(user);
    let claims = format!(r#"{{"exp":{},"iat":{now},"sun":{user}}}"#, now + lifetime_seconds);
    let signing_input = format!("{}.{}", encode(header.as_bytes()), encode(claims.as_bytes()));
    // HMAC takes keys of any length, so this cannot fail; an empty key is refused when settings load.
    let signature = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(signing_input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    };
    format!("{signing_input}.{}", encode(&signature))
}

/// The `exp` claim of a token (to warn about a fixed token that is about to expire).
pub fn expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64_simd::URL_SAFE_NO_PAD.decode_to_vec(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_i64()
}

fn encode(bytes: &[u8]) -> String {
    base64_simd::URL_SAFE_NO_PAD.encode_to_string(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_three_base64url_parts_with_the_claims() {
        let t = mint(b"secret", "kiln", 1_700_000_000, 600);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(
            t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{t}"
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&base64_simd::URL_SAFE_NO_PAD.decode_to_vec(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"iat": 1_700_000_000, "exp": 1_700_000_600, "sun": "kiln"})
        );
        assert_eq!(expiry(&t), Some(1_700_000_600));
        assert_eq!(expiry("not a token"), None);
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_header_and_claims() {
        // Reference computed independently (Python: hmac.new(b"secret", signing_input, sha256)).
        let t = mint(b"secret", "root", 1000, 60);
        let (signing_input, signature) = t.rsplit_once('.').unwrap();
        assert_eq!(
            signing_input,
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjEwNjAsImlhdCI6MTAwMCwic3VuIjoicm9vdCJ9"
        );
        assert_eq!(signature, "fceSg1v08sotI7-kAckYMHj-ywEviV9aR6tejzpx4M4");
        // Another key signs differently.
        assert_ne!(mint(b"other", "root", 1000, 60), t);
    }
}
