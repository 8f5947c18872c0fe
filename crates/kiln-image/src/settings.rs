//! The `[[registries]]` table of `kiln.toml`: credentials, plain HTTP and mirrors per registry host.
//!
//! ```toml
//! [[registries]]
//! host = "*.dkr.ecr.*.amazonaws.com"   # a glob over the registry's host[:port]
//! mirror = "127.0.0.1:5000"            # served by this registry instead
//! insecure = true                      # plain HTTP (to the mirror, here)
//!
//! [[registries]]
//! host = "registry.example:5000"
//! username = "kiln"
//! password = "s3cret"
//! ```
//!
//! Rules, checked once when the table is read:
//! - `host` is matched against the registry part of the image reference as written, `host[:port]`
//!   (`registry-1.docker.io` for Docker Hub names; `docker.io` matches those too), without regard to
//!   case. `*` matches any run of characters (dots included), `?` one character. A pattern without a
//!   port matches only references without one: write `localhost:*` for any port.
//! - The first entry whose `host` matches wins; a reference no entry matches is pulled anonymously
//!   over HTTPS, except from a loopback registry (`localhost`, `127.x.x.x`, `[::1]`), which Docker
//!   and kiln reach over plain HTTP unless an entry says `insecure = false`.
//! - `mirror` sends the requests for matching references to another registry (same repository path,
//!   same tag or digest). The entry's `username`, `password` and `insecure` then apply to the mirror:
//!   they describe the connection kiln makes. Mirrors are not chained.
//! - `username` and `password` go together. They are sent as Basic credentials to a registry that
//!   asks for Basic auth, and to the token service a registry names in its Bearer challenge.

use std::fmt;

use serde::Deserialize;

use crate::reference::{DOCKER_HUB, Reference};

/// One `[[registries]]` entry as written in `kiln.toml`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// A glob over registry hosts (`host[:port]`), e.g. `*.dkr.ecr.*.amazonaws.com` or `registry.example:5000`.
    pub host: String,
    /// User name for Basic auth and for Bearer token requests.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (or token) that goes with `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// Plain HTTP instead of HTTPS; defaults to true for loopback registries only.
    #[serde(default)]
    pub insecure: Option<bool>,
    /// `host[:port]` of a registry that serves the matching registries' images instead.
    #[serde(default)]
    pub mirror: Option<String>,
}

// Hand-written so that a password never reaches a log line.
impl fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("insecure", &self.insecure)
            .field("mirror", &self.mirror)
            .finish()
    }
}

/// Why a `[[registries]]` table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[[registries]] entry {index} (host = {host:?}): {reason}")]
pub struct SettingsError {
    /// 1-based position of the entry in the table.
    pub index: usize,
    /// The entry's `host` pattern.
    pub host: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

/// The checked `[[registries]]` table; deserialize it directly (`#[serde(default)] registries: Registries`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "Vec<RegistrySettings>")]
pub struct Registries {
    entries: Vec<RegistrySettings>,
}

/// Basic credentials for a registry or its token service.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}:<redacted>)", self.username)
    }
}

/// Where and how kiln talks to the registry that serves one reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// The registry named in the reference (what error messages call "registry").
    pub registry: String,
    /// The `host[:port]` actually contacted: the mirror, or the registry itself.
    pub host: String,
    pub insecure: bool,
    pub credentials: Option<Credentials>,
}

impl Endpoint {
    /// `https://host/v2/` (or `http://`), the root of the Registry HTTP API v2.
    pub fn api_root(&self) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{}/v2/", self.host)
    }

    /// The registry as error messages name it, with the mirror when there is one.
    pub fn describe(&self) -> String {
        if self.host == self.registry {
            self.host.clone()
        } else {
            format!("{} (mirror of {})", self.host, self.registry)
        }
    }
}

impl TryFrom<Vec<RegistrySettings>> for Registries {
    type Error = SettingsError;

    fn try_from(entries: Vec<RegistrySettings>) -> Result<Self, SettingsError> {
        Self::new(entries)
    }
}

