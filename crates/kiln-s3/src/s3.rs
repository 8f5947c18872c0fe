//! The S3 wire protocol over [`ObjectStore`], through `s3s`: SigV4 (headers, presigned URLs,
//! `UNSIGNED-PAYLOAD`, `aws-chunked` streaming payloads) is verified by `s3s` against kiln's access
//! keys; this module adds accounts (a bucket is visible only to the account that owns it), digests
//! (Content-MD5, `x-amz-checksum-*` in headers or trailers) and the mapping of each operation.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use http::{HeaderMap, StatusCode};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::checksum::ChecksumHasher;
use s3s::dto::*;
use s3s::host::{S3Host, VirtualHost};
use s3s::path::S3Path;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, TrailingHeaders};
use time::OffsetDateTime;

use crate::listing::{ListPage, ListQuery, decode_token, encode_token, url_encode};
use crate::store::{ObjectInfo, ObjectMeta, ObjectStore, Received};
use crate::{Error, MAX_PART_NUMBER};

/// Where the S3 endpoint looks up access keys: the secret to verify signatures with and the
/// account the key belongs to.
#[async_trait::async_trait]
pub trait Accounts: Send + Sync + 'static {
    /// `(secret access key, 12-digit account id)` of a key, if it exists.
    async fn lookup(&self, access_key_id: &str) -> Option<(String, String)>;
}

/// The calling account, put into the request by the access check.
#[derive(Debug, Clone)]
struct Caller(String);

fn err(code: S3ErrorCode, message: impl Into<String>) -> S3Error {
    S3Error::with_message(code, message.into())
}

fn access_denied() -> S3Error {
    err(S3ErrorCode::AccessDenied, "Access Denied")
}

impl From<Error> for S3Error {
    fn from(e: Error) -> Self {
        use S3ErrorCode as C;
        match e {
            Error::NoSuchBucket(_) => err(C::NoSuchBucket, "The specified bucket does not exist"),
            Error::NoSuchKey { .. } => err(C::NoSuchKey, "The specified key does not exist."),
            Error::BucketAlreadyExists(_) => err(
                C::BucketAlreadyExists,
                "The requested bucket name is not available. The bucket namespace is shared by all users \
                 of the system. Please select a different name and try again.",
            ),
            Error::BucketAlreadyOwnedByYou(_) => err(
                C::BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it.",
            ),
            Error::BucketNotEmpty(_) => err(C::BucketNotEmpty, "The bucket you tried to delete is not empty"),
            Error::InvalidBucketName(_) => err(C::InvalidBucketName, "The specified bucket is not valid."),
            Error::InvalidKey(m) => err(C::InvalidArgument, m),
            Error::KeyTooLong(_) => err(C::KeyTooLongError, "Your key is too long"),
            Error::NoSuchUpload(_) => err(
                C::NoSuchUpload,
                "The specified upload does not exist. The upload ID may be invalid, or the upload may have \
                 been aborted or completed.",
            ),
            Error::InvalidPart(m) => err(C::InvalidPart, m),
            Error::InvalidPartOrder => err(
                C::InvalidPartOrder,
                "The list of parts was not in ascending order. Parts must be ordered by part number.",
            ),
            Error::EntityTooSmall(_) => err(
                C::EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed object size.",
            ),
            Error::InvalidArgument(m) => err(C::InvalidArgument, m),
            Error::BadDigest(m) => err(C::BadDigest, m),
            Error::Body(source) => body_error(&source),
            e if e.is_disk_full() => {
                tracing::error!(target: "kiln::s3", "{e}");
                let mut e = err(
                    C::Custom("XKilnStorageFull".into()),
                    "The disk of kiln's data directory is full. Delete objects you no longer need \
                     (DeleteObject frees their space at once) or free space on that disk, then retry.",
                );
                e.set_status_code(StatusCode::INSUFFICIENT_STORAGE);
                e
            }
            e @ (Error::Io { .. } | Error::Index(_) | Error::Corrupt(_)) => {
                tracing::error!(target: "kiln::s3", "{e}");
                err(C::InternalError, "We encountered an internal error. Please try again.")
            }
        }
    }
}

