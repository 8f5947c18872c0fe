//! What a Slurm job's records say about a launch: still queued (and why), running (on which
//! nodes, host by host), or ending or ended (and why, naming the nodes). Pure, over the records
//! slurmrestd returns and kiln's own host-to-node map.

use super::api::JobRecord;
use super::cluster::Node;
use super::nodelist;

/// Where a Slurm job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for nodes: Slurm's reason (`Priority`, `Resources`, ...) in words.
    Queued(String),
    /// The hosts run; the node of each host, in host order (task `i` on the `i`-th node).
    Running(Vec<String>),
    /// Slurm is ending or has ended the job: its state and reason.
    Ended(Ended),
}

/// How a Slurm job ended (or is ending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub job_id: u64,
    /// `COMPLETED`, `NODE_FAIL`, ... or `COMPLETING` while Slurm still tears it down.
    pub state: String,
    /// Slurm's `state_reason` when it says something (`NodeDown`, `TimeLimit`).
    pub reason: Option<String>,
    /// The batch script's exit, in words, when it failed.
    pub exit: Option<String>,
    /// The nodes Slurm reports now (after a failure, fewer than ran the job).
    pub nodes: Vec<String>,
    /// The nodes of the allocation as made, in order (empty if Slurm does not say).
    pub allocated: Vec<String>,
}

/// States in which a job no longer runs anything (Slurm's `JOB_STATE_BASE` names).
const ENDED: &[&str] = &[
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
    "SPECIAL_EXIT",
    "REVOKED",
];

/// States in which no host has started yet.
const QUEUED: &[&str] = &["PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING"];

/// The records of job `id`: the job, or every component of a heterogeneous job, in order.
pub fn records_of(all: &[JobRecord], id: u64) -> Vec<JobRecord> {
    let mut mine: Vec<JobRecord> = all
        .iter()
        .filter(|r| r.job_id == id || r.het_job_id.is_some_and(|h| h == id))
        .cloned()
        .collect();
    mine.sort_by_key(|r| r.het_job_offset.unwrap_or(0));
    mine.dedup_by_key(|r| r.job_id);
    mine
}

/// What a job's records say. `None` if there are none (Slurm no longer knows the job).
pub fn phase(records: &[JobRecord]) -> Option<Phase> {
    let leader = records.first()?;
    let state_of = |r: &JobRecord| r.job_state.to_ascii_uppercase();
    let nodes_of = |r: &JobRecord| nodelist::expand(r.nodes.as_deref().unwrap_or_default()).unwrap_or_default();
    // The allocation as made: the node of each host (task `i` on node `i`), also while ending.
    let allocated_of = |r: &JobRecord| match r.job_resources.as_ref().and_then(|j| j.nodes.as_deref()) {
        Some(list) if !list.is_empty() => nodelist::expand(list).unwrap_or_default(),
        _ => nodes_of(r),
    };
    // Requeued (preempted with `PreemptMode=REQUEUE`, or `scontrol requeue`): Slurm counts a
    // restart from the moment it tears the job down (`COMPLETING`, then `PENDING`). For kiln that
    // launch is over, whatever Slurm does with the job next; the training job goes on, if at all,
    // in a new launch.
    if let Some(r) = records
        .iter()
        .find(|r| state_of(r).starts_with("REQUEUE") || r.restart_cnt.unwrap_or(0) > 0)
    {
        return Some(Phase::Ended(Ended {
            job_id: leader.job_id,
            state: "REQUEUED".into(),
            reason: r.state_reason.clone().filter(|s| !s.is_empty() && s != "None"),
            exit: None,
            nodes: records.iter().flat_map(nodes_of).collect(),
            allocated: records.iter().flat_map(allocated_of).collect(),
        }));
    }
    let ending = records
        .iter()
        .find(|r| ENDED.contains(&state_of(r).as_str()))
        .or_else(|| records.iter().find(|r| state_of(r) == "COMPLETING"));
    if let Some(r) = ending {
        return Some(Phase::Ended(Ended {
            job_id: leader.job_id,
            state: state_of(r),
            reason: r.state_reason.clone().filter(|s| !s.is_empty() && s != "None"),
            exit: r.exit_code.and_then(describe_exit),
            nodes: records.iter().flat_map(nodes_of).collect(),
            allocated: records.iter().flat_map(allocated_of).collect(),
        }));
    }
    if let Some(r) = records.iter().find(|r| QUEUED.contains(&state_of(r).as_str())) {
        return Some(Phase::Queued(queued_reason(leader.job_id, r)));
    }
    Some(Phase::Running(records.iter().flat_map(allocated_of).collect()))
}

