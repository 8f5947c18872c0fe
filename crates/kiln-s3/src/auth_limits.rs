//! Limits on S3 authentication that `s3s` does not enforce, checked before a request reaches it:
//! a SigV2 header-signed request's `Date` (or `x-amz-date`) must be within 15 minutes of the
//! server's clock, as AWS requires (without it a captured request replays forever), and a presigned
//! URL may live at most 7 days (`X-Amz-Expires` ≤ 604800 for SigV4, as AWS; for SigV2, whose
//! `Expires` is an instant, the same bound from now).

use http::{HeaderMap, StatusCode};
use percent_encoding::percent_decode_str;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// Largest clock difference of a SigV2 header-signed request.
pub const MAX_SIGV2_SKEW_SECS: i64 = 15 * 60;
/// Longest life of a presigned URL (7 days), as AWS.
pub const MAX_PRESIGNED_SECS: i64 = 604_800;

/// A refusal: status, S3 error code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode_str(k).decode_utf8_lossy() == name).then(|| percent_decode_str(v).decode_utf8_lossy())
    })
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, what SigV2 clients send) in epoch seconds.
fn parse_http_date(s: &str) -> Option<i64> {
    let s = s.trim();
    // RFC 2822 parsers want a numeric zone or one they know; HTTP dates say GMT (or UTC).
    let normalized = s
        .strip_suffix(" GMT")
        .or_else(|| s.strip_suffix(" UTC"))
        .map(|rest| format!("{rest} +0000"));
    let text = normalized.as_deref().unwrap_or(s);
    OffsetDateTime::parse(text, &Rfc2822).ok().map(|t| t.unix_timestamp())
}

/// Checks a request's authentication limits; `now` is epoch seconds.
pub fn check(headers: &HeaderMap, query: &str, now: i64) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // SigV2 in the Authorization header: `AWS AKID:signature`.
    if let Some(auth) = header("authorization")
        && auth.starts_with("AWS ")
    {
        let date = header("x-amz-date").or_else(|| header("date"));
        let when = date.and_then(parse_http_date).ok_or_else(|| {
            refuse(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "AWS authentication requires a valid Date or x-amz-date header",
            )
        })?;
        if (when - now).abs() > MAX_SIGV2_SKEW_SECS {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
            ));
        }
    }
    if let Some(expires) = query_value(query, "X-Amz-Expires") {
        match expires.parse::<i64>() {
            Ok(n) if (0..=MAX_PRESIGNED_SECS).contains(&n) => {}
            Ok(n) if n > MAX_PRESIGNED_SECS => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "AuthorizationQueryParametersError",
                    "X-Amz-Expires must be less than a week (in seconds) that is; 604800",
                ));
            }
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "AuthorizationQueryParametersError",
                    "X-Amz-Expires should be a number",
                ));
            }
        }
    }
    // SigV2 query authentication: `AWSAccessKeyId`, `Expires` (epoch seconds), `Signature`.
    if query_value(query, "AWSAccessKeyId").is_some()
        && let Some(expires) = query_value(query, "Expires")
    {
        match expires.parse::<i64>() {
            Ok(t) if t - now <= MAX_PRESIGNED_SECS => {}
            Ok(_) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "AuthorizationQueryParametersError",
                    "Expires must be less than a week (in seconds) from now; 604800",
                ));
            }
            Err(_) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "AuthorizationQueryParametersError",
                    "Expires should be a number",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn sigv2_dates_within_fifteen_minutes() {
        let now = 784111777;
        let ok = headers(&[
            ("authorization", "AWS AKID:sig"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert_eq!(check(&ok, "", now), Ok(()));
        assert_eq!(check(&ok, "", now + 14 * 60), Ok(()));
        assert_eq!(check(&ok, "", now + 16 * 60).unwrap_err().code, "RequestTimeTooSkewed");
        assert_eq!(check(&ok, "", now - 16 * 60).unwrap_err().code, "RequestTimeTooSkewed");
        let missing = headers(&[("authorization", "AWS AKID:sig")]);
        assert_eq!(check(&missing, "", now).unwrap_err().code, "AccessDenied");
        // x-amz-date wins over Date, as in SigV2's string to sign.
        let amz = headers(&[
            ("authorization", "AWS AKID:sig"),
            ("date", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("x-amz-date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert_eq!(check(&amz, "", now), Ok(()));
        // SigV4 headers are s3s's to check.
        let v4 = headers(&[("authorization", "AWS4-HMAC-SHA256 Credential=x")]);
        assert_eq!(check(&v4, "", now), Ok(()));
    }

    #[test]
    fn presigned_lifetimes_are_capped_at_seven_days() {
        let h = HeaderMap::new();
        assert_eq!(check(&h, "X-Amz-Expires=604800&X-Amz-Signature=x", 0), Ok(()));
        let e = check(&h, "X-Amz-Expires=604801", 0).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "AuthorizationQueryParametersError")
        );
        assert!(check(&h, "X-Amz-Expires=-1", 0).is_err());
        assert!(check(&h, "X-Amz-Expires=4294967296000", 0).is_err());
        let now = 1_700_000_000;
        assert_eq!(
            check(&h, &format!("AWSAccessKeyId=A&Expires={}&Signature=s", now + 3600), now),
            Ok(())
        );
        assert!(
            check(
                &h,
                &format!("AWSAccessKeyId=A&Expires={}&Signature=s", now + 8 * 86400),
                now
            )
            .is_err()
        );
    }
}
