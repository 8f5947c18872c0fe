//! One host's part of a job, from the assignment to the final report: build the tree, stage the
//! channels, run the runtime, settle the failure reason, upload artifacts. Every problem becomes a
//! [`DoneReport`]; nothing here panics on bad input.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_api::agent::{Assignment, DoneReport, Phase, Runtime};
use kiln_api::shapes::{Channel, CreateTrainingJobRequest};

use crate::AgentArgs;
use crate::artifacts::{algorithm_error, client_error, read_failure, toolkit_failure};
use crate::blob::BlobObjects;
use crate::distributed::{self, Launcher};
use crate::env::{Context, Params, process_env};
use crate::launch::{self, Exit, Finished, Spawn, stop_requested};
use crate::sandbox::{Sandbox, View};
use crate::session::Session;
use crate::tree::{self, Tree};
use crate::{pipe, script, staging};

/// Why a host ends before or outside the algorithm.
enum Early {
    /// `ClientError: ...`: the job's setup cannot work as given.
    Client(String),
    /// `InternalServerError: ...`: this host cannot run jobs as the control plane asks.
    Platform(String),
    /// A stop arrived before training started.
    Stopped,
}

impl From<String> for Early {
    fn from(m: String) -> Early {
        Early::Client(m)
    }
}

/// How the algorithm ended, as far as the report cares.
struct Ran {
    exit: Exit,
    stopped: bool,
}

