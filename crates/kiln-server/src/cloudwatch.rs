//! CloudWatch (metrics) on its three protocols, all SigV4-signed for the service `monitoring`:
//! Smithy RPC v2 CBOR (`POST /service/GraniteServiceVersion20100801/operation/<Op>`, what
//! botocore uses now), AWS JSON 1.0 (`X-Amz-Target: GraniteServiceVersion20100801.<Op>`) and the
//! query protocol (a form with `Action=<Op>`, XML answers; older SDKs and the CLI v2).

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use kiln_api::cloudwatch::{self, TARGET_PREFIX, Wire};
use kiln_api::sigv4::RequestParts;
use kiln_api::{ApiResult, AwsError};
use serde_json::Value;

use crate::App;
use crate::aws::{MAX_BODY, authenticate_headers, request_id, verify_signature};
use crate::body::{BodyError, read_limited};

/// The path prefix of RPC v2 CBOR requests.
pub const RPC_PREFIX: &str = "/service/GraniteServiceVersion20100801/operation/";
const XML_NAMESPACE: &str = "http://monitoring.amazonaws.com/doc/2010-08-01/";

/// How a request reached the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Cbor,
    Json,
    Query,
}

/// Whether the request is a CloudWatch one, and on which protocol.
pub fn protocol_of(parts: &Parts) -> Option<Protocol> {
    if parts.uri.path().starts_with(RPC_PREFIX) {
        return Some(Protocol::Cbor);
    }
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-amz-target").is_some_and(|t| t.starts_with(&format!("{TARGET_PREFIX}."))) {
        return Some(Protocol::Json);
    }
    // The query protocol has only its signature's scope to tell it from S3.
    let form = header("content-type").is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let scoped = header("authorization").is_some_and(|a| a.contains("/monitoring/aws4_request"));
    (form && scoped && parts.uri.path() == "/").then_some(Protocol::Query)
}

fn error_code(e: &AwsError) -> &str {
    match e.code {
        "InternalFailure" => "InternalServiceError",
        c => c,
    }
}

fn error_response(protocol: Protocol, e: &AwsError, id: &str) -> Response {
    let code = error_code(e);
    let fault = if e.status >= 500 { "Receiver" } else { "Sender" };
    let builder = Response::builder()
        .status(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST))
        .header("x-amzn-requestid", id)
        .header("x-amzn-query-error", format!("{code};{fault}"));
    let shape = format!("com.amazonaws.cloudwatch#{}", cloudwatch::error_shape(code));
    let r = match protocol {
        Protocol::Cbor => builder
            .header("content-type", "application/cbor")
            .header("smithy-protocol", "rpc-v2-cbor")
            .body(Body::from(
                Wire::map([("__type", Wire::str(shape)), ("message", Wire::str(&e.message))]).to_cbor(),
            )),
        Protocol::Json => builder
            .header("content-type", "application/x-amz-json-1.0")
            .body(Body::from(
                serde_json::json!({"__type": shape, "message": e.message}).to_string(),
            )),
        Protocol::Query => builder.header("content-type", "text/xml").body(Body::from(format!(
            "<ErrorResponse xmlns=\"{XML_NAMESPACE}\"><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message>\
             </Error><RequestId>{id}</RequestId></ErrorResponse>",
            xml_escape(code),
            xml_escape(&e.message)
        ))),
    };
    r.unwrap_or_default()
}

