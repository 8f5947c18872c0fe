//! Watching jobs from a terminal: `kiln logs NAME [-f]` (a job's log streams through the Logs API,
//! followed until the job ends) and `kiln jobs watch` (the jobs table, redrawn as it changes).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::client::Client;

const TERMINAL: [&str; 3] = ["Completed", "Failed", "Stopped"];

/// Prints a training job's log lines (each line prefixed with its host when the job has several);
/// with `follow`, keeps printing new ones until the job has ended and its last lines are out.
pub async fn logs(client: &Client, name: &str, follow: bool) -> Result<i32> {
    // The job must exist: a name without streams is otherwise indistinguishable from a job that
    // has not logged yet.
    let job = describe(client, name).await?;
    let hosts = job["ResourceConfig"]["InstanceCount"].as_u64().unwrap_or(1);
    let mut tokens: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let ended = TERMINAL.contains(
            &describe(client, name).await?["TrainingJobStatus"]
                .as_str()
                .unwrap_or(""),
        );
        // Read after the status: lines that landed with the final report are then included.
        for line in crate::train::fetch_logs(client, name, hosts > 1, &mut tokens).await? {
            println!("{line}");
        }
        let _ = std::io::stdout().flush();
        if !follow || ended {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn describe(client: &Client, name: &str) -> Result<Value> {
    client
        .sagemaker("DescribeTrainingJob", json!({ "TrainingJobName": name }))
        .await
}

/// Which jobs `kiln jobs list` and `kiln jobs watch` show.
pub struct JobFilter {
    pub status: Option<String>,
    pub name_contains: Option<String>,
    pub max: usize,
}

/// The jobs table (a header row, then one row a job, newest first) and how many jobs in it are
/// still running.
pub async fn job_table(client: &Client, filter: &JobFilter) -> Result<(Vec<Vec<String>>, usize)> {
    let mut table = vec![
        ["NAME", "STATUS", "SECONDARY", "CREATED (UTC)", "DURATION"]
            .map(String::from)
            .to_vec(),
    ];
    let mut running = 0;
    let mut token: Option<String> = None;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    while table.len() <= filter.max {
        let mut body = json!({ "MaxResults": 100 });
        if let Some(s) = &filter.status {
            body["StatusEquals"] = json!(s);
        }
        if let Some(n) = &filter.name_contains {
            body["NameContains"] = json!(n);
        }
        if let Some(t) = &token {
            body["NextToken"] = json!(t);
        }
        let page = client.sagemaker("ListTrainingJobs", body).await?;
        for j in page["TrainingJobSummaries"].as_array().into_iter().flatten() {
            if table.len() > filter.max {
                break;
            }
            let status = j["TrainingJobStatus"].as_str().unwrap_or_default();
            if !TERMINAL.contains(&status) {
                running += 1;
            }
            let created = j["CreationTime"].as_f64().unwrap_or(now);
            let end = j["TrainingEndTime"].as_f64().unwrap_or(now);
            table.push(vec![
                j["TrainingJobName"].as_str().unwrap_or_default().to_string(),
                status.to_string(),
                j["SecondaryStatus"].as_str().unwrap_or_default().to_string(),
                crate::time_text(&j["CreationTime"]),
                duration_text(end - created),
            ]);
        }
        token = page.get("NextToken").and_then(Value::as_str).map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok((table, running))
}

/// `1h02m`, `3m05s`, `42s`.
fn duration_text(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// Redraws the jobs table every `every` until Ctrl-C (or, with `until_done`, until none of the
/// jobs shown is running). On a terminal the screen is redrawn in place; otherwise each refresh
/// prints the table again after a blank line.
pub async fn watch(client: &Client, filter: &JobFilter, every: Duration, until_done: bool) -> Result<i32> {
    let tty = std::io::stdout().is_terminal();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut first = true;
    loop {
        let (table, running) = job_table(client, filter).await?;
        if tty {
            // Home, then clear: the table replaces the previous one.
            print!("\x1b[H\x1b[2J");
        } else if !first {
            println!();
        }
        first = false;
        if table.len() == 1 {
            println!("no training jobs");
        } else {
            crate::print_table(&table);
        }
        if tty {
            println!(
                "\n{running} running; refreshed every {}s; Ctrl-C quits",
                every.as_secs_f64()
            );
        }
        let _ = std::io::stdout().flush();
        if until_done && running == 0 {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut ctrl_c => return Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::duration_text;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration_text(42.7), "42s");
        assert_eq!(duration_text(185.0), "3m05s");
        assert_eq!(duration_text(3720.0), "1h02m");
        assert_eq!(duration_text(-3.0), "0s");
    }
}