impl Registries {
    /// Checks the entries (see the module documentation for the rules).
    pub fn new(entries: Vec<RegistrySettings>) -> Result<Self, SettingsError> {
        for (i, entry) in entries.iter().enumerate() {
            let refuse = |reason: String| SettingsError {
                index: i + 1,
                host: entry.host.clone(),
                reason,
            };
            if entry.host.trim().is_empty() {
                return Err(refuse(
                    "`host` is empty; write a host[:port] or a glob such as \"*.example.com\"".into(),
                ));
            }
            if entry.host.contains(['/', ' ']) {
                return Err(refuse(
                    "`host` is a registry's host[:port], without scheme or path".into(),
                ));
            }
            match (&entry.username, &entry.password) {
                (Some(_), None) => return Err(refuse("`username` is set without `password`".into())),
                (None, Some(_)) => return Err(refuse("`password` is set without `username`".into())),
                _ => {}
            }
            if let Some(mirror) = &entry.mirror {
                // A mirror is a registry host, so it must read as one in an image reference.
                if let Err(e) = Reference::parse(&format!("{mirror}/probe")) {
                    return Err(refuse(format!(
                        "`mirror` {mirror:?} is not a registry host[:port] ({})",
                        e.reason
                    )));
                }
                if !mirror.contains(['.', ':']) && mirror != "localhost" {
                    return Err(refuse(format!("`mirror` {mirror:?} is not a registry host[:port]")));
                }
            }
        }
        Ok(Self { entries })
    }

    /// The first entry whose `host` glob matches `registry`.
    pub fn find(&self, registry: &str) -> Option<&RegistrySettings> {
        self.entries.iter().find(|entry| {
            glob_match(&entry.host, registry) || (registry == DOCKER_HUB && glob_match(&entry.host, "docker.io"))
        })
    }

    /// Where to send the requests for `reference`, applying the first matching entry.
    pub(crate) fn endpoint(&self, reference: &Reference) -> Endpoint {
        let registry = reference.registry().to_owned();
        let entry = self.find(&registry);
        let host = entry.and_then(|e| e.mirror.clone()).unwrap_or_else(|| registry.clone());
        let insecure = entry.and_then(|e| e.insecure).unwrap_or_else(|| is_loopback(&host));
        let credentials = entry.and_then(|e| match (&e.username, &e.password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        });
        Endpoint {
            registry,
            host,
            insecure,
            credentials,
        }
    }
}

