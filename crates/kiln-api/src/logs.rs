//! CloudWatch Logs request shapes (camelCase on the wire) and SageMaker's line escaping.

use std::borrow::Cow;

use serde::Deserialize;

/// The log group of training jobs.
pub const TRAINING_LOG_GROUP: &str = "/aws/sagemaker/TrainingJobs";

/// Escapes control characters the way SageMaker's log pipeline (rsyslog) does: `#` and the
/// three-digit octal code, so a TAB becomes `#011`. Built-in metric regexes rely on this.
pub fn escape_control_chars(line: &str) -> Cow<'_, str> {
    if !line.chars().any(|c| c.is_control()) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        let code = c as u32;
        if c.is_control() && code < 0x100 {
            out.push_str(&format!("#{code:03o}"));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `CreateLogGroup`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateLogGroupRequest {
    pub log_group_name: String,
}

/// `CreateLogStream`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateLogStreamRequest {
    pub log_group_name: String,
    pub log_stream_name: String,
}

/// `DescribeLogGroups`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeLogGroupsRequest {
    pub log_group_name_prefix: Option<String>,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
}

/// `DescribeLogStreams`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeLogStreamsRequest {
    pub log_group_name: Option<String>,
    pub log_group_identifier: Option<String>,
    pub log_stream_name_prefix: Option<String>,
    pub order_by: Option<String>,
    pub descending: Option<bool>,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
}

/// `GetLogEvents`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetLogEventsRequest {
    pub log_group_name: Option<String>,
    pub log_group_identifier: Option<String>,
    pub log_stream_name: String,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
    pub start_from_head: Option<bool>,
}

/// `FilterLogEvents`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterLogEventsRequest {
    pub log_group_name: Option<String>,
    pub log_group_identifier: Option<String>,
    pub log_stream_names: Option<Vec<String>>,
    pub log_stream_name_prefix: Option<String>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub filter_pattern: Option<String>,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
}

/// One event of `PutLogEvents`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputLogEvent {
    pub timestamp: i64,
    pub message: String,
}

/// `PutLogEvents`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutLogEventsRequest {
    pub log_group_name: String,
    pub log_stream_name: String,
    pub log_events: Vec<InputLogEvent>,
}

/// A CloudWatch Logs text filter pattern: space-separated terms that must all appear, `"quoted
/// phrases"`, `?term` alternatives (any one of them must appear) and `-term` exclusions. An empty
/// pattern matches everything. Matching is case-sensitive, as in CloudWatch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterPattern {
    all: Vec<String>,
    any: Vec<String>,
    none: Vec<String>,
}

impl FilterPattern {
    /// Parses a pattern; JSON (`{ $.x = ... }`) and space-delimited (`[a, b]`) patterns are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.starts_with('{') || t.starts_with('[') {
            return Err(format!(
                "Invalid filter pattern '{t}': kiln supports text patterns (terms, \"phrases\", ?alternatives, -exclusions), not JSON or space-delimited patterns."
            ));
        }
        let mut p = FilterPattern::default();
        let mut chars = t.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
                continue;
            }
            let sign = if c == '?' || c == '-' {
                chars.next();
                Some(c)
            } else {
                None
            };
            let mut term = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                term.push(n);
                            }
                        }
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => term.push(c),
                    }
                }
                if !closed {
                    return Err(format!("Invalid filter pattern '{t}': unterminated quote."));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    term.push(c);
                    chars.next();
                }
            }
            if term.is_empty() {
                continue;
            }
            match sign {
                Some('?') => p.any.push(term),
                Some('-') => p.none.push(term),
                _ => p.all.push(term),
            }
        }
        Ok(p)
    }

    /// Whether a message matches.
    pub fn matches(&self, message: &str) -> bool {
        self.all.iter().all(|t| message.contains(t.as_str()))
            && (self.any.is_empty() || self.any.iter().any(|t| message.contains(t.as_str())))
            && !self.none.iter().any(|t| message.contains(t.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabs_become_octal_escapes() {
        assert_eq!(escape_control_chars("[0]\ttrain-rmse:1.5"), "[0]#011train-rmse:1.5");
        assert_eq!(escape_control_chars("a\rb\u{1b}c"), "a#015b#033c");
        assert!(matches!(escape_control_chars("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn filter_patterns() {
        let p = FilterPattern::parse("ERROR \"disk full\" -ignored").unwrap();
        assert!(p.matches("ERROR: disk full on /dev/sda"));
        assert!(!p.matches("ERROR: disk full, ignored"));
        assert!(!p.matches("WARN: disk full"));
        let p = FilterPattern::parse("?loss ?auc").unwrap();
        assert!(p.matches("val auc=0.9") && p.matches("loss=1") && !p.matches("epoch 3"));
        assert!(FilterPattern::parse("").unwrap().matches("anything"));
        assert!(FilterPattern::parse("{ $.a = 1 }").is_err());
        assert!(FilterPattern::parse("\"open").is_err());
    }
}
