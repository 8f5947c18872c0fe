//! The console's sign-in: an access key id and its secret, checked against the keyring, give a
//! session cookie `kiln_ui=<key id>.<expiry>.<mac>` where the MAC is an HMAC-SHA256 under the key's
//! own secret. Nothing is stored server-side, so every replica sharing the keys accepts it, and
//! deleting the key ends its sessions.

use kiln_api::sigv4::{constant_time_eq, hmac};

use crate::keys::Keyring;

/// The cookie's name.
pub const COOKIE: &str = "kiln_ui";
/// How long a session lasts.
pub const LIFETIME_SECONDS: i64 = 12 * 3600;

/// A signed-in user: the account the key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub account: String,
    pub access_key_id: String,
}

fn mac(secret: &str, key_id: &str, expiry: i64) -> String {
    hex::encode(hmac(secret.as_bytes(), format!("kiln-ui|{key_id}|{expiry}").as_bytes()))
}

/// Signs in with a key id and secret: the cookie's value, or `None` when they do not match.
pub fn sign_in(keys: &Keyring, key_id: &str, secret: &str, now: i64) -> Option<String> {
    let key = keys.get(key_id.trim())?;
    if !constant_time_eq(key.secret_access_key.as_bytes(), secret.trim().as_bytes()) {
        return None;
    }
    let expiry = now + LIFETIME_SECONDS;
    Some(format!(
        "{}.{expiry}.{}",
        key.access_key_id,
        mac(&key.secret_access_key, &key.access_key_id, expiry)
    ))
}

/// The session a cookie value stands for, if it is genuine, unexpired and its key still exists.
pub fn verify(keys: &Keyring, value: &str, now: i64) -> Option<Session> {
    let mut parts = value.splitn(3, '.');
    let (key_id, expiry, given) = (parts.next()?, parts.next()?, parts.next()?);
    let expiry: i64 = expiry.parse().ok()?;
    if expiry <= now {
        return None;
    }
    let key = keys.get(key_id)?;
    let want = mac(&key.secret_access_key, key_id, expiry);
    constant_time_eq(want.as_bytes(), given.as_bytes()).then_some(Session {
        account: key.account_id,
        access_key_id: key.access_key_id,
    })
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{AccessKey, Keyring, append_key, delete_key, keys_path};

    #[test]
    fn a_session_needs_the_secret_and_ends_with_its_time_or_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = keys_path(dir.path());
        let key = AccessKey {
            access_key_id: "KID".into(),
            secret_access_key: "s3cret".into(),
            account_id: "111111111111".into(),
        };
        append_key(&path, &key).unwrap();
        let keys = Keyring::load(&path).unwrap();
        assert!(sign_in(&keys, "KID", "wrong", 100).is_none());
        assert!(sign_in(&keys, "NOPE", "s3cret", 100).is_none());
        let c = sign_in(&keys, "KID", "s3cret", 100).unwrap();
        let s = verify(&keys, &c, 200).unwrap();
        assert_eq!(s.account, "111111111111");
        assert!(verify(&keys, &c, 100 + LIFETIME_SECONDS).is_none());
        // Tampered expiry or MAC.
        let later = c.replacen(
            &format!(".{}.", 100 + LIFETIME_SECONDS),
            &format!(".{}.", 999_999_999),
            1,
        );
        assert!(verify(&keys, &later, 200).is_none());
        assert!(verify(&keys, &format!("{c}0"), 200).is_none());
        // Deleting the key ends its sessions.
        assert!(delete_key(&path, "KID").unwrap());
        assert!(verify(&keys, &c, 200).is_none());
        assert_eq!(cookie("a=1; kiln_ui=x.y.z; b=2", COOKIE), Some("x.y.z"));
        assert_eq!(cookie("a=1", COOKIE), None);
    }
}
