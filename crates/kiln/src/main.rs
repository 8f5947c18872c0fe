//! The `kiln` command: `serve` runs the control plane; `env`, `keys` and `jobs` are user commands,
//! thin clients of the HTTP API (or of the keys file, for credentials).

mod client;
mod config;
mod environments;
mod follow;
mod train;
mod tune;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kiln_engine::capacity::Resources;
use kiln_server::{ExecutorChoice, JobsConfig, Server, ServerConfig, keys};
use serde_json::{Value, json};

use crate::client::Client;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "A self-hosted training service that speaks SageMaker's API"
)]
struct Cli {
    /// Config file (default: ./kiln.toml, then <data-dir>/kiln.toml).
    #[arg(long, global = true, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (default: ~/.kiln).
    #[arg(long, global = true, env = "KILN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: SageMaker, S3 and Logs APIs on one listener.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, env = "KILN_LISTEN")]
        listen: Option<String>,
        /// Keep all metadata in PostgreSQL (`postgres://user:password@host:port/db`) instead of
        /// SQLite files under the data directory; several `kiln serve` may share it (replicas).
        #[arg(long, env = "KILN_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Where jobs run: local, slurm or none ([jobs] executor; default local).
        #[arg(long, env = "KILN_EXECUTOR")]
        executor: Option<String>,
        #[command(flatten)]
        slurm: config::SlurmFlags,
    },
    /// Print the shell lines that point AWS clients at this kiln.
    Env {
        /// The endpoint the lines name (default: http:// and the listen address), e.g. when
        /// clients reach the server through another name: `--endpoint http://kiln.lan:8080`.
        #[arg(long, env = "KILN_ENDPOINT")]
        endpoint: Option<String>,
    },
    /// Manage access keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The Python environments of framework images: show them, or build one ahead of its first job.
    Environments {
        #[command(subcommand)]
        command: EnvironmentsCommand,
    },
    /// Run a built-in algorithm inside the SageMaker container contract, e.g.
    /// `kiln algo xgboost train --ml-root /opt/ml` or `kiln algo xgboost predict --model M --data D`.
    #[command(disable_help_flag = true)]
    Algo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run one host of a training job (started by an executor, not by hand).
    Agent {
        /// Control plane URL.
        #[arg(long)]
        server: String,
        /// Account that owns the job.
        #[arg(long)]
        account: String,
        /// Training job name.
        #[arg(long)]
        job: String,
        /// Host name, e.g. algo-1 (default under srun: algo-(SLURM_PROCID+1)).
        #[arg(long)]
        host: Option<String>,
        /// Directory under which the host's tree is built.
        #[arg(long)]
        work_dir: PathBuf,
        /// The job's agent token.
        #[arg(long, env = "KILN_AGENT_TOKEN", hide_env_values = true)]
        token: String,
        /// Where the job's hosts run, for the sandbox's /etc/hosts: `algo-1=10.0.0.5 algo-2=10.0.0.6`
        /// (the Slurm executor's batch script sets it from the allocation; hosts not named run on
        /// this machine or where the control plane says).
        #[arg(long, env = "KILN_HOST_ADDRESSES", default_value = "")]
        host_addresses: String,
    },
    /// mpirun's remote shell inside a job (its plm_rsh_agent): runs COMMAND on HOST's sandbox.
    #[command(hide = true)]
    Rsh {
        host: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Asked by a cluster allocation that a warm pool keeps, once a job's hosts have exited: prints
    /// the next job to run in it (name, placement, agent token, keep-alive: a line each), or exits 1
    /// when the allocation should end.
    #[command(hide = true)]
    PoolNext {
        #[arg(long)]
        server: String,
        #[arg(long)]
        account: String,
        /// The job whose hosts have exited.
        #[arg(long)]
        job: String,
        /// That job's agent token.
        #[arg(long, env = "KILN_AGENT_TOKEN", hide_env_values = true)]
        token: String,
        /// The allocation (the cluster's job id).
        #[arg(long)]
        allocation: String,
        /// The pool's keep-alive in seconds: how long to wait for a control plane that does not answer.
        #[arg(long, default_value_t = 0)]
        keep_alive: u64,
    },
    /// Train a model: upload local data, create a training job, and (with --wait) watch it.
    Train(train::TrainArgs),
    /// Tune hyperparameters: start a tuning job from a JSON/YAML spec and (with --wait) watch it.
    Tune(tune::TuneArgs),
    /// Training jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Print a training job's log (every host's stream; lines prefixed with the host when there
    /// are several).
    Logs {
        name: String,
        /// Keep printing new lines until the job ends.
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an access key (for a new account unless --account is given) and print it.
    Create {
        /// 12-digit account id the key belongs to.
        #[arg(long)]
        account: Option<String>,
    },
    /// List access key ids and their accounts.
    List,
    /// Delete an access key: the server refuses it from the next request on.
    Delete {
        /// The key's id (AKIA...).
        access_key_id: String,
    },
}

#[derive(Subcommand)]
enum EnvironmentsCommand {
    /// Every framework image kiln has pinned versions for, which are built, and `[[environments]]`.
    List,
    /// Builds the environment of IMAGE (a training image URI) into the cache.
    Build {
        image: String,
        /// Also layer this requirements.txt on top, as a job that ships it would.
        #[arg(long)]
        requirements: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List training jobs, newest first.
    List {
        /// Only jobs with this status (InProgress, Completed, Failed, Stopping, Stopped).
        #[arg(long)]
        status: Option<String>,
        /// Only jobs whose name contains this text.
        #[arg(long)]
        name_contains: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        max: usize,
    },
    /// The jobs table, redrawn as it changes, until Ctrl-C.
    Watch {
        /// Only jobs with this status (InProgress, Completed, Failed, Stopping, Stopped).
        #[arg(long)]
        status: Option<String>,
        /// Only jobs whose name contains this text.
        #[arg(long)]
        name_contains: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 30)]
        max: usize,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Quit once none of the jobs shown is running.
        #[arg(long)]
        until_done: bool,
    },
    /// Show a training job as DescribeTrainingJob returns it.
    Describe { name: String },
    /// Stop a training job.
    Stop { name: String },
    /// Interrupt a managed spot training job, as when the spot capacity is reclaimed: its hosts
    /// stop, then a new attempt resumes from its checkpoints.
    Interrupt { name: String },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Serve { .. } | Command::Agent { .. } | Command::Rsh { .. } | Command::PoolNext { .. }
    ) {
        // A command piped into `head` ends quietly when the pipe closes, as Unix tools do (Rust
        // ignores SIGPIPE, and `println!` then panics). The server and the agent keep ignoring it:
        // a closed socket is an error they handle.
        // SAFETY: no other thread exists yet, and SIG_DFL installs no handler.
        unsafe {
            let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
        }
    }
    // Built-in algorithms run synchronously with their own thread pool; no async runtime needed.
    if let Command::Algo { args } = &cli.command {
        let code = kiln_algos::cli::run(args);
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kiln: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let listen = match &cli.command {
        Command::Serve { listen, .. } => listen.clone(),
        _ => std::env::var("KILN_LISTEN").ok(),
    };
    let settings = config::resolve(cli.config.as_deref(), listen.as_deref(), cli.data_dir.as_deref())?;
    match cli.command {
        Command::Serve {
            database_url,
            executor,
            slurm,
            ..
        } => serve(settings, database_url, executor, slurm).await,
        Command::Env { endpoint } => env(&settings, endpoint.as_deref()),
        Command::Keys { command } => keys_command(&settings, command),
        Command::Environments { command } => match command {
            EnvironmentsCommand::List => environments::list(&settings),
            EnvironmentsCommand::Build { image, requirements } => {
                environments::build(&settings, &image, requirements.as_deref()).await
            }
        },
        Command::Jobs { command } => jobs(&settings, command).await,
        Command::Logs { name, follow } => {
            let client = Client::from_env(&settings)?;
            let code = follow::logs(&client, &name, follow).await?;
            std::process::exit(code)
        }
        Command::Tune(args) => {
            let client = Client::from_env(&settings)?;
            let code = tune::run(&client, args).await?;
            std::process::exit(code)
        }
        Command::Train(args) => {
            let client = Client::from_env(&settings)?;
            let code = train::run(&client, args).await?;
            std::process::exit(code)
        }
        Command::Algo { .. } => Ok(()),
        Command::PoolNext {
            server,
            account,
            job,
            token,
            allocation,
            keep_alive,
        } => {
            let wait = std::time::Duration::from_secs(keep_alive);
            match kiln_agent::pool::next(&server, &account, &job, &token, &allocation, wait).await {
                Ok(Some(next)) => {
                    print!("{}", kiln_agent::pool::lines(&next));
                    Ok(())
                }
                Ok(None) => std::process::exit(1),
                Err(e) => {
                    eprintln!("kiln pool-next: {e}");
                    std::process::exit(1)
                }
            }
        }
        Command::Rsh { host, command } => match kiln_agent::distributed::rsh(&host, &command).await {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("kiln rsh: {e}");
                std::process::exit(255)
            }
        },
        Command::Agent {
            server,
            account,
            job,
            host,
            work_dir,
            token,
            host_addresses,
        } => {
            let host = agent_host(host, std::env::var("SLURM_PROCID").ok().as_deref())?;
            let host_addresses =
                parse_host_addresses(&host_addresses).context("--host-addresses (KILN_HOST_ADDRESSES)")?;
            let code = kiln_agent::run(kiln_agent::AgentArgs {
                server,
                account,
                job,
                host,
                work_dir,
                token,
                host_addresses,
            })
            .await?;
            std::process::exit(code)
        }
    }
}