/// Runs the host's part and says how it ended.
pub async fn run(args: &AgentArgs, a: &Assignment, s: &Session) -> DoneReport {
    let report = run_inner(args, a, s).await;
    // The tree stays for inspection; the agent's own scratch (Pipe copies, archives) goes.
    if let Ok(tree) = Tree::new(&args.work_dir, &args.job, &args.host) {
        for scratch in ["pipe", "artifacts", "sourcedir.tar.gz"] {
            let p = tree.host_dir.join(scratch);
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    match report {
        Ok(report) => report,
        Err(Early::Client(m)) => {
            s.sink.line(format!("[kiln agent] {}", client_error(&m)));
            DoneReport {
                exit_code: None,
                failure_reason: Some(client_error(&m)),
                model_artifacts: None,
            }
        }
        Err(Early::Platform(m)) => {
            let reason = format!("InternalServerError: {m}");
            s.sink.line(format!("[kiln agent] {reason}"));
            DoneReport {
                exit_code: None,
                failure_reason: Some(reason),
                model_artifacts: None,
            }
        }
        Err(Early::Stopped) => DoneReport {
            exit_code: None,
            failure_reason: s.interrupted(&a.host),
            model_artifacts: None,
        },
    }
}

/// The agent's own environment as strings (variables that are not UTF-8 are left out).
fn own_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

async fn run_inner(args: &AgentArgs, a: &Assignment, s: &Session) -> Result<DoneReport, Early> {
    let spec: CreateTrainingJobRequest = serde_json::from_value(a.spec.clone()).map_err(|e| {
        format!(
            "the job specification in the assignment cannot be read ({e}); the agent and the control plane may be different kiln versions"
        )
    })?;
    let sandbox = if a.sandbox {
        Some(
            Sandbox::probe()
                .map_err(|e| Early::Platform(format!("host {} cannot run the job in a sandbox: {e}", a.host)))?,
        )
    } else {
        None
    };
    let tree = Tree::new(&args.work_dir, &args.job, &args.host)?;
    tree.create()?;
    crate::launch::record_groups_in(tree.host_dir.join("algorithm.pid"));
    // The algorithm sees the tree at /opt/ml when sandboxed; the agent keeps using host paths.
    let tree = if sandbox.is_some() { tree.mounted() } else { tree };
    let warm_pool_cache = match &a.warm_pool_cache {
        Some(dir) => Some(warm_pool_cache(&tree, std::path::Path::new(dir), sandbox.is_some())?),
        None => None,
    };

    let channels: Vec<&Channel> = spec
        .input_data_config
        .iter()
        .flatten()
        .filter(|c| tree::channel_on_host(c, a))
        .collect();
    for c in &channels {
        tree::check_channel_name(&c.channel_name)?;
    }
    let input_data_config = tree::input_data_config(&spec, &channels);
    let resource_config = tree::resource_config(a);
    let checkpoint = tree::checkpoint_config(&spec, &tree)?;
    let hyperparameters = spec.hyper_parameters.clone().unwrap_or_default();
    tree::write_configs(
        &tree,
        &hyperparameters,
        &input_data_config,
        &resource_config,
        checkpoint.as_ref().map(|(v, _)| v),
    )?;
    if let Some((_, local)) = &checkpoint {
        std::fs::create_dir_all(local)
            .map_err(|e| format!("cannot create the checkpoint directory {}: {e}", local.display()))?;
    }

    let objects = BlobObjects::new(a);
    s.status(Phase::Downloading, "Downloading input data");
    let mut stop = s.stop_rx();
    // The job's own image first, as SageMaker downloads the training image before the data.
    let pulled = match &a.runtime {
        Runtime::Image { image, .. } => {
            if sandbox.is_none() {
                return Err(Early::Client(
                    "running the job's own image needs the sandbox, and this kiln runs jobs without one \
                     ([jobs] sandbox = \"none\", or bubblewrap is missing)"
                        .into(),
                ));
            }
            s.status(Phase::Downloading, "Downloading the training image");
            let got = tokio::select! {
                r = crate::image::pull(image, a, &s.sink) => r,
                () = stop_requested(&mut stop) => return Err(Early::Stopped),
            };
            match got {
                Ok(img) => Some(img),
                Err(crate::image::PullFailure::Client(m)) => return Err(Early::Client(m)),
                Err(crate::image::PullFailure::Platform(m)) => return Err(Early::Platform(m)),
            }
        }
        _ => None,
    };
    let pipes = tokio::select! {
        r = staging::stage_channels(&objects, a, &spec, &channels, &tree) => r?,
        () = stop_requested(&mut stop) => return Err(Early::Stopped),
    };
    if s.stopping() {
        return Err(Early::Stopped);
    }
    // Checkpoints: what the prefix holds comes back before the algorithm starts (a resumed or
    // retried job continues from it); the directory is mirrored to it while the algorithm runs.
    // (kiln/noop runs nothing that could read or write them.)
    let checkpoint_sync = match (&checkpoint, &spec.checkpoint_config) {
        (Some((_, local)), Some(cfg)) if a.runtime != Runtime::Noop => {
            let n = crate::checkpoints::restore(&objects, &cfg.s3_uri, local).await?;
            if n > 0 {
                s.sink.line(format!(
                    "[kiln agent] restored {n} checkpoint file(s) from {} into {}",
                    cfg.s3_uri,
                    tree.seen_str(local)
                ));
            }
            Some(CheckpointSync::start(a, &cfg.s3_uri, local, s))
        }
        _ => None,
    };

    s.status(
        Phase::Training,
        "Training image download completed. Training in progress.",
    );
    let params = Params::new(&hyperparameters);
    let ctx = Context {
        assignment: a,
        spec: &spec,
        tree: &tree,
        input_data_config: &input_data_config,
        resource_config: &resource_config,
        params: &params,
    };
    let mut env = process_env(&ctx, own_env());
    if warm_pool_cache.is_some() {
        env.insert(
            "SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY".into(),
            tree.seen_str(&tree.root.join(WARM_POOL_CACHE)),
        );
    }
    let feeders = if pipes.is_empty() || a.runtime == Runtime::Noop {
        None
    } else {
        Some(pipe::start(pipes)?)
    };
    let jail = Jail {
        sandbox,
        warm_pool_cache,
        rsh_secret: distributed::exec_secret(&args.token),
        tree: &tree,
        a,
    };
    let ran = match (&a.runtime, &pulled) {
        (
            Runtime::Image {
                entrypoint, arguments, ..
            },
            Some(img),
        ) => run_image(img, entrypoint.as_deref(), arguments.as_deref(), &jail, &env, &spec, s).await,
        _ => run_runtime(&objects, a, &params, &jail, env, s).await,
    };
    if let Some(f) = feeders {
        f.stop().await;
    }
    let checkpoint_error = match checkpoint_sync {
        Some(sync) => sync.finish(&objects).await.err(),
        None => None,
    };
    let ran = ran?;
    if let Some(m) = checkpoint_error {
        return Ok(DoneReport {
            exit_code: ran.exit.code(),
            failure_reason: Some(client_error(&m)),
            model_artifacts: None,
        });
    }
    if ran.stopped && crate::session::spot_interrupted() {
        // A spot interruption: the checkpoints had their final sync; the job goes on in a new
        // attempt, so there is no model to upload yet.
        s.sink
            .line("[kiln agent] interrupted (spot): checkpoints synced, no model uploaded".to_string());
        return Ok(DoneReport {
            exit_code: ran.exit.code(),
            failure_reason: None,
            model_artifacts: None,
        });
    }
    s.status(Phase::Uploading, "Uploading generated training model");
    let interrupted = s.interrupted(&a.host).filter(|_| ran.stopped);
    let failure_reason = if interrupted.is_some() {
        interrupted.clone()
    } else if ran.stopped || ran.exit.success() {
        None
    } else {
        Some(algorithm_error(ran.exit, read_failure(&tree.failure_file()).as_deref()))
    };
    let mut model_artifacts = None;
    if !a.uploads_artifacts
        && failure_reason.is_none()
        && a.hosts.len() > 1
        && let Err(m) = staging::upload_host_part(&objects, a, &tree).await
    {
        return Ok(DoneReport {
            exit_code: ran.exit.code(),
            failure_reason: Some(client_error(&m)),
            model_artifacts: None,
        });
    }
    if a.uploads_artifacts && failure_reason.is_none() && a.hosts.len() > 1 {
        // Every host's model/ goes into the archives: wait for the others' parts (a host that
        // fails ends the job, which stops this wait), or, once stopping, at most the grace period.
        let grace = std::time::Duration::from_secs(a.stop_grace_seconds);
        let stopping_since = std::sync::Mutex::new(None::<std::time::Instant>);
        let waiting = || {
            if !s.stopping() {
                return true;
            }
            let mut since = stopping_since.lock().unwrap_or_else(|e| e.into_inner());
            since.get_or_insert_with(std::time::Instant::now).elapsed() < grace
        };
        s.sink
            .line("[kiln agent] collecting the other hosts' model and output for the job's archives".to_string());
        match staging::merge_host_parts(&objects, a, &tree, waiting).await {
            Ok(missing) if !missing.is_empty() => s.sink.line(format!(
                "[kiln agent] the archives lack the model and output of {} (stopped before they came)",
                missing.join(", ")
            )),
            Ok(_) => {}
            Err(m) => {
                return Ok(DoneReport {
                    exit_code: ran.exit.code(),
                    failure_reason: Some(client_error(&m)),
                    model_artifacts: None,
                });
            }
        }
    }
    if a.uploads_artifacts && failure_reason.is_none() {
        match staging::upload_artifacts(&objects, a, &spec, &tree).await {
            Ok(uri) => model_artifacts = Some(uri),
            Err(m) => {
                return Ok(DoneReport {
                    exit_code: ran.exit.code(),
                    failure_reason: Some(client_error(&m)),
                    model_artifacts: None,
                });
            }
        }
    }
    Ok(DoneReport {
        exit_code: ran.exit.code(),
        failure_reason,
        model_artifacts,
    })
}

/// The checkpoint directory mirrored to its S3 prefix in the background while the algorithm runs.
struct CheckpointSync {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<crate::checkpoints::Mirror>,
}

impl CheckpointSync {
    fn start(a: &Assignment, uri: &str, local: &std::path::Path, s: &Session) -> CheckpointSync {
        let mut mirror = crate::checkpoints::Mirror::new(uri, local);
        let objects = BlobObjects::new(a);
        let sink = s.sink.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut warned = false;
            loop {
                tokio::select! {
                    _ = &mut stopped => return mirror,
                    () = tokio::time::sleep(crate::checkpoints::SCAN_EVERY) => {}
                }
                if let Err(e) = mirror.sync(&objects, false).await
                    && !warned
                {
                    sink.line(format!("[kiln agent] checkpoint sync: {e} (retrying)"));
                    warned = true;
                }
            }
        });
        CheckpointSync { stop, task }
    }

    /// Stops the background sync and uploads whatever is not uploaded yet.
    async fn finish(self, objects: &BlobObjects) -> Result<(), String> {
        let _ = self.stop.send(());
        let mut mirror = self
            .task
            .await
            .map_err(|e| format!("the checkpoint sync ended unexpectedly: {e}"))?;
        mirror.sync(objects, true).await.map(|_| ())
    }
}

