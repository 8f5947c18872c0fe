//! The CloudWatch metrics operations: training jobs' metrics (namespace
//! `/aws/sagemaker/TrainingJobs`, dimension `TrainingJobName`, the points parsed from their logs)
//! and points sent with `PutMetricData`, each account seeing only its own. Host metrics (same
//! namespace, dimension `Host=<job>/algo-N`, sampled by the agents) are stored and read as
//! `PutMetricData` points are.

use kiln_api::ApiResult;
use kiln_api::cloudwatch::{
    Dimension, GetMetricDataRequest, GetMetricStatisticsRequest, ListMetricsRequest, MetricDataQuery,
    PutMetricDataRequest, TRAINING_JOB_DIMENSION, TRAINING_NAMESPACE, Wire, combination, invalid, invalid_token,
    missing,
};
use kiln_store::{CustomMetricPoint, CustomSeries};

use crate::{Caller, Engine, store_err};

/// Metrics one `ListMetrics` page holds (the service's page size).
const LIST_PAGE: usize = 500;
/// Most datapoints one `GetMetricStatistics` call may ask for.
const MAX_STATISTICS_POINTS: f64 = 1440.0;
/// Most datapoints one `GetMetricData` page returns (the service's default and limit).
const MAX_DATA_POINTS: i64 = 100_800;
/// Most queries one `GetMetricData` call takes.
const MAX_QUERIES: usize = 500;
/// Most items one `PutMetricData` call takes.
const MAX_DATUMS: usize = 1000;
/// Most values one `PutMetricData` call stores (`Values` × `Counts`).
const MAX_PUT_VALUES: f64 = 150_000.0;
/// Most dimensions of a metric.
const MAX_DIMENSIONS: usize = 30;

/// A metric series: namespace, name and dimensions sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    namespace: String,
    metric: String,
    dims: Vec<(String, String)>,
}

impl Series {
    fn wire(&self) -> Wire {
        Wire::map([
            ("Namespace", Wire::str(&self.namespace)),
            ("MetricName", Wire::str(&self.metric)),
            ("Dimensions", dims_wire(&self.dims)),
        ])
    }

    /// The training job this series is a metric of, if it is one.
    fn training_job(&self) -> Option<&str> {
        match self.dims.as_slice() {
            [(name, job)] if self.namespace == TRAINING_NAMESPACE && name == TRAINING_JOB_DIMENSION => Some(job),
            _ => None,
        }
    }

    fn custom(&self) -> CustomSeries {
        CustomSeries {
            namespace: self.namespace.clone(),
            metric: self.metric.clone(),
            dims: dims_key(&self.dims),
        }
    }
}

fn dims_wire(dims: &[(String, String)]) -> Wire {
    Wire::List(
        dims.iter()
            .map(|(n, v)| Wire::map([("Name", Wire::str(n)), ("Value", Wire::str(v))]))
            .collect(),
    )
}

/// The canonical text of sorted dimensions, as the store keeps it.
fn dims_key(dims: &[(String, String)]) -> String {
    serde_json::to_string(dims).unwrap_or_default()
}