/// A wait status in words (`exit 3` is 768, a signal is its low bits); `None` for success.
fn describe_exit(status: i64) -> Option<String> {
    match (status >> 8, status & 0x7f) {
        (0, 0) => None,
        (code, 0) => Some(format!("exit code {code}")),
        (_, signal) => Some(format!("signal {signal}")),
    }
}

/// `Slurm job 12 is pending (Resources: the nodes it needs are in use)`.
fn queued_reason(id: u64, r: &JobRecord) -> String {
    let state = r.job_state.to_ascii_uppercase();
    let reason = r.state_reason.clone().unwrap_or_default();
    let why = match reason.as_str() {
        "Resources" => "the nodes it needs are in use",
        "Priority" => "jobs of higher priority are ahead of it",
        "Dependency" => "it waits for another job",
        "BeginTime" => "its start time has not come",
        "PartitionTimeLimit" => "its time limit (MaxRuntimeInSeconds + margin) is above the partition's",
        "PartitionNodeLimit" => "it asks for more nodes than the partition allows",
        "ReqNodeNotAvail" | "NodeDown" => "a node it needs is not available",
        "JobHeldAdmin" | "JobHeldUser" => "it is held",
        "Reservation" => "it waits for its reservation",
        "Licenses" => "it waits for licenses",
        r if r.starts_with("AssocGrp") || r.starts_with("AssocMax") => "a limit of its Slurm account is reached",
        r if r.starts_with("QOS") => "a limit of its QOS is reached",
        _ => "",
    };
    let mut text = if state == "CONFIGURING" {
        format!("Slurm job {id} is starting its nodes (CONFIGURING)")
    } else {
        format!("Slurm job {id} is {}", state.to_ascii_lowercase())
    };
    match (reason.as_str(), why) {
        ("" | "None", _) => {}
        (r, "") => text.push_str(&format!(" ({r})")),
        (r, w) => text.push_str(&format!(" ({r}: {w})")),
    }
    if let Some(d) = r.state_description.as_deref().filter(|d| !d.is_empty()) {
        text.push_str(&format!(": {d}"));
    }
    text
}

/// The nodes that failed under an ending job, in words (`node2, where algo-2 ran, is DOWN
/// (reason: ...)`), from kiln's own map of where each host ran: Slurm's job record does not name a
/// failed node. A node counts as failed when Slurm reports it down or out of service, or, while a
/// job ends for a node failure (`NodeDown`), when Slurm has dropped it from the job's nodes ahead
/// of the others (a node that returns to service at once, as `ReturnToService=2` lets it, shows
/// only that way).
pub fn failed_nodes(ended: &Ended, hosts: &[String], host_nodes: Option<&[String]>, nodes: &[Node]) -> Vec<String> {
    let Some(map) = host_nodes else {
        return Vec::new();
    };
    let node_failure = ended.state == "NODE_FAIL" || ended.reason.as_deref() == Some("NodeDown");
    let mut out = Vec::new();
    for (host, name) in hosts.iter().zip(map) {
        if let Some(node) = nodes.iter().find(|n| &n.name == name && n.failed()) {
            out.push(format!("{name}, where {host} ran, is {}", node.describe_state()));
        } else if node_failure && ended.state == "COMPLETING" && !ended.nodes.contains(name) {
            out.push(format!(
                "{name}, where {host} ran, went down (Slurm dropped it from the job)"
            ));
        }
    }
    out
}

/// Whether Slurm took the allocation back (preempted or requeued the job), in words.
pub fn preemption(ended: &Ended) -> Option<String> {
    match ended.state.as_str() {
        "PREEMPTED" => Some(format!("Slurm preempted job {}", ended.job_id)),
        "REQUEUED" => Some(format!(
            "Slurm requeued job {} (preempted, or requeued by an administrator)",
            ended.job_id
        )),
        _ => None,
    }
}

