//! A Registry HTTP API v2 client for one repository: manifests, blobs, and the auth dance.
//!
//! Requests go out anonymously first. A `401` carries the registry's challenge: `Bearer` sends
//! kiln to the named token service (with the configured credentials as Basic auth, if any) for a
//! token, `Basic` makes kiln send the credentials; the request is then repeated once. The same
//! happens on any later `401` (a token that expired during a long download).

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::auth::{Challenge, TokenResponse, parse_challenges};
use crate::digest::Digest;
use crate::error::{Context, PullError, chain};
use crate::manifest::{Descriptor, MANIFEST_ACCEPT};
use crate::settings::{Credentials, Endpoint};

/// Manifests are small; registries themselves refuse ones over 4 MiB.
const MANIFEST_LIMIT: usize = 4 << 20;
/// Config blobs hold the build history; tens of kB in practice.
pub(crate) const CONFIG_LIMIT: usize = 32 << 20;

/// The HTTP client all pulls share (connection pool, TLS roots).
pub(crate) fn http_client() -> Result<reqwest::Client, PullError> {
    reqwest::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        // A stalled transfer fails instead of hanging the job; big layers still take as long as they need.
        .read_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| PullError::Client(chain(&e)))
}

enum Auth {
    Basic(Credentials),
    Bearer(String),
}

/// Requests for one repository of one registry, with the authorization obtained so far.
pub(crate) struct Session<'a> {
    http: &'a reqwest::Client,
    endpoint: Endpoint,
    repository: String,
    context: Context,
    auth: Option<Auth>,
}

/// A manifest as the registry sent it.
pub(crate) struct FetchedManifest {
    pub digest: Digest,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl<'a> Session<'a> {
    pub fn new(http: &'a reqwest::Client, endpoint: Endpoint, repository: &str, context: Context) -> Self {
        Self {
            http,
            endpoint,
            repository: repository.to_owned(),
            context,
            auth: None,
        }
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}{}/{kind}/{reference}", self.endpoint.api_root(), self.repository)
    }

    /// The digest a tag points at, from a `HEAD` (which registries do not count as a pull); `None`
    /// when the registry does not say, so that the caller falls back to a `GET`.
    pub async fn resolve(&mut self, tag: &str) -> Result<Option<Digest>, PullError> {
        let response = self
            .send(Method::HEAD, &self.url("manifests", tag), Some(MANIFEST_ACCEPT))
            .await?;
        if !response.status().is_success() {
            // A HEAD answer has no body to explain itself; the GET that follows will.
            return Ok(None);
        }
        Ok(docker_content_digest(response.headers()))
    }

    /// A manifest by tag or digest, checked against the digest when one is expected (or announced
    /// by the registry in `Docker-Content-Digest`).
    pub async fn manifest(&mut self, reference: &str, expected: Option<&Digest>) -> Result<FetchedManifest, PullError> {
        let what = match expected {
            Some(_) => format!("manifest {reference}"),
            None => format!("manifest of tag '{reference}'"),
        };
        let response = self
            .send(Method::GET, &self.url("manifests", reference), Some(MANIFEST_ACCEPT))
            .await?;
        let response = self.check(response).await?;
        let announced = docker_content_digest(response.headers());
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = self.read_limited(response, MANIFEST_LIMIT, &what).await?;
        let digest = Digest::of(&body);
        if let Some(want) = expected.or(announced.as_ref())
            && *want != digest
        {
            return Err(self.context.mismatch(what, want.to_string(), digest.to_string()));
        }
        Ok(FetchedManifest {
            digest,
            content_type,
            body,
        })
    }

    /// A small blob (the image config), verified.
    pub async fn small_blob(&mut self, descriptor: &Descriptor, what: &str) -> Result<Vec<u8>, PullError> {
        let limit = CONFIG_LIMIT.min(usize::try_from(descriptor.size).unwrap_or(usize::MAX));
        let response = self
            .send(Method::GET, &self.url("blobs", &descriptor.digest.to_string()), None)
            .await?;
        let response = self.check(response).await?;
        let body = self.read_limited(response, limit, what).await?;
        let digest = Digest::of(&body);
        if digest != descriptor.digest {
            return Err(self
                .context
                .mismatch(what.into(), descriptor.digest.to_string(), digest.to_string()));
        }
        Ok(body)
    }

