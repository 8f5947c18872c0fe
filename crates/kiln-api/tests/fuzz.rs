//! Property tests standing in for fuzz targets (issue 24; `cargo fuzz` needs nightly): whatever a
//! client sends, SigV4 parsing and the JSON shapes answer with an error, never a panic; a signed
//! request verifies, and no change to its body, operation or signature does. Bounded case counts
//! keep them in the ordinary `cargo test` run.

use kiln_api::model;
use kiln_api::sigv4::{self, RequestParts};
use kiln_api::validate;
use proptest::prelude::*;
use serde_json::{Value, json};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[A-Za-z]{1,24}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_request() -> Value {
    json!({
        "TrainingJobName": "fuzz",
        "RoleArn": "arn:aws:iam::123456789012:role/R",
        "AlgorithmSpecification": {"TrainingImage": "kiln/noop", "TrainingInputMode": "File",
                                   "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}]},
        "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1,
                           "InstanceGroups": []},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        "HyperParameters": {"a": "1"},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://b/train/"}}}],
    })
}

/// Every path of `v` to a value, as JSON pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| pointers(x, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| pointers(x, format!("{at}/{i}"), out)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn authorization_headers_never_panic(header in ".{0,200}", tail in "[ -~]{0,120}") {
        let _ = sigv4::parse_authorization(&header);
        let _ = sigv4::parse_authorization(&format!("AWS4-HMAC-SHA256 {tail}"));
        let _ = sigv4::parse_amz_date(&header);
        let _ = sigv4::is_valid_region(&header);
    }

    #[test]
    fn any_json_body_is_answered_not_panicked_on(body in any_json()) {
        let _ = model::sagemaker().validate("CreateTrainingJob", &body);
        let _ = validate::create_training_job(&body);
    }

    #[test]
    fn a_valid_request_with_any_one_field_replaced_is_answered(pick in any::<prop::sample::Index>(), value in any_json()) {
        let mut body = valid_request();
        let mut paths = Vec::new();
        pointers(&body, String::new(), &mut paths);
        let path = &paths[pick.index(paths.len())];
        if path.is_empty() {
            body = value;
        } else if let Some(slot) = body.pointer_mut(path) {
            *slot = value;
        }
        match validate::create_training_job(&body) {
            Ok(_) => {}
            Err(e) => prop_assert!((400..500).contains(&e.status), "{} {}", e.status, e.message),
        }
    }

    #[test]
    fn signed_requests_verify_and_no_tampering_does(
        body in prop::collection::vec(any::<u8>(), 0..256),
        flip in any::<prop::sample::Index>(),
        op in "[A-Z][a-zA-Z]{3,20}",
    ) {
        let now = 1_796_000_000;
        let headers = vec![
            ("host".to_string(), "127.0.0.1:8080".to_string()),
            ("x-amz-target".to_string(), format!("SageMaker.{op}")),
            ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
        ];
        let mut all = headers.clone();
        all.extend(sigv4::sign("POST", "/", &headers, &body, "AKID", "secret", "us-east-1", "sagemaker", now));
        let auth_header = all.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")).unwrap().1.clone();
        let auth = sigv4::parse_authorization(&auth_header).unwrap();
        let parts = |h: &[(String, String)], b: &[u8]| -> Result<(), sigv4::SigError> {
            let req = RequestParts { method: "POST", path: "/", query: "", headers: h, body: b };
            sigv4::check_headers(&req, &auth, now)?;
            sigv4::verify(&req, &auth, "secret", now)
        };
        prop_assert!(parts(&all, &body).is_ok());
        // Another body.
        let mut other = body.clone();
        if other.is_empty() {
            other.push(0);
        } else {
            let i = flip.index(other.len());
            other[i] ^= 1;
        }
        prop_assert!(parts(&all, &other).is_err());
        // Another operation.
        let swapped: Vec<(String, String)> = all
            .iter()
            .map(|(k, v)| if k == "x-amz-target" { (k.clone(), "SageMaker.DeleteTrainingJob".into()) } else { (k.clone(), v.clone()) })
            .collect();
        if op != "DeleteTrainingJob" {
            prop_assert!(parts(&swapped, &body).is_err());
        }
        // Another secret.
        let req = RequestParts { method: "POST", path: "/", query: "", headers: &all, body: &body };
        prop_assert!(sigv4::verify(&req, &auth, "other", now).is_err());
    }
}
