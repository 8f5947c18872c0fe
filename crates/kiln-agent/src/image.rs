//! "Bring your own container": a job's own image, pulled from its registry (`kiln-image`, into the
//! machine's cache by digest) and run in the host's sandbox as SageMaker runs a container: the
//! image's root file system as `/`, the host's tree at `/opt/ml`, the image's `ENTRYPOINT` with the
//! argument `train` (or `ContainerEntrypoint`/`ContainerArguments`), its `Env` and `WorkingDir`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_api::agent::{Assignment, RegistryRule};
use kiln_image::{Image, Puller, Registries, RegistrySettings};

use crate::launch::Spawn;
use crate::logs::LogSink;

/// Why an image could not be had: the job's problem (`ClientError`) or this machine's.
pub enum PullFailure {
    Client(String),
    Platform(String),
}

fn settings(rules: &[RegistryRule]) -> Vec<RegistrySettings> {
    rules
        .iter()
        .map(|r| RegistrySettings {
            host: r.host.clone(),
            username: r.username.clone(),
            password: r.password.clone(),
            insecure: r.insecure,
            mirror: r.mirror.clone(),
        })
        .collect()
}

/// Pulls `image` (or finds it in the cache), the progress in the job's log.
pub async fn pull(image: &str, a: &Assignment, sink: &LogSink) -> Result<Image, PullFailure> {
    let registries =
        Registries::new(settings(&a.registries)).map_err(|e| PullFailure::Platform(format!("[[registries]]: {e}")))?;
    let cache = Path::new(&a.cache_dir).join("images");
    let puller = Puller::new(&cache, registries).map_err(|e| PullFailure::Platform(e.to_string()))?;
    sink.line(format!("[kiln agent] pulling the training image {image}"));
    match puller.pull(image, |p| sink.line(format!("[kiln agent] {p}"))).await {
        Ok(img) => Ok(img),
        Err(e) if e.is_client_error() => Err(PullFailure::Client(format!("cannot pull the training image: {e}"))),
        Err(e) => Err(PullFailure::Platform(format!("cannot pull the training image: {e}"))),
    }
}

/// Whether a variable of kiln's environment for the algorithm also goes into an image: what the
/// platform tells the job (`SM_*`, S3 access, the job's name), not the host's own (`PATH`, …).
fn for_image(key: &str) -> bool {
    key.starts_with("SM_")
        || key.starts_with("AWS_")
        || key.starts_with("SAGEMAKER_")
        || key.starts_with("TRAINING_JOB_")
        || matches!(key, "S3_ENDPOINT_URL" | "CURRENT_HOST" | "PYTHONUNBUFFERED")
}

/// The process that runs the image: its command, working directory and environment (the image's
/// `Env`, then the platform's variables, then the job's `Environment`, which wins).
pub fn spawn(
    img: &Image,
    entrypoint: Option<&[String]>,
    arguments: Option<&[String]>,
    platform_env: &BTreeMap<String, String>,
    job_env: Option<&BTreeMap<String, String>>,
) -> Result<(Spawn, String), String> {
    let train = ["train".to_string()];
    let command = match entrypoint {
        Some(e) => e
            .iter()
            .chain(arguments.unwrap_or_default())
            .cloned()
            .collect::<Vec<_>>(),
        None => img.config.command(arguments.unwrap_or(&train)),
    };
    let Some((program, args)) = command.split_first() else {
        return Err(format!(
            "the image {} has no ENTRYPOINT or CMD; give AlgorithmSpecification.ContainerEntrypoint",
            img.reference
        ));
    };
    let mut env: BTreeMap<String, String> = img.config.env.iter().cloned().collect();
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for (k, v) in platform_env.iter().filter(|(k, _)| for_image(k)) {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in job_env.into_iter().flatten() {
        env.insert(k.clone(), v.clone());
    }
    let home = env.get("HOME").cloned().unwrap_or_else(|| "/root".into());
    env.insert("HOME".into(), home.clone());
    let cwd = img
        .config
        .working_dir
        .clone()
        .filter(|w| w.starts_with('/'))
        .unwrap_or_else(|| "/".into());
    Ok((
        Spawn {
            program: program.clone(),
            args: args.to_vec(),
            cwd: PathBuf::from(cwd),
            env,
        },
        home,
    ))
}

/// A copy of the image's `/etc` for this host (the sandbox writes `hosts` and `hostname` into it).
pub fn etc_copy(img: &Image, host_dir: &Path) -> Result<PathBuf, String> {
    let dst = host_dir.join("image-etc");
    if dst.exists() {
        std::fs::remove_dir_all(&dst).map_err(|e| format!("cannot clear {}: {e}", dst.display()))?;
    }
    let src = img.rootfs.join("etc");
    if src.is_dir() {
        crate::script::copy_dir(&src, &dst)?;
        make_writable(&dst);
    } else {
        std::fs::create_dir_all(&dst).map_err(|e| format!("cannot create {}: {e}", dst.display()))?;
    }
    // As Docker does: the host's resolver, so that names resolve inside the image as outside.
    let resolv = dst.join("resolv.conf");
    let _ = std::fs::remove_file(&resolv);
    if let Ok(text) = std::fs::read("/etc/resolv.conf") {
        std::fs::write(&resolv, text).map_err(|e| format!("cannot write {}: {e}", resolv.display()))?;
    }
    Ok(dst)
}

/// Image trees may be read-only; the copy must take `hosts` and `hostname`.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(meta) = std::fs::symlink_metadata(&d)
            && meta.is_dir()
        {
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(meta.permissions().mode() | 0o700));
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    for f in ["hosts", "hostname"] {
        let p = dir.join(f);
        if let Ok(meta) = std::fs::symlink_metadata(&p) {
            if meta.file_type().is_symlink() {
                let _ = std::fs::remove_file(&p);
            } else {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644));
            }
        }
    }
}