    /// Streams a blob into `file`, verifying its size and digest; `on_bytes` sees the running total.
    pub async fn download(
        &mut self,
        descriptor: &Descriptor,
        what: &str,
        file: &mut tokio::fs::File,
        path: &std::path::Path,
        mut on_bytes: impl FnMut(u64),
    ) -> Result<(), PullError> {
        let response = self
            .send(Method::GET, &self.url("blobs", &descriptor.digest.to_string()), None)
            .await?;
        let mut response = self.check(response).await?;
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        let expected = || format!("{} ({} bytes)", descriptor.digest, descriptor.size);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.context.unreachable(format!("downloading {what}: {}", chain(&e))))?
        {
            done += chunk.len() as u64;
            if done > descriptor.size {
                return Err(self.context.mismatch(
                    what.into(),
                    expected(),
                    format!("more than {} bytes", descriptor.size),
                ));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(PullError::cache(path))?;
            on_bytes(done);
        }
        file.flush().await.map_err(PullError::cache(path))?;
        let digest = Digest::from_hasher(hasher);
        if digest != descriptor.digest || done != descriptor.size {
            return Err(self
                .context
                .mismatch(what.into(), expected(), format!("{digest} ({done} bytes)")));
        }
        Ok(())
    }

    /// Sends a request with the authorization obtained so far; on `401`, answers the challenge and
    /// sends it once more. The caller maps the final status.
    async fn send(&mut self, method: Method, url: &str, accept: Option<&str>) -> Result<Response, PullError> {
        let response = self.attempt(method.clone(), url, accept).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenges: Vec<Challenge> = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let answer = answer(response).await;
        self.authenticate(&challenges, answer).await?;
        self.attempt(method, url, accept).await
    }

    async fn attempt(&self, method: Method, url: &str, accept: Option<&str>) -> Result<Response, PullError> {
        let mut request = self.http.request(method, url);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        request = match &self.auth {
            Some(Auth::Basic(c)) => request.basic_auth(&c.username, Some(&c.password)),
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            None => request,
        };
        request.send().await.map_err(|e| self.context.unreachable(chain(&e)))
    }

