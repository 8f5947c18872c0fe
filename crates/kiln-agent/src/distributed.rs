//! Distributed launchers as the framework toolkits run them (reference §14): parameter servers
//! and `TF_CONFIG` for TensorFlow's `parameter_server`, `torchrun` for `torch_distributed` /
//! `pytorchddp`, `mpirun` from the first host for `mpi`, and a plain run otherwise. SageMaker's MPI needs sshd in every container; kiln instead gives `mpirun` its own
//! remote shell: every other host's agent serves [`serve_exec`] on a port of its own, and
//! `kiln rsh HOST COMMAND` (the `plm_rsh_agent`) asks that agent to run `COMMAND` (OpenMPI's
//! `orted`) inside that host's sandbox, as sshd would in its container.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::env::Params;
use crate::launch::Spawn;

/// `MASTER_PORT`, as the PyTorch toolkit sets it.
pub const MASTER_PORT: u16 = 7777;

/// The TensorFlow toolkit's ports: the master's and workers' servers, and the parameter servers.
const TF_WORKER_PORT: u16 = 2222;
const TF_PS_PORT: u16 = 2223;

/// How the entry point is started on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launcher {
    /// `python entry.py args`.
    Plain,
    /// `torchrun --nnodes N --nproc_per_node P [--master_addr algo-1 --master_port 7777 --node_rank K]`.
    Torchrun {
        hosts: Vec<String>,
        rank: usize,
        nproc: u32,
    },
    /// This host runs `mpirun` over `hosts` (it is the first of them).
    MpiMaster {
        hosts: Vec<String>,
        processes_per_host: u32,
        custom_options: String,
    },
    /// This host serves `mpirun`'s remote shell until the process it was asked to run ends.
    MpiWorker { master: String },
    /// TensorFlow parameter servers: this host (`hosts[rank]`) starts its `ps` server, then its
    /// script with the toolkit's `TF_CONFIG` ([`tf_config`]).
    ParameterServer { hosts: Vec<String>, rank: usize },
}

fn truthy(params: &Params, key: &str) -> bool {
    params.sagemaker.get(key).is_some_and(|v| v.truthy())
}

fn json_list(env: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    env.get(key)
        .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
        .unwrap_or_default()
}

/// The hosts distribution spans: those of `SM_DISTRIBUTION_INSTANCE_GROUPS` (in host order), or
/// every host when it names none.
pub fn distribution_hosts(env: &BTreeMap<String, String>) -> Vec<String> {
    let all = json_list(env, "SM_HOSTS");
    let groups = json_list(env, "SM_DISTRIBUTION_INSTANCE_GROUPS");
    if groups.is_empty() {
        return all;
    }
    let dict: serde_json::Value = env
        .get("SM_INSTANCE_GROUPS_DICT")
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    let mut hosts: Vec<String> = groups
        .iter()
        .filter_map(|g| dict.get(g)?.get("hosts")?.as_array().cloned())
        .flatten()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect();
    hosts.sort_by_key(|h| host_index(h));
    hosts
}

/// `algo-12` → 12 (hosts sort by number, not as text).
fn host_index(h: &str) -> u64 {
    h.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX)
}

/// The launcher the toolkits would pick, in their order: parameter_server (the TensorFlow
/// toolkit's first choice, with more than one host in the job), mpi, pytorchddp,
/// torch_distributed. A host outside the distribution's instance groups runs its script plainly.
pub fn choose(params: &Params, env: &BTreeMap<String, String>, current: &str) -> Launcher {
    let hosts = distribution_hosts(env);
    let Some(rank) = hosts.iter().position(|h| h == current) else {
        return Launcher::Plain;
    };
    if truthy(params, "sagemaker_parameter_server_enabled") && json_list(env, "SM_HOSTS").len() > 1 {
        return Launcher::ParameterServer { hosts, rank };
    }
    let gpus: u32 = env.get("SM_NUM_GPUS").and_then(|g| g.parse().ok()).unwrap_or(0);
    if truthy(params, "sagemaker_mpi_enabled") {
        if rank > 0 {
            return Launcher::MpiWorker {
                master: hosts[0].clone(),
            };
        }
        let processes_per_host = params
            .sagemaker
            .get("sagemaker_mpi_num_of_processes_per_host")
            .map(crate::pyjson::to_str)
            .and_then(|p| p.parse().ok())
            .filter(|p| *p > 0)
            .unwrap_or(gpus.max(1));
        let custom_options = params
            .sagemaker
            .get("sagemaker_mpi_custom_mpi_options")
            .map(crate::pyjson::to_str)
            .unwrap_or_default();
        return Launcher::MpiMaster {
            hosts,
            processes_per_host,
            custom_options,
        };
    }
    if truthy(params, "sagemaker_pytorch_ddp_enabled") || truthy(params, "sagemaker_torch_distributed_enabled") {
        return Launcher::Torchrun {
            hosts,
            rank,
            nproc: gpus.max(1),
        };
    }
    Launcher::Plain
}