/// `algo-1=10.0.0.5 algo-2=node2` (spaces or commas between entries) as host → address.
fn parse_host_addresses(text: &str) -> Result<std::collections::BTreeMap<String, String>> {
    text.split([' ', ',', '\n'])
        .filter(|e| !e.is_empty())
        .map(|e| match e.split_once('=') {
            Some((h, a)) if !h.is_empty() && !a.is_empty() => Ok((h.to_string(), a.to_string())),
            _ => bail!("'{e}' is not HOST=ADDRESS (e.g. algo-2=10.0.0.6)"),
        })
        .collect()
}

/// The agent's host: `--host`, or under `srun` the task's rank: task `i` of a job's step is
/// `algo-(i+1)`, as the Slurm executor lays hosts out one per node.
fn agent_host(host: Option<String>, procid: Option<&str>) -> Result<String> {
    if let Some(h) = host {
        return Ok(h);
    }
    let Some(procid) = procid else {
        bail!("kiln agent needs --host (e.g. --host algo-1), or SLURM_PROCID (set by srun) to derive it from");
    };
    let rank: u32 = procid
        .trim()
        .parse()
        .with_context(|| format!("SLURM_PROCID='{procid}' is not a task number; pass --host instead"))?;
    Ok(format!("algo-{}", u64::from(rank) + 1))
}

