//! The web console under `/_kiln/ui/`: pages rendered here from the same engine calls the API
//! makes (so a page shows exactly what `DescribeTrainingJob` says), with a little JavaScript for
//! what moves: the jobs' statuses, a job's log tail (server-sent events) and its metric charts.
//! Signed in with an access key ([`session`]); an account sees only its own resources.
//!
//! Routes: `login` (GET form, POST sign-in), `logout` (POST), `static/*`, `jobs` (list; `?rows=1`
//! gives the table's rows alone, for refreshing), `jobs/<name>` (a job), `jobs/<name>/metrics`
//! (its series as JSON), `jobs/<name>/logs` (its log lines as server-sent events),
//! `jobs/<name>/artifacts/<model|output>` (a download from the object store), `tuning` and
//! `tuning/<name>` (tuning jobs and their leaderboard), `api/<Service>/<Operation>` (an API call
//! as the signed-in account: how the pages' scripts stop a job).

mod pages;
pub mod session;

use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use kiln_api::cloudwatch::{HOST_DIMENSION, TRAINING_NAMESPACE};
use kiln_engine::Caller;
use serde_json::{Value, json};

use crate::App;
use crate::aws::{Service, dispatch};
use crate::body::{form_decode, read_limited};
use session::Session;

/// Where the console lives.
pub const ROOT: &str = "/_kiln/ui";
const CSS: &str = include_str!("ui.css");
const JS: &str = include_str!("ui.js");
/// Largest form or API body the console takes.
const MAX_BODY: usize = 1024 * 1024;
/// How often the log tail looks for new lines.
const TAIL_EVERY: Duration = Duration::from_millis(700);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn response(status: StatusCode, content_type: &str, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-frame-options", "DENY")
        .header("x-content-type-options", "nosniff")
        .body(body.into())
        .unwrap_or_default()
}

fn html(status: StatusCode, body: String) -> Response {
    response(status, "text/html; charset=utf-8", body)
}

fn redirect(to: &str, cookie: Option<String>) -> Response {
    let mut r = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .header(header::CACHE_CONTROL, "no-store");
    if let Some(c) = cookie {
        r = r.header(header::SET_COOKIE, c);
    }
    r.body(Body::empty()).unwrap_or_default()
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    response(status, "application/json", v.to_string())
}

fn session_of(app: &App, parts: &Parts) -> Option<Session> {
    let header = parts.headers.get(header::COOKIE)?.to_str().ok()?;
    let value = session::cookie(header, session::COOKIE)?;
    session::verify(&app.keys, value, now())
}

/// `a=1&b=x%20y` → pairs, percent- and plus-decoded.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

/// Handles a request under `/_kiln/ui`.
pub async fn handle(app_arc: std::sync::Arc<App>, parts: Parts, body: Body) -> Response {
    let app: &App = &app_arc;
    let path = parts.uri.path().strip_prefix(ROOT).unwrap_or("").to_string();
    let query = form_pairs(parts.uri.query().unwrap_or(""));
    match (&parts.method, path.as_str()) {
        (&Method::GET, "/static/ui.css") => return response(StatusCode::OK, "text/css", CSS),
        (&Method::GET, "/static/ui.js") => return response(StatusCode::OK, "text/javascript", JS),
        (&Method::GET, "/login") => return html(StatusCode::OK, pages::login(None)),
        (&Method::POST, "/login") => return sign_in(app, &parts, body).await,
        (&Method::POST, "/logout") => {
            let gone = format!(
                "{}=; Path={ROOT}; Max-Age=0; HttpOnly; SameSite=Strict",
                session::COOKIE
            );
            return redirect(&format!("{ROOT}/login"), Some(gone));
        }
        _ => {}
    }
    let Some(session) = session_of(app, &parts) else {
        if path.starts_with("/api/") || path.ends_with("/metrics") || path.ends_with("/logs") {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"message": "sign in to the console first"}),
            );
        }
        return redirect(&format!("{ROOT}/login"), None);
    };
    let caller = Caller {
        account: session.account.clone(),
        region: "us-east-1".into(),
    };
    let segs: Vec<String> = path.trim_matches('/').split('/').map(form_decode).collect::<Vec<_>>();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (&parts.method, segs.as_slice()) {
        (&Method::GET, [""]) => redirect(&format!("{ROOT}/jobs"), None),
        (&Method::GET, ["jobs"]) => jobs_page(app, &session, &caller, &query).await,
        (&Method::GET, ["jobs", name]) => job_page(app, &session, &caller, name).await,
        (&Method::GET, ["jobs", name, "metrics"]) => metrics_json(app, &caller, name).await,
        (&Method::GET, ["jobs", name, "logs"]) => log_tail(app_arc.clone(), &caller, name),
        (&Method::GET, ["jobs", name, "artifacts", what]) => {
            artifact_download(app, &session, &caller, name, what).await
        }
        (&Method::GET, ["tuning"]) => tuning_list_page(app, &session, &caller).await,
        (&Method::GET, ["pools"]) => pools_page(app, &session, &caller).await,
        (&Method::GET, ["tuning", name]) => tuning_page(app, &session, &caller, name).await,
        (&Method::POST, ["api", service, op]) => api_call(app, &parts, body, &caller, service, op).await,
        _ => html(
            StatusCode::NOT_FOUND,
            pages::error_page(&session, "Not found", "There is no such page in the console."),
        ),
    }
}

