//! Plain S3 requests (SigV4-signed, path-style or virtual-hosted) for the keys `object_store`
//! cannot address: empty segments (`prefix//train/x`, which `f"{prefix}/train"` makes of a prefix
//! ending in `/`), a leading `/`. S3 keys are arbitrary strings and these are legal; SageMaker
//! stages and uploads them. Only what staging and uploads need: listing a prefix, getting an object
//! into a file, putting a file or bytes.

use std::path::Path;

use bytes::Bytes;
use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{BlobError, S3Endpoint, io_at};

/// The largest object one `PutObject` may carry.
const MAX_SINGLE_PUT: u64 = 5 << 30;

/// Percent-encodes as SigV4 wants: unreserved characters stay, everything else `%XX`; `/` stays in
/// paths.
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unescape_xml(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The texts of every `<name>…</name>` in `xml`, in order (no nesting of the same name).
fn tag_texts<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn amz_date(now: std::time::SystemTime) -> String {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One S3 endpoint, spoken to directly.
pub(crate) struct RawS3 {
    http: reqwest::Client,
    endpoint: S3Endpoint,
}

/// A request to sign and send.
struct Request<'a> {
    method: reqwest::Method,
    bucket: &'a str,
    key: &'a str,
    query: Vec<(String, String)>,
    payload_hash: String,
}

impl RawS3 {
    pub(crate) fn new(endpoint: S3Endpoint) -> Result<RawS3, String> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(600))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(RawS3 { http, endpoint })
    }

    /// The URL (without query) and the `Host` header of an object.
    fn locate(&self, bucket: &str, key: &str) -> (String, String, String) {
        let e = &self.endpoint;
        let (scheme, host, base_path) = if e.endpoint_url.is_empty() {
            (
                "https".to_string(),
                format!("{bucket}.s3.{}.amazonaws.com", e.region),
                String::new(),
            )
        } else {
            let url = e.endpoint_url.trim_end_matches('/');
            let (scheme, host) = url.split_once("://").unwrap_or(("https", url));
            if e.path_style {
                (
                    scheme.to_string(),
                    host.to_string(),
                    format!("/{}", encode(bucket, false)),
                )
            } else {
                (scheme.to_string(), format!("{bucket}.{host}"), String::new())
            }
        };
        let path = format!("{base_path}/{}", encode(key, true));
        (format!("{scheme}://{host}{path}"), host, path)
    }

    fn build(&self, r: Request<'_>) -> reqwest::RequestBuilder {
        let (url, host, path) = self.locate(r.bucket, r.key);
        let mut query = r.query.clone();
        query.sort();
        let canonical_query = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k, false), encode(v, false)))
            .collect::<Vec<_>>()
            .join("&");
        let date = amz_date(std::time::SystemTime::now());
        let day = &date[..8];
        let headers = [
            ("host", host.as_str()),
            ("x-amz-content-sha256", r.payload_hash.as_str()),
            ("x-amz-date", date.as_str()),
        ];
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed = "host;x-amz-content-sha256;x-amz-date";
        let creq = format!(
            "{}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed}\n{}",
            r.method, r.payload_hash
        );
        let e = &self.endpoint;
        let scope = format!("{day}/{}/s3/aws4_request", e.region);
        let sts = format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{}", hex_sha256(creq.as_bytes()));
        let mut key = hmac(format!("AWS4{}", e.secret_access_key).as_bytes(), day.as_bytes());
        for part in [e.region.as_str(), "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac(&key, sts.as_bytes()));
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            e.access_key_id
        );
        let full = if canonical_query.is_empty() {
            url
        } else {
            format!("{url}?{canonical_query}")
        };
        self.http
            .request(r.method, full)
            .header("x-amz-content-sha256", r.payload_hash)
            .header("x-amz-date", date)
            .header("authorization", auth)
    }

    async fn send(&self, uri: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response, BlobError> {
        let resp = req.send().await.map_err(|e| BlobError::Store {
            uri: uri.to_string(),
            message: e.to_string(),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let code = tag_texts(&body, "Code")
            .first()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let message = format!(
            "{status} {code}: {}",
            tag_texts(&body, "Message").first().copied().unwrap_or("")
        );
        Err(match status.as_u16() {
            404 => BlobError::NotFound { uri: uri.to_string() },
            401 | 403 => BlobError::AccessDenied {
                uri: uri.to_string(),
                message,
            },
            _ => BlobError::Store {
                uri: uri.to_string(),
                message,
            },
        })
    }

    /// Every `(key, size)` whose key starts with `prefix`, in key order.
    pub(crate) async fn list(&self, bucket: &str, prefix: &str, uri: &str) -> Result<Vec<(String, u64)>, BlobError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), prefix.to_string()),
                ("encoding-type".to_string(), "url".to_string()),
            ];
            if let Some(t) = &token {
                query.push(("continuation-token".into(), t.clone()));
            }
            let req = self.build(Request {
                method: reqwest::Method::GET,
                bucket,
                key: "",
                query,
                payload_hash: hex_sha256(b""),
            });
            let body = self.send(uri, req).await?.text().await.map_err(|e| BlobError::Store {
                uri: uri.to_string(),
                message: e.to_string(),
            })?;
            for item in tag_texts(&body, "Contents") {
                let key = tag_texts(item, "Key").first().map(|k| decode(k)).unwrap_or_default();
                let size = tag_texts(item, "Size")
                    .first()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                out.push((key, size));
            }
            let truncated = tag_texts(&body, "IsTruncated")
                .first()
                .is_some_and(|t| t.trim() == "true");
            token = tag_texts(&body, "NextContinuationToken")
                .first()
                .map(|t| unescape_xml(t));
            if !truncated || token.is_none() {
                break;
            }
        }
        out.sort();
        Ok(out)
    }

    /// Downloads an object into `dest` (created or truncated); returns its size.
    pub(crate) async fn get_to_file(&self, bucket: &str, key: &str, dest: &Path, uri: &str) -> Result<u64, BlobError> {
        let req = self.build(Request {
            method: reqwest::Method::GET,
            bucket,
            key,
            query: Vec::new(),
            payload_hash: hex_sha256(b""),
        });
        let resp = self.send(uri, req).await?;
        let mut file = tokio::fs::File::create(dest).await.map_err(io_at(dest))?;
        let mut stream = resp.bytes_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(|e| BlobError::Store {
            uri: uri.to_string(),
            message: e.to_string(),
        })? {
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io_at(dest))?;
        }
        file.flush().await.map_err(io_at(dest))?;
        Ok(size)
    }

    /// The bytes of an object.
    pub(crate) async fn get_bytes(&self, bucket: &str, key: &str, uri: &str) -> Result<Bytes, BlobError> {
        let req = self.build(Request {
            method: reqwest::Method::GET,
            bucket,
            key,
            query: Vec::new(),
            payload_hash: hex_sha256(b""),
        });
        self.send(uri, req).await?.bytes().await.map_err(|e| BlobError::Store {
            uri: uri.to_string(),
            message: e.to_string(),
        })
    }

    /// Writes `data` as the object.
    pub(crate) async fn put_bytes(&self, bucket: &str, key: &str, data: Bytes, uri: &str) -> Result<(), BlobError> {
        let req = self.build(Request {
            method: reqwest::Method::PUT,
            bucket,
            key,
            query: Vec::new(),
            payload_hash: hex_sha256(&data),
        });
        self.send(uri, req.body(data)).await?;
        Ok(())
    }

    /// Uploads a local file as the object (one request: up to 5 GiB); returns its size.
    pub(crate) async fn put_file(&self, bucket: &str, key: &str, src: &Path, uri: &str) -> Result<u64, BlobError> {
        let size = tokio::fs::metadata(src).await.map_err(io_at(src))?.len();
        if size > MAX_SINGLE_PUT {
            return Err(BlobError::InvalidUri {
                uri: uri.to_string(),
                reason: format!(
                    "a key with an empty segment ('//') takes objects up to 5 GiB, and this one is {size} bytes; \
                     remove the '//' from the output path"
                ),
            });
        }
        let file = tokio::fs::File::open(src).await.map_err(io_at(src))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let req = self.build(Request {
            method: reqwest::Method::PUT,
            bucket,
            key,
            query: Vec::new(),
            payload_hash: "UNSIGNED-PAYLOAD".into(),
        });
        self.send(uri, req.header("content-length", size).body(body)).await?;
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(encode("a b/c~d", true), "a%20b/c~d");
        assert_eq!(encode("a/b", false), "a%2Fb");
        assert_eq!(decode("prefix%2F%2Ftrain%2Fx%20y"), "prefix//train/x y");
        assert_eq!(unescape_xml("a&amp;b&lt;"), "a&b<");
    }

    #[test]
    fn xml_tags() {
        let xml = "<L><Contents><Key>a%2F%2Fb</Key><Size>3</Size></Contents><Contents><Key>c</Key><Size>4</Size></Contents><IsTruncated>false</IsTruncated></L>";
        let items = tag_texts(xml, "Contents");
        assert_eq!(items.len(), 2);
        assert_eq!(tag_texts(items[0], "Key"), ["a%2F%2Fb"]);
        assert_eq!(tag_texts(xml, "IsTruncated"), ["false"]);
    }

    #[test]
    fn dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(amz_date(t), "20231114T221320Z");
    }

    #[test]
    fn urls_keep_empty_segments() {
        let raw = RawS3::new(S3Endpoint {
            endpoint_url: "http://127.0.0.1:8080".into(),
            region: "us-east-1".into(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            path_style: true,
        })
        .unwrap();
        let (url, host, path) = raw.locate("b", "p//train/x y");
        assert_eq!(url, "http://127.0.0.1:8080/b/p//train/x%20y");
        assert_eq!((host.as_str(), path.as_str()), ("127.0.0.1:8080", "/b/p//train/x%20y"));
    }
}
