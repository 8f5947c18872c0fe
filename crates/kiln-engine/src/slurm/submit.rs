//! What kiln submits for a training job: one Slurm batch job with a node per host (a
//! heterogeneous job when hosts ask for different nodes), the resources each instance type asks
//! for, a time limit from `MaxRuntimeInSeconds`, and a batch script that `srun`s one `kiln agent`
//! per node. Pure: building the request does no I/O, so it is tested on its own.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::cluster::{NodeRequest, parse_gres};
use crate::executor::{HostSpec, JobLaunch};

/// Minutes a Slurm job may run beyond `MaxRuntimeInSeconds`: kiln stops the job itself at that
/// limit (grace period, upload), and Slurm's own limit is only the backstop for when kiln cannot.
pub const TIME_LIMIT_MARGIN_MINUTES: i64 = 15;

/// What an instance type asks of Slurm, where it differs from the type's own sizes
/// (`[slurm.instance_types."ml.m5.large"]` in kiln.toml).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceOverride {
    /// CPUs per node (the type's vCPUs otherwise).
    pub cpus: Option<u32>,
    /// Memory per node in MiB (the type's memory otherwise).
    pub memory_mib: Option<u64>,
    /// Generic resources per node, e.g. `gpu:a100:1` (`gpu:<GPUs>` otherwise; `""` for none).
    pub gres: Option<String>,
}

/// Where and how jobs go, besides what each job asks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// The `kiln` binary as the nodes see it.
    pub kiln_path: String,
    /// The hosts' work directory as the nodes see it.
    pub work_dir: String,
    /// Variables every job gets (before kiln's own).
    pub environment: BTreeMap<String, String>,
    /// Shell lines the batch script runs before starting the agents (`module load ...`).
    pub prologue: Option<String>,
}

/// What `host` asks of its node: the instance type's sizes, with the operator's overrides.
pub fn node_request(host: &HostSpec, overrides: &BTreeMap<String, InstanceOverride>) -> Result<NodeRequest, String> {
    let o = overrides.get(&host.instance_type).cloned().unwrap_or_default();
    let r = host.resources;
    let missing = || {
        format!(
            "kiln does not know what instance type {} asks of a Slurm node; set it in [slurm.instance_types.\"{}\"] (cpus, memory_mib, gres)",
            host.instance_type, host.instance_type
        )
    };
    let cpus = match (o.cpus, r) {
        (Some(c), _) => c,
        (None, Some(r)) => r.vcpus,
        (None, None) => return Err(missing()),
    };
    let memory_mib = match (o.memory_mib, r) {
        (Some(m), _) => m,
        (None, Some(r)) => (r.memory_gib * 1024.0).round() as u64,
        (None, None) => return Err(missing()),
    };
    let gres = match o.gres {
        Some(g) => {
            parse_gres(&g).map_err(|e| format!("[slurm.instance_types.\"{}\"] gres: {e}", host.instance_type))?
        }
        None => match r.map_or(0, |r| r.gpus) {
            0 => Vec::new(),
            n => parse_gres(&format!("gpu:{n}"))?,
        },
    };
    Ok(NodeRequest { cpus, memory_mib, gres })
}

/// Hosts that share one node request, in host order: a component of the Slurm job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub request: NodeRequest,
    pub hosts: Vec<String>,
}

/// The job's components: one when every host asks the same of its node, else one per run of
/// hosts asking the same (Slurm heterogeneous job). Hosts keep their order, so the task with
/// `SLURM_PROCID` i, counted across components, is `algo-(i+1)`.
pub fn components(
    hosts: &[HostSpec],
    overrides: &BTreeMap<String, InstanceOverride>,
) -> Result<Vec<Component>, String> {
    let mut out: Vec<Component> = Vec::new();
    for h in hosts {
        let request = node_request(h, overrides)?;
        match out.last_mut() {
            Some(c) if c.request == request => c.hosts.push(h.host.clone()),
            _ => out.push(Component {
                request,
                hosts: vec![h.host.clone()],
            }),
        }
    }
    Ok(out)
}