async fn sign_in(app: &App, parts: &Parts, body: Body) -> Response {
    let mut body = body;
    let Ok(bytes) = read_limited(&mut body, &parts.headers, MAX_BODY).await else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::login(Some("The form could not be read.")),
        );
    };
    let form = form_pairs(&String::from_utf8_lossy(&bytes));
    let id = param(&form, "access_key_id").unwrap_or_default();
    let secret = param(&form, "secret_access_key").unwrap_or_default();
    match session::sign_in(&app.keys, &id, &secret, now()) {
        Some(value) => {
            let cookie = format!(
                "{}={value}; Path={ROOT}; Max-Age={}; HttpOnly; SameSite=Strict",
                session::COOKIE,
                session::LIFETIME_SECONDS
            );
            redirect(&format!("{ROOT}/jobs"), Some(cookie))
        }
        None => html(
            StatusCode::UNAUTHORIZED,
            pages::login(Some(
                "That access key id and secret do not match a key of this kiln (`kiln keys list` shows the ids).",
            )),
        ),
    }
}

/// Calls an API operation as the session's account, on the JSON the engine answers.
async fn call(app: &App, caller: &Caller, service: Service, op: &str, body: Value) -> Result<Value, String> {
    match dispatch(app, caller, service, op, body.to_string().as_bytes()).await {
        Ok(text) => serde_json::from_str(&text).map_err(|e| e.to_string()),
        Err(e) => Err(e.message),
    }
}

async fn api_call(app: &App, parts: &Parts, body: Body, caller: &Caller, service: &str, op: &str) -> Response {
    // A header no form can send: a page of another site cannot make the browser call this.
    if parts.headers.get("x-kiln-console").is_none() {
        return json_response(StatusCode::FORBIDDEN, &json!({"message": "missing X-Kiln-Console"}));
    }
    let service = match service {
        "SageMaker" => Service::SageMaker,
        "Logs" => Service::Logs,
        _ => return json_response(StatusCode::NOT_FOUND, &json!({"message": "no such service"})),
    };
    let mut body = body;
    let Ok(bytes) = read_limited(&mut body, &parts.headers, MAX_BODY).await else {
        return json_response(StatusCode::BAD_REQUEST, &json!({"message": "unreadable body"}));
    };
    match dispatch(app, caller, service, op, &bytes).await {
        Ok(text) => response(StatusCode::OK, "application/json", text),
        Err(e) => json_response(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            &json!({"__type": e.code, "message": e.message}),
        ),
    }
}

async fn jobs_page(app: &App, session: &Session, caller: &Caller, query: &[(String, String)]) -> Response {
    let status = param(query, "status");
    let name = param(query, "name");
    let mut req = json!({"MaxResults": 50, "SortBy": "CreationTime", "SortOrder": "Descending"});
    if let Some(s) = &status {
        req["StatusEquals"] = json!(s);
    }
    if let Some(n) = &name {
        req["NameContains"] = json!(n);
    }
    if let Some(t) = param(query, "next") {
        req["NextToken"] = json!(t);
    }
    let list = match call(app, caller, Service::SageMaker, "ListTrainingJobs", req).await {
        Ok(v) => v,
        Err(e) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error_page(session, "Cannot list jobs", &e),
            );
        }
    };
    if param(query, "rows").is_some() {
        return html(StatusCode::OK, pages::job_rows(&list));
    }
    html(
        StatusCode::OK,
        pages::jobs(session, &list, status.as_deref(), name.as_deref()),
    )
}

