//! `WWW-Authenticate` challenges (RFC 7235) as registries send them, and the token service's answer.
//!
//! Registries answer an unauthenticated request with `401` and either
//! `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:x:pull"`
//! (ask the token service at `realm` for a token, then send `Authorization: Bearer <token>`) or
//! `Basic realm="..."` (send the credentials with every request).

use serde::Deserialize;

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
    /// A scheme kiln does not speak (kept so that errors can name it).
    Other(String),
}

/// The token service's JSON answer; Docker's spec names the field `token`, OAuth2 `access_token`.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<String> {
        self.token.or(self.access_token).filter(|t| !t.is_empty())
    }
}

/// Parses every challenge in one header value, e.g. `Basic realm="x", Bearer realm="y",scope="z"`.
/// Challenges it cannot make sense of are skipped rather than failing the whole header.
pub(crate) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut lexer = Lexer {
        text: header.as_bytes(),
        pos: 0,
    };
    let mut challenges = Vec::new();
    loop {
        lexer.skip(|b| b == b',' || b.is_ascii_whitespace());
        let Some(scheme) = lexer.token() else { break };
        let mut params: Vec<(String, String)> = Vec::new();
        loop {
            lexer.skip(|b| b.is_ascii_whitespace());
            let before = lexer.pos;
            let Some(name) = lexer.token() else {
                // A token68 (`Basic dXNlcg==`) or stray punctuation: skip to the next comma.
                lexer.skip(|b| b != b',');
                if lexer.pos == before {
                    break;
                }
                lexer.skip(|b| b == b',');
                continue;
            };
            lexer.skip(|b| b.is_ascii_whitespace());
            if lexer.peek() != Some(b'=') {
                // A token not followed by '=' is the next challenge's scheme.
                lexer.pos = before;
                break;
            }
            lexer.pos += 1;
            lexer.skip(|b| b.is_ascii_whitespace());
            let value = if lexer.peek() == Some(b'"') {
                lexer.quoted()
            } else {
                lexer.token().unwrap_or_default()
            };
            params.push((name.to_ascii_lowercase(), value));
            lexer.skip(|b| b.is_ascii_whitespace());
            if lexer.peek() == Some(b',') {
                lexer.pos += 1;
            }
        }
        let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let challenge = match scheme.to_ascii_lowercase().as_str() {
            "bearer" => match param("realm") {
                Some(realm) => Challenge::Bearer {
                    realm,
                    service: param("service"),
                    scope: param("scope"),
                },
                None => Challenge::Other("Bearer without realm".into()),
            },
            "basic" => Challenge::Basic,
            _ => Challenge::Other(scheme),
        };
        challenges.push(challenge);
    }
    challenges
}

struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip(&mut self, what: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&what) {
            self.pos += 1;
        }
    }

    /// An RFC 7230 token (`tchar`s).
    fn token(&mut self) -> Option<String> {
        let start = self.pos;
        self.skip(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        (self.pos > start).then(|| String::from_utf8_lossy(&self.text[start..self.pos]).into_owned())
    }

    /// A quoted-string starting at the current '"', with backslash escapes; an unterminated one runs to the end.
    fn quoted(&mut self) -> String {
        let mut value = Vec::new();
        self.pos += 1;
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(escaped) = self.peek() {
                        value.push(escaped);
                        self.pos += 1;
                    }
                }
                _ => value.push(b),
            }
        }
        String::from_utf8_lossy(&value).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.into(),
            service: service.map(Into::into),
            scope: scope.map(Into::into),
        }
    }

    #[test]
    fn docker_hub_bearer_challenge() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse_challenges(header),
            vec![bearer(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:library/busybox:pull")
            )]
        );
    }

    #[test]
    fn basic_challenge_and_case() {
        assert_eq!(parse_challenges(r#"Basic realm="kiln-test""#), vec![Challenge::Basic]);
        assert_eq!(parse_challenges(r#"basic REALM="x""#), vec![Challenge::Basic]);
        assert_eq!(
            parse_challenges(r#"BEARER Realm="https://a/t", Service=reg"#),
            vec![bearer("https://a/t", Some("reg"), None)]
        );
    }

    #[test]
    fn several_challenges_in_one_header() {
        let header = r#"Basic realm="x", Bearer realm="https://a/t",scope="repository:a/b:pull,push", Negotiate"#;
        assert_eq!(
            parse_challenges(header),
            vec![
                Challenge::Basic,
                bearer("https://a/t", None, Some("repository:a/b:pull,push")),
                Challenge::Other("Negotiate".into())
            ]
        );
    }

    #[test]
    fn quoted_escapes_spaces_and_garbage() {
        assert_eq!(
            parse_challenges(r#"Bearer realm = "https://a/t?x=\"y\"" , service="s""#),
            vec![bearer(r#"https://a/t?x="y""#, Some("s"), None)]
        );
        // A token68 is not valid in a challenge; it must not hide the scheme before it.
        assert_eq!(parse_challenges("Basic dXNlcjpwYXNz").first(), Some(&Challenge::Basic));
        assert_eq!(
            parse_challenges("Bearer scope=\"x\""),
            vec![Challenge::Other("Bearer without realm".into())]
        );
        assert_eq!(parse_challenges(""), vec![]);
        assert_eq!(parse_challenges("  ,, "), vec![]);
        // An unterminated quote must not loop or panic.
        assert_eq!(
            parse_challenges("Bearer realm=\"https://a"),
            vec![bearer("https://a", None, None)]
        );
        assert_eq!(parse_challenges("=\"\"=,"), vec![]);
    }

    #[test]
    fn token_response_fields() -> Result<(), serde_json::Error> {
        let docker: TokenResponse = serde_json::from_str(r#"{"token":"abc","expires_in":300}"#)?;
        assert_eq!(docker.into_token(), Some("abc".into()));
        let oauth: TokenResponse = serde_json::from_str(r#"{"access_token":"def"}"#)?;
        assert_eq!(oauth.into_token(), Some("def".into()));
        let empty: TokenResponse = serde_json::from_str(r#"{"token":""}"#)?;
        assert_eq!(empty.into_token(), None);
        Ok(())
    }
}
