//! The Bearer token flow as Docker Hub and ECR run it, against a mock registry: every `/v2/` request
//! needs a token from the token service its `401` names. Also what a real registry will not do on
//! request: serve corrupt blobs, lie about digests, or serve manifests kiln cannot use.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use kiln_image::{PullError, Puller, Registries, RegistrySettings};
use serde_json::json;
use support::{Entry, TestResult, sha256};

/// `kiln:pw` as Basic credentials.
const GOOD_BASIC: &str = "Basic a2lsbjpwdw==";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A manifest as the mock serves it.
#[derive(Clone)]
struct Served {
    content_type: String,
    body: Vec<u8>,
    /// The `Docker-Content-Digest` to announce (a wrong one, to test that it is checked).
    announced: String,
}

struct Mock {
    port: u16,
    /// By `(repository, tag or digest)`.
    manifests: HashMap<(String, String), Served>,
    blobs: HashMap<String, Vec<u8>>,
    token_requests: AtomicUsize,
}

impl Mock {
    fn challenge(&self, repository: &str) -> String {
        format!(
            r#"Bearer realm="http://127.0.0.1:{}/token",service="mock-registry",scope="repository:{repository}:pull""#,
            self.port
        )
    }
}

fn respond(status: StatusCode, headers: &[(&str, String)], body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn registry_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": message}]})
        .to_string()
        .into_bytes();
    respond(status, &[("content-type", "application/json".into())], body)
}

async fn handle(State(mock): State<Arc<Mock>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();

    if path == "/token" {
        mock.token_requests.fetch_add(1, Ordering::SeqCst);
        if !query.contains("service=mock-registry") {
            return respond(StatusCode::BAD_REQUEST, &[], b"missing service".to_vec());
        }
        // Anonymous callers get a token for the public repository only, as on Docker Hub.
        let token = match authorization.as_str() {
            GOOD_BASIC => "full",
            "" if query.contains("scope=repository%3Akiln%2Fpublic%3Apull") => "public",
            "" => "none",
            _ => {
                let body = br#"{"details":"incorrect username or password"}"#.to_vec();
                return respond(StatusCode::UNAUTHORIZED, &[], body);
            }
        };
        return respond(
            StatusCode::OK,
            &[],
            json!({"token": token, "expires_in": 300}).to_string().into_bytes(),
        );
    }

    let Some(rest) = path.strip_prefix("/v2/") else {
        return respond(StatusCode::NOT_FOUND, &[], Vec::new());
    };
    let (repository, kind, reference) = match rest.rsplitn(3, '/').collect::<Vec<_>>().as_slice() {
        [reference, kind, repository] => (repository.to_string(), kind.to_string(), reference.to_string()),
        _ => return registry_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such path"),
    };
    let allowed = authorization == "Bearer full" || (authorization == "Bearer public" && repository == "kiln/public");
    if !allowed {
        let body = json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]});
        return respond(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", mock.challenge(&repository))],
            body.to_string().into_bytes(),
        );
    }
    let head = request.method() == Method::HEAD;
    match kind.as_str() {
        "manifests" => match mock.manifests.get(&(repository, reference)) {
            Some(served) => {
                let mut headers = vec![("content-type", served.content_type.clone())];
                // Announced only on GET: a HEAD without the digest makes the client fall back to GET.
                if !head {
                    headers.push(("docker-content-digest", served.announced.clone()));
                }
                respond(
                    StatusCode::OK,
                    &headers,
                    if head { Vec::new() } else { served.body.clone() },
                )
            }
            None => registry_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown"),
        },
        "blobs" => match mock.blobs.get(&reference) {
            Some(body) => respond(StatusCode::OK, &[], body.clone()),
            None => registry_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown to registry"),
        },
        _ => registry_error(StatusCode::NOT_FOUND, "UNSUPPORTED", "no such endpoint"),
    }
}