/// Runs the job's runtime to its end.
async fn run_runtime(
    objects: &BlobObjects,
    a: &Assignment,
    params: &Params,
    jail: &Jail<'_>,
    env: BTreeMap<String, String>,
    s: &Session,
) -> Result<Ran, Early> {
    let tree = jail.tree;
    let grace = std::time::Duration::from_secs(a.stop_grace_seconds);
    let ran = match &a.runtime {
        Runtime::Noop => Ran {
            exit: Exit::Code(0),
            stopped: false,
        },
        Runtime::Builtin { algorithm } => {
            let exe = std::env::current_exe().map_err(|e| {
                format!("the agent cannot find its own executable to run `kiln algo {algorithm}` ({e}); reinstall kiln")
            })?;
            let spawn = Spawn {
                program: exe.display().to_string(),
                args: vec![
                    "algo".into(),
                    algorithm.clone(),
                    "train".into(),
                    "--ml-root".into(),
                    tree.seen_str(&tree.root),
                ],
                cwd: tree.seen(&tree.root),
                env,
            };
            let spawn = jail.wrap(spawn, &[exe], &[]).map_err(Early::Platform)?;
            run_process(&spawn, s, grace).await?
        }
        Runtime::Command { entrypoint, arguments } => {
            let Some((program, rest)) = entrypoint.split_first() else {
                return Err(Early::Client(
                    "AlgorithmSpecification.ContainerEntrypoint is empty; give the program to run as its first element"
                        .into(),
                ));
            };
            let spawn = Spawn {
                program: program.clone(),
                args: rest.iter().chain(arguments).cloned().collect(),
                cwd: tree.seen(&tree.root),
                env,
            };
            let spawn = jail.wrap(spawn, &[], &[]).map_err(Early::Platform)?;
            run_process(&spawn, s, grace).await?
        }
        Runtime::Script { .. } => run_script(objects, a, params, jail, env, s, grace).await?,
        // Pulled and run by `run_image` before this is reached.
        Runtime::Image { image, .. } => {
            return Err(Early::Platform(format!("the image {image} was not pulled")));
        }
    };
    Ok(ran)
}