/// Why the hosts of an ended (or ending) Slurm job are gone, one line per host: Slurm's state and
/// reason, the failed nodes (see [`failed_nodes`]), where the host ran, and where its log is.
pub fn gone_reasons(
    ended: &Ended,
    hosts: &[String],
    host_nodes: Option<&[String]>,
    failed: &[String],
    log_of: impl Fn(&str) -> String,
) -> Vec<(String, String)> {
    let mut cause = if ended.state == "COMPLETING" {
        format!("Slurm is ending job {}", ended.job_id)
    } else if let Some(taken) = preemption(ended) {
        taken
    } else {
        format!("Slurm job {} ended {}", ended.job_id, ended.state)
    };
    match (&ended.reason, &ended.exit) {
        (Some(r), Some(e)) => cause.push_str(&format!(" ({r}, {e})")),
        (Some(r), None) => cause.push_str(&format!(" ({r})")),
        (None, Some(e)) => cause.push_str(&format!(" ({e})")),
        (None, None) => {}
    }
    if !failed.is_empty() {
        cause.push_str(": ");
        cause.push_str(&failed.join("; "));
    } else if ended.state == "NODE_FAIL" || ended.reason.as_deref() == Some("NodeDown") {
        // Slurm does not say which node failed and none shows as failed any more: name the
        // candidates.
        if let Some(m) = host_nodes {
            cause.push_str(&format!(": one of its nodes ({}) failed", m.join(", ")));
        }
    }
    let node_of = |i: usize| host_nodes.and_then(|m| m.get(i)).cloned();
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let place = match node_of(i) {
                Some(node) => format!("{host} ran on {node}, its log: {} there", log_of(host)),
                None => format!("{host}'s log: {} on its node", log_of(host)),
            };
            (host.clone(), format!("{cause}; {place}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::api::JobResources;

    fn record(id: u64, state: &str, reason: &str, nodes: &str) -> JobRecord {
        JobRecord {
            job_id: id,
            name: "j".into(),
            job_state: state.into(),
            state_reason: Some(reason.into()),
            nodes: Some(nodes.into()),
            ..JobRecord::default()
        }
    }

    fn node(name: &str, state: &str, reason: &str) -> Node {
        Node {
            name: name.into(),
            cpus: 2,
            memory_mib: 1,
            gres: vec![],
            state: state.into(),
            flags: vec![],
            reason: reason.into(),
        }
    }

    #[test]
    fn a_requeued_job_is_a_launch_taken_back() {
        for r in [
            record(21, "COMPLETING", "None", "node1"),
            record(21, "PENDING", "BeginTime", ""),
            record(21, "REQUEUED", "None", ""),
            record(21, "REQUEUE_HOLD", "JobHeldAdmin", ""),
        ] {
            let requeued = JobRecord {
                restart_cnt: Some(1),
                ..r
            };
            let Some(Phase::Ended(e)) = phase(&[requeued]) else {
                panic!("a requeued job is not over for kiln")
            };
            assert_eq!((e.job_id, e.state.as_str()), (21, "REQUEUED"));
            let taken = preemption(&e).unwrap();
            assert!(taken.contains("Slurm requeued job 21"), "{taken}");
            let gone = gone_reasons(&e, &["algo-1".into()], None, &[], |_| "slurm-21.out".into());
            assert!(gone[0].1.starts_with("Slurm requeued job 21"), "{}", gone[0].1);
        }
        // Pending for the first time: queued, not taken back.
        assert!(matches!(
            phase(&[record(22, "PENDING", "Priority", "")]),
            Some(Phase::Queued(_))
        ));
        let Some(Phase::Ended(e)) = phase(&[record(23, "PREEMPTED", "None", "node1")]) else {
            panic!()
        };
        assert_eq!(preemption(&e).as_deref(), Some("Slurm preempted job 23"));
        let Some(Phase::Ended(e)) = phase(&[record(24, "NODE_FAIL", "NodeDown", "node1")]) else {
            panic!()
        };
        assert_eq!(preemption(&e), None);
    }

    #[test]
    fn pending_jobs_wait_with_slurms_reason() {
        let p = phase(&[record(12, "PENDING", "Resources", "")]).unwrap();
        assert_eq!(
            p,
            Phase::Queued("Slurm job 12 is pending (Resources: the nodes it needs are in use)".into())
        );
        let Some(Phase::Queued(q)) = phase(&[record(12, "PENDING", "Priority", "")]) else {
            panic!()
        };
        assert!(q.contains("(Priority: "), "{q}");
        let Some(Phase::Queued(q)) = phase(&[record(3, "PENDING", "SomethingNew", "")]) else {
            panic!()
        };
        assert_eq!(q, "Slurm job 3 is pending (SomethingNew)");
        assert!(matches!(
            phase(&[record(3, "CONFIGURING", "None", "n1")]),
            Some(Phase::Queued(_))
        ));
    }

    #[test]
    fn running_jobs_give_each_hosts_node_across_components() {
        let p = phase(&[record(5, "RUNNING", "None", "node[1-2]")]).unwrap();
        assert_eq!(p, Phase::Running(vec!["node1".into(), "node2".into()]));
        let mut lead = record(8, "RUNNING", "None", "gpu1");
        lead.het_job_id = Some(8);
        lead.het_job_offset = Some(0);
        let mut second = record(9, "RUNNING", "None", "cpu[3-4]");
        second.het_job_id = Some(8);
        second.het_job_offset = Some(1);
        let all = vec![second, record(7, "RUNNING", "None", "x"), lead];
        let mine = records_of(&all, 8);
        assert_eq!(mine.iter().map(|r| r.job_id).collect::<Vec<_>>(), [8, 9]);
        assert_eq!(
            phase(&mine).unwrap(),
            Phase::Running(vec!["gpu1".into(), "cpu3".into(), "cpu4".into()])
        );
        assert_eq!(phase(&[]), None);
    }

    #[test]
    fn ending_and_ended_jobs_carry_state_reason_and_exit() {
        let mut ending = record(5, "COMPLETING", "NodeDown", "node1");
        ending.job_resources = Some(JobResources {
            nodes: Some("node[1-2]".into()),
        });
        let Some(Phase::Ended(e)) = phase(&[ending]) else {
            panic!()
        };
        assert_eq!(
            (e.state.as_str(), e.reason.as_deref()),
            ("COMPLETING", Some("NodeDown"))
        );
        // What the job holds now, and the allocation each host's node comes from.
        assert_eq!(
            (e.nodes, e.allocated),
            (
                vec!["node1".to_string()],
                vec!["node1".to_string(), "node2".to_string()]
            )
        );
        let mut failed = record(6, "FAILED", "NonZeroExitCode", "node1");
        failed.exit_code = Some(768);
        let Some(Phase::Ended(e)) = phase(&[failed]) else {
            panic!()
        };
        assert_eq!(e.exit.as_deref(), Some("exit code 3"));
        let Some(Phase::Ended(e)) = phase(&[record(7, "COMPLETED", "None", "node1")]) else {
            panic!()
        };
        assert_eq!((e.reason, e.exit), (None, None));
    }

    #[test]
    fn a_node_failure_names_the_node_and_where_each_host_ran() {
        let ended = Ended {
            job_id: 5,
            state: "COMPLETING".into(),
            reason: Some("NodeDown".into()),
            exit: None,
            nodes: vec!["node1".into(), "node2".into()],
            allocated: vec!["node1".into(), "node2".into()],
        };
        let hosts = vec!["algo-1".to_string(), "algo-2".to_string()];
        let map = vec!["node1".to_string(), "node2".to_string()];
        let nodes = vec![node("node1", "idle", ""), node("node2", "down", "kiln-test")];
        let failed = failed_nodes(&ended, &hosts, Some(&map), &nodes);
        assert_eq!(failed, ["node2, where algo-2 ran, is DOWN (reason: kiln-test)"]);
        let r = gone_reasons(&ended, &hosts, Some(&map), &failed, |h| format!("/w/j/{h}/agent.log"));
        assert_eq!(
            r[0].1,
            "Slurm is ending job 5 (NodeDown): node2, where algo-2 ran, is DOWN (reason: kiln-test); \
             algo-1 ran on node1, its log: /w/j/algo-1/agent.log there"
        );
        assert!(r[1].1.contains("algo-2 ran on node2"));
    }

    #[test]
    fn a_node_back_in_service_is_known_by_leaving_the_job_first() {
        let hosts = vec!["algo-1".to_string(), "algo-2".to_string()];
        let map = vec!["node1".to_string(), "node2".to_string()];
        let up = vec![node("node1", "idle", ""), node("node2", "idle", "")];
        let mut ended = Ended {
            job_id: 5,
            state: "COMPLETING".into(),
            reason: Some("NodeDown".into()),
            exit: None,
            nodes: vec!["node1".into()],
            allocated: vec!["node1".into(), "node2".into()],
        };
        assert_eq!(
            failed_nodes(&ended, &hosts, Some(&map), &up),
            ["node2, where algo-2 ran, went down (Slurm dropped it from the job)"]
        );
        // Once the job has ended its record names every node again: the candidates are named.
        ended.state = "NODE_FAIL".into();
        ended.nodes = map.clone();
        let failed = failed_nodes(&ended, &hosts, Some(&map), &up);
        assert!(failed.is_empty());
        let r = gone_reasons(&ended, &hosts, Some(&map), &failed, |h| h.to_string());
        assert!(r[0].1.contains("one of its nodes (node1, node2) failed"), "{}", r[0].1);
        // A job ending for another reason does not blame the nodes that finished first.
        ended.state = "COMPLETING".into();
        ended.reason = None;
        ended.nodes = vec!["node1".into()];
        assert!(failed_nodes(&ended, &hosts, Some(&map), &up).is_empty());
        // Without kiln's map (a restart before the job was seen running) the log is still named.
        let r = gone_reasons(&ended, &hosts, None, &[], |h| format!("/w/{h}.log"));
        assert!(
            r[1].1.ends_with("algo-2's log: /w/algo-2.log on its node"),
            "{}",
            r[1].1
        );
    }
}