async fn serve(
    settings: config::Settings,
    database_url: Option<String>,
    executor: Option<String>,
    slurm: config::SlurmFlags,
) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| "info,s3s=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let kiln_bin = std::env::current_exe().context("cannot find the kiln binary to start agents from")?;
    let sandbox = resolve_sandbox(settings.jobs.sandbox.as_deref())?;
    let executor = match executor {
        Some(e) => {
            config::check_executor(&e).context("--executor (KILN_EXECUTOR)")?;
            e
        }
        None => settings.jobs.executor.clone().unwrap_or_else(|| "local".into()),
    };
    let work_dir = settings
        .jobs
        .work_dir
        .clone()
        .unwrap_or_else(|| settings.data_dir.join("work"));
    let executor = match executor.as_str() {
        "none" => ExecutorChoice::None,
        "slurm" => ExecutorChoice::Slurm(Box::new(config::slurm_settings(
            settings.slurm.as_ref(),
            &slurm,
            &kiln_bin,
            &work_dir,
        ))),
        _ => ExecutorChoice::Local,
    };
    let jobs = JobsConfig {
        executor,
        kiln_bin,
        work_dir: settings.jobs.work_dir.clone(),
        capacity: settings.capacity.map(|c| {
            let d = kiln_server::default_capacity();
            Resources {
                vcpus: c.vcpus.unwrap_or(d.vcpus),
                memory_gib: c.memory_gib.unwrap_or(d.memory_gib),
                gpus: c.gpus.unwrap_or(d.gpus),
                neuron_devices: c.neuron_devices.unwrap_or(d.neuron_devices),
            }
        }),
        public_url: settings.jobs.public_url.clone(),
        stop_grace_seconds: settings.jobs.stop_grace_seconds.unwrap_or(120),
        sandbox,
        environments: settings.environments.clone(),
        registries: settings.registries.clone(),
        external_s3: settings.external_s3.clone(),
        spot_interruptions_per_hour: settings.spot.interruptions_per_hour,
    };
    let database_url = database_url.or(settings.database_url.clone());
    kiln_server::private_files();
    let server = Server::open(ServerConfig {
        listen: settings.listen,
        data_dir: settings.data_dir.clone(),
        database_url: database_url.clone(),
        jobs,
        max_connections: settings.server.max_connections,
        header_timeout: settings
            .server
            .header_timeout_seconds
            .map(std::time::Duration::from_secs_f64),
        metrics_token: settings.metrics.token.clone(),
        metric_retention: settings.metrics.retention()?,
    })
    .await?;
    if let Some(key) = &server.created_key {
        println!(
            "kiln: created access key for account {} (stored in {}):",
            key.account_id,
            keys::keys_path(&settings.data_dir).display()
        );
        println!("  AWS_ACCESS_KEY_ID={}", key.access_key_id);
        println!("  AWS_SECRET_ACCESS_KEY={}", key.secret_access_key);
        println!("kiln: `kiln env` prints these again as shell lines.");
    }
    let metadata = match &database_url {
        Some(url) => kiln_store::db::redact(url),
        None => "SQLite".to_string(),
    };
    println!(
        "kiln: serving on http://{} (data in {}, metadata in {metadata})",
        settings.listen,
        settings.data_dir.display()
    );
    server.run(shutdown_signal()).await?;
    println!("kiln: stopped");
    Ok(())
}