/// The S3 error for a request body that failed while being read: `s3s` verifies payload hashes
/// and chunk signatures as the body streams, so its failures surface here.
fn body_error(source: &s3s::StdError) -> S3Error {
    let text = source.to_string();
    if text.contains("Sha256Mismatch") {
        let mut e = err(
            S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        );
        e.set_status_code(StatusCode::BAD_REQUEST);
        e
    } else if text.contains("SignatureMismatch") {
        err(
            S3ErrorCode::SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided.",
        )
    } else {
        tracing::debug!(target: "kiln::s3", "request body failed: {text}");
        err(
            S3ErrorCode::IncompleteBody,
            "You did not provide the number of bytes specified by the Content-Length HTTP header.",
        )
    }
}

struct Auth(Arc<dyn Accounts>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.lookup(access_key).await {
            Some((secret, _)) => Ok(SecretKey::from(secret)),
            None => Err(err(
                S3ErrorCode::InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records.",
            )),
        }
    }
}

/// Requests to `<bucket>.localhost[:port]` are virtual-hosted style (botocore addresses an
/// `http://localhost:port` endpoint that way); every other host, IP addresses included, is path-style.
struct LocalhostBuckets;

impl S3Host for LocalhostBuckets {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        match name.strip_suffix(".localhost") {
            Some(bucket) if !bucket.is_empty() => Ok(VirtualHost::new(host).with_bucket(bucket)),
            _ => Ok(VirtualHost::new(host)),
        }
    }
}

struct Access {
    accounts: Arc<dyn Accounts>,
    store: ObjectStore,
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(err(
                S3ErrorCode::AccessDenied,
                "Anonymous requests are not allowed: sign requests with a kiln access key.",
            ));
        };
        let Some((_, account)) = self.accounts.lookup(&credentials.access_key).await else {
            return Err(err(
                S3ErrorCode::InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records.",
            ));
        };
        let bucket = match cx.s3_path() {
            S3Path::Root => None,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(bucket.to_string()),
        };
        if let Some(bucket) = bucket
            && cx.s3_op().name() != "CreateBucket"
            && let Some(b) = self.store.bucket(&bucket).await?
            && b.account != account
        {
            return Err(access_denied());
        }
        cx.extensions_mut().insert(Caller(account));
        Ok(())
    }
}

/// Serves the S3 protocol for an [`ObjectStore`].
#[derive(Clone)]
pub struct S3Handler {
    service: S3Service,
    store: ObjectStore,
}

impl S3Handler {
    /// The S3 endpoint over `store`, authenticating with `accounts`.
    pub fn new(store: ObjectStore, accounts: Arc<dyn Accounts>) -> Self {
        let mut builder = S3ServiceBuilder::new(Api { store: store.clone() });
        builder.set_auth(Auth(accounts.clone()));
        builder.set_host(LocalhostBuckets);
        builder.set_access(Access {
            accounts,
            store: store.clone(),
        });
        Self {
            service: builder.build(),
            store,
        }
    }

    /// The store behind the endpoint (for in-process use: creating buckets for the engine).
    pub fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// Handles one S3 request. The body is streamed in both directions; no size limit applies
    /// beyond S3's own (parts up to 5 GiB).
    pub async fn handle<B>(&self, req: http::Request<B>) -> http::Response<s3s::Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if let Err(r) = crate::auth_limits::check(req.headers(), req.uri().query().unwrap_or(""), now) {
            return xml_error(r.status, r.code, &r.message);
        }
        let req = req.map(s3s::Body::http_body_unsync);
        match self.service.call(req).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::error!(target: "kiln::s3", "S3 request failed: {e:?}");
                xml_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                )
            }
        }
    }
}

