//! AWS JSON 1.1: `POST /` with `X-Amz-Target: <Service>.<Operation>`, SigV4-signed.
//! Authenticates, checks the body against the service model, parses it into the operation's
//! request type and calls the one engine function for the operation.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use kiln_api::sigv4::{self, RequestParts, SigError};
use kiln_api::{ApiResult, AwsError, model};
use kiln_engine::Caller;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::App;
use crate::body::{BodyError, read_limited};

/// Largest JSON request body accepted.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// A service served over AWS JSON 1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    SageMaker,
    Logs,
}

impl Service {
    fn signing_name(self) -> &'static str {
        match self {
            Self::SageMaker => "sagemaker",
            Self::Logs => "logs",
        }
    }
}

/// Splits `X-Amz-Target` into service and operation.
pub fn parse_target(target: &str) -> Option<(Service, &str)> {
    let (prefix, op) = target.split_once('.')?;
    let service = match prefix {
        "SageMaker" => Service::SageMaker,
        "Logs_20140328" => Service::Logs,
        _ => return None,
    };
    (!op.is_empty()).then_some((service, op))
}

pub(crate) fn request_id() -> String {
    let r: u128 = rand::random();
    let h = format!("{r:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn respond(status: u16, body: String) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", request_id())
        .body(Body::from(body))
        .unwrap_or_default()
}

/// An error response.
pub fn error_response(e: &AwsError) -> Response {
    let mut r = respond(e.status, e.body());
    if let Ok(v) = e.code.parse() {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    r
}

fn sig_error(e: SigError) -> AwsError {
    let (status, code) = e.status_and_code();
    AwsError::new(status, code, e.to_string())
}

fn epoch_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The request's headers as name/value pairs (a value that is not text is refused).
fn header_pairs(headers: &axum::http::HeaderMap) -> ApiResult<Vec<(String, String)>> {
    let mut pairs = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        let v = v
            .to_str()
            .map_err(|_| AwsError::serialization(format!("Header '{k}' is not valid text.")))?;
        pairs.push((k.as_str().to_string(), v.to_string()));
    }
    Ok(pairs)
}

/// A request whose headers passed every check but the signature itself, which needs the body.
pub struct Authenticated {
    auth: sigv4::Authorization,
    key: crate::keys::AccessKey,
}

/// Checks everything about the request's authentication that the headers tell: a known key, the
/// service of the scope, the date, the signed headers. Runs before the body is read.
pub async fn authenticate_headers(app: &App, service: &str, parts: &RequestParts<'_>) -> ApiResult<Authenticated> {
    let auth_header = parts
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| sig_error(SigError::Missing))?;
    let auth = sigv4::parse_authorization(auth_header).map_err(sig_error)?;
    // Access keys of the keys file, or the temporary key of a running job (its scripts' calls).
    let key = match app.keys.get(&auth.access_key) {
        Some(k) => k,
        None => app
            .engine
            .job_credentials(&auth.access_key)
            .await
            .map(|(secret, account)| crate::keys::AccessKey {
                access_key_id: auth.access_key.clone(),
                secret_access_key: secret,
                account_id: account,
            })
            .ok_or_else(|| sig_error(SigError::UnknownKey))?,
    };
    if auth.service != service {
        return Err(AwsError::new(
            403,
            "InvalidSignatureException",
            format!("Credential should be scoped to correct service: '{service}'."),
        ));
    }
    if !sigv4::is_valid_region(&auth.region) {
        return Err(AwsError::new(
            403,
            "InvalidSignatureException",
            "Credential should be scoped to a valid region.",
        ));
    }
    sigv4::check_headers(parts, &auth, epoch_now()).map_err(sig_error)?;
    Ok(Authenticated { auth, key })
}

/// Verifies the signature over the request with its body; returns the calling account and region.
pub fn verify_signature(pre: Authenticated, parts: &RequestParts<'_>) -> ApiResult<Caller> {
    sigv4::verify(parts, &pre.auth, &pre.key.secret_access_key, epoch_now()).map_err(sig_error)?;
    Ok(Caller {
        account: pre.key.account_id,
        region: pre.auth.region,
    })
}

/// The error for a body over the limit: 413, in the JSON protocol's envelope.
fn too_large(limit: usize) -> AwsError {
    AwsError::new(
        413,
        "RequestEntityTooLargeException",
        format!("The request body is larger than {limit} bytes."),
    )
}

fn json<T: serde::Serialize>(response: ApiResult<T>) -> ApiResult<String> {
    response.and_then(|r| {
        serde_json::to_string(&r).map_err(|e| AwsError::internal(format!("cannot write the response: {e}")))
    })
}

fn parse<T: DeserializeOwned>(body: Value) -> ApiResult<T> {
    serde_json::from_value(body).map_err(|e| AwsError::serialization(format!("Could not read the request: {e}")))
}

/// Handles one AWS JSON 1.1 request: authenticates it on its headers, then reads its body (at
/// most [`MAX_BODY`]), verifies the signature over it and runs the operation.
pub async fn handle(app: &App, parts: Parts, body: Body, target: &str) -> Response {
    let mut body = body;
    let headers = parts.headers.clone();
    match handle_inner(app, parts, &mut body, target).await {
        Ok(body) => respond(200, body),
        Err(e) => {
            crate::body::discard_small(&mut body, &headers).await;
            if e.status >= 500 {
                tracing::error!(target: "kiln::api", op = target, "{}", e.message);
            }
            error_response(&e)
        }
    }
}