/// Runs the job's own image in the sandbox.
async fn run_image(
    img: &kiln_image::Image,
    entrypoint: Option<&[String]>,
    arguments: Option<&[String]>,
    jail: &Jail<'_>,
    env: &BTreeMap<String, String>,
    spec: &CreateTrainingJobRequest,
    s: &Session,
) -> Result<Ran, Early> {
    let Some(sandbox) = &jail.sandbox else {
        return Err(Early::Client("kiln runs a job's own image only inside the sandbox, and this server runs jobs without one ([jobs] sandbox = \"none\", or bubblewrap does not work here)".into()));
    };
    let (spawn, home) =
        crate::image::spawn(img, entrypoint, arguments, env, spec.environment.as_ref()).map_err(Early::Client)?;
    let etc = crate::image::etc_copy(img, &jail.tree.host_dir).map_err(Early::Platform)?;
    s.sink.line(format!(
        "[kiln agent] running {} ({}): {}",
        img.reference,
        img.digest,
        spawn.display()
    ));
    let view = jail.view(&[], &[]);
    let spawn = sandbox
        .wrap_image(spawn, &view, &img.rootfs, &etc, &home)
        .map_err(|e| Early::Platform(format!("cannot prepare the sandbox: {e}")))?;
    run_process(&spawn, s, std::time::Duration::from_secs(jail.a.stop_grace_seconds)).await
}

/// Runs a process; a process that cannot start is the job's problem (`ClientError`).
async fn run_process(spawn: &Spawn, s: &Session, grace: std::time::Duration) -> Result<Ran, Early> {
    let mut stop = s.stop_rx();
    let Finished { exit, stopped, .. } = launch::run(spawn, &s.sink, &mut stop, grace)
        .await
        .map_err(|e| Early::Client(e.0))?;
    Ok(Ran { exit, stopped })
}