/// What the PyTorch toolkit exports for every launcher (`MASTER_ADDR` is the first distribution
/// host). `NCCL_SOCKET_IFNAME` is left out: kiln's hosts have no common interface name.
pub fn toolkit_env(env: &mut BTreeMap<String, String>) {
    let master = distribution_hosts(env)
        .first()
        .cloned()
        .or_else(|| env.get("SM_CURRENT_HOST").cloned())
        .unwrap_or_else(|| "algo-1".into());
    env.insert("MASTER_ADDR".into(), master);
    env.insert("MASTER_PORT".into(), MASTER_PORT.to_string());
    env.insert("NCCL_IB_DISABLE".into(), "1".into());
    env.entry("NCCL_DEBUG".into()).or_insert_with(|| "WARN".into());
}

/// Debian's torch 1.13 on Python 3.11 cannot parse `torchrun`'s `--redirects`/`--tee` defaults
/// (`Std.from_str("0")` is `None` there); this runs torchrun's `main` with that function fixed
/// when it is broken, and unchanged otherwise.
const TORCHRUN: &str = r#"import sys
from torch.distributed.elastic.multiprocessing import api as _api
if _api.Std.from_str("0") is None:
    import re
    def _from_str(vm):
        def to_std(v):
            return _api.Std(int(v))
        if re.match(r"^[0-3]$", vm):
            return to_std(vm)
        return {int(k): to_std(v) for k, v in (p.split(":") for p in vm.split(","))}
    _api.Std.from_str = staticmethod(_from_str)
from torch.distributed.run import main
sys.argv[0] = "torchrun"
main()
"#;

/// `torchrun` around the entry point's `python entry args` (or `python -m module args`).
pub fn torchrun(
    python: &str,
    entry_args: &[String],
    hosts: &[String],
    rank: usize,
    nproc: u32,
) -> (String, Vec<String>, String) {
    let mut flags = vec![
        "--nnodes".to_string(),
        hosts.len().to_string(),
        "--nproc_per_node".into(),
        nproc.to_string(),
    ];
    if hosts.len() > 1 {
        flags.extend([
            "--master_addr".into(),
            hosts[0].clone(),
            "--master_port".into(),
            MASTER_PORT.to_string(),
            "--node_rank".into(),
            rank.to_string(),
        ]);
    }
    flags.extend(entry_args.iter().cloned());
    let shown = format!("torchrun {}", flags.join(" "));
    let mut args = vec!["-c".to_string(), TORCHRUN.to_string()];
    args.extend(flags);
    (python.to_string(), args, shown)
}

/// The TensorFlow toolkit's `TF_CONFIG` for parameter servers (`_build_tf_config_for_ps`), as
/// its `json.dumps` writes it: the first host is the master (port 2222), the others workers
/// (2222), every host also a parameter server (2223); the task is this host's master or worker
/// role (the `ps` task is the parameter server's own, given to it directly).
pub fn tf_config(hosts: &[String], rank: usize) -> String {
    let addresses = |hs: &[String], port: u16| {
        let quoted: Vec<String> = hs
            .iter()
            .map(|h| serde_json::Value::String(format!("{h}:{port}")).to_string())
            .collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut cluster = format!(
        "\"master\": {}",
        addresses(&hosts[..1.min(hosts.len())], TF_WORKER_PORT)
    );
    if hosts.len() > 1 {
        cluster.push_str(&format!(", \"ps\": {}", addresses(hosts, TF_PS_PORT)));
        cluster.push_str(&format!(", \"worker\": {}", addresses(&hosts[1..], TF_WORKER_PORT)));
    }
    let (kind, index) = if rank == 0 { ("master", 0) } else { ("worker", rank - 1) };
    format!(
        "{{\"cluster\": {{{cluster}}}, \"environment\": \"cloud\", \"task\": {{\"index\": {index}, \"type\": \"{kind}\"}}}}"
    )
}

/// The TensorFlow toolkit's `train()` with parameter servers, run by the job's Python with the
/// parameter server's task index, the master host and the worker's command as arguments (and
/// `TF_CONFIG` in its environment): it starts this host's parameter server in its own process
/// as the toolkit does (`tf.distribute.Server` of the cluster, job `ps`, no GPU, joined in a
/// forked child), runs the script with `TF_CONFIG`, and on a worker whose script succeeded
/// waits while the master's port 2222 still answers (the toolkit polls it with curl every 10 s).
/// It then exits with the script's status at once: the toolkit's process would wait forever
/// for the child joining the server; the agent ends the whole process group instead.
const PARAMETER_SERVER: &str = r#"import json, multiprocessing, os, socket, subprocess, sys, time
task_index, master, worker = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
def log(msg):
    print(msg, flush=True)
try:
    import tensorflow as tf
except ImportError as e:
    sys.exit(f"sagemaker_parameter_server_enabled runs a TensorFlow parameter server on every host, and this job's Python has no TensorFlow: {e}")
cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
log("Running distributed training job with parameter servers")
log("Launching parameter server process")
server = tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name="ps", task_index=task_index,
                              config=tf.compat.v1.ConfigProto(device_count={"GPU": 0}))
