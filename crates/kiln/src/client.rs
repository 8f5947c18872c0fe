//! A small SigV4-signing client of kiln's AWS JSON API, used by the user commands.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use kiln_api::sigv4;
use kiln_server::keys;
use serde_json::Value;

use crate::config::Settings;

/// Where and as whom to call.
pub struct Client {
    endpoint: String,
    access_key: String,
    secret: String,
    region: String,
    http: reqwest::Client,
}

impl Client {
    /// From `AWS_ENDPOINT_URL`/`AWS_ACCESS_KEY_ID`/... when set, else the local server's settings and
    /// the first key of its data directory.
    pub fn from_env(settings: &Settings) -> Result<Self> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let endpoint = env("AWS_ENDPOINT_URL_SAGEMAKER")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("http://{}", settings.listen));
        let (access_key, secret) = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(a), Some(s)) => (a, s),
            _ => {
                let path = keys::keys_path(&settings.data_dir);
                let key = keys::read_keys(&path)?.into_iter().next().ok_or_else(|| {
                    anyhow!("no access key: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or start `kiln serve` once to create {}", path.display())
                })?;
                (key.access_key_id, key.secret_access_key)
            }
        };
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| settings.region.clone());
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            access_key,
            secret,
            region,
            http: reqwest::Client::new(),
        })
    }

    /// Calls `SageMaker.<op>` (or another `<Service>.<op>` target) with a JSON body.
    pub async fn call(&self, service: &str, target: &str, body: &Value) -> Result<Value> {
        let url: reqwest::Url = format!("{}/", self.endpoint)
            .parse()
            .with_context(|| format!("bad endpoint URL {}", self.endpoint))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => bail!("endpoint URL {} has no host", self.endpoint),
        };
        let payload = serde_json::to_vec(body)?;
        let headers = vec![
            ("host".to_string(), host),
            ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
            ("x-amz-target".to_string(), target.to_string()),
        ];
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let signed = sigv4::sign(
            "POST",
            "/",
            &headers,
            &payload,
            &self.access_key,
            &self.secret,
            &self.region,
            service,
            now,
        );
        let mut req = self.http.post(url).body(payload);
        for (k, v) in headers.iter().skip(1).chain(signed.iter()) {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach kiln at {} (is `kiln serve` running?)", self.endpoint))?;
        let status = resp.status();
        let text = resp.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if !status.is_success() {
            let code = value.get("__type").and_then(Value::as_str).unwrap_or("Error");
            let msg = value
                .get("message")
                .or_else(|| value.get("Message"))
                .and_then(Value::as_str)
                .unwrap_or(&text);
            bail!("{code}: {msg}");
        }
        Ok(value)
    }

    /// Calls a CloudWatch Logs operation.
    pub async fn logs(&self, op: &str, body: Value) -> Result<Value> {
        self.call("logs", &format!("Logs_20140328.{op}"), &body).await
    }

    /// The access key id (also names the CLI's default bucket).
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// Object access as this client's key, on the same endpoint.
    pub fn blobs(&self) -> kiln_blob::Blobs {
        kiln_blob::Blobs::new(kiln_blob::BlobConfig {
            embedded: kiln_blob::S3Endpoint {
                endpoint_url: self.endpoint.clone(),
                region: self.region.clone(),
                access_key_id: self.access_key.clone(),
                secret_access_key: self.secret.clone(),
                path_style: true,
            },
            external: Vec::new(),
        })
    }

    /// Creates a bucket of the embedded store unless this account already owns it.
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<()> {
        let url: reqwest::Url = format!("{}/{bucket}", self.endpoint).parse()?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => bail!("endpoint URL {} has no host", self.endpoint),
        };
        let headers = vec![
            ("host".to_string(), host),
            ("x-amz-content-sha256".to_string(), sigv4::sha256_hex(b"")),
        ];
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let path = format!("/{bucket}");
        let signed = sigv4::sign(
            "PUT",
            &path,
            &headers,
            b"",
            &self.access_key,
            &self.secret,
            &self.region,
            "s3",
            now,
        );
        let mut req = self.http.put(url);
        for (k, v) in headers.iter().skip(1).chain(signed.iter()) {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach kiln at {}", self.endpoint))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() || text.contains("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        bail!("cannot create bucket {bucket}: HTTP {status}: {text}")
    }

    /// Calls a SageMaker operation.
    pub async fn sagemaker(&self, op: &str, body: Value) -> Result<Value> {
        self.call("sagemaker", &format!("SageMaker.{op}"), &body).await
    }
}
