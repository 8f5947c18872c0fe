//! The console's pages, rendered from the API's own JSON answers (`DescribeTrainingJob`, ...).
//! Everything that comes from a job (names, hyperparameters, log lines) is escaped.

use serde_json::Value;

use super::ROOT;
use super::session::Session;

/// `&<>"'` escaped, for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment percent-encoded (job names are `[a-zA-Z0-9-]`, but links must not trust that).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An API timestamp (epoch seconds) as `2026-12-06 17:50:01`, UTC.
pub fn when(v: &Value) -> String {
    let Some(secs) = v.as_f64() else {
        return String::new();
    };
    match time::OffsetDateTime::from_unix_timestamp(secs as i64) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => String::new(),
    }
}

/// Seconds as `1h 02m`, `3m 04s` or `5.2s`.
pub fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{}m {:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    } else {
        format!("{}h {:02}m", (secs / 3600.0) as u64, ((secs % 3600.0) / 60.0) as u64)
    }
}

fn badge(status: &str) -> String {
    let class = match status {
        "Completed" | "NoIssuesFound" => "ok",
        "Failed" | "IssuesFound" | "Error" => "bad",
        "Stopped" | "Stopping" => "warn",
        _ => "run",
    };
    format!(r#"<span class="badge {class}">{}</span>"#, esc(status))
}

fn page(session: Option<&Session>, title: &str, body: &str) -> String {
    let nav = match session {
        Some(s) => format!(
            concat!(
                r#"<nav><a class="brand" href="{root}/jobs">kiln</a><a href="{root}/jobs">Training jobs</a>"#,
                r#"<a href="{root}/tuning">Tuning jobs</a><a href="{root}/pools">Warm pools</a><span class="grow"></span>"#,
                r#"<span class="who">account {account}</span>"#,
                r#"<form method="post" action="{root}/logout"><button class="link">Sign out</button></form></nav>"#
            ),
            root = ROOT,
            account = esc(&s.account)
        ),
        None => r#"<nav><span class="brand">kiln</span></nav>"#.to_string(),
    };
    format!(
        concat!(
            "<!doctype html><html lang=en><head><meta charset=utf-8>",
            r#"<meta name=viewport content="width=device-width, initial-scale=1">"#,
            "<title>{title} · kiln</title>",
            r#"<link rel=stylesheet href="{root}/static/ui.css"><script defer src="{root}/static/ui.js"></script>"#,
            "</head><body>{nav}<main>{body}</main></body></html>"
        ),
        title = esc(title),
        root = ROOT,
        nav = nav,
        body = body
    )
}

/// The sign-in form.
pub fn login(error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| format!(r#"<p class="error">{}</p>"#, esc(e)));
    page(
        None,
        "Sign in",
        &format!(
            concat!(
                r#"<form class="card login" method="post" action="{root}/login"><h1>Sign in</h1>{error}"#,
                r#"<label>Access key id<input name="access_key_id" autocomplete="username" required autofocus></label>"#,
                r#"<label>Secret access key<input name="secret_access_key" type="password" autocomplete="current-password" required></label>"#,
                r#"<button>Sign in</button><p class="hint">The keys your SDK uses (<code>kiln keys list</code>, <code>kiln env</code>).</p></form>"#
            ),
            root = ROOT,
            error = error
        ),
    )
}

pub fn error_page(session: &Session, title: &str, message: &str) -> String {
    page(
        Some(session),
        title,
        &format!(r#"<h1>{}</h1><p class="error">{}</p>"#, esc(title), esc(message)),
    )
}

/// The rows of the jobs table (also served alone, for refreshing).
pub fn job_rows(list: &Value) -> String {
    let mut rows = String::new();
    for j in list["TrainingJobSummaries"].as_array().into_iter().flatten() {
        let name = text(&j["TrainingJobName"]);
        let start = j["CreationTime"].as_f64().unwrap_or(0.0);
        let end = j["TrainingEndTime"]
            .as_f64()
            .unwrap_or_else(|| j["LastModifiedTime"].as_f64().unwrap_or(start));
        let status = text(&j["TrainingJobStatus"]);
        let took = if status == "InProgress" {
            String::new()
        } else {
            duration((end - start).max(0.0))
        };
        let pool = j["WarmPoolStatus"]["Status"].as_str().unwrap_or("");
        rows.push_str(&format!(
            r#"<tr><td><a href="{ROOT}/jobs/{link}">{name}</a></td><td>{badge}</td><td>{secondary}</td><td>{created}</td><td>{took}</td><td>{pool}</td></tr>"#,
            link = seg(&name),
            name = esc(&name),
            badge = badge(&status),
            secondary = esc(&text(&j["SecondaryStatus"])),
            created = when(&j["CreationTime"]),
            took = took,
            pool = esc(pool)
        ));
    }
    if rows.is_empty() {
        rows.push_str(r#"<tr><td colspan=6 class="empty">No training jobs.</td></tr>"#);
    }
    rows
}

/// The training jobs list, newest first, with filters.
pub fn jobs(session: &Session, list: &Value, status: Option<&str>, name: Option<&str>) -> String {
    let options: String = ["", "InProgress", "Completed", "Failed", "Stopping", "Stopped"]
        .iter()
        .map(|s| {
            let selected = if Some(*s) == status || (s.is_empty() && status.is_none()) {
                " selected"
            } else {
                ""
            };
            let label = if s.is_empty() { "any status" } else { s };
            format!(r#"<option value="{s}"{selected}>{label}</option>"#)
        })
        .collect();
    let next = list["NextToken"].as_str().map_or(String::new(), |t| {
        let mut q = format!("next={}", seg(t));
        if let Some(s) = status {
            q.push_str(&format!("&status={}", seg(s)));
        }
        if let Some(n) = name {
            q.push_str(&format!("&name={}", seg(n)));
        }
        format!(r#"<p><a href="{ROOT}/jobs?{q}">Older jobs →</a></p>"#)
    });
    page(
        Some(session),
        "Training jobs",
        &format!(
            concat!(
                r#"<h1>Training jobs</h1><form class="filters" method="get" action="{root}/jobs">"#,
                r#"<input name="name" placeholder="name contains" value="{name}"><select name="status">{options}</select>"#,
                r#"<button>Filter</button></form>"#,
                r#"<table class="jobs"><thead><tr><th>Name</th><th>Status</th><th>Step</th><th>Created (UTC)</th><th>Took</th><th>Warm pool</th></tr></thead>"#,
                r#"<tbody data-refresh="{root}/jobs?rows=1{filter}">{rows}</tbody></table>{next}"#
            ),
            root = ROOT,
            name = esc(name.unwrap_or("")),
            options = options,
            filter = esc(&format!(
                "{}{}",
                status.map_or(String::new(), |s| format!("&status={}", seg(s))),
                name.map_or(String::new(), |n| format!("&name={}", seg(n)))
            )),
            rows = job_rows(list),
            next = next
        ),
    )
}

fn kv_table(pairs: &[(String, String)]) -> String {
    let rows: String = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), v))
        .collect();
    format!(r#"<table class="kv">{rows}</table>"#)
}

/// A training job: what it is, how it went, its metrics and its logs.
/// A byte count as `12.3 MB`.
fn size(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// A training job's page; `artifacts` are the job's files in the object store (what, S3 URI,
/// size), offered for download.
pub fn job(session: &Session, j: &Value, artifacts: &[(String, String, u64)]) -> String {
    let name = text(&j["TrainingJobName"]);
    let status = text(&j["TrainingJobStatus"]);
    let secondary = text(&j["SecondaryStatus"]);
    let algo = &j["AlgorithmSpecification"];
    let image = algo["TrainingImage"]
        .as_str()
        .or(algo["AlgorithmName"].as_str())
        .unwrap_or("");
    let rc = &j["ResourceConfig"];
    let resources = match rc["InstanceGroups"].as_array() {
        Some(groups) if !groups.is_empty() => groups
            .iter()
            .map(|g| {
                format!(
                    "{} × {} ({})",
                    text(&g["InstanceCount"]),
                    text(&g["InstanceType"]),
                    text(&g["InstanceGroupName"])
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => format!("{} × {}", text(&rc["InstanceCount"]), text(&rc["InstanceType"])),
    };
    let mut overview = vec![
        ("Status".to_string(), format!("{} {}", badge(&status), esc(&secondary))),
        ("Failure reason".into(), esc(&text(&j["FailureReason"]))),
        (
            "ARN".into(),
            format!("<code>{}</code>", esc(&text(&j["TrainingJobArn"]))),
        ),
        ("Image".into(), format!("<code>{}</code>", esc(image))),
        ("Resources".into(), esc(&resources)),
        ("Created".into(), when(&j["CreationTime"])),
        ("Training started".into(), when(&j["TrainingStartTime"])),
        ("Ended".into(), when(&j["TrainingEndTime"])),
    ];
    if let Some(t) = j["TrainingTimeInSeconds"].as_f64() {
        overview.push(("Training time".into(), duration(t)));
    }
    if let Some(t) = j["BillableTimeInSeconds"].as_f64() {
        overview.push(("Billable time".into(), duration(t)));
    }
    if let Some(p) = j["WarmPoolStatus"]["Status"].as_str() {
        let by = j["WarmPoolStatus"]["ReusedByJob"].as_str().map_or(String::new(), |b| {
            format!(r#" by <a href="{ROOT}/jobs/{}">{}</a>"#, seg(b), esc(b))
        });
        overview.push(("Warm pool".into(), format!("{}{by}", esc(p))));
    }
    if let Some(t) = j["TuningJobArn"].as_str() {
        let tuning = t.rsplit('/').next().unwrap_or(t);
        overview.push((
            "Tuning job".into(),
            format!(r#"<a href="{ROOT}/tuning/{}">{}</a>"#, seg(tuning), esc(tuning)),
        ));
    }
    let output = j["OutputDataConfig"]["S3OutputPath"].as_str().unwrap_or("");
    overview.push(("Output".into(), format!("<code>{}</code>", esc(output))));
    if let Some(m) = j["ModelArtifacts"]["S3ModelArtifacts"].as_str() {
        overview.push(("Model".into(), format!("<code>{}</code>", esc(m))));
    }
    let timeline: String = j["SecondaryStatusTransitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let start = t["StartTime"].as_f64().unwrap_or(0.0);
            let took = t["EndTime"]
                .as_f64()
                .map_or(String::new(), |e| duration((e - start).max(0.0)));
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&text(&t["Status"])),
                when(&t["StartTime"]),
                took,
                esc(&text(&t["StatusMessage"]))
            )
        })
        .collect();
    let final_metrics: Vec<(String, String)> = j["FinalMetricDataList"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                text(&m["MetricName"]),
                format!("{}", m["Value"].as_f64().unwrap_or(f64::NAN)),
            )
        })
        .collect();
    let hps: Vec<(String, String)> = j["HyperParameters"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("<code>{}</code>", esc(&text(v)))))
        .collect();
    let channels: String = j["InputDataConfig"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s3 = &c["DataSource"]["S3DataSource"];
            format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&text(&c["ChannelName"])),
                esc(&text(&s3["S3Uri"])),
                esc(&text(&s3["S3DataDistributionType"])),
                esc(&text(&c["ContentType"])),
                esc(&text(&c["InputMode"]))
            )
        })
        .collect();
    let stop = if status == "InProgress" {
        format!(r#"<button class="danger" data-stop="{}">Stop</button>"#, esc(&name))
    } else {
        String::new()
    };
    let channels = if channels.is_empty() {
        String::new()
    } else {
        format!(
            r#"<section><h2>Input channels</h2><table><thead><tr><th>Channel</th><th>URI</th><th>Distribution</th><th>Content type</th><th>Mode</th></tr></thead>{channels}</table></section>"#
        )
    };
    let rules: String = ["DebugRuleEvaluationStatuses", "ProfilerRuleEvaluationStatuses"]
        .iter()
        .flat_map(|k| j[*k].as_array().cloned().unwrap_or_default())
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&text(&r["RuleConfigurationName"])),
                badge(&text(&r["RuleEvaluationStatus"])),
                esc(&text(&r["StatusDetails"])),
                when(&r["LastModifiedTime"])
            )
        })
        .collect();
    let rules = if rules.is_empty() {
        String::new()
    } else {
        format!(
            r#"<section><h2>Rules</h2><table class="rules"><thead><tr><th>Rule</th><th>Status</th><th>Details</th><th>Last change (UTC)</th></tr></thead>{rules}</table></section>"#
        )
    };
    let artifacts: String = artifacts
        .iter()
        .map(|(what, uri, bytes)| {
            format!(
                r#"<tr><td><a href="{ROOT}/jobs/{}/artifacts/{}" download>{}</a></td><td><code>{}</code></td><td>{}</td></tr>"#,
                seg(&name),
                seg(what),
                esc(uri.rsplit('/').next().unwrap_or(what)),
                esc(uri),
                size(*bytes)
            )
        })
        .collect();
    let artifacts = if artifacts.is_empty() {
        String::new()
    } else {
        format!(
            r#"<section><h2>Artifacts</h2><table class="artifacts"><thead><tr><th>Download</th><th>S3 URI</th><th>Size</th></tr></thead>{artifacts}</table></section>"#
        )
    };
    let final_metrics = if final_metrics.is_empty() {
        String::new()
    } else {
        format!("<h3>Final metrics</h3>{}", kv_table(&final_metrics))
    };
    page(
        Some(session),
        &name,
        &format!(
            concat!(
                r#"<div class="title"><h1>{name}</h1>{stop}</div>"#,
                r#"<div class="cols"><section><h2>Overview</h2>{overview}</section>"#,
                r#"<section><h2>Status</h2><table class="timeline"><thead><tr><th>Step</th><th>Since (UTC)</th><th>Took</th><th>Message</th></tr></thead>{timeline}</table></section></div>"#,
                r#"<section><h2>Metrics</h2><div class="charts" data-metrics="{root}/jobs/{link}/metrics" data-live="{live}"><p class="empty">No metric points yet.</p></div>{final_metrics}</section>"#,
                "{rules}{artifacts}",
                r#"<section><h2>Logs</h2><pre class="logs" data-logs="{root}/jobs/{link}/logs"></pre></section>"#,
                r#"<div class="cols"><section><h2>Hyperparameters</h2>{hps}</section>{channels}</div>"#
            ),
            name = esc(&name),
            stop = stop,
            overview = kv_table(&overview),
            timeline = timeline,
            root = ROOT,
            link = seg(&name),
            live = if matches!(status.as_str(), "InProgress" | "Stopping") {
                "1"
            } else {
                ""
            },
            final_metrics = final_metrics,
            rules = rules,
            artifacts = artifacts,
            hps = kv_table(&hps),
            channels = channels
        ),
    )
}

