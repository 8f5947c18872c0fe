//! SageMaker `Search` over the caller's training and tuning jobs: the store gives the candidates
//! (narrowed by the top-level filters it can apply: status, name, tuning job), each becomes the
//! record `Search` returns (the `Describe*` answer with `Tags`), and the expression checked by
//! `kiln_api::search` decides, sorts and pages.

use std::cmp::Ordering;
use std::collections::HashMap;

use kiln_api::search::{Expr, Op, Resource, SearchRequest, compile, lookup, sort_order};
use kiln_api::{ApiResult, AwsError};
use kiln_store::{JobQuery, TagRow};
use serde_json::{Map, Value};

use crate::training::api::describe;
use crate::{Caller, Engine, store_err};

/// The most jobs one search reads from the store (kiln answers from memory past this point).
const MAX_CANDIDATES: u32 = 100_000;
/// The page size when `MaxResults` is not given, and its limit (the service's).
const DEFAULT_RESULTS: i64 = 10;
const MAX_RESULTS: i64 = 100;

/// A candidate: its document while searching (tags as a map) and its tags for the answer.
struct Candidate {
    name: String,
    doc: Value,
    tags: Option<Vec<TagRow>>,
}

fn tags_map(tags: &[TagRow]) -> Value {
    Value::Object(
        tags.iter()
            .map(|t| (t.key.clone(), Value::String(t.value.clone())))
            .collect::<Map<String, Value>>(),
    )
}

fn tags_list(tags: &[TagRow]) -> Value {
    Value::Array(
        tags.iter()
            .map(|t| serde_json::json!({"Key": t.key, "Value": t.value}))
            .collect(),
    )
}

/// The member of a resource's record holding its ARN.
fn arn_key(resource: Resource) -> &'static str {
    match resource {
        Resource::TrainingJob => "TrainingJobArn",
        Resource::HyperParameterTuningJob => "HyperParameterTuningJobArn",
    }
}

/// A `Describe*` answer as the search record: the members of the record's shape only.
fn record(resource: Resource, mut described: Value) -> Value {
    if let Value::Object(m) = &mut described {
        m.retain(|k, _| resource.properties().contains(&k.as_str()));
    }
    described
}