fn ok_response(protocol: Protocol, op: &str, body: Wire, id: &str) -> Response {
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header("x-amzn-requestid", id);
    let r = match protocol {
        Protocol::Cbor => builder
            .header("content-type", "application/cbor")
            .header("smithy-protocol", "rpc-v2-cbor")
            .body(Body::from(body.to_cbor())),
        Protocol::Json => builder
            .header("content-type", "application/x-amz-json-1.0")
            .body(Body::from(body.to_json().to_string())),
        Protocol::Query => {
            let mut xml = format!("<{op}Response xmlns=\"{XML_NAMESPACE}\"><{op}Result>");
            if let Wire::Map(members) = &body {
                for (k, v) in members {
                    write_xml(&mut xml, k, v);
                }
            }
            xml.push_str(&format!(
                "</{op}Result><ResponseMetadata><RequestId>{id}</RequestId></ResponseMetadata></{op}Response>"
            ));
            builder.header("content-type", "text/xml").body(Body::from(xml))
        }
    };
    r.unwrap_or_default()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn iso8601(t: f64) -> String {
    let nanos = (t * 1e9) as i128;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// One member in the query protocol's XML: lists as `<member>`, the statistics map as entries.
fn write_xml(out: &mut String, name: &str, v: &Wire) {
    out.push_str(&format!("<{name}>"));
    match v {
        Wire::Str(s) => out.push_str(&xml_escape(s)),
        Wire::Int(i) => out.push_str(&i.to_string()),
        Wire::Num(f) => out.push_str(&f.to_string()),
        Wire::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Wire::Time(t) => out.push_str(&iso8601(*t)),
        Wire::List(items) => {
            for item in items {
                write_xml(out, "member", item);
            }
        }
        Wire::Map(members) if name == "ExtendedStatistics" => {
            for (k, v) in members {
                out.push_str("<entry>");
                write_xml(out, "key", &Wire::str(k));
                write_xml(out, "value", v);
                out.push_str("</entry>");
            }
        }
        Wire::Map(members) => {
            for (k, v) in members {
                write_xml(out, k, v);
            }
        }
    }
    out.push_str(&format!("</{name}>"));
}

/// Members the query protocol sends as text that the shapes take as numbers or booleans.
fn typed(key: &str, value: String) -> Value {
    match key {
        "Period" | "MaxDatapoints" | "StorageResolution" | "Value" | "Values" | "Counts" => value
            .parse::<f64>()
            .ok()
            .and_then(|f| {
                if f.fract() == 0.0 && f.abs() < 9e15 {
                    Some(Value::from(f as i64))
                } else {
                    serde_json::Number::from_f64(f).map(Value::Number)
                }
            })
            .unwrap_or(Value::String(value)),
        "ReturnData" | "IncludeLinkedAccounts" | "StrictEntityValidation" => match value.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(value),
        },
        _ => Value::String(value),
    }
}

/// A query form as the JSON the shapes read: `A.member.2.B=x` becomes `{"A": [_, {"B": "x"}]}`.
/// Returns the action and the parameters.
fn query_to_json(form: &str) -> ApiResult<(String, Value)> {
    let mut action = None;
    let mut root = serde_json::Map::new();
    for pair in form.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (crate::body::form_decode(k), crate::body::form_decode(v));
        match k.as_str() {
            "Action" => action = Some(v),
            "Version" => {}
            _ => insert_path(&mut root, &k, v)?,
        }
    }
    let action = action.ok_or_else(|| cloudwatch::missing("Action"))?;
    Ok((action, lists(Value::Object(root))))
}