/// The warm pools: jobs whose instances are retained (`Available`) for the next matching job,
/// with when each expires (`described`: the pools' `DescribeTrainingJob` answers and when their
/// retention ends, epoch seconds), a Release
/// button each, and the pools reused lately.
pub fn pools(session: &Session, described: &[(Value, Option<f64>)], reused: &Value, now: f64) -> String {
    let rows: String = described
        .iter()
        .map(|(j, expires)| {
            let name = text(&j["TrainingJobName"]);
            let rc = &j["ResourceConfig"];
            let keep = rc["KeepAlivePeriodInSeconds"].as_f64().unwrap_or(0.0);
            let left = expires.map_or(keep, |e| (e - now).max(0.0));
            format!(
                concat!(
                    r#"<tr><td><a href="{root}/jobs/{link}">{name}</a></td><td>{count} × {itype}</td><td>{image}</td>"#,
                    r#"<td>{keep}</td><td>about {left}</td>"#,
                    r#"<td><button class="danger" data-release="{name}">Release</button></td></tr>"#
                ),
                root = ROOT,
                link = seg(&name),
                name = esc(&name),
                count = esc(&text(&rc["InstanceCount"])),
                itype = esc(&text(&rc["InstanceType"])),
                image = esc(&text(&j["AlgorithmSpecification"]["TrainingImage"])),
                keep = duration(keep),
                left = duration(left)
            )
        })
        .collect();
    let table = if rows.is_empty() {
        r#"<p class="empty">No warm pool is available. A job with <code>ResourceConfig.KeepAlivePeriodInSeconds</code> keeps its instances for the next job with the same instance type, count and image.</p>"#.to_string()
    } else {
        format!(
            r#"<table class="pools"><thead><tr><th>Training job</th><th>Instances</th><th>Image</th><th>Keep-alive</th><th>Expires in</th><th></th></tr></thead>{rows}</table>"#
        )
    };
    let reused_rows: String = reused["TrainingJobSummaries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let name = text(&s["TrainingJobName"]);
            let by = text(&s["WarmPoolStatus"]["ReusedByJob"]);
            format!(
                r#"<tr><td><a href="{ROOT}/jobs/{}">{}</a></td><td><a href="{ROOT}/jobs/{}">{}</a></td><td>{}</td></tr>"#,
                seg(&name),
                esc(&name),
                seg(&by),
                esc(&by),
                duration(s["WarmPoolStatus"]["ResourceRetainedBillableTimeInSeconds"].as_f64().unwrap_or(0.0))
            )
        })
        .collect();
    let reused_table = if reused_rows.is_empty() {
        String::new()
    } else {
        format!(
            r#"<section><h2>Reused lately</h2><table><thead><tr><th>Pool of</th><th>Reused by</th><th>Retained</th></tr></thead>{reused_rows}</table></section>"#
        )
    };
    page(
        Some(session),
        "Warm pools",
        &format!(r#"<h1>Warm pools</h1><section><h2>Available</h2>{table}</section>{reused_table}"#),
    )
}