async fn handle_inner(app: &App, parts: Parts, body: &mut Body, target: &str) -> ApiResult<String> {
    let (service, op) = parse_target(target).ok_or_else(|| AwsError::unknown_operation(target))?;
    let pairs = header_pairs(&parts.headers)?;
    let method = parts.method.clone();
    let mut request = RequestParts {
        method: method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &pairs,
        body: &[],
    };
    let pre = authenticate_headers(app, service.signing_name(), &request).await?;
    let body = match read_limited(body, &parts.headers, MAX_BODY).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { limit }) => {
            // A signed client is owed its answer: let it finish sending, without keeping the bytes.
            crate::body::drain(body, &parts.headers).await;
            return Err(too_large(limit));
        }
        Err(BodyError::Unreadable) => return Err(AwsError::serialization("The request body could not be read.")),
    };
    request.body = &body;
    let caller = verify_signature(pre, &request)?;
    if method != Method::POST {
        return Err(AwsError::serialization("AWS JSON requests must use POST."));
    }
    dispatch(app, &caller, service, op, &body).await
}

/// Runs operation `op` of `service` for `caller` on a JSON body as a client sent it: checked
/// against the service model, parsed, and handed to the engine (the console's calls come here too).
pub async fn dispatch(app: &App, caller: &Caller, service: Service, op: &str, body: &[u8]) -> ApiResult<String> {
    let target = match service {
        Service::SageMaker => format!("SageMaker.{op}"),
        Service::Logs => format!("Logs_20140328.{op}"),
    };
    let target = target.as_str();
    let caller = caller.clone();
    let model = match service {
        Service::SageMaker => model::sagemaker(),
        Service::Logs => model::logs(),
    };
    // kiln's own operations (no SageMaker model): `InterruptTrainingJob`.
    let kiln_own = matches!((service, op), (Service::SageMaker, "InterruptTrainingJob"));
    if !model.has_operation(op) && !kiln_own {
        return Err(AwsError::unknown_operation(target));
    }
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(body)
            .map_err(|e| AwsError::serialization(format!("The request body is not valid JSON: {e}")))?
    };
    model.validate(op, &body)?;
    let engine = &app.engine;
    match (service, op) {
        (Service::SageMaker, "CreateTrainingJob") => json(engine.create_training_job(&caller, parse(body)?).await),
        (Service::SageMaker, "DescribeTrainingJob") => json(engine.describe_training_job(&caller, parse(body)?).await),
        (Service::SageMaker, "ListTrainingJobs") => json(engine.list_training_jobs(&caller, parse(body)?).await),
        (Service::SageMaker, "Search") => json(engine.search(&caller, parse(body)?).await),
        (Service::SageMaker, "StopTrainingJob") => json(engine.stop_training_job(&caller, parse(body)?).await),
        // kiln's own: a spot interruption, for rehearsing resumes (`kiln jobs interrupt`).
        (Service::SageMaker, "InterruptTrainingJob") => {
            json(engine.interrupt_training_job(&caller, parse(body)?).await)
        }
        (Service::SageMaker, "DeleteTrainingJob") => json(engine.delete_training_job(&caller, parse(body)?).await),
        (Service::SageMaker, "UpdateTrainingJob") => json(engine.update_training_job(&caller, parse(body)?).await),
        (Service::SageMaker, "AddTags") => json(engine.add_tags(&caller, parse(body)?).await),
        (Service::SageMaker, "ListTags") => json(engine.list_tags(&caller, parse(body)?).await),
        (Service::SageMaker, "DeleteTags") => json(engine.delete_tags(&caller, parse(body)?).await),
        (Service::SageMaker, "CreateHyperParameterTuningJob") => {
            json(engine.create_tuning_job(&caller, parse(body)?).await)
        }
        (Service::SageMaker, "DescribeHyperParameterTuningJob") => {
            json(engine.describe_tuning_job(&caller, parse(body)?).await)
        }
        (Service::SageMaker, "ListHyperParameterTuningJobs") => {
            json(engine.list_tuning_jobs(&caller, parse(body)?).await)
        }
        (Service::SageMaker, "ListTrainingJobsForHyperParameterTuningJob") => {
            json(engine.list_tuning_children(&caller, parse(body)?).await)
        }
        (Service::SageMaker, "StopHyperParameterTuningJob") => {
            json(engine.stop_tuning_job(&caller, parse(body)?).await)
        }
        (Service::SageMaker, "DeleteHyperParameterTuningJob") => {
            json(engine.delete_tuning_job(&caller, parse(body)?).await)
        }
        (Service::Logs, "CreateLogGroup") => json(engine.create_log_group(&caller, parse(body)?).await),
        (Service::Logs, "CreateLogStream") => json(engine.create_log_stream(&caller, parse(body)?).await),
        (Service::Logs, "PutLogEvents") => json(engine.put_log_events(&caller, parse(body)?).await),
        (Service::Logs, "DescribeLogGroups") => json(engine.describe_log_groups(&caller, parse(body)?).await),
        (Service::Logs, "DescribeLogStreams") => json(engine.describe_log_streams(&caller, parse(body)?).await),
        (Service::Logs, "GetLogEvents") => json(engine.get_log_events(&caller, parse(body)?).await),
        (Service::Logs, "FilterLogEvents") => json(engine.filter_log_events(&caller, parse(body)?).await),
        _ => Err(AwsError::unknown_operation(target)),
    }
}