multiprocessing.get_context("fork").Process(target=lambda: server.join()).start()
log("Launching worker process")
code = subprocess.call(worker)
if code == 0 and os.environ.get("SM_CURRENT_HOST") != master:
    while True:
        try:
            socket.create_connection((master, 2222), timeout=5).close()
        except OSError:
            log(f"master {master} is down, stopping parameter server")
            break
        log(f"master {master} is still up, waiting for it to exit")
        time.sleep(10)
sys.stdout.flush()
sys.stderr.flush()
os._exit(code if code >= 0 else 128 - code)
"#;

/// The parameter-server launcher around the script's command (`program args`): what to run,
/// and the worker's command line for the log.
pub fn parameter_server(
    python: &str,
    program: &str,
    args: &[String],
    hosts: &[String],
    rank: usize,
) -> (String, Vec<String>, String) {
    let mut launcher = vec![
        "-c".to_string(),
        PARAMETER_SERVER.to_string(),
        rank.to_string(),
        hosts[0].clone(),
        program.to_string(),
    ];
    launcher.extend(args.iter().cloned());
    let shown = std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    (python.to_string(), launcher, shown)
}

/// The toolkit's `mpirun` line, with kiln's remote shell as `plm_rsh_agent`.
pub fn mpirun(
    kiln: &Path,
    python: &str,
    entry_args: &[String],
    hosts: &[String],
    processes_per_host: u32,
    custom_options: &str,
    env: &BTreeMap<String, String>,
) -> (String, Vec<String>) {
    let host_list: Vec<String> = hosts
        .iter()
        .map(|h| {
            if processes_per_host == 1 {
                h.clone()
            } else {
                format!("{h}:{processes_per_host}")
            }
        })
        .collect();
    let mut a: Vec<String> = vec![
        "--host".into(),
        host_list.join(","),
        "-np".into(),
        (hosts.len() as u32 * processes_per_host).to_string(),
        "--allow-run-as-root".into(),
        "--display-map".into(),
        "--tag-output".into(),
    ];
    for (k, v) in [
        ("plm_rsh_agent", format!("{} rsh", kiln.display())),
        ("plm_rsh_no_tree_spawn", "1".into()),
        // orted stays the remote shell's child: the worker's agent ends the host when it exits.
        ("orte_leave_session_attached", "1".into()),
        ("pml", "ob1".into()),
        ("btl", "^openib".into()),
        ("orte_abort_on_non_zero_status", "1".into()),
        ("btl_vader_single_copy_mechanism", "none".into()),
    ] {
        a.extend(["-mca".into(), k.into(), v]);
    }
    a.extend(["-bind-to".into(), "none".into(), "-map-by".into(), "slot".into()]);
    a.extend(["-x".into(), "NCCL_MIN_NRINGS=4".into()]);
    for name in env.keys().filter(|k| {
        k.starts_with("SM_")
            || matches!(
                k.as_str(),
                "PATH"
                    | "LD_LIBRARY_PATH"
                    | "PYTHONPATH"
                    | "VIRTUAL_ENV"
                    | "MASTER_ADDR"
                    | "MASTER_PORT"
                    | "NCCL_DEBUG"
            )
    }) {
        a.extend(["-x".into(), name.clone()]);
    }
    a.extend(custom_options.split_whitespace().map(str::to_string));
    a.extend([python.to_string(), "-m".into(), "mpi4py".into()]);
    a.extend(entry_args.iter().cloned());
    ("mpirun".to_string(), a)
}