fn insert_path(root: &mut serde_json::Map<String, Value>, key: &str, value: String) -> ApiResult<()> {
    let segments: Vec<&str> = key.split('.').collect();
    if segments.len() > 16 || segments.iter().any(|s| s.is_empty()) {
        return Err(cloudwatch::invalid(format!("The parameter {key} is not valid.")));
    }
    let mut node = root;
    // The member name a number belongs to (`Values.member.3` → Values), to type leaf values.
    let mut last_name = "";
    for (i, seg) in segments.iter().enumerate() {
        if seg.parse::<u32>().is_err() && *seg != "member" {
            last_name = *seg;
        }
        if i + 1 == segments.len() {
            node.insert(seg.to_string(), typed(last_name, value));
            return Ok(());
        }
        let next = node
            .entry(seg.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        node = match next {
            Value::Object(m) => m,
            _ => return Err(cloudwatch::invalid(format!("The parameter {key} is given twice."))),
        };
    }
    Ok(())
}

/// Turns `{"member": {"1": a, "2": b}}` into `[a, b]`, all the way down.
fn lists(v: Value) -> Value {
    match v {
        Value::Object(mut m) => {
            if m.len() == 1
                && matches!(m.get("member"), Some(Value::Object(_)))
                && let Some(Value::Object(members)) = m.remove("member")
            {
                let mut items: Vec<(u32, Value)> = members
                    .into_iter()
                    .map(|(k, v)| (k.parse().unwrap_or(u32::MAX), lists(v)))
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                return Value::Array(items.into_iter().map(|(_, v)| v).collect());
            }
            Value::Object(m.into_iter().map(|(k, v)| (k, lists(v))).collect())
        }
        other => other,
    }
}

/// Handles one CloudWatch request.
pub async fn handle(app: &App, parts: Parts, body: Body, protocol: Protocol) -> Response {
    let mut body = body;
    let headers = parts.headers.clone();
    let id = request_id();
    let mut op = String::new();
    match handle_inner(app, parts, &mut body, protocol, &mut op).await {
        Ok(wire) => ok_response(protocol, &op, wire, &id),
        Err(e) => {
            crate::body::discard_small(&mut body, &headers).await;
            if e.status >= 500 {
                tracing::error!(target: "kiln::api", op = op.as_str(), "{}", e.message);
            }
            error_response(protocol, &e, &id)
        }
    }
}

async fn handle_inner(
    app: &App,
    parts: Parts,
    body: &mut Body,
    protocol: Protocol,
    op_out: &mut String,
) -> ApiResult<Wire> {
    let mut pairs = Vec::with_capacity(parts.headers.len());
    for (k, v) in &parts.headers {
        let v = v
            .to_str()
            .map_err(|_| cloudwatch::invalid(format!("Header '{k}' is not valid text.")))?;
        pairs.push((k.as_str().to_string(), v.to_string()));
    }
    let mut request = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &pairs,
        body: &[],
    };
    let pre = authenticate_headers(app, "monitoring", &request).await?;
    let bytes = match read_limited(body, &parts.headers, MAX_BODY).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { limit }) => {
            crate::body::drain(body, &parts.headers).await;
            return Err(AwsError::new(
                413,
                "RequestEntityTooLarge",
                format!("The request body is larger than {limit} bytes."),
            ));
        }
        Err(BodyError::Unreadable) => return Err(cloudwatch::invalid("The request body could not be read.")),
    };
    request.body = &bytes;
    let caller = verify_signature(pre, &request)?;
    if parts.method != axum::http::Method::POST {
        return Err(cloudwatch::invalid("CloudWatch requests must use POST."));
    }
    let empty = bytes.iter().all(u8::is_ascii_whitespace);
    let (op, input) = match protocol {
        Protocol::Cbor => {
            let op = parts.uri.path()[RPC_PREFIX.len()..].to_string();
            let input = if empty {
                Value::Null
            } else {
                cloudwatch::cbor_to_json(&bytes)
                    .map_err(|e| cloudwatch::invalid(format!("The request body is not valid CBOR: {e}")))?
            };
            (op, input)
        }
        Protocol::Json => {
            let target = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let op = target[TARGET_PREFIX.len() + 1..].to_string();
            let input = if empty {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .map_err(|e| cloudwatch::invalid(format!("The request body is not valid JSON: {e}")))?
            };
            (op, input)
        }
        Protocol::Query => {
            let form = std::str::from_utf8(&bytes).map_err(|_| cloudwatch::invalid("The form is not UTF-8."))?;
            query_to_json(form)?
        }
    };
    *op_out = op.clone();
    if !input.is_null() && !input.is_object() {
        return Err(cloudwatch::invalid("The request body must be a structure."));
    }
    let engine = &app.engine;
    match op.as_str() {
        "ListMetrics" => engine.list_metrics(&caller, cloudwatch::parse(input)?).await,
        "GetMetricStatistics" => engine.get_metric_statistics(&caller, cloudwatch::parse(input)?).await,
        "GetMetricData" => engine.get_metric_data(&caller, cloudwatch::parse(input)?).await,
        "PutMetricData" => engine.put_metric_data(&caller, cloudwatch::parse(input)?).await,
        _ => Err(AwsError::new(
            400,
            "InvalidAction",
            format!(
                "The action {op} is not valid for this endpoint (kiln serves ListMetrics, GetMetricStatistics, GetMetricData and PutMetricData)."
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_forms_become_shapes() {
        let (action, v) = query_to_json(
            "Action=GetMetricData&Version=2010-08-01&StartTime=2024-01-01T00%3A00%3A00Z\
             &MetricDataQueries.member.1.Id=a&MetricDataQueries.member.1.MetricStat.Period=60\
             &MetricDataQueries.member.1.MetricStat.Metric.Dimensions.member.1.Name=TrainingJobName\
             &MetricDataQueries.member.1.ReturnData=true&MetricDataQueries.member.2.Id=b+c",
        )
        .unwrap();
        assert_eq!(action, "GetMetricData");
        assert_eq!(
            v,
            serde_json::json!({"StartTime": "2024-01-01T00:00:00Z", "MetricDataQueries": [
                {"Id": "a", "ReturnData": true, "MetricStat": {"Period": 60, "Metric": {"Dimensions": [{"Name": "TrainingJobName"}]}}},
                {"Id": "b c"}]})
        );
        assert!(query_to_json("Version=1").is_err());
        assert!(query_to_json("Action=X&A=1&A.B=2").is_err());
        assert_eq!(crate::body::form_decode("%4"), "%4");
        assert_eq!(crate::body::form_decode("a%2Fb%"), "a/b%");
    }

    #[test]
    fn xml_lists_and_maps() {
        let mut out = String::new();
        write_xml(
            &mut out,
            "Datapoints",
            &Wire::List(vec![Wire::map([
                ("Timestamp", Wire::Time(0.0)),
                ("ExtendedStatistics", Wire::map([("p90", Wire::Num(1.5))])),
            ])]),
        );
        assert_eq!(
            out,
            "<Datapoints><member><Timestamp>1970-01-01T00:00:00Z</Timestamp><ExtendedStatistics><entry>\
             <key>p90</key><value>1.5</value></entry></ExtendedStatistics></member></Datapoints>"
        );
    }
}