/// Script mode: code, requirements, entry point, and the toolkit's `output/failure` and
/// `output/success`.
async fn run_script(
    objects: &BlobObjects,
    a: &Assignment,
    params: &Params,
    jail: &Jail<'_>,
    mut env: BTreeMap<String, String>,
    s: &Session,
    grace: std::time::Duration,
) -> Result<Ran, Early> {
    let tree = jail.tree;
    let Some(entry) = params.program() else {
        return Err(Early::Client(
            "script mode needs the entry point in the 'sagemaker_program' hyperparameter (e.g. \"train.py\")".into(),
        ));
    };
    let code = tree.code_dir();
    staging::fetch_source(objects, params.submit_directory().as_deref(), tree).await?;

    // The interpreter: the image's pinned environment (requirements.txt on top), an operator's
    // mapping, or the host's python3; built once per machine into the cache.
    let kind = script::entry_kind(&code, &entry);
    let cache = PathBuf::from(&a.cache_dir);
    let image = spec_image(a);
    let tools = crate::environments::Tools::find(&env).map_err(Early::Platform)?;
    let choice = crate::environments::choose(&image, &a.environments, crate::environments::catalog());
    let requirements_file = code.join("requirements.txt");
    let requirements = if requirements_file.is_file() {
        let bytes = std::fs::read(&requirements_file)
            .map_err(|e| format!("cannot read {}: {e}", requirements_file.display()))?;
        Some(crate::environments::Requirements {
            seen_path: tree.seen_str(&requirements_file),
            seen_dir: tree.seen(&code),
            hash: crate::venv::content_hash(&bytes),
        })
    } else {
        None
    };
    let stop = s.stop_rx();
    let (outcome, prepared) = crate::environments::prepare(
        &choice,
        requirements.as_ref(),
        &tools,
        &cache,
        &env,
        &s.sink,
        &stop,
        grace,
        jail,
    )
    .await
    .map_err(Early::Client)?;
    match outcome {
        crate::venv::Outcome::Ready(_) => {}
        crate::venv::Outcome::Failed {
            exit,
            stderr_tail,
            command,
        } => {
            let text = toolkit_failure("InstallRequirementsError", exit.returncode(), &stderr_tail, &command);
            write_quietly(&tree.failure_file(), &text);
            return Ok(Ran {
                exit: Exit::Code(1),
                stopped: false,
            });
        }
        // Training has begun: a stop now uploads what exists, as a stop of the script would.
        crate::venv::Outcome::Stopped => {
            return Ok(Ran {
                exit: Exit::Signal(nix::sys::signal::Signal::SIGTERM as i32),
                stopped: true,
            });
        }
    }
    if let Some(dir) = &prepared.env_dir {
        let path = env.get("PATH").cloned().unwrap_or_default();
        env.insert("PATH".into(), format!("{}:{path}", dir.join("bin").display()));
        env.insert("VIRTUAL_ENV".into(), dir.display().to_string());
    }
    let python = prepared.python.clone();
    let mut shown = prepared.read_only.clone();
    let (program, args) = script::entry_command(kind, &entry, &params.user_args(), &python)?;
    if kind == script::EntryKind::Command {
        script::make_executable(&code.join(&entry));
    }
    // The distribution the SDK asked for: parameter servers and the script with TF_CONFIG on every
    // host, torchrun, mpirun from the first host (the others serve its remote shell), or the entry
    // point alone.
    let launcher = distributed::choose(params, &env, &a.host);
    distributed::toolkit_env(&mut env);
    if matches!(
        launcher,
        Launcher::Torchrun { .. } | Launcher::MpiMaster { .. } | Launcher::MpiWorker { .. }
    ) && kind == script::EntryKind::Command
    {
        return Err(Early::Client(format!(
            "distributed training runs a Python entry point; sagemaker_program='{entry}' is not a .py file or a package module"
        )));
    }
    let (program, args, display) = match &launcher {
        Launcher::Plain => {
            let shown = Spawn {
                program: program.clone(),
                args: args.clone(),
                cwd: PathBuf::new(),
                env: BTreeMap::new(),
            }
            .display();
            (program, args, shown)
        }
        Launcher::Torchrun { hosts, rank, nproc } => distributed::torchrun(&python, &args, hosts, *rank, *nproc),
        Launcher::ParameterServer { hosts, rank } => {
            env.insert("TF_CONFIG".into(), distributed::tf_config(hosts, *rank));
            distributed::parameter_server(&python, &program, &args, hosts, *rank)
        }
        Launcher::MpiWorker { master } => {
            // orted checks that mpirun's plm_rsh_agent (kiln itself) exists here too.
            let exe = std::env::current_exe()
                .map_err(|e| Early::Platform(format!("the agent cannot find its own executable for kiln rsh: {e}")))?;
            shown.push(exe);
            return serve_mpi(a, jail, env, tree.seen(&code), &shown, master, s, grace).await;
        }
        Launcher::MpiMaster {
            hosts,
            processes_per_host,
            custom_options,
        } => {
            let exe = std::env::current_exe()
                .map_err(|e| Early::Platform(format!("the agent cannot find its own executable for kiln rsh: {e}")))?;
            let workers = &hosts[1..];
            s.sink.line(format!(
                "[kiln agent] waiting for {} to serve mpirun's remote shell",
                workers.join(", ")
            ));
            let deadline = std::time::Duration::from_secs(600);
            let mut stop = s.stop_rx();
            tokio::select! {
                r = distributed::wait_for_workers(&a.job_name, workers, |h| jail.address_of(h), &jail.rsh_secret, deadline) => r.map_err(Early::Platform)?,
                () = stop_requested(&mut stop) => return Err(Early::Stopped),
            }
            env.insert("KILN_RSH_JOB".into(), a.job_name.clone());
            env.insert("KILN_RSH_SECRET".into(), jail.rsh_secret.clone());
            let (program, args) =
                distributed::mpirun(&exe, &python, &args, hosts, *processes_per_host, custom_options, &env);
            shown.push(exe);
            let line = format!("{program} {}", args.join(" "));
            (program, args, line)
        }
    };
    let spawn = Spawn {
        program,
        args,
        cwd: tree.seen(&code),
        env,
    };
    let spawn = jail.wrap(spawn, &shown, &[]).map_err(Early::Platform)?;
    s.sink
        .line(format!("Invoking script with the following command: {display}"));
    let mut stop = s.stop_rx();
    let Finished {
        exit,
        stopped,
        stderr_tail,
    } = launch::run(&spawn, &s.sink, &mut stop, grace)
        .await
        .map_err(|e| Early::Client(e.0))?;
    if exit.success() {
        write_quietly(&tree.success_file(), "");
    } else if !stopped && read_failure(&tree.failure_file()).is_none() {
        let text = toolkit_failure("ExecuteUserScriptError", exit.returncode(), &stderr_tail, &display);
        write_quietly(&tree.failure_file(), &text);
    }
    Ok(Ran { exit, stopped })
}

