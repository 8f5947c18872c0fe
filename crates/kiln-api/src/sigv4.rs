//! AWS Signature Version 4 for the JSON protocols: verification on the server, signing for kiln's
//! own CLI. (The S3 endpoint has its own verifier, which also handles presigned URLs and
//! `aws-chunked` payloads.)
//!
//! Non-S3 services canonicalise the path by URI-encoding it twice; that is what boto3 does for
//! `POST /` with SageMaker and CloudWatch Logs.

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// How far a request's `X-Amz-Date` may be from the server's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// Why a request's signature was refused. Each maps to the error AWS returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Incomplete(String),
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
    #[error("Signature expired: {0}")]
    Expired(String),
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    PayloadMismatch,
}

impl SigError {
    /// `(HTTP status, __type)` as AWS answers.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Self::Missing => (403, "MissingAuthenticationTokenException"),
            Self::Incomplete(_) => (400, "IncompleteSignatureException"),
            Self::UnknownKey => (403, "UnrecognizedClientException"),
            Self::Mismatch | Self::Expired(_) | Self::PayloadMismatch => (403, "InvalidSignatureException"),
        }
    }
}

/// The parsed `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    fn scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

/// Parses an `Authorization` header value.
pub fn parse_authorization(header: &str) -> Result<Authorization, SigError> {
    let rest = header.strip_prefix("AWS4-HMAC-SHA256").ok_or_else(|| {
        SigError::Incomplete(format!(
            "Authorization header requires AWS4-HMAC-SHA256, got '{}'",
            short(header)
        ))
    })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |what: &str| SigError::Incomplete(format!("Authorization header requires '{what}' parameter."));
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let fields: Vec<&str> = credential.split('/').collect();
    if fields.len() != 5 || fields[4] != "aws4_request" || fields.iter().any(|f| f.is_empty()) {
        return Err(SigError::Incomplete(format!(
            "Credential should be scoped to a valid region, not '{}'. ",
            short(credential)
        )));
    }
    Ok(Authorization {
        access_key: fields[0].to_string(),
        date: fields[1].to_string(),
        region: fields[2].to_string(),
        service: fields[3].to_string(),
        signed_headers: signed.split(';').map(|h| h.trim().to_ascii_lowercase()).collect(),
        signature: signature.to_ascii_lowercase(),
    })
}

/// Whether `region` looks like an AWS region (`us-east-1`, `us-gov-west-1`, `ap-southeast-2`): two
/// letters, one or more lowercase words, a number. The credential scope's region goes into ARNs, so
/// nothing else may pass (`us-east-1:999999999999` would put a second account into an ARN).
pub fn is_valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && region.len() <= 32
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// What a verifier needs from an HTTP request.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Header names (any case) and values, in the order received.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl RequestParts<'_> {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

// RFC 3986 unreserved characters stay; everything else is encoded, as SigV4 requires.
const SIGV4: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, SIGV4).to_string()
}

fn canonical_path(path: &str, double_encode: bool) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    let segments: Vec<String> = path
        .split('/')
        .map(|seg| {
            let decoded = percent_decode_str(seg).decode_utf8_lossy();
            let once = encode(&decoded);
            if double_encode { encode(&once) } else { once }
        })
        .collect();
    segments.join("/")
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (encode(&dec(k)), encode(&dec(v)))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn collapse_spaces(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request of SigV4 for a non-S3 service.
pub fn canonical_request(req: &RequestParts, signed_headers: &[String], payload_hash: &str) -> String {
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = req.header_values(name).iter().map(|v| collapse_spaces(v)).collect();
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&values.join(","));
        headers.push('\n');
    }
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_path(req.path, true),
        canonical_query(req.query),
        headers,
        signed_headers.join(";"),
        payload_hash
    )
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The SigV4 signing key for a secret and credential scope.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

fn is_amz_header(name: &str) -> bool {
    name.len() > 6 && name[..6].eq_ignore_ascii_case("x-amz-")
}

