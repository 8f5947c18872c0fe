//! Pagination tokens: an opaque, hex-encoded cursor naming the list operation it belongs to.

use kiln_api::AwsError;
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
