//! CloudWatch (metrics) as data: request shapes (PascalCase on every protocol), responses as a
//! protocol-neutral [`Wire`] tree, and the Smithy RPC v2 CBOR codec botocore speaks to it.
//!
//! Requests of every protocol are read into `serde_json::Value` first (CBOR timestamps, tag 1,
//! become epoch-second numbers), then into the shapes below; responses are built as [`Wire`] and
//! written as CBOR (timestamps as tag 1) or JSON 1.0 (timestamps as epoch seconds).

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::AwsError;

/// The namespace of training jobs' metrics.
pub const TRAINING_NAMESPACE: &str = "/aws/sagemaker/TrainingJobs";
/// The one dimension of a training job's metrics.
pub const TRAINING_JOB_DIMENSION: &str = "TrainingJobName";
/// The dimension of training hosts' metrics (`CPUUtilization`, ...): `<job>/algo-N`.
pub const HOST_DIMENSION: &str = "Host";
/// The JSON 1.0 target prefix (and the RPC v2 service name in paths).
pub const TARGET_PREFIX: &str = "GraniteServiceVersion20100801";

/// The model's error shape for a query-protocol error code (`__type` of CBOR and JSON bodies).
pub fn error_shape(code: &str) -> &str {
    match code {
        "InvalidParameterValue" => "InvalidParameterValueException",
        "MissingParameter" => "MissingRequiredParameterException",
        "InvalidParameterCombination" => "InvalidParameterCombinationException",
        "InternalServiceError" => "InternalServiceFault",
        "LimitExceeded" => "LimitExceededFault",
        other => other,
    }
}

/// `InvalidParameterValue` (400).
pub fn invalid(message: impl Into<String>) -> AwsError {
    AwsError::new(400, "InvalidParameterValue", message)
}

/// `MissingParameter` (400).
pub fn missing(parameter: &str) -> AwsError {
    AwsError::new(
        400,
        "MissingParameter",
        format!("The parameter {parameter} is required."),
    )
}

/// `InvalidParameterCombination` (400).
pub fn combination(message: impl Into<String>) -> AwsError {
    AwsError::new(400, "InvalidParameterCombination", message)
}

/// `InvalidNextToken` (400).
pub fn invalid_token() -> AwsError {
    AwsError::new(400, "InvalidNextToken", "The NextToken is invalid.")
}

/// A response value, whatever the protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    Str(String),
    Int(i64),
    Num(f64),
    Bool(bool),
    /// Epoch seconds.
    Time(f64),
    List(Vec<Wire>),
    /// Members in order; absent members are left out.
    Map(Vec<(String, Wire)>),
}

