//! A SigV4-signing AWS JSON 1.1 client for the load generators.

use std::time::{SystemTime, UNIX_EPOCH};

use kiln_api::sigv4;

/// One kiln endpoint and the key to sign with.
pub struct Target {
    url: String,
    host: String,
    key: String,
    secret: String,
    http: reqwest::Client,
}

impl Target {
    /// `endpoint` is `http://host:port`.
    pub fn new(endpoint: &str, key: &str, secret: &str) -> Self {
        let endpoint = endpoint.trim_end_matches('/');
        Self {
            url: format!("{endpoint}/"),
            host: endpoint.trim_start_matches("http://").to_string(),
            key: key.to_string(),
            secret: secret.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// POSTs `body` to `X-Amz-Target: <target>`, signed for `service`; the response body on success.
    pub async fn call(&self, service: &str, target: &str, body: Vec<u8>) -> Result<bytes::Bytes, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let headers = vec![
            ("host".to_string(), self.host.clone()),
            ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
            ("x-amz-target".to_string(), target.to_string()),
        ];
        let signed = sigv4::sign(
            "POST",
            "/",
            &headers,
            &body,
            &self.key,
            &self.secret,
            "us-east-1",
            service,
            now,
        );
        let mut req = self.http.post(&self.url).body(body);
        for (k, v) in headers.iter().skip(1).chain(&signed) {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if ok {
            Ok(bytes)
        } else {
            Err(String::from_utf8_lossy(&bytes).into_owned())
        }
    }
}