async fn job_page(app: &App, session: &Session, caller: &Caller, name: &str) -> Response {
    let job = match call(
        app,
        caller,
        Service::SageMaker,
        "DescribeTrainingJob",
        json!({"TrainingJobName": name}),
    )
    .await
    {
        Ok(v) => v,
        Err(e) => {
            return html(
                StatusCode::NOT_FOUND,
                pages::error_page(session, "No such training job", &e),
            );
        }
    };
    let artifacts = artifacts_of(app, caller, &job).await;
    html(StatusCode::OK, pages::job(session, &job, &artifacts))
}

/// The files a job leaves in S3 that its page offers for download: (what, S3 URI).
fn artifact_uris(job: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(m) = job["ModelArtifacts"]["S3ModelArtifacts"].as_str() {
        out.push(("model", m.to_string()));
    }
    if let (Some(base), Some(name)) = (
        job["OutputDataConfig"]["S3OutputPath"].as_str(),
        job["TrainingJobName"].as_str(),
    ) {
        out.push((
            "output",
            format!("{}/{name}/output/output.tar.gz", base.trim_end_matches('/')),
        ));
    }
    out
}

/// An object of the embedded store that belongs to `caller`'s account, opened for reading.
async fn open_owned(app: &App, caller: &Caller, uri: &str) -> Option<kiln_s3::OpenObject> {
    let (bucket, key) = uri.strip_prefix("s3://")?.split_once('/')?;
    let store = app.s3.store();
    let owner = store.bucket(bucket).await.ok()??;
    if owner.account != caller.account {
        return None;
    }
    store.open_object(bucket, key).await.ok()
}

/// The job's artifacts that exist: (what, S3 URI, size in bytes).
async fn artifacts_of(app: &App, caller: &Caller, job: &Value) -> Vec<(String, String, u64)> {
    let mut found = Vec::new();
    for (what, uri) in artifact_uris(job) {
        if let Some(object) = open_owned(app, caller, &uri).await {
            found.push((what.to_string(), uri, object.info.size));
        }
    }
    found
}

/// Streams one of a job's artifacts (`model`, `output`) from the embedded object store as a
/// download. Only the job's own account gets it (the job is looked up as the signed-in account,
/// and the bucket must be that account's).
async fn artifact_download(app: &App, session: &Session, caller: &Caller, name: &str, what: &str) -> Response {
    let not_found = |why: &str| {
        html(
            StatusCode::NOT_FOUND,
            pages::error_page(session, "No such artifact", why),
        )
    };
    let job = match call(
        app,
        caller,
        Service::SageMaker,
        "DescribeTrainingJob",
        json!({"TrainingJobName": name}),
    )
    .await
    {
        Ok(v) => v,
        Err(e) => return not_found(&e),
    };
    let Some((_, uri)) = artifact_uris(&job).into_iter().find(|(w, _)| *w == what) else {
        return not_found("The job has no such artifact (yet).");
    };
    let Some(object) = open_owned(app, caller, &uri).await else {
        return not_found(&format!(
            "{uri} is not in kiln's object store for this account (aws s3 cp it from where it is)."
        ));
    };
    let size = object.info.size;
    let file = uri.rsplit('/').next().unwrap_or("artifact").replace('"', "");
    let body = Body::from_stream(object.read(0..size));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size)
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}-{file}\"", name.replace('"', "")),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-content-type-options", "nosniff")
        .body(body)
        .unwrap_or_default()
}