/// The port host `host` of job `job` serves the remote shell on: derived from the job's name so
/// that the hosts agree without talking, 64 apart per job, one per host.
pub fn exec_port(job: &str, host: &str) -> u16 {
    let digest = Sha256::digest(job.as_bytes());
    let slot = u16::from_be_bytes([digest[0], digest[1]]) % 200;
    20_000 + slot * 64 + (host_index(host) as u16 % 64)
}

/// The secret a remote-shell request carries: derived from the job's agent token, so that only
/// the job's own hosts can use it.
pub fn exec_secret(token: &str) -> String {
    hex::encode(Sha256::digest(format!("kiln-rsh:{token}").as_bytes()))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ExecRequest {
    secret: String,
    /// `None`: a readiness probe.
    command: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ExecReply {
    ok: bool,
    exit: Option<i32>,
    error: Option<String>,
}

/// Serves `mpirun`'s remote shell on this (worker) host until the command it is asked to run has
/// ended: each request runs `/bin/sh -c COMMAND` made into a [`Spawn`] by `wrap` (the host's
/// sandbox) through `run`, which returns its exit code. Readiness probes are answered at once.
pub async fn serve_exec<W, R, Fut>(listener: TcpListener, secret: &str, wrap: W, run: R) -> Result<i32, String>
where
    W: Fn(String) -> Result<Spawn, String>,
    R: Fn(Spawn) -> Fut,
    Fut: std::future::Future<Output = Result<i32, String>>,
{
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| format!("the remote shell's port stopped accepting: {e}"))?;
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let got = tokio::time::timeout(Duration::from_secs(10), BufReader::new(read).read_line(&mut line)).await;
        let Ok(Ok(_)) = got else { continue };
        let Ok(req) = serde_json::from_str::<ExecRequest>(&line) else {
            continue;
        };
        let reply = |r: ExecReply| format!("{}\n", serde_json::to_string(&r).unwrap_or_default());
        if req.secret != secret {
            let _ = write
                .write_all(
                    reply(ExecReply {
                        ok: false,
                        exit: None,
                        error: Some("refused: not this job's secret".into()),
                    })
                    .as_bytes(),
                )
                .await;
            continue;
        }
        let Some(command) = req.command else {
            let _ = write
                .write_all(
                    reply(ExecReply {
                        ok: true,
                        exit: None,
                        error: None,
                    })
                    .as_bytes(),
                )
                .await;
            continue;
        };
        let result = match wrap(command) {
            Ok(spawn) => run(spawn).await,
            Err(e) => Err(e),
        };
        let (exit, error) = match &result {
            Ok(code) => (Some(*code), None),
            Err(e) => (None, Some(e.clone())),
        };
        let _ = write
            .write_all(
                reply(ExecReply {
                    ok: result.is_ok(),
                    exit,
                    error,
                })
                .as_bytes(),
            )
            .await;
        return result;
    }
}

async fn request(addr: &str, req: &ExecRequest) -> Result<ExecReply, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let (read, mut write) = stream.into_split();
    let body = format!("{}\n", serde_json::to_string(req).unwrap_or_default());
    write
        .write_all(body.as_bytes())
        .await
        .map_err(|e| format!("cannot write to {addr}: {e}"))?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(|e| format!("lost {addr}: {e}"))?;
    serde_json::from_str(&line).map_err(|_| format!("{addr} closed the connection without an answer"))
}

