//! kiln's HTTP front. One listener serves every protocol, routed by request shape:
//! `X-Amz-Target` → AWS JSON 1.1 (SageMaker, CloudWatch Logs); `/_kiln/...` → kiln's own endpoints
//! (health, agent API); everything else → the S3 API. Protocol concerns (SigV4, error envelopes,
//! body limits) live here; what an operation does lives in `kiln-engine`.

pub mod aws;
pub mod keys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use kiln_api::AwsError;
use kiln_engine::Engine;
use kiln_store::{SqliteLogStore, SqliteStore};

use crate::keys::Keyring;

/// What `kiln serve` needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
}

/// Shared state of the server.
pub struct App {
    pub engine: Engine,
    pub keys: Keyring,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    #[error("cannot open the metadata store: {0}")]
    Store(#[from] kiln_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// The server before it starts listening: the store is open and the keys are loaded.
pub struct Server {
    app: Arc<App>,
    config: ServerConfig,
    /// A key created on this start (first start of a data directory), to be shown once.
    pub created_key: Option<keys::AccessKey>,
}

impl Server {
    /// Opens the data directory: creates it, the first access key, and the database.
    pub async fn open(config: ServerConfig) -> Result<Self, ServeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let keys_file = keys::keys_path(&config.data_dir);
        let mut created_key = None;
        if keys::read_keys(&keys_file)?.is_empty() {
            let key = keys::generate_key(None);
            keys::append_key(&keys_file, &key)?;
            created_key = Some(key);
        }
        let store = SqliteStore::open(&config.data_dir.join("kiln.db")).await?;
        let logs = SqliteLogStore::open(&config.data_dir.join("logs.db")).await?;
        let app = App {
            engine: Engine::new(Arc::new(store), Arc::new(logs)),
            keys: Keyring::load(&keys_file)?,
        };
        Ok(Self {
            app: Arc::new(app),
            config,
            created_key,
        })
    }

    /// The router (also used by tests in-process).
    pub fn router(&self) -> Router {
        Router::new().fallback(route).with_state(self.app.clone())
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let listener = tokio::net::TcpListener::bind(self.config.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: self.config.listen,
                source,
            })?;
        tracing::info!(target: "kiln::serve", "listening on http://{}", listener.local_addr()?);
        let router = self.router();
        axum::serve(listener, router.into_make_service())
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

async fn route(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if parts.uri.path().starts_with("/_kiln/") {
        return kiln_endpoint(&parts.uri);
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .map(|v| v.to_str().unwrap_or("").to_string());
    if let Some(target) = target {
        let body = match to_bytes(body, aws::MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return aws::error_response(&AwsError::serialization(format!(
                    "The request body is larger than {} bytes or could not be read.",
                    aws::MAX_BODY
                )));
            }
        };
        return aws::handle(&app, parts.method, parts.uri, parts.headers, &target, &body).await;
    }
    Response::builder()
        .status(501)
        .header("content-type", "application/xml")
        .body(Body::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NotImplemented</Code>\
             <Message>The S3 API is not available on this server yet.</Message></Error>",
        ))
        .unwrap_or_default()
}

fn kiln_endpoint(uri: &axum::http::Uri) -> Response {
    let (status, body) = match uri.path() {
        "/_kiln/health" => (200, "{\"status\":\"ok\"}"),
        _ => (404, "{\"error\":\"no such kiln endpoint\"}"),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}