/// The tuning jobs.
pub fn tuning_list(session: &Session, v: &Value) -> String {
    let mut rows = String::new();
    for t in v["HyperParameterTuningJobSummaries"].as_array().into_iter().flatten() {
        let name = text(&t["HyperParameterTuningJobName"]);
        let counts = &t["TrainingJobStatusCounters"];
        rows.push_str(&format!(
            r#"<tr><td><a href="{ROOT}/tuning/{link}">{name}</a></td><td>{badge}</td><td>{strategy}</td><td>{done} done, {running} running, {failed} failed</td><td>{created}</td></tr>"#,
            link = seg(&name),
            name = esc(&name),
            badge = badge(&text(&t["HyperParameterTuningJobStatus"])),
            strategy = esc(&text(&t["Strategy"])),
            done = text(&counts["Completed"]),
            running = text(&counts["InProgress"]),
            failed = counts["NonRetryableError"].as_i64().unwrap_or(0) + counts["RetryableError"].as_i64().unwrap_or(0),
            created = when(&t["CreationTime"]),
        ));
    }
    if rows.is_empty() {
        rows.push_str(r#"<tr><td colspan=5 class="empty">No tuning jobs.</td></tr>"#);
    }
    page(
        Some(session),
        "Tuning jobs",
        &format!(
            r#"<h1>Tuning jobs</h1><table><thead><tr><th>Name</th><th>Status</th><th>Strategy</th><th>Trials</th><th>Created (UTC)</th></tr></thead>{rows}</table>"#
        ),
    )
}

/// A tuning job: its objective, the leaderboard of its trials, and the objective over time.
pub fn tuning(session: &Session, t: &Value, children: &[Value]) -> String {
    let name = text(&t["HyperParameterTuningJobName"]);
    let objective = &t["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"];
    let metric = text(&objective["MetricName"]);
    let minimize = objective["Type"].as_str() == Some("Minimize");
    let mut trials: Vec<&Value> = children.iter().collect();
    let value = |c: &Value| c["FinalHyperParameterTuningJobObjectiveMetric"]["Value"].as_f64();
    trials.sort_by(|a, b| match (value(a), value(b)) {
        (Some(x), Some(y)) => {
            let o = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
            if minimize { o } else { o.reverse() }
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let mut names: Vec<String> = Vec::new();
    for c in &trials {
        for k in c["TunedHyperParameters"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    let head: String = names.iter().map(|n| format!("<th>{}</th>", esc(n))).collect();
    let mut rows = String::new();
    let mut points = Vec::new();
    for (i, c) in trials.iter().enumerate() {
        let job = text(&c["TrainingJobName"]);
        let v = value(c);
        if let (Some(v), Some(t)) = (v, c["TrainingEndTime"].as_f64()) {
            points.push(serde_json::json!([t, v]));
        }
        let cells: String = names
            .iter()
            .map(|n| format!("<td>{}</td>", esc(&text(&c["TunedHyperParameters"][n]))))
            .collect();
        rows.push_str(&format!(
            r#"<tr><td>{rank}</td><td><a href="{ROOT}/jobs/{link}">{job}</a></td><td>{badge}</td><td>{value}</td>{cells}</tr>"#,
            rank = i + 1,
            link = seg(&job),
            job = esc(&job),
            badge = badge(&text(&c["TrainingJobStatus"])),
            value = v.map_or(String::new(), |v| format!("{v:.6}")),
        ));
    }
    let best = t["BestTrainingJob"]["TrainingJobName"]
        .as_str()
        .map_or(String::new(), |b| {
            format!(r#" · best: <a href="{ROOT}/jobs/{}">{}</a>"#, seg(b), esc(b))
        });
    points.sort_by(|a, b| {
        a[0].as_f64()
            .partial_cmp(&b[0].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut series = serde_json::Map::new();
    series.insert(metric.clone(), Value::Array(points));
    // Each numeric hyperparameter against the objective, one dot per trial.
    for n in &names {
        let dots: Vec<Value> = trials
            .iter()
            .filter_map(|c| {
                let x = text(&c["TunedHyperParameters"][n]).parse::<f64>().ok()?;
                Some(serde_json::json!([x, value(c)?]))
            })
            .collect();
        if !dots.is_empty() {
            series.insert(
                format!("{n} → {metric}"),
                serde_json::json!({"scatter": true, "points": dots}),
            );
        }
    }
    let series = Value::Object(series);
    page(
        Some(session),
        &name,
        &format!(
            concat!(
                r#"<div class="title"><h1>{name}</h1>{badge}</div>"#,
                r#"<p>{direction} <code>{metric}</code> · strategy {strategy}{best}</p>"#,
                r#"<section><h2>Objective over time, and against each hyperparameter</h2><div class="charts" data-series="{series}"></div></section>"#,
                r#"<section><h2>Leaderboard</h2><table class="leaderboard"><thead><tr><th>#</th><th>Training job</th><th>Status</th><th>{metric}</th>{head}</tr></thead>{rows}</table></section>"#
            ),
            name = esc(&name),
            badge = badge(&text(&t["HyperParameterTuningJobStatus"])),
            direction = if minimize { "Minimize" } else { "Maximize" },
            metric = esc(&metric),
            strategy = esc(&text(&t["HyperParameterTuningJobConfig"]["Strategy"])),
            best = best,
            series = esc(&series.to_string()),
            head = head,
            rows = rows
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_jobs_say_is_escaped() {
        assert_eq!(esc(r#"<script>"a"&'b'"#), "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        let s = Session {
            account: "1".into(),
            access_key_id: "K".into(),
        };
        let j = serde_json::json!({"TrainingJobName": "j", "TrainingJobStatus": "Failed",
            "FailureReason": "<img src=x onerror=alert(1)>", "HyperParameters": {"x": "</code><b>"}});
        let page = job(&s, &j, &[]);
        assert!(!page.contains("<img") && page.contains("&lt;img src=x"));
        assert!(!page.contains("</code><b>"));
        assert!(!page.contains("<h2>Rules</h2>"), "no rules, no section");
        let j = serde_json::json!({"TrainingJobName": "j", "TrainingJobStatus": "Completed",
            "DebugRuleEvaluationStatuses": [{"RuleConfigurationName": "<i>L</i>", "RuleEvaluationStatus": "IssuesFound",
                "StatusDetails": "loss <rose>", "LastModifiedTime": 1796577729.5}]});
        let page = job(&s, &j, &[]);
        assert!(page.contains("<h2>Rules</h2>") && page.contains(r#"<span class="badge bad">IssuesFound</span>"#));
        assert!(
            page.contains("&lt;i&gt;L&lt;/i&gt;") && page.contains("loss &lt;rose&gt;"),
            "{page}"
        );
        assert_eq!(duration(5.25), "5.2s");
        assert_eq!(duration(125.0), "2m 05s");
        assert_eq!(duration(3725.0), "1h 02m");
        assert_eq!(when(&serde_json::json!(1796577729.5)), "2026-12-06 17:22:09");
    }
}
