//! kiln's own endpoints under `/_kiln/`: health, and the agent API that hosts of running jobs
//! report to (`/_kiln/agent/v1/jobs/{account}/{job}/hosts/{host}/{call}`, protocol in
//! `kiln_api::agent`). Agents authenticate with their job's bearer token.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use kiln_api::AwsError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::App;
use crate::body::{BodyError, read_limited};

/// Largest agent request body: a log batch (agents send at most 1 MiB of lines, which JSON escaping
/// can grow several-fold).
pub const MAX_AGENT_BODY: usize = 16 * 1024 * 1024;

fn json_response<T: Serialize>(status: u16, body: &T) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .unwrap_or_default()
}

fn error_response(e: &AwsError) -> Response {
    // Agents drop what a 4xx refuses and send again what a 5xx did not take: a throttled call
    // (the job's row was busy) is one to send again.
    let status = if e.code == "ThrottlingException" { 503 } else { e.status };
    json_response(status, &serde_json::json!({ "error": e.code, "message": e.message }))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AwsError> {
    serde_json::from_slice(body).map_err(|e| AwsError::serialization(format!("bad agent request body: {e}")))
}

/// Handles a request under `/_kiln/`.
pub async fn handle(app: &App, parts: Parts, body: Body) -> Response {
    let path = parts.uri.path().to_string();
    if path == "/_kiln/health" {
        return json_response(
            200,
            &serde_json::json!({ "status": "ok", "leader": kiln_engine::leader::is_leader() }),
        );
    }
    let Some(rest) = path.strip_prefix("/_kiln/agent/v1/jobs/") else {
        return json_response(
            404,
            &serde_json::json!({ "error": "NotFound", "message": "no such kiln endpoint" }),
        );
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let token = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    if let [account, job, "pool", "next"] = segs.as_slice()
        && parts.method == Method::GET
    {
        return pool_next(app, account, job, &token, parts.uri.query().unwrap_or_default()).await;
    }
    let [account, job, "hosts", host, call] = segs.as_slice() else {
        return json_response(
            404,
            &serde_json::json!({ "error": "NotFound", "message": "no such agent endpoint" }),
        );
    };
    // The token is checked before the body is read: a caller without one costs only its headers.
    let has_body = matches!(*call, "status" | "logs" | "heartbeat" | "done");
    let body = if has_body {
        if let Err(e) = app.engine.agent_authorize(account, job, host, &token, call).await {
            return error_response(&e);
        }
        let mut body = body;
        match read_limited(&mut body, &parts.headers, MAX_AGENT_BODY).await {
            Ok(b) => b,
            Err(BodyError::TooLarge { limit }) => {
                crate::body::drain(&mut body, &parts.headers).await;
                return error_response(&AwsError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!("agent request body is larger than {limit} bytes"),
                ));
            }
            Err(BodyError::Unreadable) => {
                return error_response(&AwsError::serialization("agent request body unreadable"));
            }
        }
    } else {
        bytes::Bytes::new()
    };
    let engine = &app.engine;
    let result = match (&parts.method, *call) {
        (&Method::GET, "assignment") => engine
            .agent_assignment(account, job, host, &token)
            .await
            .map(|a| json_response(200, &a)),
        (&Method::POST, "status") => match parse(&body) {
            Ok(r) => engine
                .agent_status(account, job, host, &token, r)
                .await
                .map(|d| json_response(200, &d)),
            Err(e) => Err(e),
        },
        (&Method::POST, "logs") => match parse(&body) {
            Ok(r) => engine
                .agent_logs(account, job, host, &token, r)
                .await
                .map(|d| json_response(200, &d)),
            Err(e) => Err(e),
        },
        // Agents before host metrics may send no body at all.
        (&Method::POST, "heartbeat") => match if body.is_empty() {
            Ok(Default::default())
        } else {
            parse(&body)
        } {
            Ok(beat) => engine
                .agent_heartbeat(account, job, host, &token, beat)
                .await
                .map(|d| json_response(200, &d)),
            Err(e) => Err(e),
        },
        (&Method::POST, "done") => match parse(&body) {
            Ok(r) => engine
                .agent_done(account, job, host, &token, r)
                .await
                .map(|()| json_response(200, &serde_json::json!({}))),
            Err(e) => Err(e),
        },
        _ => Err(AwsError::new(
            404,
            "NotFound",
            format!("no agent call {} {call}", parts.method),
        )),
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(target: "kiln::agent_api", "{job}/{host} {call}: {}", e.message);
            }
            error_response(&e)
        }
    }
}

/// How long a warm pool's allocation is kept waiting for an answer before it asks again.
const POOL_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET .../{account}/{job}/pool/next?allocation=ID` (`kiln_api::agent::PoolNext`).
async fn pool_next(app: &App, account: &str, job: &str, token: &str, query: &str) -> Response {
    let allocation = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("allocation="))
        .unwrap_or_default();
    if allocation.is_empty() {
        return error_response(&AwsError::validation(
            "pool/next needs ?allocation=<the allocation's id>",
        ));
    }
    match app
        .engine
        .agent_pool_next(account, job, token, allocation, POOL_HOLD)
        .await
    {
        Ok(answer) => json_response(200, &answer),
        Err(e) => error_response(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_agent_call_is_one_to_send_again() {
        let throttled = AwsError::new(400, "ThrottlingException", "The job is being updated concurrently");
        assert_eq!(error_response(&throttled).status(), 503);
        let refused = AwsError::new(403, "AccessDenied", "the training job j has ended");
        assert_eq!(error_response(&refused).status(), 403);
    }
}