/// Whether jobs run in a sandbox, from `[jobs] sandbox`: `bwrap` must work, `auto` uses it where
/// it works, `none` never does. Running without one is said loudly: jobs then have the server's rights.
fn resolve_sandbox(mode: Option<&str>) -> Result<bool> {
    let unconfined = |why: &str| {
        eprintln!(
            "kiln: WARNING: jobs run WITHOUT a sandbox ({why}): a job can read and write whatever this server \
             can, including the data directory and other jobs. Use this only on a single-user machine."
        );
    };
    match mode.unwrap_or("auto") {
        "none" => {
            unconfined("[jobs] sandbox = \"none\"");
            Ok(false)
        }
        "bwrap" => kiln_agent::sandbox::Sandbox::probe()
            .map(|_| true)
            .map_err(|e| anyhow::anyhow!("[jobs] sandbox = \"bwrap\" but {e}")),
        _ => match kiln_agent::sandbox::Sandbox::probe() {
            Ok(_) => Ok(true),
            Err(e) => {
                unconfined(&e);
                Ok(false)
            }
        },
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

fn env(settings: &config::Settings, endpoint: Option<&str>) -> Result<()> {
    let path = keys::keys_path(&settings.data_dir);
    let key = keys::read_keys(&path)?.into_iter().next().with_context(|| {
        format!(
            "no access key in {}: start `kiln serve` once to create one",
            path.display()
        )
    })?;
    let endpoint = match endpoint {
        Some(e) if e.starts_with("http://") || e.starts_with("https://") => e.trim_end_matches('/').to_string(),
        Some(e) => bail!("--endpoint must be an http:// or https:// URL, got '{e}'"),
        None => format!("http://{}", settings.listen),
    };
    println!("export AWS_ENDPOINT_URL={endpoint}");
    println!("export AWS_ACCESS_KEY_ID={}", key.access_key_id);
    println!("export AWS_SECRET_ACCESS_KEY={}", key.secret_access_key);
    println!("export AWS_DEFAULT_REGION={}", settings.region);
    Ok(())
}

fn keys_command(settings: &config::Settings, command: KeysCommand) -> Result<()> {
    let path = keys::keys_path(&settings.data_dir);
    match command {
        KeysCommand::Create { account } => {
            if let Some(a) = &account
                && (a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()))
            {
                bail!("--account must be 12 digits, got '{a}'");
            }
            std::fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("cannot create {}", settings.data_dir.display()))?;
            let key = keys::generate_key(account.as_deref());
            keys::append_key(&path, &key)?;
            println!("account_id={}", key.account_id);
            println!("AWS_ACCESS_KEY_ID={}", key.access_key_id);
            println!("AWS_SECRET_ACCESS_KEY={}", key.secret_access_key);
        }
        KeysCommand::List => {
            for k in keys::read_keys(&path)? {
                println!("{}\t{}", k.access_key_id, k.account_id);
            }
        }
        KeysCommand::Delete { access_key_id } => {
            if !keys::delete_key(&path, &access_key_id)? {
                bail!("no access key {access_key_id} in {}", path.display());
            }
            println!("deleted {access_key_id}");
        }
    }
    Ok(())
}