/// `{"metric": [[epoch seconds, value], ...], ...}` of a job of the caller's account: its
/// `MetricDefinitions`' points, then each host's CPU, memory and disk (`"CPUUtilization algo-1"`,
/// as the agents sample them).
async fn metrics_json(app: &App, caller: &Caller, name: &str) -> Response {
    let job = match app.engine.load_job(&caller.account, name).await {
        Ok(Some(job)) => job,
        _ => return json_response(StatusCode::NOT_FOUND, &json!({"message": "no such training job"})),
    };
    let store = app.engine.store();
    let mut series = serde_json::Map::new();
    match store.metric_points(&caller.account, &job.name, None).await {
        Ok(points) => {
            for p in points {
                let s = series.entry(p.metric).or_insert_with(|| json!([]));
                if let Some(a) = s.as_array_mut() {
                    a.push(json!([p.timestamp, p.value]));
                }
            }
        }
        Err(e) => return json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"message": e.to_string()})),
    }
    let end = job.training_end_time.unwrap_or_else(|| now() as f64) + 60.0;
    for h in &job.run.hosts {
        let dims = serde_json::to_string(&[(HOST_DIMENSION, format!("{}/{}", job.name, h.host))]).unwrap_or_default();
        for metric in ["CPUUtilization", "MemoryUtilization", "DiskUtilization"] {
            let s = kiln_store::CustomSeries {
                namespace: TRAINING_NAMESPACE.to_string(),
                metric: metric.to_string(),
                dims: dims.clone(),
            };
            if let Ok(points) = store
                .custom_metric_points(&caller.account, &s, job.creation_time, end)
                .await
                && !points.is_empty()
            {
                let points: Vec<Value> = points.into_iter().map(|(t, v)| json!([t, v])).collect();
                series.insert(format!("{metric} {}", h.host), Value::Array(points));
            }
        }
    }
    json_response(StatusCode::OK, &Value::Object(series))
}

/// Where the tail of one log stream stands.
struct Tail {
    stream: String,
    host: String,
    token: Option<String>,
}

/// The tail's state between polls.
struct TailState {
    app: std::sync::Arc<App>,
    caller: Caller,
    job: String,
    streams: Vec<Tail>,
    ended_polls: u32,
    started: bool,
}