impl Wire {
    /// A structure from its members.
    pub fn map<const N: usize>(members: [(&str, Wire); N]) -> Self {
        Self::Map(members.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// A text value.
    pub fn str(s: impl Into<String>) -> Self {
        Self::Str(s.into())
    }

    /// As JSON 1.0 writes it: timestamps as epoch seconds.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Str(s) => Value::String(s.clone()),
            Self::Int(i) => Value::from(*i),
            Self::Num(f) | Self::Time(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Self::Bool(b) => Value::Bool(*b),
            Self::List(l) => Value::Array(l.iter().map(Self::to_json).collect()),
            Self::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }

    /// As RPC v2 CBOR writes it: definite lengths, doubles, timestamps as tag 1.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_cbor(&mut out);
        out
    }

    fn write_cbor(&self, out: &mut Vec<u8>) {
        match self {
            Self::Str(s) => {
                head(out, 3, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Self::Int(i) if *i >= 0 => head(out, 0, *i as u64),
            Self::Int(i) => head(out, 1, (-1 - *i) as u64),
            Self::Num(f) => double(out, *f),
            Self::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            Self::Time(t) => {
                head(out, 6, 1);
                if t.fract() == 0.0 && *t >= 0.0 && *t < 1e15 {
                    head(out, 0, *t as u64);
                } else {
                    double(out, *t);
                }
            }
            Self::List(l) => {
                head(out, 4, l.len() as u64);
                for v in l {
                    v.write_cbor(out);
                }
            }
            Self::Map(m) => {
                head(out, 5, m.len() as u64);
                for (k, v) in m {
                    Self::Str(k.clone()).write_cbor(out);
                    v.write_cbor(out);
                }
            }
        }
    }
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u8::MAX as u64 {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u16::MAX as u64 {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as u64 {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn double(out: &mut Vec<u8>, f: f64) {
    out.push(0xfb);
    out.extend_from_slice(&f.to_be_bytes());
}

/// Deepest nesting of a CBOR request accepted.
const MAX_DEPTH: usize = 64;

/// Reads a CBOR document into JSON: maps with text keys, arrays, text, numbers, booleans, null;
/// tag 1 (epoch time) becomes its number; byte strings become base64-less text is not needed here,
/// so they are refused. Indefinite lengths are accepted.
pub fn cbor_to_json(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader { bytes, pos: 0 };
    let v = r.item(0)?;
    if r.pos != bytes.len() {
        return Err(format!("{} bytes after the CBOR document", bytes.len() - r.pos));
    }
    Ok(v)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

enum Item {
    Value(Value),
    Break,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or("the CBOR document ends early")?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// The argument of a head: `None` for an indefinite length (31).
    fn argument(&mut self, info: u8) -> Result<Option<u64>, String> {
        Ok(Some(match info {
            0..=23 => info as u64,
            24 => self.byte()? as u64,
            25 => u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| "short")?) as u64,
            26 => u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| "short")?) as u64,
            27 => u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| "short")?),
            31 => return Ok(None),
            _ => return Err(format!("invalid CBOR additional information {info}")),
        }))
    }

    fn item(&mut self, depth: usize) -> Result<Value, String> {
        match self.any(depth)? {
            Item::Value(v) => Ok(v),
            Item::Break => Err("unexpected CBOR break".into()),
        }
    }

    fn text(&mut self, info: u8) -> Result<String, String> {
        match self.argument(info)? {
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| "text too long")?;
                let s = self.take(n)?;
                String::from_utf8(s.to_vec()).map_err(|_| "CBOR text is not UTF-8".to_string())
            }
            None => {
                let mut out = String::new();
                loop {
                    let b = self.byte()?;
                    if b == 0xff {
                        return Ok(out);
                    }
                    if b >> 5 != 3 || b & 31 == 31 {
                        return Err("invalid chunk in an indefinite CBOR text".into());
                    }
                    out.push_str(&self.text(b & 31)?);
                }
            }
        }
    }