/// Prints rows as left-aligned columns.
pub(crate) fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

pub(crate) fn time_text(v: &Value) -> String {
    v.as_f64()
        .map(|t| kiln_api::sigv4::format_amz_date(t as i64))
        .map(|s| {
            format!(
                "{}-{}-{} {}:{}:{}",
                &s[0..4],
                &s[4..6],
                &s[6..8],
                &s[9..11],
                &s[11..13],
                &s[13..15]
            )
        })
        .unwrap_or_default()
}

async fn jobs(settings: &config::Settings, command: JobsCommand) -> Result<()> {
    let client = Client::from_env(settings)?;
    match command {
        JobsCommand::List {
            status,
            name_contains,
            max,
        } => {
            let filter = follow::JobFilter {
                status,
                name_contains,
                max,
            };
            let (table, _) = follow::job_table(&client, &filter).await?;
            if table.len() == 1 {
                println!("no training jobs");
            } else {
                print_table(&table);
            }
        }
        JobsCommand::Watch {
            status,
            name_contains,
            max,
            interval,
            until_done,
        } => {
            if !(interval > 0.0 && interval.is_finite()) {
                bail!("--interval must be a positive number of seconds, not {interval}");
            }
            let filter = follow::JobFilter {
                status,
                name_contains,
                max,
            };
            follow::watch(
                &client,
                &filter,
                std::time::Duration::from_secs_f64(interval),
                until_done,
            )
            .await?;
        }
        JobsCommand::Describe { name } => {
            let job = client
                .sagemaker("DescribeTrainingJob", json!({ "TrainingJobName": name }))
                .await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobsCommand::Stop { name } => {
            client
                .sagemaker("StopTrainingJob", json!({ "TrainingJobName": name }))
                .await?;
            println!("stopping {name}");
        }
        JobsCommand::Interrupt { name } => {
            client
                .sagemaker("InterruptTrainingJob", json!({ "TrainingJobName": name }))
                .await?;
            println!("interrupting {name}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{agent_host, parse_host_addresses};

    #[test]
    fn an_agent_under_srun_is_the_host_of_its_task() {
        assert_eq!(agent_host(Some("algo-3".into()), Some("0")).unwrap(), "algo-3");
        assert_eq!(agent_host(None, Some("0")).unwrap(), "algo-1");
        assert_eq!(agent_host(None, Some("11")).unwrap(), "algo-12");
        let e = agent_host(None, None).unwrap_err().to_string();
        assert!(e.contains("--host") && e.contains("SLURM_PROCID"), "{e}");
        let e = agent_host(None, Some("x")).unwrap_err().to_string();
        assert!(e.contains("SLURM_PROCID='x'"), "{e}");
    }

    #[test]
    fn host_addresses_parse_and_bad_entries_say_what_is_wrong() {
        let m = parse_host_addresses(" algo-1=127.0.0.1 algo-2=10.0.0.6,algo-3=node3 ").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m["algo-2"], "10.0.0.6");
        assert_eq!(m["algo-3"], "node3");
        assert!(parse_host_addresses("").unwrap().is_empty());
        let e = parse_host_addresses("algo-1").unwrap_err().to_string();
        assert!(e.contains("'algo-1' is not HOST=ADDRESS"), "{e}");
    }
}
