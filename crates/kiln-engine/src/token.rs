//! Pagination tokens: an opaque, hex-encoded cursor naming the list operation it belongs to.

use kiln_api::AwsError;
use kiln_store::{Cursor, CursorValue, JobSort};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Token<T> {
    op: String,
    cursor: T,
}

/// Encodes the position after the last item of a page.
pub fn encode<T: Serialize>(op: &str, cursor: T) -> String {
    let json = serde_json::to_vec(&Token {
        op: op.to_string(),
        cursor,
    })
    .unwrap_or_default();
    hex::encode(json)
}

/// Decodes a token issued by [`encode`] for the same operation.
pub fn decode<T: for<'de> Deserialize<'de>>(op: &str, token: &str) -> Result<T, AwsError> {
    let invalid = || {
        AwsError::validation(format!(
            "Invalid pagination token: '{}'.",
            token.chars().take(80).collect::<String>()
        ))
    };
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    let t: Token<T> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if t.op != op {
        return Err(invalid());
    }
    Ok(t.cursor)
}

/// The token after `last` in a job listing sorted by `sort`: a keyset cursor (sort value, name).
pub fn encode_job_cursor(op: &str, sort: JobSort, name: &str, creation_time: f64, status: &str) -> String {
    let value = match sort {
        JobSort::Name => serde_json::json!(name.to_lowercase()),
        JobSort::CreationTime => serde_json::json!(creation_time),
        JobSort::Status => serde_json::json!(status),
    };
    encode(op, (value, name.to_lowercase()))
}

/// The cursor of a token issued by [`encode_job_cursor`].
pub fn decode_job_cursor(op: &str, token: &str) -> Result<Cursor, AwsError> {
    let (value, name_key): (serde_json::Value, String) = decode(op, token)?;
    let value = match value {
        serde_json::Value::String(s) => CursorValue::Text(s),
        v => CursorValue::Number(v.as_f64().unwrap_or(0.0)),
    };
    Ok(Cursor { value, name_key })
}