/// An S3 error response built outside `s3s` (`message` is plain text, escaped here).
fn xml_error(status: StatusCode, code: &str, message: &str) -> http::Response<s3s::Body> {
    let escaped = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut resp = http::Response::new(s3s::Body::from(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{escaped}</Message></Error>"
    )));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    resp
}

struct Api {
    store: ObjectStore,
}

fn caller<T>(req: &S3Request<T>) -> S3Result<String> {
    req.extensions
        .get::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(access_denied)
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from(
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH),
    )
}

fn epoch_ms(t: Timestamp) -> i64 {
    let t: OffsetDateTime = t.into();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn owner(account: &str) -> Owner {
    Owner {
        display_name: Some(account.to_string()),
        id: Some(account.to_string()),
    }
}

/// Content encodings as stored: `aws-chunked` is how the body travelled, not what it is.
fn stored_encoding(encoding: Option<String>) -> Option<String> {
    let kept: Vec<&str> = encoding
        .as_deref()?
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

struct MetaParts {
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
}

fn meta_from(p: MetaParts) -> ObjectMeta {
    ObjectMeta {
        content_type: p.content_type,
        content_encoding: stored_encoding(p.content_encoding),
        content_disposition: p.content_disposition,
        content_language: p.content_language,
        cache_control: p.cache_control,
        expires: p.expires.map(epoch_ms),
        user: p
            .metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
    }
}

fn user_metadata(meta: &ObjectMeta) -> Option<Metadata> {
    (!meta.user.is_empty()).then(|| meta.user.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

/// The digests of an upload's body: Content-MD5 and `x-amz-checksum-*` (from headers, or from
/// trailers of an `aws-chunked` body), computed while the body streams and checked before the
/// object becomes visible.
struct Digests {
    hasher: Option<Arc<Mutex<ChecksumHasher>>>,
    content_md5: Option<[u8; 16]>,
    expected: Checksum,
    trailers: Option<TrailingHeaders>,
    computed: Mutex<Checksum>,
}

struct ExpectedChecksums {
    crc32: Option<String>,
    crc32c: Option<String>,
    crc64nvme: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
    algorithm: Option<ChecksumAlgorithm>,
}

impl Digests {
    fn new(
        content_md5: Option<&str>,
        e: ExpectedChecksums,
        headers: &HeaderMap,
        trailers: Option<TrailingHeaders>,
    ) -> S3Result<Self> {
        let content_md5 = match content_md5 {
            None => None,
            Some(b64) => {
                let raw = base64_simd::STANDARD
                    .decode_to_vec(b64.trim())
                    .map_err(|_| err(S3ErrorCode::InvalidDigest, "The Content-MD5 you specified was invalid."))?;
                Some(
                    <[u8; 16]>::try_from(raw.as_slice())
                        .map_err(|_| err(S3ErrorCode::InvalidDigest, "The Content-MD5 you specified was invalid."))?,
                )
            }
        };
        let trailer_names: Vec<String> = headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        let wants = |algorithm: &str, header: &Option<String>| {
            header.is_some()
                || e.algorithm
                    .as_ref()
                    .is_some_and(|a| a.as_str().eq_ignore_ascii_case(algorithm))
                || trailer_names
                    .iter()
                    .any(|t| t == &format!("x-amz-checksum-{}", algorithm.to_ascii_lowercase()))
        };
        let mut hasher = ChecksumHasher::default();
        let mut any = false;
        if wants("CRC32", &e.crc32) {
            hasher.crc32 = Some(Default::default());
            any = true;
        }
        if wants("CRC32C", &e.crc32c) {
            hasher.crc32c = Some(Default::default());
            any = true;
        }
        if wants("CRC64NVME", &e.crc64nvme) {
            hasher.crc64nvme = Some(Default::default());
            any = true;
        }
        if wants("SHA1", &e.sha1) {
            hasher.sha1 = Some(Default::default());
            any = true;
        }
        if wants("SHA256", &e.sha256) {
            hasher.sha256 = Some(Default::default());
            any = true;
        }
        Ok(Self {
            hasher: any.then(|| Arc::new(Mutex::new(hasher))),
            content_md5,
            expected: Checksum {
                checksum_crc32: e.crc32,
                checksum_crc32c: e.crc32c,
                checksum_crc64nvme: e.crc64nvme,
                checksum_sha1: e.sha1,
                checksum_sha256: e.sha256,
                checksum_type: None,
            },
            trailers,
            computed: Mutex::new(Checksum::default()),
        })
    }

    /// The body, hashed as it passes.
    fn wrap(
        &self,
        body: Option<StreamingBlob>,
    ) -> impl Stream<Item = Result<Bytes, s3s::StdError>> + Unpin + Send + use<> {
        let hasher = self.hasher.clone();
        let body: StreamingBlob = body.unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
        body.inspect_ok(move |chunk| {
            if let Some(h) = &hasher
                && let Ok(mut h) = h.lock()
            {
                h.update(chunk);
            }
        })
    }

    /// Checks the received body against every digest the client sent.
    fn check(&self, received: &Received) -> Result<(), Error> {
        if let Some(md5) = self.content_md5
            && md5 != received.md5
        {
            return Err(Error::BadDigest(
                "The Content-MD5 you specified did not match what we received.".into(),
            ));
        }
        let Some(hasher) = &self.hasher else { return Ok(()) };
        let computed = hasher
            .lock()
            .map(|mut h| std::mem::take(&mut *h).finalize())
            .unwrap_or_default();
        let mut expected = self.expected.clone();
        if let Some(trailers) = self.trailers.as_ref().and_then(TrailingHeaders::take) {
            let get = |name: &str| trailers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            expected.checksum_crc32 = get("x-amz-checksum-crc32").or(expected.checksum_crc32);
            expected.checksum_crc32c = get("x-amz-checksum-crc32c").or(expected.checksum_crc32c);
            expected.checksum_crc64nvme = get("x-amz-checksum-crc64nvme").or(expected.checksum_crc64nvme);
            expected.checksum_sha1 = get("x-amz-checksum-sha1").or(expected.checksum_sha1);
            expected.checksum_sha256 = get("x-amz-checksum-sha256").or(expected.checksum_sha256);
        }
        let pairs = [
            ("CRC32", &expected.checksum_crc32, &computed.checksum_crc32),
            ("CRC32C", &expected.checksum_crc32c, &computed.checksum_crc32c),
            ("CRC64NVME", &expected.checksum_crc64nvme, &computed.checksum_crc64nvme),
            ("SHA1", &expected.checksum_sha1, &computed.checksum_sha1),
            ("SHA256", &expected.checksum_sha256, &computed.checksum_sha256),
        ];
        for (name, want, got) in pairs {
            if let Some(want) = want
                && Some(want) != got.as_ref()
            {
                return Err(Error::BadDigest(format!(
                    "The {name} you specified did not match the calculated checksum."
                )));
            }
        }
        if let Ok(mut c) = self.computed.lock() {
            *c = computed;
        }
        Ok(())
    }

    fn computed(&self) -> Checksum {
        self.computed.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Applies `If-Match`, `If-None-Match`, `If-Modified-Since` and `If-Unmodified-Since` as S3 does.
fn check_conditions(
    info: &ObjectInfo,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == info.etag,
    };
    let modified_s = info.last_modified.div_euclid(1000);
    if let Some(c) = if_match {
        if !matches(c) {
            return Err(err(
                S3ErrorCode::PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold",
            ));
        }
    } else if let Some(t) = if_unmodified_since
        && modified_s > epoch_ms(t.clone()).div_euclid(1000)
    {
        return Err(err(
            S3ErrorCode::PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold",
        ));
    }
    if let Some(c) = if_none_match {
        if matches(c) {
            let mut e = err(S3ErrorCode::NotModified, "Not Modified");
            e.set_status_code(StatusCode::NOT_MODIFIED);
            return Err(e);
        }
    } else if let Some(t) = if_modified_since
        && modified_s <= epoch_ms(t.clone()).div_euclid(1000)
    {
        let mut e = err(S3ErrorCode::NotModified, "Not Modified");
        e.set_status_code(StatusCode::NOT_MODIFIED);
        return Err(e);
    }
    Ok(())
}

fn resolve_range(range: Option<&Range>, size: u64) -> S3Result<Option<std::ops::Range<u64>>> {
    match range {
        None => Ok(None),
        Some(r) => r.check(size).map(Some).map_err(|_| {
            let mut e = err(S3ErrorCode::InvalidRange, "The requested range is not satisfiable");
            e.set_status_code(StatusCode::RANGE_NOT_SATISFIABLE);
            e
        }),
    }
}

fn max_keys(requested: Option<i32>) -> S3Result<usize> {
    match requested {
        None => Ok(1000),
        Some(n) if n < 0 => Err(err(
            S3ErrorCode::InvalidArgument,
            "max-keys must be a non-negative integer",
        )),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

fn is_url_encoding(e: Option<&EncodingType>) -> bool {
    e.is_some_and(|e| e.as_str().eq_ignore_ascii_case("url"))
}

/// The listing's entries as S3 returns them, URL-encoded when the client asked for it.
fn listed(page: &ListPage, url: bool, with_owner: Option<&str>) -> (Option<Vec<Object>>, Option<Vec<CommonPrefix>>) {
    let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
    let contents: Vec<Object> = page
        .objects
        .iter()
        .map(|o| Object {
            key: Some(enc(&o.key)),
            size: Some(o.size as i64),
            e_tag: Some(ETag::Strong(o.etag.clone())),
            last_modified: Some(timestamp(o.last_modified)),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            owner: with_owner.map(owner),
            ..Default::default()
        })
        .collect();
    let prefixes: Vec<CommonPrefix> = page
        .common_prefixes
        .iter()
        .map(|p| CommonPrefix { prefix: Some(enc(p)) })
        .collect();
    (
        (!contents.is_empty()).then_some(contents),
        (!prefixes.is_empty()).then_some(prefixes),
    )
}

#[async_trait::async_trait]
impl S3 for Api {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let account = caller(&req)?;
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = input.continuation_token.clone().unwrap_or_default();
        let max = input.max_buckets.map_or(10_000, |n| n.clamp(1, 10_000) as usize);
        let mine: Vec<crate::Bucket> = self
            .store
            .buckets(&account)
            .await?
            .into_iter()
            .filter(|b| b.name.starts_with(&prefix) && b.name > after)
            .collect();
        let more = mine.len() > max;
        let page: Vec<Bucket> = mine
            .iter()
            .take(max)
            .map(|b| Bucket {
                name: Some(b.name.clone()),
                creation_date: Some(timestamp(b.created)),
                bucket_region: Some(b.region.clone().unwrap_or_else(|| "us-east-1".into())),
            })
            .collect();
        let continuation_token = if more {
            page.last().and_then(|b| b.name.clone())
        } else {
            None
        };
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(page),
            continuation_token,
            owner: Some(owner(&account)),
            prefix: input.prefix,
        }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let account = caller(&req)?;
        let input = req.input;
        let region = input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            .map(|l| l.as_str().to_string());
        self.store
            .create_bucket(&account, &input.bucket, region.as_deref())
            .await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", input.bucket)),
        }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let b = self
            .store
            .bucket(&req.input.bucket)
            .await?
            .ok_or_else(|| S3Error::from(Error::NoSuchBucket(req.input.bucket.clone())))?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(b.region.unwrap_or_else(|| "us-east-1".into())),
            ..Default::default()
        }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.store.delete_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let b = self
            .store
            .bucket(&req.input.bucket)
            .await?
            .ok_or_else(|| S3Error::from(Error::NoSuchBucket(req.input.bucket.clone())))?;
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: b.region.map(BucketLocationConstraint::from),
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        if input.if_none_match.as_ref().is_some_and(ETagCondition::is_any)
            && self.store.head_object(&input.bucket, &input.key).await.is_ok()
        {
            return Err(err(
                S3ErrorCode::PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold",
            ));
        }
        let digests = Digests::new(
            input.content_md5.as_deref(),
            ExpectedChecksums {
                crc32: input.checksum_crc32,
                crc32c: input.checksum_crc32c,
                crc64nvme: input.checksum_crc64nvme,
                sha1: input.checksum_sha1,
                sha256: input.checksum_sha256,
                algorithm: input.checksum_algorithm,
            },
            &req.headers,
            req.trailing_headers,
        )?;
        let meta = meta_from(MetaParts {
            content_type: input.content_type,
            content_encoding: input.content_encoding,
            content_disposition: input.content_disposition,
            content_language: input.content_language,
            cache_control: input.cache_control,
            expires: input.expires,
            metadata: input.metadata,
        });
        let body = digests.wrap(input.body);
        let info = self
            .store
            .put_object(&input.bucket, &input.key, body, meta, |r| digests.check(r))
            .await?;
        let c = digests.computed();
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(info.etag)),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        if input.part_number.is_some() {
            return Err(err(
                S3ErrorCode::NotImplemented,
                "GetObject by part number is not supported.",
            ));
        }
        let object = self.store.open_object(&input.bucket, &input.key).await?;
        let info = object.info.clone();
        check_conditions(
            &info,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let range = resolve_range(input.range.as_ref(), info.size)?;
        let bytes = range.clone().unwrap_or(0..info.size);
        let content_range = range.map(|r| format!("bytes {}-{}/{}", r.start, r.end - 1, info.size));
        let body = StreamingBlob::wrap(object.read(bytes.clone()));
        let meta = &info.meta;
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            accept_ranges: Some("bytes".into()),
            content_length: Some((bytes.end - bytes.start) as i64),
            content_range,
            content_type: Some(meta.content_type.clone().unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into())),
            content_encoding: meta.content_encoding.clone(),
            content_disposition: meta.content_disposition.clone(),
            content_language: meta.content_language.clone(),
            cache_control: meta.cache_control.clone(),
            expires: meta.expires.map(timestamp),
            e_tag: Some(ETag::Strong(info.etag.clone())),
            last_modified: Some(timestamp(info.last_modified)),
            metadata: user_metadata(meta),
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let info = self.store.head_object(&input.bucket, &input.key).await?;
        check_conditions(
            &info,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let range = resolve_range(input.range.as_ref(), info.size)?;
        let bytes = range.clone().unwrap_or(0..info.size);
        let meta = &info.meta;
        Ok(S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some((bytes.end - bytes.start) as i64),
            content_range: range.map(|r| format!("bytes {}-{}/{}", r.start, r.end - 1, info.size)),
            content_type: Some(meta.content_type.clone().unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into())),
            content_encoding: meta.content_encoding.clone(),
            content_disposition: meta.content_disposition.clone(),
            content_language: meta.content_language.clone(),
            cache_control: meta.cache_control.clone(),
            expires: meta.expires.map(timestamp),
            e_tag: Some(ETag::Strong(info.etag.clone())),
            last_modified: Some(timestamp(info.last_modified)),
            metadata: user_metadata(meta),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.store.delete_object(&req.input.bucket, &req.input.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        if self.store.bucket(&input.bucket).await?.is_none() {
            return Err(Error::NoSuchBucket(input.bucket).into());
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for o in input.delete.objects {
            match self.store.delete_object(&input.bucket, &o.key).await {
                Ok(()) => {
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(o.key),
                            ..Default::default()
                        });
                    }
                }
                Err(e) => {
                    let e = S3Error::from(e);
                    errors.push(s3s::dto::Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(o.key),
                        message: e.message().map(str::to_string),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let account = caller(&req)?;
        let input = req.input;
        let (src_bucket, src_key) = match &input.copy_source {
            CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
            _ => {
                return Err(err(
                    S3ErrorCode::NotImplemented,
                    "Copying from access points is not supported.",
                ));
            }
        };
        match self.store.bucket(&src_bucket).await? {
            Some(b) if b.account != account => return Err(access_denied()),
            Some(_) => {}
            None => return Err(Error::NoSuchBucket(src_bucket).into()),
        }
        let src = self.store.head_object(&src_bucket, &src_key).await?;
        check_conditions(
            &src,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|mut e| {
            // S3 answers a failed copy-source condition with 412, never 304.
            if e.status_code() == Some(StatusCode::NOT_MODIFIED) {
                e = err(
                    S3ErrorCode::PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold",
                );
            }
            e
        })?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str().eq_ignore_ascii_case(MetadataDirective::REPLACE));
        if !replace && src_bucket == input.bucket && src_key == input.key {
            return Err(err(
                S3ErrorCode::InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing \
                 the object's metadata, storage class, website redirect location or encryption attributes.",
            ));
        }
        let meta = replace.then(|| {
            meta_from(MetaParts {
                content_type: input.content_type,
                content_encoding: input.content_encoding,
                content_disposition: input.content_disposition,
                content_language: input.content_language,
                cache_control: input.cache_control,
                expires: input.expires,
                metadata: input.metadata,
            })
        });
        let info = self
            .store
            .copy_object(&src_bucket, &src_key, &input.bucket, &input.key, meta)
            .await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(info.etag)),
                last_modified: Some(timestamp(info.last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let account = caller(&req)?;
        let input = req.input;
        let max = max_keys(input.max_keys)?;
        let marker = match &input.continuation_token {
            Some(t) => Some(decode_token(t).ok_or_else(|| {
                err(
                    S3ErrorCode::InvalidArgument,
                    "The continuation token provided is incorrect",
                )
            })?),
            None => input.start_after.clone(),
        };
        let page = self
            .store
            .list_objects(
                &input.bucket,
                ListQuery {
                    prefix: input.prefix.clone().unwrap_or_default(),
                    delimiter: input.delimiter.clone(),
                    marker,
                    max_keys: max,
                },
            )
            .await?;
        let url = is_url_encoding(input.encoding_type.as_ref());
        let enc = |s: Option<String>| s.map(|s| if url { url_encode(&s) } else { s });
        let owner_account = input.fetch_owner.unwrap_or(false).then_some(account.as_str());
        let (contents, common_prefixes) = listed(&page, url, owner_account);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix).unwrap_or_default()),
            delimiter: enc(input.delimiter),
            start_after: enc(input.start_after),
            max_keys: Some(max as i32),
            key_count: Some((page.objects.len() + page.common_prefixes.len()) as i32),
            is_truncated: Some(page.truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: page.next_marker.as_deref().map(encode_token),
            contents,
            common_prefixes,
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let max = max_keys(input.max_keys)?;
        let page = self
            .store
            .list_objects(
                &input.bucket,
                ListQuery {
                    prefix: input.prefix.clone().unwrap_or_default(),
                    delimiter: input.delimiter.clone(),
                    marker: input.marker.clone(),
                    max_keys: max,
                },
            )
            .await?;
        let url = is_url_encoding(input.encoding_type.as_ref());
        let enc = |s: Option<String>| s.map(|s| if url { url_encode(&s) } else { s });
        let (contents, common_prefixes) = listed(&page, url, None);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix).unwrap_or_default()),
            delimiter: enc(input.delimiter),
            marker: Some(enc(input.marker).unwrap_or_default()),
            next_marker: enc(page.next_marker.clone()),
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            contents,
            common_prefixes,
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let meta = meta_from(MetaParts {
            content_type: input.content_type,
            content_encoding: input.content_encoding,
            content_disposition: input.content_disposition,
            content_language: input.content_language,
            cache_control: input.cache_control,
            expires: input.expires,
            metadata: input.metadata,
        });
        let upload_id = self.store.create_upload(&input.bucket, &input.key, meta).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            checksum_algorithm: input.checksum_algorithm,
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let digests = Digests::new(
            input.content_md5.as_deref(),
            ExpectedChecksums {
                crc32: input.checksum_crc32,
                crc32c: input.checksum_crc32c,
                crc64nvme: input.checksum_crc64nvme,
                sha1: input.checksum_sha1,
                sha256: input.checksum_sha256,
                algorithm: input.checksum_algorithm,
            },
            &req.headers,
            req.trailing_headers,
        )?;
        let body = digests.wrap(input.body);
        let part = self
            .store
            .upload_part(
                &input.bucket,
                &input.key,
                &input.upload_id,
                input.part_number,
                body,
                |r| digests.check(r),
            )
            .await?;
        let c = digests.computed();
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag)),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let mut parts = Vec::new();
        for p in input.multipart_upload.and_then(|m| m.parts).unwrap_or_default() {
            let (Some(number), Some(etag)) = (p.part_number, p.e_tag) else {
                return Err(err(
                    S3ErrorCode::InvalidPart,
                    "Every part needs a PartNumber and an ETag.",
                ));
            };
            parts.push((number, etag.value().to_string()));
        }
        let info = self
            .store
            .complete_upload(&input.bucket, &input.key, &input.upload_id, &parts)
            .await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(ETag::Strong(info.etag)),
            location: Some(format!("/{}/{}", input.bucket, url_encode(&input.key))),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.store
            .abort_upload(&input.bucket, &input.key, &input.upload_id)
            .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let account = caller(&req)?;
        let input = req.input;
        let max = input.max_parts.map_or(1000, |n| n.clamp(1, 1000) as usize);
        let marker = input.part_number_marker.unwrap_or(0).clamp(0, MAX_PART_NUMBER);
        let (_, parts, truncated) = self
            .store
            .list_parts(&input.bucket, &input.key, &input.upload_id, marker, max)
            .await?;
        let next = if truncated {
            parts.last().map(|p| p.part_number)
        } else {
            None
        };
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: Some(marker),
            next_part_number_marker: next,
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            owner: Some(owner(&account)),
            initiator: Some(Initiator {
                display_name: Some(account.clone()),
                id: Some(account.clone()),
            }),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| Part {
                        part_number: Some(p.part_number),
                        size: Some(p.size as i64),
                        e_tag: Some(ETag::Strong(p.etag)),
                        last_modified: Some(timestamp(p.last_modified)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let account = caller(&req)?;
        let input = req.input;
        let max = input.max_uploads.map_or(1000, |n| n.clamp(1, 1000) as usize);
        let (uploads, truncated) = self
            .store
            .list_uploads(
                &input.bucket,
                input.prefix.as_deref().unwrap_or(""),
                input.key_marker.as_deref().unwrap_or(""),
                input.upload_id_marker.as_deref().unwrap_or(""),
                max,
            )
            .await?;
        let url = is_url_encoding(input.encoding_type.as_ref());
        let enc = |s: &str| if url { url_encode(s) } else { s.to_string() };
        let (next_key, next_id) = match (truncated, uploads.last()) {
            (true, Some(u)) => (Some(enc(&u.key)), Some(u.upload_id.clone())),
            _ => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix.as_deref().map(enc),
            key_marker: input.key_marker.as_deref().map(enc),
            upload_id_marker: input.upload_id_marker,
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            encoding_type: input.encoding_type,
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(enc(&u.key)),
                        upload_id: Some(u.upload_id),
                        initiated: Some(timestamp(u.initiated)),
                        owner: Some(owner(&account)),
                        initiator: Some(Initiator {
                            display_name: Some(account.clone()),
                            id: Some(account.clone()),
                        }),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}