/// Whether two byte strings are equal, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The checks of a signed request that need no body and no secret: the date within the clock
/// skew and matching the scope, `host` and every `x-amz-*` header signed. A server runs them before
/// it reads the body, so an unauthenticated request costs it no more than its headers.
pub fn check_headers(req: &RequestParts, auth: &Authorization, now: i64) -> Result<(), SigError> {
    let amz_date = req
        .header_values("x-amz-date")
        .first()
        .map(|s| s.to_string())
        .ok_or_else(|| {
            SigError::Incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into(),
            )
        })?;
    let when = parse_amz_date(&amz_date)
        .ok_or_else(|| SigError::Incomplete(format!("Invalid X-Amz-Date '{}'.", short(&amz_date))))?;
    if (when - now).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(SigError::Expired(format!(
            "{amz_date} is now earlier than {} ({} - 15 min.)",
            format_amz_date(now - MAX_CLOCK_SKEW_SECS),
            format_amz_date(now)
        )));
    }
    if !amz_date.starts_with(&auth.date) {
        return Err(SigError::Mismatch);
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(SigError::Incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    // Every `x-amz-*` header sent must be signed: an unsigned `X-Amz-Target` would let a request
    // signed for one operation run another.
    if let Some((name, _)) = req
        .headers
        .iter()
        .find(|(k, _)| is_amz_header(k) && !auth.signed_headers.iter().any(|h| h.eq_ignore_ascii_case(k)))
    {
        return Err(SigError::Incomplete(format!(
            "Header '{}' must be a 'SignedHeader' in the AWS Authorization.",
            short(&name.to_ascii_lowercase())
        )));
    }
    Ok(())
}

/// Verifies a signed request with the secret of `auth.access_key`. `now` is epoch seconds.
pub fn verify(req: &RequestParts, auth: &Authorization, secret: &str, now: i64) -> Result<(), SigError> {
    check_headers(req, auth, now)?;
    let amz_date = req
        .header_values("x-amz-date")
        .first()
        .map(|s| s.to_string())
        .unwrap_or_default();
    // The signature covers the body actually received, never a hash the client merely claims.
    let payload_hash = sha256_hex(req.body);
    if let Some(claimed) = req.header_values("x-amz-content-sha256").first()
        && !claimed.eq_ignore_ascii_case(&payload_hash)
    {
        return Err(SigError::PayloadMismatch);
    }
    let creq = canonical_request(req, &auth.signed_headers, &payload_hash);
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        auth.scope(),
        sha256_hex(creq.as_bytes())
    );
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    let expected = hex::encode(hmac(&key, sts.as_bytes()));
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SigError::Mismatch)
    }
}

/// Signs a JSON-protocol request: returns the headers to add (`X-Amz-Date`, `Authorization`).
/// `headers` must contain `host` and every other header that should be signed.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    access_key: &str,
    secret: &str,
    region: &str,
    service: &str,
    now: i64,
) -> Vec<(String, String)> {
    let amz_date = format_amz_date(now);
    let date = &amz_date[..8];
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    all.push(("x-amz-date".into(), amz_date.clone()));
    let mut names: Vec<String> = all.iter().map(|(k, _)| k.clone()).collect();
    names.sort();
    names.dedup();
    let parts = RequestParts {
        method,
        path,
        query: "",
        headers: &all,
        body,
    };
    let creq = canonical_request(&parts, &names, &sha256_hex(body));
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(creq.as_bytes()));
    let signature = hex::encode(hmac(&signing_key(secret, date, region, service), sts.as_bytes()));
    vec![
        ("X-Amz-Date".into(), amz_date),
        (
            "Authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={}, Signature={signature}",
                names.join(";")
            ),
        ),
    ]
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `20240131T235959Z` → epoch seconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !s.is_ascii() {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se)
}