    /// Obtains the authorization a `401` asked for, or says why there is none.
    async fn authenticate(&mut self, challenges: &[Challenge], answer: String) -> Result<(), PullError> {
        let credentials = self.endpoint.credentials.clone();
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service, scope } => Some((realm, service, scope)),
            _ => None,
        });
        if let Some((realm, service, scope)) = bearer {
            let token = self.token(realm, service.as_deref(), scope.as_deref()).await?;
            self.auth = Some(Auth::Bearer(token));
            return Ok(());
        }
        if challenges.contains(&Challenge::Basic) {
            return match (credentials, &self.auth) {
                // The credentials were sent and refused.
                (Some(_), Some(Auth::Basic(_))) | (None, _) => Err(self.context.denied(answer, self.hint())),
                (Some(credentials), _) => {
                    self.auth = Some(Auth::Basic(credentials));
                    Ok(())
                }
            };
        }
        let offered: Vec<String> = challenges
            .iter()
            .filter_map(|c| match c {
                Challenge::Other(scheme) => Some(scheme.clone()),
                _ => None,
            })
            .collect();
        let hint = if offered.is_empty() {
            "the registry did not say how to authenticate (no WWW-Authenticate challenge)".to_owned()
        } else {
            format!(
                "the registry asks for {}, which kiln does not speak (it speaks Bearer and Basic)",
                offered.join(", ")
            )
        };
        Err(self.context.denied(answer, hint))
    }

    /// A token from the service named in a Bearer challenge.
    async fn token(&self, realm: &str, service: Option<&str>, scope: Option<&str>) -> Result<String, PullError> {
        let mut url = reqwest::Url::parse(realm).map_err(|e| {
            self.context
                .registry(format!("a Bearer challenge with an invalid realm '{realm}' ({e})"))
        })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            let default_scope = format!("repository:{}:pull", self.repository);
            query.append_pair("scope", scope.unwrap_or(&default_scope));
        }
        let mut request = self.http.get(url);
        if let Some(c) = &self.endpoint.credentials {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        let token_service = |cause: String| format!("its token service {realm}: {cause}");
        let response = request
            .send()
            .await
            .map_err(|e| self.context.unreachable(token_service(chain(&e))))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.context.denied(token_service(answer(response).await), self.hint()));
        }
        if !status.is_success() {
            return Err(self.context.registry(token_service(answer(response).await)));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.context.unreachable(token_service(chain(&e))))?;
        serde_json::from_slice::<TokenResponse>(&body)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| self.context.registry(token_service("an answer without a token".into())))
    }

    /// What to do about a refusal: depends on whether kiln had credentials to offer.
    fn hint(&self) -> String {
        match &self.endpoint.credentials {
            Some(c) => format!(
                "the credentials of user '{}' configured for {} in kiln.toml's [[registries]] were refused \
                 or do not allow pulling this repository",
                c.username, self.endpoint.host
            ),
            None => format!(
                "the repository may not exist, or it needs credentials: set username and password for \
                 host \"{}\" in kiln.toml's [[registries]]",
                self.endpoint.registry
            ),
        }
    }

    /// Maps a final status to success or the error that describes it.
    async fn check(&self, response: Response) -> Result<Response, PullError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let answer = answer(response).await;
        Err(match status {
            StatusCode::NOT_FOUND => self.context.not_found(answer),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => self.context.denied(answer, self.hint()),
            _ => self.context.registry(answer),
        })
    }

    async fn read_limited(&self, mut response: Response, limit: usize, what: &str) -> Result<Vec<u8>, PullError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.context.unreachable(format!("reading {what}: {}", chain(&e))))?
        {
            if body.len() + chunk.len() > limit {
                return Err(self.context.invalid(what, format!("it is larger than {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn docker_content_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The registry's answer in a line: the status and the codes and messages of its error body
/// (`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`), or its text.
async fn answer(response: Response) -> String {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    describe_answer(status, &body)
}

pub(crate) fn describe_answer(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    // Docker Hub's token service answers `{"details":"incorrect username or password"}`.
    #[derive(serde::Deserialize)]
    struct Details {
        details: String,
    }
    let status_text = match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    let detail = if let Ok(errors) = serde_json::from_slice::<Errors>(body)
        && !errors.errors.is_empty()
    {
        let lines: Vec<String> = errors
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .collect();
        lines.join("; ")
    } else if let Ok(details) = serde_json::from_slice::<Details>(body) {
        details.details
    } else {
        let text = String::from_utf8_lossy(body);
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.chars().count() > 200 {
            format!("{}…", line.chars().take(200).collect::<String>())
        } else {
            line
        }
    };
    if detail.is_empty() {
        status_text
    } else {
        format!("{status_text} ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_a_line() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"nope"}}]}"#;
        assert_eq!(
            describe_answer(StatusCode::NOT_FOUND, body),
            "HTTP 404 Not Found (MANIFEST_UNKNOWN: manifest unknown)"
        );
        let two = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"},{"code":"DENIED"}]}"#;
        assert_eq!(
            describe_answer(StatusCode::UNAUTHORIZED, two),
            "HTTP 401 Unauthorized (UNAUTHORIZED: authentication required; DENIED)"
        );
        assert_eq!(
            describe_answer(
                StatusCode::UNAUTHORIZED,
                br#"{"details":"incorrect username or password"}"#
            ),
            "HTTP 401 Unauthorized (incorrect username or password)"
        );
        assert_eq!(
            describe_answer(StatusCode::BAD_GATEWAY, b"<html>\n  bad gateway\n</html>"),
            "HTTP 502 Bad Gateway (<html> bad gateway </html>)"
        );
        assert_eq!(describe_answer(StatusCode::NOT_FOUND, b""), "HTTP 404 Not Found");
        assert!(describe_answer(StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(1000).as_bytes()).ends_with("…)"));
    }
}