/// An MPI worker: serves the remote shell `mpirun` on the first host uses, runs the command it is
/// given (OpenMPI's `orted`) in this host's sandbox with the script's environment, and ends with it.
#[allow(clippy::too_many_arguments)]
async fn serve_mpi(
    a: &Assignment,
    jail: &Jail<'_>,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
    shown: &[PathBuf],
    master: &str,
    s: &Session,
    grace: std::time::Duration,
) -> Result<Ran, Early> {
    let port = distributed::exec_port(&a.job_name, &a.host);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await.map_err(|e| {
        Early::Platform(format!(
            "host {} cannot serve mpirun's remote shell on port {port}: {e}",
            a.host
        ))
    })?;
    s.sink.line(format!(
        "[kiln agent] waiting for mpirun on {master} (remote shell on port {port})"
    ));
    let wrap = |command: String| {
        s.sink.line(format!("[kiln agent] mpirun on {master} runs: {command}"));
        jail.wrap(
            Spawn {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), command],
                cwd: cwd.clone(),
                env: env.clone(),
            },
            shown,
            &[],
        )
    };
    let run = |spawn: Spawn| async move {
        let mut stop = s.stop_rx();
        let f = launch::run(&spawn, &s.sink, &mut stop, grace).await.map_err(|e| e.0)?;
        Ok(f.exit.code().unwrap_or(1))
    };
    let mut stop = s.stop_rx();
    let code = tokio::select! {
        r = distributed::serve_exec(listener, &jail.rsh_secret, wrap, run) => r.map_err(Early::Platform)?,
        () = stop_requested(&mut stop) => return Ok(Ran { exit: Exit::Signal(15), stopped: true }),
    };
    Ok(Ran {
        exit: Exit::Code(code),
        stopped: s.stopping(),
    })
}