/// Starts the mock on a free port with the repositories `kiln/app` (private) and `kiln/public`.
async fn start_mock() -> Result<Arc<Mock>, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let mut blobs = HashMap::new();
    let mut manifests = HashMap::new();
    let mut blob = |bytes: Vec<u8>| {
        let digest = sha256(&bytes);
        blobs.insert(digest.clone(), bytes.clone());
        (digest, bytes.len())
    };
    let layer_tar = support::tar(&[Entry::File("hello.txt", 0o644, b"hello from the mock")])?;
    let (layer, layer_size) = blob(support::gzip(&layer_tar)?);
    let config = json!({"os": "linux", "architecture": "amd64", "config": {"Cmd": ["/hello"]},
                        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer_tar)]}});
    let (config, config_size) = blob(serde_json::to_vec(&config)?);
    let image = |layer: &str, size: usize| {
        json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
               "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": config_size},
               "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": size}]})
        .to_string()
        .into_bytes()
    };
    let good = image(&layer, layer_size);
    // A layer whose bytes do not match its digest (same size, one byte changed).
    let corrupt_bytes = support::gzip(&support::tar(&[Entry::File("evil.txt", 0o644, b"original")])?)?;
    let corrupt_digest = sha256(&corrupt_bytes);
    let mut tampered = corrupt_bytes.clone();
    if let Some(last) = tampered.last_mut() {
        *last ^= 0xff;
    }
    blobs.insert(corrupt_digest.clone(), tampered);
    let corrupt = image(&corrupt_digest, corrupt_bytes.len());
    let schema1 =
        br#"{"schemaVersion":1,"name":"kiln/app","tag":"old","architecture":"amd64","fsLayers":[],"history":[]}"#;
    let artifact = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": config, "size": config_size},
        "layers": []})
    .to_string()
    .into_bytes();

    let mut add = |repository: &str, tag: &str, content_type: &str, body: Vec<u8>, announced: Option<String>| {
        let digest = sha256(&body);
        let value = Served {
            content_type: content_type.to_owned(),
            body,
            announced: announced.unwrap_or(digest.clone()),
        };
        manifests.insert((repository.to_owned(), digest), value.clone());
        manifests.insert((repository.to_owned(), tag.to_owned()), value);
    };
    add("kiln/app", "1", DOCKER_MANIFEST, good.clone(), None);
    add("kiln/public", "1", DOCKER_MANIFEST, good, None);
    add("kiln/app", "corrupt", DOCKER_MANIFEST, corrupt, None);
    add(
        "kiln/app",
        "old",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        schema1.to_vec(),
        None,
    );
    add(
        "kiln/app",
        "artifact",
        "application/vnd.oci.image.manifest.v1+json",
        artifact,
        None,
    );
    let lie = format!("sha256:{}", "0".repeat(64));
    add(
        "kiln/app",
        "lying",
        DOCKER_MANIFEST,
        image(&layer, layer_size),
        Some(lie),
    );

    let mock = Arc::new(Mock {
        port,
        manifests,
        blobs,
        token_requests: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(handle).with_state(mock.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(mock)
}

fn puller(cache: &std::path::Path, password: Option<&str>) -> Result<Puller, Box<dyn std::error::Error>> {
    let registries = Registries::new(vec![RegistrySettings {
        host: "127.0.0.1:*".into(),
        username: password.map(|_| "kiln".into()),
        password: password.map(Into::into),
        ..Default::default()
    }])?;
    Ok(Puller::new(cache, registries)?)
}

#[tokio::test]
async fn bearer_tokens_with_and_without_credentials() -> TestResult {
    let mock = start_mock().await?;
    let host = format!("127.0.0.1:{}", mock.port);
    let cache = tempfile::tempdir()?;

    let image = puller(cache.path(), Some("pw"))?
        .pull(&format!("{host}/kiln/app:1"), |_| {})
        .await?;
    assert_eq!(
        std::fs::read_to_string(image.rootfs.join("hello.txt"))?,
        "hello from the mock"
    );
    assert_eq!(image.config.cmd, vec!["/hello"]);
    // HEAD, GET manifest, GET config, GET layer: one token serves them all.
    assert_eq!(mock.token_requests.load(Ordering::SeqCst), 1);

    // Anonymous: a token for the public repository, none that opens the private one.
    let public = puller(cache.path(), None)?
        .pull(&format!("{host}/kiln/public:1"), |_| {})
        .await?;
    assert_eq!(public.digest, image.digest);
    let private = puller(cache.path(), None)?
        .pull(&format!("{host}/kiln/app:1"), |_| {})
        .await;
    let Err(error @ PullError::Denied { .. }) = private else {
        panic!("expected Denied, got {private:?}")
    };
    let message = error.to_string();
    assert!(message.contains("UNAUTHORIZED: authentication required"), "{message}");
    assert!(
        message.contains("needs credentials") && message.contains(&format!("host \"{host}\"")),
        "{message}"
    );

    // Wrong credentials: the token service's own answer.
    let wrong = puller(cache.path(), Some("nope"))?
        .pull(&format!("{host}/kiln/app:1"), |_| {})
        .await;
    let Err(error @ PullError::Denied { .. }) = wrong else {
        panic!("expected Denied, got {wrong:?}")
    };
    let message = error.to_string();
    assert!(
        message.contains("incorrect username or password") && message.contains("/token"),
        "{message}"
    );
    assert!(message.contains("were refused"), "{message}");
    Ok(())
}

#[tokio::test]
async fn corrupt_data_and_unusable_manifests_are_refused() -> TestResult {
    let mock = start_mock().await?;
    let host = format!("127.0.0.1:{}", mock.port);
    let cache = tempfile::tempdir()?;
    let puller = puller(cache.path(), Some("pw"))?;

    let corrupt = puller.pull(&format!("{host}/kiln/app:corrupt"), |_| {}).await;
    let Err(error @ PullError::DigestMismatch { .. }) = corrupt else {
        panic!("expected a mismatch, got {corrupt:?}")
    };
    let message = error.to_string();
    assert!(
        message.contains("layer 1/1") && message.contains("corrupt or altered"),
        "{message}"
    );
    assert_eq!(
        std::fs::read_dir(cache.path().join("tmp"))?.count(),
        0,
        "the bad download is not kept"
    );
    assert_eq!(std::fs::read_dir(cache.path().join("images/sha256"))?.count(), 0);

    let lying = puller.pull(&format!("{host}/kiln/app:lying"), |_| {}).await;
    let Err(error @ PullError::DigestMismatch { .. }) = lying else {
        panic!("expected a mismatch, got {lying:?}")
    };
    assert!(error.to_string().contains("manifest of tag 'lying'"), "{error}");

    let old = puller
        .pull(&format!("{host}/kiln/app:old"), |_| {})
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        old.as_deref()
            .unwrap_or_default()
            .contains("not supported: kiln cannot use Docker image manifest schema 1"),
        "{old:?}"
    );
    let artifact = puller
        .pull(&format!("{host}/kiln/app:artifact"), |_| {})
        .await
        .err()
        .map(|e| e.to_string());
    assert!(artifact.as_deref().unwrap_or_default().contains("helm"), "{artifact:?}");
    let missing = puller
        .pull(&format!("{host}/kiln/app:missing"), |_| {})
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        missing.as_deref().unwrap_or_default().contains("MANIFEST_UNKNOWN"),
        "{missing:?}"
    );
    Ok(())
}

#[tokio::test]
async fn unreachable_registries_and_bad_references_say_so() -> TestResult {
    let cache = tempfile::tempdir()?;
    let puller = Puller::new(cache.path(), Registries::default())?;
    let port = support::free_port()?;
    let result = puller.pull(&format!("127.0.0.1:{port}/kiln/app:1"), |_| {}).await;
    let Err(error @ PullError::Unreachable { .. }) = result else {
        panic!("expected Unreachable, got {result:?}")
    };
    assert!(
        error.to_string().to_lowercase().contains("connection refused"),
        "{error}"
    );

    let bad = puller.pull("Not An Image", |_| {}).await;
    let Err(error @ PullError::InvalidReference(_)) = bad else {
        panic!("expected InvalidReference, got {bad:?}")
    };
    assert!(error.is_client_error());
    assert!(
        error.to_string().starts_with("invalid image reference 'Not An Image'"),
        "{error}"
    );
    Ok(())
}