    fn any(&mut self, depth: usize) -> Result<Item, String> {
        if depth > MAX_DEPTH {
            return Err("the CBOR document is nested too deeply".into());
        }
        let b = self.byte()?;
        let (major, info) = (b >> 5, b & 31);
        let v = match major {
            0 => Value::from(self.argument(info)?.ok_or("indefinite integer")?),
            1 => {
                let n = self.argument(info)?.ok_or("indefinite integer")?;
                match i64::try_from(n) {
                    Ok(n) => Value::from(-1 - n),
                    Err(_) => serde_json::Number::from_f64(-1.0 - n as f64)
                        .map(Value::Number)
                        .unwrap_or(Value::Null),
                }
            }
            2 => return Err("CBOR byte strings are not taken by these operations".into()),
            3 => Value::String(self.text(info)?),
            4 => {
                let mut items = Vec::new();
                match self.argument(info)? {
                    Some(n) => {
                        for _ in 0..n {
                            items.push(self.item(depth + 1)?);
                        }
                    }
                    None => {
                        while let Item::Value(v) = self.any(depth + 1)? {
                            items.push(v);
                        }
                    }
                }
                Value::Array(items)
            }
            5 => {
                let mut map = serde_json::Map::new();
                let n = self.argument(info)?;
                let mut i = 0u64;
                loop {
                    if n.is_some_and(|n| i >= n) {
                        break;
                    }
                    let key = match self.any(depth + 1)? {
                        Item::Break if n.is_none() => break,
                        Item::Value(Value::String(k)) => k,
                        _ => return Err("CBOR map keys must be text".into()),
                    };
                    let value = self.item(depth + 1)?;
                    map.insert(key, value);
                    i += 1;
                }
                Value::Object(map)
            }
            6 => {
                let tag = self.argument(info)?.ok_or("indefinite tag")?;
                let v = self.item(depth + 1)?;
                if tag != 1 || !v.is_number() {
                    return Err(format!("unsupported CBOR tag {tag}"));
                }
                v
            }
            _ => match info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 | 23 => Value::Null,
                25 => {
                    let h = u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| "short")?);
                    float_value(half_to_f64(h))
                }
                26 => {
                    let f = f32::from_be_bytes(self.take(4)?.try_into().map_err(|_| "short")?);
                    float_value(f as f64)
                }
                27 => {
                    let f = f64::from_be_bytes(self.take(8)?.try_into().map_err(|_| "short")?);
                    float_value(f)
                }
                31 => return Ok(Item::Break),
                _ => return Err(format!("unsupported CBOR simple value {info}")),
            },
        };
        Ok(Item::Value(v))
    }
}

/// A float as JSON; NaN and infinities (which JSON cannot hold) become text, which the shapes
/// below refuse as numbers.
fn float_value(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

fn half_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let frac = (h & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e as i32 - 15),
    }
}

/// A timestamp as epoch seconds: a number, or ISO 8601 text (the query protocol's form).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timestamp(pub f64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_f64()
                .map(Timestamp)
                .ok_or_else(|| serde::de::Error::custom("invalid timestamp")),
            Value::String(s) => {
                if let Ok(f) = s.parse::<f64>() {
                    return Ok(Timestamp(f));
                }
                time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                    .map(|t| Timestamp(t.unix_timestamp_nanos() as f64 / 1e9))
                    .map_err(|_| serde::de::Error::custom(format!("invalid timestamp '{s}'")))
            }
            _ => Err(serde::de::Error::custom("invalid timestamp")),
        }
    }
}

/// `Dimension`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Dimension {
    pub name: String,
    pub value: String,
}

/// `DimensionFilter` (a dimension whose value may be left out: any value).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DimensionFilter {
    pub name: String,
    pub value: Option<String>,
}

/// `ListMetrics`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListMetricsRequest {
    pub namespace: Option<String>,
    pub metric_name: Option<String>,
    pub dimensions: Option<Vec<DimensionFilter>>,
    pub next_token: Option<String>,
    pub recently_active: Option<String>,
    pub include_linked_accounts: Option<bool>,
    pub owning_account: Option<String>,
}

/// `GetMetricStatistics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetMetricStatisticsRequest {
    pub namespace: Option<String>,
    pub metric_name: Option<String>,
    pub dimensions: Option<Vec<Dimension>>,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub period: Option<i64>,
    pub statistics: Option<Vec<String>>,
    pub extended_statistics: Option<Vec<String>>,
    pub unit: Option<String>,
}

/// `Metric`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metric {
    pub namespace: Option<String>,
    pub metric_name: Option<String>,
    pub dimensions: Option<Vec<Dimension>>,
}

/// `MetricStat`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricStat {
    pub metric: Option<Metric>,
    pub period: Option<i64>,
    pub stat: Option<String>,
    pub unit: Option<String>,
}

/// `MetricDataQuery`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricDataQuery {
    pub id: Option<String>,
    pub metric_stat: Option<MetricStat>,
    pub expression: Option<String>,
    pub label: Option<String>,
    pub return_data: Option<bool>,
    pub period: Option<i64>,
    pub account_id: Option<String>,
}

