//! Reading request bodies with a limit, after the request is authenticated. A declared
//! `Content-Length` above the limit is refused before a byte is read; a body without one (chunked)
//! is read until it passes the limit, never further.

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit (declared or read).
    TooLarge { limit: usize },
    /// The connection failed or the body was malformed.
    Unreadable,
}

/// The declared `Content-Length`, if any and valid.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Most bytes of an authenticated request's oversized body that are read and thrown away before
/// the error is sent: clients send the whole body before they read the answer, and a connection
/// closed under them loses the 413 to a reset. Past this, the connection is closed.
pub const MAX_DRAIN: u64 = 64 * 1024 * 1024;

/// How long draining an oversized body may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads and discards what is left of `body` (constant memory), up to [`MAX_DRAIN`] bytes.
pub async fn drain(body: &mut Body, headers: &HeaderMap) {
    if content_length(headers).is_some_and(|n| n > MAX_DRAIN) {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                if seen > MAX_DRAIN {
                    break;
                }
            }
        }
    })
    .await;
}

/// Largest unread body of a refused request that is read (and thrown away) so that the
/// connection stays usable for the client's next request.
pub const SMALL_BODY: u64 = 64 * 1024;

/// Discards a refused request's unread body when it is declared small: a client's kept-alive
/// connection then survives the refusal. Larger or undeclared bodies are left, and hyper closes
/// the connection after the response.
pub async fn discard_small(body: &mut Body, headers: &HeaderMap) {
    if content_length(headers).is_some_and(|n| n <= SMALL_BODY) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
    }
}

/// Reads the whole body, at most `limit` bytes.
pub async fn read_limited(body: &mut Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, BodyError> {
    if content_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Unreadable)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// `application/x-www-form-urlencoded` text decoded: `+` is a space, `%XX` a byte; a malformed
/// escape stays as it is. (The query protocol's bodies, the console's forms.)
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