/// The job's `TrainingImage`.
fn spec_image(a: &Assignment) -> String {
    a.spec
        .get("AlgorithmSpecification")
        .and_then(|s| s.get("TrainingImage"))
        .and_then(|i| i.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Where the algorithm runs: in this host's sandbox, or (without one) directly on the machine.
pub(crate) struct Jail<'a> {
    sandbox: Option<Sandbox>,
    /// The warm pool's cache directory of this host, shown at `/opt/ml/sagemaker/warmpoolcache`.
    warm_pool_cache: Option<PathBuf>,
    /// What a request to this job's remote shell (MPI) must carry.
    rsh_secret: String,
    pub(crate) tree: &'a Tree,
    a: &'a Assignment,
}

impl crate::venv::Runner for Jail<'_> {
    fn wrap(&self, spawn: Spawn, read_only: &[PathBuf], read_write: &[PathBuf]) -> Result<Spawn, String> {
        Jail::wrap(self, spawn, read_only, read_write)
    }
}

impl Jail<'_> {
    /// Where host `host` of the job runs, as this machine reaches it.
    fn address_of(&self, host: &str) -> String {
        self.a
            .host_addresses
            .get(host)
            .cloned()
            .unwrap_or_else(|| crate::sandbox::local_address(host))
    }

    /// What this host's sandbox shows, with `read_only` and `read_write` besides.
    fn view(&self, read_only: &[PathBuf], read_write: &[PathBuf]) -> View<'_> {
        let mut hosts: BTreeMap<String, String> = self
            .a
            .hosts
            .iter()
            .map(|h| (h.clone(), crate::sandbox::local_address(h)))
            .collect();
        hosts.extend(self.a.host_addresses.clone());
        View {
            tree: self.tree,
            hostname: &self.a.host,
            hosts,
            read_only: read_only.to_vec(),
            read_write: read_write.to_vec(),
            warm_pool_cache: self.warm_pool_cache.clone(),
        }
    }

    /// `spawn` as it runs here: wrapped in the sandbox (showing `read_only` and `read_write` paths
    /// besides the system and the tree), or unchanged without one.
    pub(crate) fn wrap(&self, spawn: Spawn, read_only: &[PathBuf], read_write: &[PathBuf]) -> Result<Spawn, String> {
        let Some(sandbox) = &self.sandbox else {
            return Ok(spawn);
        };
        let view = self.view(read_only, read_write);
        sandbox
            .wrap(spawn, &view)
            .map_err(|e| format!("cannot prepare the sandbox: {e}"))
    }
}

/// Where the warm pool's cache appears in the tree (reference §6.3).
const WARM_POOL_CACHE: &str = "sagemaker/warmpoolcache";

/// Makes this host's warm-pool cache `dir` appear at `<tree>/sagemaker/warmpoolcache`: a mount
/// point the sandbox binds it on, or (without a sandbox) a link to it. Returns `dir`.
fn warm_pool_cache(tree: &Tree, dir: &std::path::Path, sandboxed: bool) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the warm pool cache {}: {e}", dir.display()))?;
    let at = tree.root.join(WARM_POOL_CACHE);
    if let Some(parent) = at.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let made = if sandboxed {
        std::fs::create_dir_all(&at)
    } else if std::fs::symlink_metadata(&at).is_err() {
        std::os::unix::fs::symlink(dir, &at)
    } else {
        Ok(())
    };
    made.map_err(|e| format!("cannot prepare {}: {e}", at.display()))?;
    Ok(dir.to_path_buf())
}

/// Writes a status file; a failure to write it is reported in the log but changes nothing else.
fn write_quietly(path: &std::path::Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("kiln agent: cannot write {}: {e}", path.display());
    }
}