/// `GetMetricData`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetMetricDataRequest {
    pub metric_data_queries: Option<Vec<MetricDataQuery>>,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub next_token: Option<String>,
    pub scan_by: Option<String>,
    pub max_datapoints: Option<i64>,
}

/// `MetricDatum`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricDatum {
    pub metric_name: Option<String>,
    pub dimensions: Option<Vec<Dimension>>,
    pub timestamp: Option<Timestamp>,
    pub value: Option<f64>,
    pub statistic_values: Option<Value>,
    pub values: Option<Vec<f64>>,
    pub counts: Option<Vec<f64>>,
    pub unit: Option<String>,
    pub storage_resolution: Option<i64>,
}

/// `PutMetricData`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutMetricDataRequest {
    pub namespace: Option<String>,
    pub metric_data: Option<Vec<MetricDatum>>,
    pub entity_metric_data: Option<Value>,
    pub strict_entity_validation: Option<bool>,
}

/// Reads a request body (already JSON) into its shape; a value of the wrong type is
/// `InvalidParameterValue`.
pub fn parse<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, AwsError> {
    let body = if body.is_null() {
        Value::Object(Default::default())
    } else {
        body
    };
    serde_json::from_value(body).map_err(|e| invalid(format!("The request could not be read: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbor_round_trip_of_a_response() {
        let w = Wire::map([
            ("Label", Wire::str("loss")),
            ("N", Wire::Int(-3)),
            ("Big", Wire::Int(70_000)),
            ("Avg", Wire::Num(0.25)),
            ("Ok", Wire::Bool(true)),
            ("T", Wire::Time(1_700_000_000.0)),
            ("L", Wire::List(vec![Wire::Time(1.5)])),
        ]);
        let v = cbor_to_json(&w.to_cbor()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"Label": "loss", "N": -3, "Big": 70000, "Avg": 0.25, "Ok": true,
                "T": 1_700_000_000u64, "L": [1.5]})
        );
    }

    #[test]
    fn cbor_reads_botocore_requests() {
        // {"Namespace": "a", "Period": 60, "StartTime": tag1(1700000000), "V": float32 1.5}
        let mut b = vec![0xa4];
        b.extend([0x69]);
        b.extend(b"Namespace");
        b.extend([0x61, b'a', 0x66]);
        b.extend(b"Period");
        b.extend([0x18, 60, 0x69]);
        b.extend(b"StartTime");
        b.extend([0xc1, 0x1a]);
        b.extend(1_700_000_000u32.to_be_bytes());
        b.extend([0x61, b'V', 0xfa]);
        b.extend(1.5f32.to_be_bytes());
        let v = cbor_to_json(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"Namespace": "a", "Period": 60, "StartTime": 1_700_000_000u64, "V": 1.5})
        );
        // Indefinite map and list, half floats.
        let b = [0xbf, 0x61, b'x', 0x9f, 0xf9, 0x3c, 0x00, 0xff, 0xff];
        assert_eq!(cbor_to_json(&b).unwrap(), serde_json::json!({"x": [1.0]}));
    }

    #[test]
    fn bad_cbor_is_an_error_not_a_panic() {
        for b in [
            &[0x5f][..],
            &[0xa1, 0x01, 0x02],
            &[0x7a, 0xff, 0xff, 0xff, 0xff],
            &[0x9f; 100],
            &[0xc2, 0x01],
        ] {
            assert!(cbor_to_json(b).is_err());
        }
    }

    #[test]
    fn timestamps_take_numbers_and_iso_text() {
        let t: Timestamp = serde_json::from_value(serde_json::json!("2023-11-14T22:13:20Z")).unwrap();
        assert_eq!(t.0, 1_700_000_000.0);
        let t: Timestamp = serde_json::from_value(serde_json::json!(1_700_000_000.5)).unwrap();
        assert_eq!(t.0, 1_700_000_000.5);
    }
}
