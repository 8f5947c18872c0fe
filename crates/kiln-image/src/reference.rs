//! Image references as Docker reads them: `[registry[:port]/]repository[:tag][@sha256:…]`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Where Docker Hub's short names (`busybox`, `pytorch/pytorch`) are served from.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// A parsed image reference, normalised as Docker does: Docker Hub names get their registry and the
/// `library/` prefix, a reference with neither tag nor digest means `:latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference '{reference}': {reason}")]
pub struct ReferenceError {
    /// The text as given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Reference {
    /// Parses `text`; see the module documentation for the grammar.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        parse(text).map_err(|reason| ReferenceError {
            reference: text.to_owned(),
            reason,
        })
    }

    /// The registry's `host[:port]` (`registry-1.docker.io` for Docker Hub names).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference names one (`latest` when it names neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one; it takes precedence over the tag, as in Docker.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned, else the tag.
    pub(crate) fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_owned(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Self::parse(s)
    }
}

fn parse(text: &str) -> Result<Reference, String> {
    if text.is_empty() {
        return Err("it is empty".into());
    }
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("it contains {c:?}"));
    }
    let (name, digest) = match text.split_once('@') {
        Some((name, digest)) => (name, Some(digest.parse::<Digest>()?)),
        None => (text, None),
    };
    // A ':' after the last '/' starts the tag; one before it belongs to the registry's port.
    let (name, tag) = match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => (&name[..colon], Some(&name[colon + 1..])),
        _ => (name, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    let (registry, repository) = split_registry(name);
    check_registry(registry)?;
    check_repository(repository)?;

    let (registry, repository) = if matches!(registry, "docker.io" | "index.docker.io" | DOCKER_HUB) {
        let repository = if repository.contains('/') {
            repository.to_owned()
        } else {
            format!("library/{repository}")
        };
        (DOCKER_HUB.to_owned(), repository)
    } else {
        (registry.to_owned(), repository.to_owned())
    };
    if registry.len() + 1 + repository.len() > 255 {
        return Err("the name is longer than 255 characters".into());
    }
    let tag = match (tag, &digest) {
        (Some(tag), _) => Some(tag.to_owned()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_owned()),
    };
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

/// Docker's rule: the first component is a registry if it has a '.' or a ':', or is `localhost`
/// (or has upper-case letters, which repositories cannot); otherwise the name is on Docker Hub.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => ("docker.io", name),
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "tag '{tag}' is not 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        ))
    }
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // A bracketed IPv6 address, as in URLs: `[::1]:5000`.
        let Some((address, after)) = rest.split_once(']') else {
            return Err(format!("registry '{registry}' has an unclosed '['"));
        };
        if address.is_empty() || !address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(format!("registry '{registry}' is not a valid IPv6 address"));
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("registry '{registry}' has text after its address")),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |label: &str| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(format!("registry host '{host}' is not a valid host name"));
        }
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("registry port '{port}' is not a number from 1 to 65535"));
    }
    Ok(())
}