fn sorted_dims(dims: Option<Vec<Dimension>>) -> ApiResult<Vec<(String, String)>> {
    let dims = dims.unwrap_or_default();
    if dims.len() > MAX_DIMENSIONS {
        return Err(invalid(format!(
            "The collection Dimensions must not have a size greater than {MAX_DIMENSIONS}."
        )));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(dims.len());
    for d in dims {
        if d.name.is_empty() || d.name.len() > 255 || d.value.is_empty() || d.value.len() > 1024 {
            return Err(invalid(
                "A dimension's Name must have 1 to 255 characters and its Value 1 to 1024.",
            ));
        }
        if out.iter().any(|(n, _)| *n == d.name) {
            return Err(invalid(format!("The dimension {} is given more than once.", d.name)));
        }
        out.push((d.name, d.value));
    }
    out.sort();
    Ok(out)
}

fn required<T>(v: Option<T>, name: &str) -> ApiResult<T> {
    v.ok_or_else(|| missing(name))
}

fn check_name(value: &str, what: &str) -> ApiResult<()> {
    if value.is_empty() || value.len() > 255 {
        return Err(invalid(format!("The parameter {what} must have 1 to 255 characters.")));
    }
    Ok(())
}

/// CloudWatch's periods: 1, 5, 10, 20, 30, or a multiple of 60 seconds.
fn check_period(period: i64, what: &str) -> ApiResult<f64> {
    if !([1, 5, 10, 20, 30].contains(&period) || (period >= 60 && period % 60 == 0)) {
        return Err(invalid(format!(
            "The parameter {what} must be 1, 5, 10, 20, 30, 60, or any multiple of 60."
        )));
    }
    Ok(period as f64)
}

fn check_range(start: f64, end: f64) -> ApiResult<()> {
    if start >= end {
        return Err(invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    Ok(())
}

/// A statistic CloudWatch computes: the five plain ones and percentiles `pNN(.NN)`.
#[derive(Debug, Clone, PartialEq)]
enum Stat {
    SampleCount,
    Average,
    Sum,
    Minimum,
    Maximum,
    Percentile(f64),
}

impl Stat {
    fn parse(name: &str) -> Option<Stat> {
        Some(match name {
            "SampleCount" => Stat::SampleCount,
            "Average" => Stat::Average,
            "Sum" => Stat::Sum,
            "Minimum" => Stat::Minimum,
            "Maximum" => Stat::Maximum,
            p => {
                let n: f64 = p.strip_prefix('p')?.parse().ok()?;
                if !(0.0..=100.0).contains(&n) || p.contains(['e', 'E', '+', '-']) {
                    return None;
                }
                Stat::Percentile(n)
            }
        })
    }

    /// The statistic of a non-empty bucket.
    fn of(&self, values: &[f64]) -> f64 {
        let n = values.len() as f64;
        match self {
            Stat::SampleCount => n,
            Stat::Sum => values.iter().sum(),
            Stat::Average => values.iter().sum::<f64>() / n,
            Stat::Minimum => values.iter().copied().fold(f64::INFINITY, f64::min),
            Stat::Maximum => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Stat::Percentile(p) => {
                // Nearest rank.
                let mut sorted = values.to_vec();
                sorted.sort_by(f64::total_cmp);
                let rank = ((p / 100.0) * n).ceil().max(1.0) as usize;
                sorted[rank.min(sorted.len()) - 1]
            }
        }
    }
}

/// Groups (timestamp, value) points into period buckets aligned to the epoch: (bucket start,
/// values), in time order.
fn buckets(points: &[(f64, f64)], period: f64) -> Vec<(f64, Vec<f64>)> {
    let mut out: Vec<(f64, Vec<f64>)> = Vec::new();
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (t, v) in sorted {
        let b = (t / period).floor() * period;
        match out.last_mut() {
            Some((start, values)) if *start == b => values.push(v),
            _ => out.push((b, vec![v])),
        }
    }
    out
}

/// One `GetMetricData` query's whole answer: (bucket time, statistic) in scan order.
struct Answer {
    query: MetricDataQuery,
    label: String,
    values: Vec<(f64, f64)>,
}

fn decode_offset(token: &str) -> ApiResult<usize> {
    token
        .strip_prefix("kiln-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(invalid_token)
}

impl Engine {
    /// Every series of the account: its training jobs' metrics with points, then the ones sent
    /// with `PutMetricData`, sorted.
    async fn metric_series_of(&self, account: &str) -> ApiResult<Vec<Series>> {
        let mut out: Vec<Series> = self
            .store
            .metric_series(account)
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|(job, metric)| Series {
                namespace: TRAINING_NAMESPACE.to_string(),
                metric,
                dims: vec![(TRAINING_JOB_DIMENSION.to_string(), job)],
            })
            .collect();
        for s in self.store.custom_metric_series(account).await.map_err(store_err)? {
            let dims: Vec<(String, String)> = serde_json::from_str(&s.dims).unwrap_or_default();
            out.push(Series {
                namespace: s.namespace,
                metric: s.metric,
                dims,
            });
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The (timestamp, value) points of a series with `start <= timestamp < end`.
    async fn series_points(&self, account: &str, series: &Series, start: f64, end: f64) -> ApiResult<Vec<(f64, f64)>> {
        if let Some(job) = series.training_job() {
            let points = self
                .store
                .metric_points(account, job, Some(&series.metric))
                .await
                .map_err(store_err)?;
            return Ok(points
                .into_iter()
                .filter(|p| p.timestamp >= start && p.timestamp < end)
                .map(|p| (p.timestamp, p.value))
                .collect());
        }
        // Host metrics (dimension `Host`) are stored with PutMetricData's points.
        self.store
            .custom_metric_points(account, &series.custom(), start, end)
            .await
            .map_err(store_err)
    }

    /// `ListMetrics`.
    pub async fn list_metrics(&self, caller: &Caller, req: ListMetricsRequest) -> ApiResult<Wire> {
        let filters = req.dimensions.unwrap_or_default();
        if filters.len() > 10 {
            return Err(invalid(
                "The collection Dimensions must not have a size greater than 10.",
            ));
        }
        let offset = req.next_token.as_deref().map(decode_offset).transpose()?.unwrap_or(0);
        let matching: Vec<Series> = self
            .metric_series_of(&caller.account)
            .await?
            .into_iter()
            .filter(|s| req.namespace.as_ref().is_none_or(|n| *n == s.namespace))
            .filter(|s| req.metric_name.as_ref().is_none_or(|m| *m == s.metric))
            .filter(|s| {
                filters.iter().all(|f| {
                    s.dims
                        .iter()
                        .any(|(n, v)| *n == f.name && f.value.as_ref().is_none_or(|fv| fv == v))
                })
            })
            .collect();
        if offset > matching.len() {
            return Err(invalid_token());
        }
        let page: Vec<Wire> = matching.iter().skip(offset).take(LIST_PAGE).map(Series::wire).collect();
        let mut members = vec![("Metrics".to_string(), Wire::List(page))];
        if offset + LIST_PAGE < matching.len() {
            members.push((
                "NextToken".to_string(),
                Wire::str(format!("kiln-{}", offset + LIST_PAGE)),
            ));
        }
        Ok(Wire::Map(members))
    }

    /// `GetMetricStatistics`.
    pub async fn get_metric_statistics(&self, caller: &Caller, req: GetMetricStatisticsRequest) -> ApiResult<Wire> {
        let namespace = required(req.namespace, "Namespace")?;
        let metric = required(req.metric_name, "MetricName")?;
        check_name(&namespace, "Namespace")?;
        check_name(&metric, "MetricName")?;
        let start = required(req.start_time, "StartTime")?.0;
        let end = required(req.end_time, "EndTime")?.0;
        let period = check_period(required(req.period, "Period")?, "Period")?;
        check_range(start, end)?;
        let plain = req.statistics.unwrap_or_default();
        let extended = req.extended_statistics.unwrap_or_default();
        if plain.is_empty() && extended.is_empty() {
            return Err(missing("Statistics or ExtendedStatistics"));
        }
        if !plain.is_empty() && !extended.is_empty() {
            return Err(combination(
                "The parameters Statistics and ExtendedStatistics are mutually exclusive.",
            ));
        }
        if plain.len() > 5 || extended.len() > 10 {
            return Err(invalid("Too many statistics were requested."));
        }
        let mut stats = Vec::new();
        for s in &plain {
            match Stat::parse(s) {
                Some(st) if !matches!(st, Stat::Percentile(_)) => stats.push((s.clone(), st)),
                _ => {
                    return Err(invalid(format!(
                        "The parameter Statistics contains the invalid value '{s}' (one of SampleCount, Average, \
                         Sum, Minimum, Maximum)."
                    )));
                }
            }
        }
        for s in &extended {
            match Stat::parse(s) {
                Some(st @ Stat::Percentile(_)) => stats.push((s.clone(), st)),
                _ => {
                    return Err(invalid(format!(
                        "The parameter ExtendedStatistics contains the invalid value '{s}' (kiln computes \
                         percentiles, pNN.NN)."
                    )));
                }
            }
        }
        let aligned = (start / period).floor() * period;
        let requested = ((end - aligned) / period).ceil();
        if requested > MAX_STATISTICS_POINTS {
            return Err(invalid(format!(
                "You have requested up to {requested} datapoints, which exceeds the limit of 1,440. You may reduce \
                 the datapoints requested by increasing Period, or decreasing the time range."
            )));
        }
        let series = Series {
            namespace,
            metric,
            dims: sorted_dims(req.dimensions)?,
        };
        let points = self.series_points(&caller.account, &series, aligned, end).await?;
        let datapoints = buckets(&points, period)
            .into_iter()
            .map(|(t, values)| {
                let mut members = vec![("Timestamp".to_string(), Wire::Time(t))];
                let mut ext = Vec::new();
                for (name, st) in &stats {
                    match st {
                        Stat::Percentile(_) => ext.push((name.clone(), Wire::Num(st.of(&values)))),
                        _ => members.push((name.clone(), Wire::Num(st.of(&values)))),
                    }
                }
                if !ext.is_empty() {
                    members.push(("ExtendedStatistics".to_string(), Wire::Map(ext)));
                }
                members.push(("Unit".to_string(), Wire::str("None")));
                Wire::Map(members)
            })
            .collect();
        Ok(Wire::map([
            ("Label", Wire::str(series.metric)),
            ("Datapoints", Wire::List(datapoints)),
        ]))
    }

    /// `GetMetricData`: the `MetricStat` queries (metric math is not evaluated).
    pub async fn get_metric_data(&self, caller: &Caller, req: GetMetricDataRequest) -> ApiResult<Wire> {
        let queries = required(req.metric_data_queries, "MetricDataQueries")?;
        let start = required(req.start_time, "StartTime")?.0;
        let end = required(req.end_time, "EndTime")?.0;
        check_range(start, end)?;
        if queries.is_empty() || queries.len() > MAX_QUERIES {
            return Err(invalid(format!(
                "The parameter MetricDataQueries must have 1 to {MAX_QUERIES} members."
            )));
        }
        let descending = match req.scan_by.as_deref() {
            None | Some("TimestampDescending") => true,
            Some("TimestampAscending") => false,
            Some(other) => {
                return Err(invalid(format!(
                    "The parameter ScanBy must be TimestampDescending or TimestampAscending, not '{other}'."
                )));
            }
        };
        let max = req.max_datapoints.unwrap_or(MAX_DATA_POINTS);
        if max < 1 {
            return Err(invalid("The parameter MaxDatapoints must be at least 1."));
        }
        let max = max.min(MAX_DATA_POINTS) as usize;
        let offset = req.next_token.as_deref().map(decode_offset).transpose()?.unwrap_or(0);
        // Every query's full answer, then one page of the points in query order.
        let mut answers: Vec<Answer> = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for q in queries {
            let id = required(q.id.clone(), "MetricDataQueries.member.Id")?;
            let valid_id = id.len() <= 255
                && id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_id {
                return Err(invalid(format!(
                    "The value {id} for parameter MetricDataQueries.member.Id is invalid: it must start with a \
                     lowercase letter and hold only letters, numbers and underscores."
                )));
            }
            if !ids.insert(id.clone()) {
                return Err(invalid(format!(
                    "The values for parameter id in MetricDataQueries are not unique: {id}."
                )));
            }
            if q.expression.is_some() {
                return Err(invalid(format!(
                    "The query {id} has an Expression: kiln does not evaluate metric math or Metrics Insights \
                     expressions; ask for each metric with MetricStat."
                )));
            }
            let Some(stat) = q.metric_stat.clone() else {
                return Err(missing("MetricDataQueries.member.MetricStat"));
            };
            let metric = required(stat.metric, "MetricStat.Metric")?;
            let namespace = required(metric.namespace, "MetricStat.Metric.Namespace")?;
            let name = required(metric.metric_name, "MetricStat.Metric.MetricName")?;
            let period = check_period(required(stat.period, "MetricStat.Period")?, "MetricStat.Period")?;
            let stat_name = required(stat.stat, "MetricStat.Stat")?;
            let st = Stat::parse(&stat_name).ok_or_else(|| {
                invalid(format!(
                    "The value {stat_name} for parameter MetricStat.Stat is invalid (kiln computes SampleCount, \
                     Average, Sum, Minimum, Maximum and pNN.NN)."
                ))
            })?;
            let series = Series {
                namespace,
                metric: name,
                dims: sorted_dims(metric.dimensions)?,
            };
            let aligned = (start / period).floor() * period;
            let points = self.series_points(&caller.account, &series, aligned, end).await?;
            let mut values: Vec<(f64, f64)> = buckets(&points, period)
                .into_iter()
                .map(|(t, vs)| (t, st.of(&vs)))
                .collect();
            if descending {
                values.reverse();
            }
            let label = q.label.clone().unwrap_or_else(|| series.metric.clone());
            answers.push(Answer {
                query: q,
                label,
                values,
            });
        }
        let total: usize = answers
            .iter()
            .filter(|a| a.query.return_data != Some(false))
            .map(|a| a.values.len())
            .sum();
        if offset > total {
            return Err(invalid_token());
        }
        let mut skip = offset;
        let mut room = max;
        let mut results = Vec::new();
        for Answer {
            query: q,
            label,
            values,
        } in answers
        {
            if q.return_data == Some(false) {
                continue;
            }
            let from = skip.min(values.len());
            skip -= from;
            let take = room.min(values.len() - from);
            room -= take;
            let page = &values[from..from + take];
            let complete = from + take == values.len();
            results.push(Wire::map([
                ("Id", Wire::str(q.id.unwrap_or_default())),
                ("Label", Wire::str(label)),
                (
                    "Timestamps",
                    Wire::List(page.iter().map(|(t, _)| Wire::Time(*t)).collect()),
                ),
                ("Values", Wire::List(page.iter().map(|(_, v)| Wire::Num(*v)).collect())),
                (
                    "StatusCode",
                    Wire::str(if complete { "Complete" } else { "PartialData" }),
                ),
                ("Messages", Wire::List(Vec::new())),
            ]));
        }
        let mut members = vec![
            ("MetricDataResults".to_string(), Wire::List(results)),
            ("Messages".to_string(), Wire::List(Vec::new())),
        ];
        if offset + max < total {
            members.push(("NextToken".to_string(), Wire::str(format!("kiln-{}", offset + max))));
        }
        Ok(Wire::Map(members))
    }

    /// `PutMetricData`: points of custom namespaces, in the caller's account.
    pub async fn put_metric_data(&self, caller: &Caller, req: PutMetricDataRequest) -> ApiResult<Wire> {
        let namespace = required(req.namespace, "Namespace")?;
        check_name(&namespace, "Namespace")?;
        if namespace.starts_with("AWS/") || namespace == TRAINING_NAMESPACE {
            return Err(invalid(format!(
                "The value {namespace} for parameter Namespace is invalid: it is reserved for the service's own \
                 metrics."
            )));
        }
        if req.entity_metric_data.is_some() {
            return Err(invalid("kiln does not store EntityMetricData; send MetricData."));
        }
        let data = required(req.metric_data, "MetricData")?;
        if data.is_empty() || data.len() > MAX_DATUMS {
            return Err(invalid(format!(
                "The collection MetricData must have 1 to {MAX_DATUMS} members."
            )));
        }
        let now = crate::now();
        let mut points = Vec::new();
        let mut count = 0.0;
        for d in data {
            let metric = required(d.metric_name, "MetricData.member.MetricName")?;
            check_name(&metric, "MetricName")?;
            let dims = dims_key(&sorted_dims(d.dimensions)?);
            let timestamp = d.timestamp.map(|t| t.0).unwrap_or(now);
            if d.statistic_values.is_some() {
                return Err(invalid(
                    "kiln does not store StatisticValues; send Value or Values (with Counts).",
                ));
            }
            let mut push = |value: f64, times: f64| -> ApiResult<()> {
                if !value.is_finite() {
                    return Err(invalid("The values of MetricData must be finite numbers."));
                }
                count += times;
                if count > MAX_PUT_VALUES {
                    return Err(invalid("The request holds too many values."));
                }
                for _ in 0..times as u64 {
                    points.push(CustomMetricPoint {
                        namespace: namespace.clone(),
                        metric: metric.clone(),
                        dims: dims.clone(),
                        value,
                        timestamp,
                    });
                }
                Ok(())
            };
            match (d.value, d.values) {
                (Some(_), Some(_)) => {
                    return Err(combination(
                        "The parameters MetricData.member.Value and MetricData.member.Values are mutually exclusive.",
                    ));
                }
                (Some(v), None) => push(v, 1.0)?,
                (None, Some(values)) => {
                    let counts = d.counts.unwrap_or_else(|| vec![1.0; values.len()]);
                    if counts.len() != values.len() {
                        return Err(invalid(
                            "The parameters MetricData.member.Values and MetricData.member.Counts must have the \
                             same number of members.",
                        ));
                    }
                    for (v, c) in values.into_iter().zip(counts) {
                        if !(c >= 0.0 && c.fract() == 0.0) {
                            return Err(invalid("kiln takes whole, non-negative Counts."));
                        }
                        push(v, c)?;
                    }
                }
                (None, None) => {
                    return Err(missing("MetricData.member.Value"));
                }
            }
        }
        self.store
            .put_custom_metric_points(&caller.account, &points)
            .await
            .map_err(store_err)?;
        Ok(Wire::Map(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        for p in [1, 5, 10, 20, 30, 60, 120, 3600] {
            assert!(check_period(p, "Period").is_ok(), "{p}");
        }
        for p in [0, -60, 2, 45, 61, 90] {
            assert!(check_period(p, "Period").is_err(), "{p}");
        }
    }

    #[test]
    fn statistics_of_a_bucket() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(Stat::Average.of(&v), 2.5);
        assert_eq!(Stat::Sum.of(&v), 10.0);
        assert_eq!(Stat::Minimum.of(&v), 1.0);
        assert_eq!(Stat::Maximum.of(&v), 4.0);
        assert_eq!(Stat::SampleCount.of(&v), 4.0);
        assert_eq!(Stat::parse("p50").map(|s| s.of(&v)), Some(2.0));
        assert_eq!(Stat::parse("p99.9").map(|s| s.of(&v)), Some(4.0));
        assert_eq!(Stat::parse("p101"), None);
        assert_eq!(Stat::parse("tm99"), None);
    }

    #[test]
    fn buckets_are_aligned_to_the_period() {
        let b = buckets(&[(125.0, 1.0), (61.0, 2.0), (119.0, 4.0)], 60.0);
        assert_eq!(b, vec![(60.0, vec![2.0, 4.0]), (120.0, vec![1.0])]);
    }
}