/// Epoch seconds → `20240131T235959Z`.
pub fn format_amz_date(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `headers` with a POST of `body` signed for SageMaker in us-east-1 (key AKID, secret
    /// `secret`), and the parsed `Authorization`.
    fn signed_request(headers: &[(String, String)], body: &[u8], now: i64) -> (Vec<(String, String)>, Authorization) {
        let mut signed = headers.to_vec();
        signed.extend(sign(
            "POST",
            "/",
            headers,
            body,
            "AKID",
            "secret",
            "us-east-1",
            "sagemaker",
            now,
        ));
        let header = signed.iter().find(|(k, _)| k == "Authorization").unwrap().1.clone();
        let auth = parse_authorization(&header).unwrap();
        (signed, auth)
    }

    #[test]
    fn dates_round_trip() {
        for t in [0, 951782400, 1715883050, 4102444799] {
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t));
        }
        assert_eq!(format_amz_date(1715883050), "20240516T181050Z");
        assert_eq!(parse_amz_date("2024-05-16"), None);
    }

    #[test]
    fn sign_then_verify() {
        let headers = vec![
            ("Host".to_string(), "127.0.0.1:8080".to_string()),
            ("Content-Type".to_string(), "application/x-amz-json-1.1".to_string()),
            ("X-Amz-Target".to_string(), "SageMaker.ListTrainingJobs".to_string()),
        ];
        let body = b"{}";
        let now = 1_700_000_000;
        let (signed, auth) = signed_request(&headers, body, now);
        assert_eq!(auth.region, "us-east-1");
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &signed,
            body,
        };
        assert_eq!(verify(&parts, &auth, "secret", now + 10), Ok(()));
        assert_eq!(verify(&parts, &auth, "wrong", now), Err(SigError::Mismatch));
        let tampered = RequestParts { body: b"{ }", ..parts };
        assert_eq!(verify(&tampered, &auth, "secret", now), Err(SigError::Mismatch));
        // A claimed (and signed) payload hash does not stand in for the body received.
        let mut with_hash = headers.clone();
        with_hash.push(("x-amz-content-sha256".to_string(), sha256_hex(body)));
        let (claimed, claimed_auth) = signed_request(&with_hash, body, now);
        let claimed_parts = RequestParts {
            headers: &claimed,
            ..parts
        };
        assert_eq!(verify(&claimed_parts, &claimed_auth, "secret", now), Ok(()));
        let swapped = RequestParts {
            body: b"{\"other\":1}",
            ..claimed_parts
        };
        assert_eq!(
            verify(&swapped, &claimed_auth, "secret", now),
            Err(SigError::PayloadMismatch)
        );
        // An unsigned `x-amz-*` header is refused before the signature is even computed.
        let mut extra = signed.clone();
        extra.push(("X-Amz-Meta".to_string(), "x".to_string()));
        let extra_parts = RequestParts {
            headers: &extra,
            ..parts
        };
        assert!(matches!(
            verify(&extra_parts, &auth, "secret", now),
            Err(SigError::Incomplete(_))
        ));
        assert!(matches!(
            verify(&parts, &auth, "secret", now + 3600),
            Err(SigError::Expired(_))
        ));
    }

    // The example from the AWS SigV4 documentation (IAM ListUsers, GET with a query string).
    #[test]
    fn aws_documentation_vector() {
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("host".to_string(), "iam.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
        ];
        let parts = RequestParts {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            body: b"",
        };
        let auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        )
        .unwrap();
        let now = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(
            verify(&parts, &auth, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", now),
            Ok(())
        );
    }

    #[test]
    fn regions() {
        for ok in [
            "us-east-1",
            "us-gov-west-1",
            "ap-southeast-2",
            "eu-central-1",
            "il-central-1",
            "us-isob-east-1",
        ] {
            assert!(is_valid_region(ok), "{ok}");
        }
        for bad in [
            "us-east-1:999999999999",
            "US-east-1",
            "us-east",
            "us--1",
            "u-east-1",
            "us-east-1a",
            "us-east-",
            "",
            "us-east-1/x",
        ] {
            assert!(!is_valid_region(bad), "{bad}");
        }
    }

    #[test]
    fn malformed_headers() {
        assert!(matches!(parse_authorization("Basic abc"), Err(SigError::Incomplete(_))));
        assert!(matches!(
            parse_authorization("AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=x"),
            Err(SigError::Incomplete(_))
        ));
    }
}