/// Waits until every worker's remote shell answers (the toolkit waits for port 22), at most
/// `deadline`.
/// `address` gives where a worker runs, as the agent (outside the sandboxes) reaches it.
pub async fn wait_for_workers(
    job: &str,
    workers: &[String],
    address: impl Fn(&str) -> String,
    secret: &str,
    deadline: Duration,
) -> Result<(), String> {
    let until = tokio::time::Instant::now() + deadline;
    for w in workers {
        let addr = format!("{}:{}", address(w), exec_port(job, w));
        loop {
            let probe = ExecRequest {
                secret: secret.to_string(),
                command: None,
            };
            match request(&addr, &probe).await {
                Ok(r) if r.ok => break,
                Ok(r) => return Err(format!("{w}: {}", r.error.unwrap_or_default())),
                Err(e) if tokio::time::Instant::now() >= until => {
                    return Err(format!("{w} did not get ready for mpirun within {deadline:?}: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}

/// `kiln rsh HOST WORDS...`: runs `WORDS` joined by spaces (as ssh does) on `HOST` of the job
/// whose `KILN_RSH_JOB` and `KILN_RSH_SECRET` are in the environment; returns its exit code.
pub async fn rsh(host: &str, words: &[String]) -> Result<i32, String> {
    let job = std::env::var("KILN_RSH_JOB")
        .map_err(|_| "kiln rsh runs under mpirun in a kiln job (KILN_RSH_JOB is not set)".to_string())?;
    let secret = std::env::var("KILN_RSH_SECRET").map_err(|_| "KILN_RSH_SECRET is not set".to_string())?;
    let addr = format!("{host}:{}", exec_port(&job, host));
    let reply = request(
        &addr,
        &ExecRequest {
            secret,
            command: Some(words.join(" ")),
        },
    )
    .await?;
    match (reply.exit, reply.error) {
        (Some(code), _) => Ok(code),
        (None, e) => Err(format!("{host}: {}", e.unwrap_or_else(|| "no exit status".into()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::new(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn the_toolkits_order_and_groups() {
        let e = env(&[("SM_HOSTS", r#"["algo-1","algo-2"]"#), ("SM_NUM_GPUS", "0")]);
        let both = params(&[
            ("sagemaker_mpi_enabled", "true"),
            ("sagemaker_torch_distributed_enabled", "true"),
            ("sagemaker_mpi_num_of_processes_per_host", "2"),
        ]);
        assert_eq!(
            choose(&both, &e, "algo-1"),
            Launcher::MpiMaster {
                hosts: vec!["algo-1".into(), "algo-2".into()],
                processes_per_host: 2,
                custom_options: String::new()
            }
        );
        assert_eq!(
            choose(&both, &e, "algo-2"),
            Launcher::MpiWorker {
                master: "algo-1".into()
            }
        );
        let torch = params(&[("sagemaker_torch_distributed_enabled", "true")]);
        assert_eq!(
            choose(&torch, &e, "algo-2"),
            Launcher::Torchrun {
                hosts: vec!["algo-1".into(), "algo-2".into()],
                rank: 1,
                nproc: 1
            }
        );
        assert_eq!(choose(&params(&[]), &e, "algo-1"), Launcher::Plain);
        // Only the hosts of the distribution's instance groups take part.
        let hetero = env(&[
            ("SM_HOSTS", r#"["algo-1","algo-2","algo-3"]"#),
            ("SM_DISTRIBUTION_INSTANCE_GROUPS", r#"["train"]"#),
            (
                "SM_INSTANCE_GROUPS_DICT",
                r#"{"data":{"hosts":["algo-1"]},"train":{"hosts":["algo-3","algo-2"]}}"#,
            ),
        ]);
        assert_eq!(distribution_hosts(&hetero), vec!["algo-2", "algo-3"]);
        assert_eq!(choose(&torch, &hetero, "algo-1"), Launcher::Plain);
        assert_eq!(
            choose(&torch, &hetero, "algo-2"),
            Launcher::Torchrun {
                hosts: vec!["algo-2".into(), "algo-3".into()],
                rank: 0,
                nproc: 1
            }
        );
    }

    #[test]
    fn parameter_servers_and_their_tf_config() {
        let e = env(&[("SM_HOSTS", r#"["algo-1","algo-2"]"#)]);
        let ps = params(&[
            ("sagemaker_parameter_server_enabled", "true"),
            ("sagemaker_mpi_enabled", "true"),
        ]);
        let hosts = vec!["algo-1".to_string(), "algo-2".to_string()];
        // The TensorFlow toolkit looks at parameter_server first.
        assert_eq!(
            choose(&ps, &e, "algo-2"),
            Launcher::ParameterServer {
                hosts: hosts.clone(),
                rank: 1
            }
        );
        // One host: the script alone.
        let one = env(&[("SM_HOSTS", r#"["algo-1"]"#)]);
        let ps_only = params(&[("sagemaker_parameter_server_enabled", "true")]);
        assert_eq!(choose(&ps_only, &one, "algo-1"), Launcher::Plain);
        // Byte for byte what the toolkit's json.dumps writes.
        assert_eq!(
            tf_config(&hosts, 0),
            r#"{"cluster": {"master": ["algo-1:2222"], "ps": ["algo-1:2223", "algo-2:2223"], "worker": ["algo-2:2222"]}, "environment": "cloud", "task": {"index": 0, "type": "master"}}"#
        );
        let three: Vec<String> = (1..=3).map(|i| format!("algo-{i}")).collect();
        let v: serde_json::Value = serde_json::from_str(&tf_config(&three, 2)).unwrap();
        assert_eq!(
            v["cluster"]["worker"],
            serde_json::json!(["algo-2:2222", "algo-3:2222"])
        );
        assert_eq!(v["task"], serde_json::json!({"index": 1, "type": "worker"}));
        assert_eq!(
            tf_config(&hosts[..1], 0),
            r#"{"cluster": {"master": ["algo-1:2222"]}, "environment": "cloud", "task": {"index": 0, "type": "master"}}"#
        );
        let (program, args, shown) = parameter_server(
            "/usr/bin/python3",
            "/usr/bin/python3",
            &["train.py".into(), "--x".into()],
            &hosts,
            1,
        );
        assert_eq!(program, "/usr/bin/python3");
        assert_eq!(args[0], "-c");
        assert_eq!(args[2..], ["1", "algo-1", "/usr/bin/python3", "train.py", "--x"]);
        assert_eq!(shown, "/usr/bin/python3 train.py --x");
    }

    #[test]
    fn torchrun_and_mpirun_lines() {
        let hosts = vec!["algo-1".to_string(), "algo-2".to_string()];
        let (_, _, shown) = torchrun(
            "python3",
            &["train.py".into(), "--epochs".into(), "1".into()],
            &hosts,
            1,
            1,
        );
        assert_eq!(
            shown,
            "torchrun --nnodes 2 --nproc_per_node 1 --master_addr algo-1 --master_port 7777 --node_rank 1 train.py --epochs 1"
        );
        let (_, _, one) = torchrun("python3", &["train.py".into()], &hosts[..1], 0, 1);
        assert_eq!(one, "torchrun --nnodes 1 --nproc_per_node 1 train.py");
        let e = env(&[("SM_HOSTS", "[]"), ("PATH", "/usr/bin"), ("HOME", "/root")]);
        let (p, a) = mpirun(
            Path::new("/k/kiln"),
            "/usr/bin/python3",
            &["train.py".into(), "--x".into(), "1".into()],
            &hosts,
            2,
            "-x FOO=1",
            &e,
        );
        assert_eq!(p, "mpirun");
        let line = a.join(" ");
        assert!(
            line.starts_with("--host algo-1:2,algo-2:2 -np 4 --allow-run-as-root"),
            "{line}"
        );
        assert!(line.contains("-mca plm_rsh_agent /k/kiln rsh"), "{line}");
        assert!(line.contains("-x PATH -x SM_HOSTS"), "{line}");
        assert!(!line.contains("-x HOME"), "{line}");
        assert!(
            line.ends_with("-x FOO=1 /usr/bin/python3 -m mpi4py train.py --x 1"),
            "{line}"
        );
    }

    #[test]
    fn ports_are_per_job_and_host() {
        assert_ne!(exec_port("a", "algo-2"), exec_port("a", "algo-3"));
        assert_eq!(exec_port("a", "algo-2"), exec_port("a", "algo-2"));
        assert!(exec_port("zzz", "algo-63") >= 20_000);
    }

    #[tokio::test]
    async fn the_remote_shell_runs_one_command_and_refuses_strangers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            serve_exec(
                listener,
                "s3cret",
                |cmd| {
                    Ok(Spawn {
                        program: "/bin/sh".into(),
                        args: vec!["-c".into(), cmd],
                        cwd: "/".into(),
                        env: BTreeMap::new(),
                    })
                },
                |spawn: Spawn| async move {
                    let st = std::process::Command::new(&spawn.program)
                        .args(&spawn.args)
                        .status()
                        .map_err(|e| e.to_string())?;
                    Ok(st.code().unwrap_or(-1))
                },
            )
            .await
        });
        let bad = request(
            &addr,
            &ExecRequest {
                secret: "no".into(),
                command: Some("true".into()),
            },
        )
        .await
        .unwrap();
        assert!(!bad.ok && bad.error.unwrap().contains("refused"));
        let probe = request(
            &addr,
            &ExecRequest {
                secret: "s3cret".into(),
                command: None,
            },
        )
        .await
        .unwrap();
        assert!(probe.ok);
        let ran = request(
            &addr,
            &ExecRequest {
                secret: "s3cret".into(),
                command: Some("exit 3".into()),
            },
        )
        .await
        .unwrap();
        assert_eq!(ran.exit, Some(3));
        assert_eq!(server.await.unwrap(), Ok(3));
    }
}