/// The job's log lines as server-sent events (`data: {"host", "t", "m"}`), every stream from its
/// start, then new lines as they arrive; `event: end` once the job has ended and nothing is left.
fn log_tail(app: std::sync::Arc<App>, caller: &Caller, name: &str) -> Response {
    let state = TailState {
        app,
        caller: caller.clone(),
        job: name.to_string(),
        streams: Vec::new(),
        ended_polls: 0,
        started: false,
    };
    let stream = futures::stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        if crate::listener::stopping() {
            return None;
        }
        if st.started {
            tokio::time::sleep(TAIL_EVERY).await;
        }
        st.started = true;
        let (chunk, done) = tail_once(&mut st).await;
        let next = if done { None } else { Some(st) };
        Some((Ok::<_, std::convert::Infallible>(bytes::Bytes::from(chunk)), next))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

/// One poll of the tail: the events to send, and whether the stream is over.
async fn tail_once(st: &mut TailState) -> (String, bool) {
    let app: &App = &st.app.clone();
    let mut out = String::new();
    // New streams (a host starting, a new attempt).
    let listed = call(
        app,
        &st.caller,
        Service::Logs,
        "DescribeLogStreams",
        json!({"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamNamePrefix": format!("{}/", st.job)}),
    )
    .await;
    if let Ok(v) = listed {
        for s in v["logStreams"].as_array().into_iter().flatten() {
            let Some(name) = s["logStreamName"].as_str() else {
                continue;
            };
            if st.streams.iter().any(|t| t.stream == name) {
                continue;
            }
            let host = name
                .split_once('/')
                .map_or(name, |(_, h)| h)
                .rsplit_once('-')
                .map_or(name, |(h, _)| h)
                .to_string();
            st.streams.push(Tail {
                stream: name.to_string(),
                host,
                token: None,
            });
        }
    }
    let mut any = false;
    for t in &mut st.streams {
        loop {
            let mut req = json!({
                "logGroupName": "/aws/sagemaker/TrainingJobs",
                "logStreamName": t.stream,
                "startFromHead": true,
                "limit": 1000,
            });
            if let Some(tok) = &t.token {
                req["nextToken"] = json!(tok);
            }
            let Ok(v) = call(app, &st.caller, Service::Logs, "GetLogEvents", req).await else {
                break;
            };
            let events = v["events"].as_array().cloned().unwrap_or_default();
            if let Some(tok) = v["nextForwardToken"].as_str() {
                t.token = Some(tok.to_string());
            }
            for e in &events {
                let line = json!({"host": t.host, "t": e["timestamp"], "m": e["message"]});
                out.push_str(&format!("data: {line}\n\n"));
            }
            any |= !events.is_empty();
            if events.len() < 1000 {
                break;
            }
        }
    }
    let ended = matches!(
        app.engine.load_job(&st.caller.account, &st.job).await,
        Ok(Some(j)) if j.status.is_terminal()
    );
    if ended && !any {
        st.ended_polls += 1;
    }
    // The last lines of an ended job may still be on their way: two quiet polls, then the end.
    if st.ended_polls >= 2 {
        out.push_str("event: end\ndata: {}\n\n");
        return (out, true);
    }
    if out.is_empty() {
        // A comment keeps proxies from closing an idle stream.
        out.push_str(": idle\n\n");
    }
    (out, false)
}

/// The warm pools page: the account's `Available` pools (each described, for its keep-alive and
/// end time) and the pools reused lately.
async fn pools_page(app: &App, session: &Session, caller: &Caller) -> Response {
    let list = |status: &str| {
        json!({"MaxResults": 100, "SortBy": "CreationTime", "SortOrder": "Descending",
               "WarmPoolStatusEquals": status})
    };
    let (available, reused) = match (
        call(app, caller, Service::SageMaker, "ListTrainingJobs", list("Available")).await,
        call(app, caller, Service::SageMaker, "ListTrainingJobs", list("Reused")).await,
    ) {
        (Ok(a), Ok(r)) => (a, r),
        (Err(e), _) | (_, Err(e)) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error_page(session, "Cannot list warm pools", &e),
            );
        }
    };
    let mut described = Vec::new();
    for s in available["TrainingJobSummaries"].as_array().into_iter().flatten() {
        let name = s["TrainingJobName"].clone();
        if let Ok(d) = call(
            app,
            caller,
            Service::SageMaker,
            "DescribeTrainingJob",
            json!({"TrainingJobName": name}),
        )
        .await
        {
            // When the current retention ends: the row knows when it began (the job's end, or the
            // last UpdateTrainingJob of its keep-alive).
            let since = match app.engine.load_job(&caller.account, name.as_str().unwrap_or("")).await {
                Ok(Some(job)) => job.run.warm_pool_since,
                _ => None,
            };
            let keep = d["ResourceConfig"]["KeepAlivePeriodInSeconds"].as_f64().unwrap_or(0.0);
            described.push((d, since.map(|s| s + keep)));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    html(StatusCode::OK, pages::pools(session, &described, &reused, now))
}

async fn tuning_list_page(app: &App, session: &Session, caller: &Caller) -> Response {
    let req = json!({"MaxResults": 100, "SortBy": "CreationTime", "SortOrder": "Descending"});
    match call(app, caller, Service::SageMaker, "ListHyperParameterTuningJobs", req).await {
        Ok(v) => html(StatusCode::OK, pages::tuning_list(session, &v)),
        Err(e) => html(
            StatusCode::BAD_REQUEST,
            pages::error_page(session, "Cannot list tuning jobs", &e),
        ),
    }
}

async fn tuning_page(app: &App, session: &Session, caller: &Caller, name: &str) -> Response {
    let tuning = match call(
        app,
        caller,
        Service::SageMaker,
        "DescribeHyperParameterTuningJob",
        json!({"HyperParameterTuningJobName": name}),
    )
    .await
    {
        Ok(v) => v,
        Err(e) => {
            return html(
                StatusCode::NOT_FOUND,
                pages::error_page(session, "No such tuning job", &e),
            );
        }
    };
    let mut children = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut req = json!({"HyperParameterTuningJobName": name, "MaxResults": 100});
        if let Some(t) = &next {
            req["NextToken"] = json!(t);
        }
        match call(
            app,
            caller,
            Service::SageMaker,
            "ListTrainingJobsForHyperParameterTuningJob",
            req,
        )
        .await
        {
            Ok(v) => {
                children.extend(v["TrainingJobSummaries"].as_array().cloned().unwrap_or_default());
                next = v["NextToken"].as_str().map(str::to_string);
                if next.is_none() || children.len() >= 1000 {
                    break;
                }
            }
            Err(e) => {
                return html(
                    StatusCode::BAD_REQUEST,
                    pages::error_page(session, "Cannot list trials", &e),
                );
            }
        }
    }
    html(StatusCode::OK, pages::tuning(session, &tuning, &children))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_and_percent() {
        assert_eq!(
            form_pairs("access_key_id=AK%2FX&secret_access_key=a+b%3D&x="),
            vec![
                ("access_key_id".into(), "AK/X".into()),
                ("secret_access_key".into(), "a b=".into()),
                ("x".into(), "".into())
            ]
        );
        assert_eq!(form_decode("50%"), "50%");
        assert_eq!(form_decode("%zz"), "%zz");
        assert_eq!(form_decode("%e2%9c%93"), "✓");
    }
}