/// A short fingerprint of the placement's token, carried in the Slurm job's comment: a launch
/// redone after a crash finds the Slurm job of its placement by it, and nothing else.
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    hex::encode(&digest[..8])
}

/// The Slurm job's comment: the placement's fingerprint and the training job's ARN.
pub fn comment(launch: &JobLaunch) -> String {
    format!("kiln placement={} {}", fingerprint(&launch.token), launch.arn)
}

/// Whether a Slurm job's comment says it serves this placement.
pub fn serves(comment: Option<&str>, token: &str) -> bool {
    let want = format!("placement={}", fingerprint(token));
    comment.is_some_and(|c| c.split_whitespace().any(|w| w == want))
}

/// `MaxRuntimeInSeconds` in whole minutes, plus the margin.
pub fn time_limit_minutes(max_runtime_seconds: i64) -> i64 {
    (max_runtime_seconds.max(1) + 59) / 60 + TIME_LIMIT_MARGIN_MINUTES
}

/// The time limit of a launch: its runtime, and the keep-alive of its warm pool after it (a job
/// reusing the pool extends the limit by its own, [`super::SlurmExecutor`]'s `launch_in`).
pub fn launch_time_limit_minutes(launch: &JobLaunch) -> i64 {
    time_limit_minutes(launch.max_runtime_seconds) + (launch.keep_alive_seconds.max(0) + 59) / 60
}

/// The path as the nodes see it, as text.
pub fn path_text(p: &Path) -> String {
    p.display().to_string()
}

/// `'...'` for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Where Slurm writes the batch script's own output (`%x` is the job name, `%j` its id).
pub fn slurm_output(work_dir: &str) -> String {
    format!("{}/slurm-%x-%j.out", work_dir.trim_end_matches('/'))
}

/// The batch script: `srun` one agent per node. Each agent derives its host from `SLURM_PROCID`
/// (`kiln agent` without `--host`); the wrapper only names the log file the same way.
pub fn batch_script(launch: &JobLaunch, target: &Target, components: &[Component]) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!(
        "# kiln: training job {} ({})\n# One `kiln agent` per node: the task with SLURM_PROCID i is host algo-(i+1), its output in\n# <work_dir>/<account>/<placement>/<job>/algo-(i+1)/agent.log.\n",
        launch.job, launch.arn
    ));
    // Slurm sets no HOME when the environment comes from the request; pip and others want one.
    s.push_str("export HOME=\"${HOME:-$(getent passwd \"$(id -un)\" | cut -d: -f6)}\"\n");
    if let Some(p) = target.prologue.as_deref().filter(|p| !p.trim().is_empty()) {
        s.push_str(p.trim_end());
        s.push('\n');
    }
    s.push_str(&format!(
        "work_dir={} job={} kiln={} server={} account={}\n",
        quote(&format!(
            "{}/{}",
            target.work_dir.trim_end_matches('/'),
            crate::executor::launch_subdir(launch).display()
        )),
        quote(&launch.job),
        quote(&target.kiln_path),
        quote(&launch.server),
        quote(&launch.account)
    ));
    s.push_str(concat!(
        "agent='d=\"$1/$2/algo-$((SLURM_PROCID + 1))\" && mkdir -p \"$d\" && ",
        "exec \"$3\" agent --server \"$4\" --account \"$5\" --job \"$2\" --work-dir \"$1\" >>\"$d/agent.log\" 2>&1'\n",
        "run=(/bin/sh -c \"$agent\" kiln-agent \"$work_dir\" \"$job\" \"$kiln\" \"$server\" \"$account\")\n",
    ));
    let het = components.len() > 1;
    // Host algo-(i+1) is task i, which srun places on the i-th node of the allocation (components
    // in order, nodes in Slurm's order): its NodeAddr goes to every host's /etc/hosts.
    let lists: Vec<String> = if het {
        (0..components.len())
            .map(|i| format!("\"$SLURM_JOB_NODELIST_HET_GROUP_{i}\""))
            .collect()
    } else {
        vec!["\"$SLURM_JOB_NODELIST\"".into()]
    };
    s.push_str(&format!(
        concat!(
            "addresses='' i=0\n",
            "for list in {}; do\n",
            "  for node in $(scontrol show hostnames \"$list\"); do\n",
            "    i=$((i + 1))\n",
            "    addr=$(scontrol -o show node \"$node\" 2>/dev/null | sed -n 's/.* NodeAddr=\\([^ ]*\\).*/\\1/p')\n",
            "    addresses=\"$addresses algo-$i=${{addr:-$node}}\"\n",
            "  done\n",
            "done\n",
            "export KILN_HOST_ADDRESSES=\"$addresses\"\n",
        ),
        lists.join(" ")
    ));
    let steps: Vec<String> = components
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let n = c.hosts.len();
            let group = if het {
                format!("--het-group={i} ")
            } else {
                String::new()
            };
            format!(
                "{group}--nodes={n} --ntasks={n} --ntasks-per-node=1 --cpus-per-task={} \"${{run[@]}}\"",
                c.request.cpus
            )
        })
        .collect();
    // A host that fails must not take the others down: kiln tells them to stop and collects
    // their reports.
    let srun = format!("srun --kill-on-bad-exit=0 {}", steps.join(" \\\n  : "));
    if launch.keep_alive_seconds <= 0 {
        s.push_str(&format!("exec {srun}\n"));
        return s;
    }
    s.push_str(&format!("{srun}\n"));
    s.push_str(&format!(
        concat!(
            "# A warm pool (KeepAlivePeriodInSeconds) keeps this allocation: once the hosts have exited, ask kiln\n",
            "# what to run next (a job reusing the pool: its name, placement and agent token), while the pool\n",
            "# is Available; the allocation ends when the pool is released.\n",
            "base={} keep_alive={}\n",
            "while next=$(\"$kiln\" pool-next --server \"$server\" --account \"$account\" --job \"$job\" \\\n",
            "    --allocation \"$SLURM_JOB_ID\" --keep-alive \"$keep_alive\"); do\n",
            "  {{ read -r job; read -r placement; read -r KILN_AGENT_TOKEN; read -r keep_alive; }} <<<\"$next\"\n",
            "  export KILN_AGENT_TOKEN\n",
            "  work_dir=\"$base/$placement\"\n",
            "  run=(/bin/sh -c \"$agent\" kiln-agent \"$work_dir\" \"$job\" \"$kiln\" \"$server\" \"$account\")\n",
            "  {}\n",
            "done\n",
        ),
        quote(target.work_dir.trim_end_matches('/')),
        launch.keep_alive_seconds,
        srun
    ));
    s
}