/// Path components are lower-case alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository name is empty".into());
    }
    for component in repository.split('/') {
        if !valid_path_component(component) {
            return Err(format!(
                "repository component '{component}' must be lower-case letters and digits, \
                 separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let allowed = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !allowed {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(text).unwrap_or_else(|e| panic!("{e}"));
        (r.registry, r.repository, r.tag, r.digest.map(|d| d.to_string()))
    }

    fn s(text: &str) -> String {
        text.to_owned()
    }

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_hub_short_names() {
        assert_eq!(
            parsed("busybox"),
            (s(DOCKER_HUB), s("library/busybox"), Some(s("latest")), None)
        );
        assert_eq!(
            parsed("busybox:1.36"),
            (s(DOCKER_HUB), s("library/busybox"), Some(s("1.36")), None)
        );
        assert_eq!(
            parsed("pytorch/pytorch:2.1"),
            (s(DOCKER_HUB), s("pytorch/pytorch"), Some(s("2.1")), None)
        );
        assert_eq!(
            parsed("docker.io/busybox"),
            (s(DOCKER_HUB), s("library/busybox"), Some(s("latest")), None)
        );
        assert_eq!(parsed("index.docker.io/a/b:t").1, "a/b");
        assert_eq!(
            Reference::parse("busybox").map(|r| r.to_string()),
            Ok(format!("{DOCKER_HUB}/library/busybox:latest"))
        );
    }

    #[test]
    fn registries_ports_and_localhost() {
        assert_eq!(parsed("localhost/x"), (s("localhost"), s("x"), Some(s("latest")), None));
        assert_eq!(
            parsed("localhost:5000/x"),
            (s("localhost:5000"), s("x"), Some(s("latest")), None)
        );
        assert_eq!(
            parsed("localhost:5000/a/b:v1"),
            (s("localhost:5000"), s("a/b"), Some(s("v1")), None)
        );
        assert_eq!(parsed("127.0.0.1:5000/kiln/test:1").0, "127.0.0.1:5000");
        assert_eq!(parsed("[::1]:5000/x:y").0, "[::1]:5000");
        assert_eq!(
            parsed("123456789012.dkr.ecr.us-east-1.amazonaws.com/my-image:latest"),
            (
                s("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
                s("my-image"),
                Some(s("latest")),
                None
            )
        );
        // Upper case marks a registry (repositories cannot have it).
        assert_eq!(parsed("MyHost/x").0, "MyHost");
    }

    #[test]
    fn digests_with_and_without_tags() {
        assert_eq!(
            parsed(&format!("repo@{DIGEST}")),
            (s(DOCKER_HUB), s("library/repo"), None, Some(s(DIGEST)))
        );
        assert_eq!(
            parsed(&format!("localhost:5000/repo:v2@{DIGEST}")),
            (s("localhost:5000"), s("repo"), Some(s("v2")), Some(s(DIGEST)))
        );
        let r = Reference::parse(&format!("localhost:5000/repo:v2@{DIGEST}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.manifest_reference(), DIGEST);
        assert_eq!(r.to_string(), format!("localhost:5000/repo:v2@{DIGEST}"));
    }

    #[test]
    fn bad_references_say_why() {
        let reason = |text: &str| Reference::parse(text).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(reason("").contains("empty"));
        assert!(reason("Busybox").contains("lower-case"), "{}", reason("Busybox"));
        assert!(reason("busybox:").contains("tag ''"));
        assert!(reason("busybox:-x").contains("tag '-x'"));
        assert!(reason("busybox@sha256:1234").contains("64 lower-case hex"));
        assert!(reason("busybox@md5:1234").contains("not supported"));
        assert!(reason("localhost:0/x").contains("port '0'"));
        assert!(reason("localhost:99999/x").contains("port '99999'"));
        assert!(reason("a..b/x").contains("host name"));
        assert!(reason("reg.example/a//b").contains("component ''"));
        assert!(reason("reg.example/a/-b").contains("component '-b'"));
        assert!(reason("reg.example/").contains("empty"));
        assert!(reason("bad image").contains("' '"));
        assert!(reason(&format!("x/{}", "a".repeat(300))).contains("255"));
        assert!(reason("reg.example/a:b:c").contains("tag") || reason("reg.example/a:b:c").contains("component"));
        assert_eq!(
            Reference::parse("Busybox").err().map(|e| e.reference),
            Some(s("Busybox")),
            "the error keeps the text as given"
        );
    }

    #[test]
    fn separators_in_repository_names() {
        for good in [
            "a",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "a0/b1.c_d",
            "sagemaker-xgboost",
        ] {
            assert!(Reference::parse(&format!("reg.example/{good}")).is_ok(), "{good}");
        }
        for bad in ["a___b", "a._b", "_a", "a.", "a-", "a b"] {
            assert!(Reference::parse(&format!("reg.example/{bad}")).is_err(), "{bad}");
        }
    }
}