fn decode_offset(token: &str) -> ApiResult<usize> {
    token
        .strip_prefix("kiln-search-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| AwsError::validation("The NextToken is not one Search returned; start again without it."))
}

/// The store query for the candidates: the account's jobs, narrowed by top-level filters every
/// match must pass: status and tuning job equality (which the store applies exactly as the
/// expression would), and a name's `Equals` or `Contains` (the store's case-insensitive
/// `NameContains` keeps a superset; the expression then decides).
fn candidate_query(account: &str, expr: &Expr, resource: Resource) -> JobQuery {
    let mut q = JobQuery::all(account, MAX_CANDIDATES);
    let (status, name) = match resource {
        Resource::TrainingJob => ("TrainingJobStatus", "TrainingJobName"),
        Resource::HyperParameterTuningJob => ("HyperParameterTuningJobStatus", "HyperParameterTuningJobName"),
    };
    for t in expr.required_tests() {
        match (t.name.as_str(), t.op) {
            (n, Op::Equals) if n == status => q.status_equals = Some(t.value.clone()),
            (n, Op::Equals | Op::Contains) if n == name => q.name_contains = Some(t.value.clone()),
            ("TuningJobArn", Op::Equals) if resource == Resource::TrainingJob => {
                q.tuning_job_arn = Some(t.value.clone())
            }
            _ => {}
        }
    }
    q
}

impl Engine {
    /// `Search` for `TrainingJob` and `HyperParameterTuningJob` resources of the caller's account.
    pub async fn search(&self, caller: &Caller, req: SearchRequest) -> ApiResult<Value> {
        let resource = Resource::parse(&req.resource)?;
        let expr = compile(resource, &req.search_expression.clone().unwrap_or_default())?;
        let sort_by = req.sort_by.clone().unwrap_or_else(|| "CreationTime".to_string());
        resource.check_property(&sort_by)?;
        let descending = match req.sort_order.as_deref() {
            None | Some("Descending") => true,
            Some("Ascending") => false,
            Some(other) => {
                return Err(AwsError::validation(format!(
                    "Invalid SortOrder {other}: Ascending or Descending."
                )));
            }
        };
        let max = req.max_results.unwrap_or(DEFAULT_RESULTS);
        if !(1..=MAX_RESULTS).contains(&max) {
            return Err(AwsError::validation(format!(
                "MaxResults must be 1 to {MAX_RESULTS}, not {max}."
            )));
        }
        let offset = req.next_token.as_deref().map(decode_offset).transpose()?.unwrap_or(0);
        let needs_tags = expr.reads("Tags") || sort_by == "Tags" || sort_by.starts_with("Tags.");
        let mut candidates = self.search_candidates(caller, resource, &expr, needs_tags).await?;
        candidates.retain(|c| expr.matches(&c.doc));
        candidates.sort_by(|a, b| {
            let (x, y) = (
                lookup(&a.doc, &sort_by).first().copied(),
                lookup(&b.doc, &sort_by).first().copied(),
            );
            order(x, y, descending).then_with(|| a.name.cmp(&b.name))
        });
        let total = candidates.len();
        if offset > total {
            return Err(AwsError::validation(
                "The NextToken is past the end of the results; start again without it.",
            ));
        }
        let mut results = Vec::new();
        for c in candidates.into_iter().skip(offset).take(max as usize) {
            let tags = match c.tags {
                Some(t) => t,
                None => self.all_tags(&caller.account, &c.doc, resource).await?,
            };
            let mut doc = c.doc;
            if let Value::Object(m) = &mut doc {
                m.insert("Tags".to_string(), tags_list(&tags));
            }
            results.push(serde_json::json!({ resource.record_key(): doc }));
        }
        let mut answer = serde_json::json!({
            "Results": results,
            "TotalHits": {"Value": total, "Relation": "EqualTo"},
        });
        if offset + (max as usize) < total {
            answer["NextToken"] = Value::String(format!("kiln-search-{}", offset + max as usize));
        }
        Ok(answer)
    }

    /// The account's resources that may match, as documents.
    async fn search_candidates(
        &self,
        caller: &Caller,
        resource: Resource,
        expr: &Expr,
        with_tags: bool,
    ) -> ApiResult<Vec<Candidate>> {
        let query = candidate_query(&caller.account, expr, resource);
        let mut out = Vec::new();
        match resource {
            Resource::TrainingJob => {
                for job in self.store.list_training_jobs(&query).await.map_err(store_err)? {
                    let doc = record(resource, serde_json::to_value(describe(&job)).unwrap_or_default());
                    out.push(Candidate {
                        name: job.name,
                        doc,
                        tags: None,
                    });
                }
            }
            Resource::HyperParameterTuningJob => {
                for job in self.store.list_tuning_jobs(&query).await.map_err(store_err)? {
                    let described = self.describe_tuning_row(&caller.account, &job).await?;
                    let doc = record(resource, serde_json::to_value(described).unwrap_or_default());
                    out.push(Candidate {
                        name: job.name,
                        doc,
                        tags: None,
                    });
                }
            }
        }
        if with_tags {
            let mut by_arn: HashMap<String, Vec<TagRow>> = HashMap::new();
            for (arn, tag) in self.store.account_tags(&caller.account).await.map_err(store_err)? {
                by_arn.entry(arn).or_default().push(tag);
            }
            for c in &mut out {
                let arn = c.doc.get(arn_key(resource)).and_then(Value::as_str).unwrap_or_default();
                let tags = by_arn.remove(&arn.to_lowercase()).unwrap_or_default();
                if let Value::Object(m) = &mut c.doc {
                    m.insert("Tags".to_string(), tags_map(&tags));
                }
                c.tags = Some(tags);
            }
        }
        Ok(out)
    }

    /// Every tag of a resource document (by its ARN).
    async fn all_tags(&self, account: &str, doc: &Value, resource: Resource) -> ApiResult<Vec<TagRow>> {
        let Some(arn) = doc.get(arn_key(resource)).and_then(Value::as_str) else {
            return Ok(Vec::new());
        };
        let mut tags: Vec<TagRow> = Vec::new();
        loop {
            let after = tags.last().map(|t| t.key.clone());
            let page = self
                .store
                .list_tags(account, arn, after.as_deref(), 1000)
                .await
                .map_err(store_err)?;
            let done = page.len() < 1000;
            tags.extend(page);
            if done {
                return Ok(tags);
            }
        }
    }
}

/// Orders two documents' `SortBy` values; documents without one go last in either direction.
fn order(a: Option<&Value>, b: Option<&Value>, descending: bool) -> Ordering {
    match (a, b) {
        (Some(_), Some(_)) if descending => sort_order(a, b).reverse(),
        _ => sort_order(a, b),
    }
}