/// `localhost`, `127.x.x.x` and `[::1]`, with or without a port.
fn is_loopback(host: &str) -> bool {
    let name = if host.starts_with('[') {
        host.split_once(']').map_or(host, |(name, _)| &name[1..])
    } else {
        host.split_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name == "::1"
        || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Case-insensitive glob: `*` matches any run of characters, `?` exactly one.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let text: Vec<char> = text.to_ascii_lowercase().chars().collect();
    // Iterative matching with backtracking to the last '*': linear in practice, no recursion.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str) -> RegistrySettings {
        RegistrySettings {
            host: host.into(),
            ..Default::default()
        }
    }

    fn reference(text: &str) -> Reference {
        Reference::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn globs_over_hosts() {
        assert!(glob_match(
            "*.dkr.ecr.*.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        ));
        assert!(!glob_match(
            "*.dkr.ecr.*.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:443"
        ));
        assert!(glob_match("registry.example:5000", "Registry.Example:5000"));
        assert!(!glob_match("registry.example", "registry.example:5000"));
        assert!(glob_match("localhost:*", "localhost:5000"));
        assert!(glob_match("127.0.0.?:5000", "127.0.0.1:5000"));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("a*b*c", "aXbY"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn first_matching_entry_wins() -> Result<(), SettingsError> {
        let mut ecr = entry("*.dkr.ecr.*.amazonaws.com");
        ecr.mirror = Some("127.0.0.1:5000".into());
        let mut private = entry("registry.example:5000");
        private.username = Some("kiln".into());
        private.password = Some("pw".into());
        let mut any = entry("*");
        any.insecure = Some(true);
        let registries = Registries::new(vec![ecr, private, any])?;

        let e = registries.endpoint(&reference("1.dkr.ecr.eu-west-1.amazonaws.com/train:1"));
        assert_eq!(e.host, "127.0.0.1:5000");
        assert_eq!(e.registry, "1.dkr.ecr.eu-west-1.amazonaws.com");
        assert!(e.insecure, "a loopback mirror defaults to plain HTTP");
        assert_eq!(e.api_root(), "http://127.0.0.1:5000/v2/");
        assert_eq!(
            e.describe(),
            "127.0.0.1:5000 (mirror of 1.dkr.ecr.eu-west-1.amazonaws.com)"
        );

        let e = registries.endpoint(&reference("registry.example:5000/a/b"));
        assert_eq!(e.credentials.map(|c| c.username), Some("kiln".into()));
        assert!(
            !e.insecure,
            "the first match has no `insecure`; the later `*` entry does not apply"
        );

        let e = registries.endpoint(&reference("other.example/x"));
        assert!(e.insecure);
        assert_eq!(e.api_root(), "http://other.example/v2/");
        Ok(())
    }

    #[test]
    fn defaults_without_entries() {
        let registries = Registries::default();
        let e = registries.endpoint(&reference("busybox"));
        assert_eq!(e.api_root(), "https://registry-1.docker.io/v2/");
        assert_eq!(e.credentials, None);
        for loopback in ["localhost:5000/x", "127.0.0.1:5000/x", "[::1]:5000/x", "localhost/x"] {
            assert!(registries.endpoint(&reference(loopback)).insecure, "{loopback}");
        }
        assert!(!registries.endpoint(&reference("10.0.0.1:5000/x")).insecure);
    }

    #[test]
    fn docker_io_matches_hub_names() -> Result<(), SettingsError> {
        let mut hub = entry("docker.io");
        hub.username = Some("me".into());
        hub.password = Some("token".into());
        let registries = Registries::new(vec![hub])?;
        assert!(registries.endpoint(&reference("busybox")).credentials.is_some());
        Ok(())
    }

    #[test]
    fn bad_entries_are_refused_with_their_position() {
        let mut lonely = entry("a.example");
        lonely.username = Some("u".into());
        let err = Registries::new(vec![entry("ok.example"), lonely]).err();
        assert_eq!(err.as_ref().map(|e| e.index), Some(2));
        assert!(
            err.map(|e| e.to_string())
                .unwrap_or_default()
                .contains("without `password`")
        );

        assert!(Registries::new(vec![entry("")]).is_err());
        assert!(Registries::new(vec![entry("https://r.example")]).is_err());
        let mut mirror = entry("*.example");
        mirror.mirror = Some("http://127.0.0.1:5000".into());
        assert!(Registries::new(vec![mirror]).is_err());
        let mut mirror = entry("*.example");
        mirror.mirror = Some("mirror".into());
        assert!(Registries::new(vec![mirror]).is_err());
    }

    #[test]
    fn reads_from_toml_and_hides_passwords() -> Result<(), Box<dyn std::error::Error>> {
        #[derive(Deserialize)]
        struct Config {
            #[serde(default)]
            registries: Registries,
        }
        let config: Config = toml::from_str(
            r#"
            [[registries]]
            host = "*.dkr.ecr.*.amazonaws.com"
            mirror = "localhost:5000"

            [[registries]]
            host = "registry.example:5000"
            username = "kiln"
            password = "s3cret"
            insecure = true
            "#,
        )?;
        let found = config.registries.find("registry.example:5000");
        assert_eq!(found.and_then(|e| e.insecure), Some(true));
        assert!(!format!("{config_debug:?}", config_debug = config.registries).contains("s3cret"));

        let bad: Result<Config, _> = toml::from_str("[[registries]]\nhost = \"x.example\"\npassword = \"p\"\n");
        assert!(
            bad.err()
                .map(|e| e.to_string())
                .unwrap_or_default()
                .contains("without `username`")
        );
        let unknown: Result<Config, _> = toml::from_str("[[registries]]\nhost = \"x.example\"\nuser = \"p\"\n");
        assert!(unknown.is_err(), "a misspelt key is an error, not silently ignored");
        Ok(())
    }
}