/// The job's environment: a plain PATH, the operator's variables, and the agents' token (which
/// travels only here, not in the script, so it is not shown with the job).
pub fn environment(launch: &JobLaunch, target: &Target) -> Value {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    env.insert("LANG".into(), "C.UTF-8".into());
    env.extend(target.environment.clone());
    env.insert("KILN_AGENT_TOKEN".into(), launch.token.clone());
    json!(env)
}

/// The body of `POST /slurm/v0.0.38/job/submit`.
pub fn submission(launch: &JobLaunch, target: &Target, components: &[Component]) -> Value {
    let env = environment(launch, target);
    let mut jobs: Vec<Value> = components
        .iter()
        .map(|c| {
            let n = c.hosts.len();
            let mut job = json!({
                "name": launch.job,
                "comment": comment(launch),
                "nodes": [n, n],
                "tasks": n,
                "tasks_per_node": 1,
                "cpus_per_task": c.request.cpus,
                "memory_per_node": c.request.memory_mib,
                "time_limit": launch_time_limit_minutes(launch),
                // kiln owns retries: only a spot job's allocation may be requeued (by
                // preemption, a node failure or an administrator), which kiln takes as a spot
                // interruption. v0.0.38 turns requeue off with `no_requeue` (sbatch's
                // --no-requeue) and on whenever `requeue` is present, even `"requeue": false`.
                "no_requeue": !launch.spot,
                "current_working_directory": target.work_dir,
                "environment": env,
                "standard_output": slurm_output(&target.work_dir),
                "standard_error": slurm_output(&target.work_dir),
            });
            if launch.spot {
                job["requeue"] = json!(true);
            }
            for (key, value) in [
                ("partition", &target.partition),
                ("account", &target.account),
                ("qos", &target.qos),
                ("gres", &c.request.gres_option()),
            ] {
                if let Some(v) = value {
                    job[key] = json!(v);
                }
            }
            job
        })
        .collect();
    let script = batch_script(launch, target, components);
    if jobs.len() == 1 {
        json!({ "script": script, "job": jobs.remove(0) })
    } else {
        json!({ "script": script, "jobs": jobs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::instance_resources;

    fn host(n: usize, t: &str) -> HostSpec {
        HostSpec {
            host: format!("algo-{n}"),
            instance_type: t.into(),
            resources: instance_resources(t),
        }
    }

    fn launch(hosts: Vec<HostSpec>) -> JobLaunch {
        JobLaunch {
            server: "http://10.0.0.5:8080".into(),
            account: "123456789012".into(),
            job: "my-job".into(),
            arn: "arn:aws:sagemaker:us-east-1:123456789012:training-job/my-job".into(),
            hosts,
            token: "tok".into(),
            work_dir: "/scratch/kiln".into(),
            max_runtime_seconds: 3600,
            spot: false,
            keep_alive_seconds: 0,
        }
    }

    fn target() -> Target {
        Target {
            partition: Some("debug".into()),
            account: None,
            qos: Some("normal".into()),
            kiln_path: "/opt/kiln/bin/kiln".into(),
            work_dir: "/scratch/kiln".into(),
            environment: BTreeMap::from([("PATH".into(), "/opt/py/bin:/usr/bin".into())]),
            prologue: Some("module load python".into()),
        }
    }

    #[test]
    fn instance_types_ask_their_sizes_unless_overridden() {
        let none = BTreeMap::new();
        let r = node_request(&host(1, "ml.m5.large"), &none).unwrap();
        assert_eq!((r.cpus, r.memory_mib, r.gres_option()), (2, 8192, None));
        let g = node_request(&host(1, "ml.g5.12xlarge"), &none).unwrap();
        assert_eq!((g.cpus, g.gres_option().as_deref()), (48, Some("gpu:4")));
        let over = BTreeMap::from([(
            "ml.g5.12xlarge".to_string(),
            InstanceOverride {
                cpus: Some(16),
                memory_mib: None,
                gres: Some("gpu:a100:2".into()),
            },
        )]);
        let o = node_request(&host(1, "ml.g5.12xlarge"), &over).unwrap();
        assert_eq!(
            (o.cpus, o.memory_mib, o.gres_option().as_deref()),
            (16, 196608, Some("gpu:a100:2"))
        );
        let unknown = HostSpec {
            host: "algo-1".into(),
            instance_type: "ml.new.large".into(),
            resources: None,
        };
        let e = node_request(&unknown, &none).unwrap_err();
        assert!(e.contains("[slurm.instance_types.\"ml.new.large\"]"), "{e}");
    }

    #[test]
    fn one_component_unless_hosts_ask_differently() {
        let none = BTreeMap::new();
        let same = components(&[host(1, "ml.m5.large"), host(2, "ml.m5.large")], &none).unwrap();
        assert_eq!(same.len(), 1);
        assert_eq!(same[0].hosts, ["algo-1", "algo-2"]);
        let mixed = components(
            &[host(1, "ml.m5.large"), host(2, "ml.c5.large"), host(3, "ml.c5.large")],
            &none,
        )
        .unwrap();
        assert_eq!(mixed.len(), 2);
        assert_eq!(mixed[1].hosts, ["algo-2", "algo-3"]);
    }

    #[test]
    fn a_homogeneous_job_is_one_allocation_of_n_nodes() {
        let l = launch(vec![host(1, "ml.m5.large"), host(2, "ml.m5.large")]);
        let c = components(&l.hosts, &BTreeMap::new()).unwrap();
        let body = submission(&l, &target(), &c);
        let job = &body["job"];
        assert_eq!(job["name"], "my-job");
        assert_eq!(job["nodes"], json!([2, 2]));
        assert_eq!(
            (job["tasks"].clone(), job["tasks_per_node"].clone()),
            (json!(2), json!(1))
        );
        assert_eq!(
            (job["cpus_per_task"].clone(), job["memory_per_node"].clone()),
            (json!(2), json!(8192))
        );
        assert_eq!(job["time_limit"], 60 + TIME_LIMIT_MARGIN_MINUTES);
        assert_eq!(job["no_requeue"], true);
        assert!(job.get("requeue").is_none());
        // A spot job's allocation may be requeued (preemption): kiln takes that as an interruption.
        let spot = JobLaunch {
            spot: true,
            ..l.clone()
        };
        let spot = submission(&spot, &target(), &c);
        assert_eq!(
            (&spot["job"]["no_requeue"], &spot["job"]["requeue"]),
            (&json!(false), &json!(true))
        );
        assert_eq!(
            (job["partition"].clone(), job["qos"].clone()),
            (json!("debug"), json!("normal"))
        );
        assert!(job.get("account").is_none() && job.get("gres").is_none());
        assert_eq!(job["standard_output"], "/scratch/kiln/slurm-%x-%j.out");
        // The operator's PATH wins over kiln's; the token is kiln's and only in the environment.
        assert_eq!(job["environment"]["PATH"], "/opt/py/bin:/usr/bin");
        assert_eq!(job["environment"]["KILN_AGENT_TOKEN"], "tok");
        let comment = job["comment"].as_str().unwrap();
        assert!(comment.contains(&l.arn) && serves(Some(comment), "tok") && !serves(Some(comment), "other"));
        let script = body["script"].as_str().unwrap();
        assert!(
            !script.contains("tok'") && script.contains("module load python\n"),
            "{script}"
        );
        assert!(
            script.contains("exec srun --kill-on-bad-exit=0 --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=2 \"${run[@]}\"\n"),
            "{script}"
        );
        assert!(
            script.contains("kiln='/opt/kiln/bin/kiln' server='http://10.0.0.5:8080'"),
            "{script}"
        );
    }

    #[test]
    fn instance_groups_that_ask_differently_become_a_heterogeneous_job() {
        let l = launch(vec![
            host(1, "ml.g5.xlarge"),
            host(2, "ml.c5.large"),
            host(3, "ml.c5.large"),
        ]);
        let c = components(&l.hosts, &BTreeMap::new()).unwrap();
        let body = submission(&l, &target(), &c);
        assert!(body.get("job").is_none());
        let jobs = body["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            (jobs[0]["nodes"].clone(), jobs[0]["gres"].clone()),
            (json!([1, 1]), json!("gpu:1"))
        );
        assert_eq!(
            (jobs[1]["nodes"].clone(), jobs[1]["memory_per_node"].clone()),
            (json!([2, 2]), json!(4096))
        );
        let script = body["script"].as_str().unwrap();
        assert!(
            script.contains("--het-group=0 --nodes=1 --ntasks=1 --ntasks-per-node=1 --cpus-per-task=4 \"${run[@]}\" \\\n  : --het-group=1 --nodes=2"),
            "{script}"
        );
    }

    /// Runs the batch script with stand-ins for `scontrol` (two components: node7, then
    /// node[2-3]; node3 has no NodeAddr) and `srun` (prints what the agents would get).
    #[test]
    fn the_script_gives_the_agents_each_hosts_node_address() {
        use std::os::unix::fs::PermissionsExt;
        let l = launch(vec![
            host(1, "ml.g5.xlarge"),
            host(2, "ml.c5.large"),
            host(3, "ml.c5.large"),
        ]);
        let script = batch_script(&l, &target(), &components(&l.hosts, &BTreeMap::new()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let stub = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        stub(
            "scontrol",
            concat!(
                "case \"$1 $2\" in\n",
                "  'show hostnames') [ \"$3\" = 'node[2-3]' ] && printf 'node2\\nnode3\\n' || echo \"$3\" ;;\n",
                "  *) case \"$4\" in node7) a=10.0.0.7 ;; node2) a=10.0.0.2 ;; *) a= ;; esac\n",
                "     [ -n \"$a\" ] && echo \"NodeName=$4 Arch=x86_64 NodeAddr=$a NodeHostName=$4 Version=22.05\" ;;\n",
                "esac\n"
            ),
        );
        stub("srun", "echo \"$KILN_HOST_ADDRESSES\"\n");
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .env("SLURM_JOB_NODELIST_HET_GROUP_0", "node7")
            .env("SLURM_JOB_NODELIST_HET_GROUP_1", "node[2-3]")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "algo-1=10.0.0.7 algo-2=10.0.0.2 algo-3=node3"
        );
    }

    #[test]
    fn the_script_quotes_what_it_is_given() {
        let mut t = target();
        t.work_dir = "/data/it's here".into();
        let l = launch(vec![host(1, "ml.m5.large")]);
        let script = batch_script(&l, &t, &components(&l.hosts, &BTreeMap::new()).unwrap());
        let subdir = crate::executor::launch_subdir(&l);
        assert!(
            script.contains(&format!(r"work_dir='/data/it'\''s here/{}'", subdir.display())),
            "{script}"
        );
    }

    /// A warm pool's script: after its hosts, the allocation runs each job `kiln pool-next`
    /// names (its name, placement and token reaching the agents), until pool-next exits non-zero.
    #[test]
    fn a_kept_allocation_runs_the_pools_next_jobs_until_released() {
        use std::os::unix::fs::PermissionsExt;
        let mut l = launch(vec![host(1, "ml.m5.large")]);
        l.keep_alive_seconds = 90;
        assert_eq!(launch_time_limit_minutes(&l), 60 + 2 + TIME_LIMIT_MARGIN_MINUTES);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let stub = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        // pool-next answers once (job-b), then says the pool is released.
        let kiln = stub(
            "kiln",
            &format!(
                concat!(
                    "echo \"pool-next $* token=$KILN_AGENT_TOKEN\" >>{log}\n",
                    "[ -e {log}.answered ] && exit 1\n",
                    "touch {log}.answered\n",
                    "printf 'job-b\\n123456789012/ffff\\ntok-b\\n30\\n'\n",
                ),
                log = log.display()
            ),
        );
        stub("scontrol", "");
        // srun runs the agent wrapper's command line: record what the agent would get.
        stub(
            "srun",
            &format!("echo \"srun $* token=$KILN_AGENT_TOKEN\" >>{}\n", log.display()),
        );
        let mut t = target();
        t.kiln_path = kiln.display().to_string();
        let script = batch_script(&l, &t, &components(&l.hosts, &BTreeMap::new()).unwrap());
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .env("SLURM_JOB_NODELIST", "node1")
            .env("SLURM_JOB_ID", "77")
            .env("KILN_AGENT_TOKEN", "tok")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let calls = std::fs::read_to_string(&log).unwrap();
        let calls: Vec<&str> = calls.lines().collect();
        assert_eq!(calls.len(), 4, "{calls:#?}");
        assert!(calls[0].starts_with("srun ") && calls[0].contains(" my-job ") && calls[0].ends_with("token=tok"));
        assert!(
            calls[1].contains("--job my-job --allocation 77 --keep-alive 90 token=tok"),
            "{}",
            calls[1]
        );
        assert!(
            calls[2].contains("/scratch/kiln/123456789012/ffff job-b ") && calls[2].ends_with("token=tok-b"),
            "{}",
            calls[2]
        );
        assert!(
            calls[3].contains("--job job-b --allocation 77 --keep-alive 30 token=tok-b"),
            "{}",
            calls[3]
        );
        // Without a keep-alive the script ends with its hosts.
        let plain = batch_script(
            &launch(vec![host(1, "ml.m5.large")]),
            &t,
            &components(&l.hosts, &BTreeMap::new()).unwrap(),
        );
        assert!(!plain.contains("pool-next") && plain.contains("exec srun"));
    }

    #[test]
    fn time_limits_round_up_and_add_the_margin() {
        assert_eq!(time_limit_minutes(1), 1 + TIME_LIMIT_MARGIN_MINUTES);
        assert_eq!(time_limit_minutes(60), 1 + TIME_LIMIT_MARGIN_MINUTES);
        assert_eq!(time_limit_minutes(61), 2 + TIME_LIMIT_MARGIN_MINUTES);
        assert_eq!(time_limit_minutes(86400), 1440 + TIME_LIMIT_MARGIN_MINUTES);
    }
}
