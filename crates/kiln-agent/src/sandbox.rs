//! The sandbox a host's algorithm runs in, as SageMaker runs a container: bubblewrap (`bwrap`,
//! unprivileged user namespaces) with the host's tree mounted at `/opt/ml` (the only writable part
//! of the machine), the system directories read-only, a private `/tmp`, `/dev/shm`, `/run` and home,
//! its own process, IPC and UTS namespaces (hostname `algo-K`, an `/etc/hosts` naming every host of
//! the job), and nothing else: not the data directory, not other jobs' trees or processes. The
//! network is the machine's, so the hosts of a job and kiln's endpoints stay reachable.
//!
//! A spawn is wrapped after it was built with the paths the sandbox shows ([`Tree::seen`]); the
//! program must live in a directory the sandbox shows (the system, or a path in
//! [`View::read_only`]).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::launch::Spawn;
use crate::tree::Tree;

/// Top-level directories of the machine shown read-only (where they are directories; on a merged
/// `/usr` system `bin`, `lib`, ... are symbolic links, recreated as such).
const SYSTEM_DIRS: &[&str] = &["usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "sys"];

/// The home directory inside the sandbox (a private tmpfs).
pub const HOME: &str = "/home/algo";

/// A working bubblewrap.
#[derive(Debug, Clone)]
pub struct Sandbox {
    bwrap: PathBuf,
}

/// What one sandbox shows.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub tree: &'a Tree,
    /// The host's name (`algo-K`).
    pub hostname: &'a str,
    /// Every host of the job and its address, for `/etc/hosts`.
    pub hosts: BTreeMap<String, String>,
    /// More paths shown read-only at their own place (interpreters, environments, the kiln binary).
    pub read_only: Vec<PathBuf>,
    /// Paths shown writable at their own place (an environment being built).
    pub read_write: Vec<PathBuf>,
    /// The warm pool's cache, shown writable at `/opt/ml/sagemaker/warmpoolcache`.
    pub warm_pool_cache: Option<PathBuf>,
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

impl Sandbox {
    /// Finds `bwrap` and checks once per process that it can build a sandbox on this machine (user
    /// namespaces allowed, the system mountable). The error says what is missing.
    pub fn probe() -> Result<Sandbox, String> {
        static PROBED: OnceLock<Result<Sandbox, String>> = OnceLock::new();
        PROBED.get_or_init(probe_uncached).clone()
    }

    /// The `bwrap` command line that runs `spawn` inside the sandbox of `view`. The spawn's program,
    /// arguments, working directory and environment are taken as the sandbox shows them.
    pub fn wrap(&self, spawn: Spawn, view: &View) -> Result<Spawn, String> {
        let hosts_file = view.tree.host_dir.join("etc-hosts");
        std::fs::write(&hosts_file, hosts_text(view.hostname, &view.hosts))
            .map_err(|e| format!("cannot write {}: {e}", hosts_file.display()))?;
        let hostname_file = view.tree.host_dir.join("etc-hostname");
        std::fs::write(&hostname_file, format!("{}\n", view.hostname))
            .map_err(|e| format!("cannot write {}: {e}", hostname_file.display()))?;
        let mut args = base_args(view.hostname);
        let bind = |args: &mut Vec<String>, how: &str, src: &Path, dst: &Path| {
            args.extend([how.to_string(), os(src), os(dst)]);
        };
        for extra in &view.read_only {
            if extra.exists() && !is_system(extra) {
                bind(&mut args, "--ro-bind", extra, extra);
            }
        }
        for rw in &view.read_write {
            bind(&mut args, "--bind", rw, rw);
        }
        bind(&mut args, "--ro-bind", &hosts_file, Path::new("/etc/hosts"));
        bind(&mut args, "--ro-bind", &hostname_file, Path::new("/etc/hostname"));
        args.extend(["--bind".into(), os(&view.tree.root), crate::tree::CONTAINER_ROOT.into()]);
        if let Some(cache) = &view.warm_pool_cache {
            args.extend([
                "--bind".into(),
                os(cache),
                format!("{}/sagemaker/warmpoolcache", crate::tree::CONTAINER_ROOT),
            ]);
        }
        for gpu in gpu_devices() {
            args.extend(["--dev-bind".into(), os(&gpu), os(&gpu)]);
        }
        args.extend(["--chdir".into(), os(&spawn.cwd), "--".into(), spawn.program.clone()]);
        args.extend(spawn.args);
        let mut env = spawn.env;
        env.insert("HOME".into(), HOME.into());
        env.insert("HOSTNAME".into(), view.hostname.into());
        Ok(Spawn {
            program: self.bwrap.display().to_string(),
            args,
            // bwrap itself starts outside: anywhere that exists.
            cwd: PathBuf::from("/"),
            env,
        })
    }
}

impl Sandbox {
    /// The `bwrap` command line that runs `spawn` with an image's root file system as `/`: the
    /// image's directories read-only over a scratch root (so mount points the image lacks can be
    /// made), `etc` (a copy of the image's, holding this host's `hosts` and `hostname`), private
    /// `/tmp`, `/run` and home, the tree at `/opt/ml`. `spawn`'s paths are the image's.
    pub fn wrap_image(
        &self,
        spawn: Spawn,
        view: &View,
        rootfs: &Path,
        etc: &Path,
        home: &str,
    ) -> Result<Spawn, String> {
        let mut args: Vec<String> = [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--hostname",
            view.hostname,
            "--tmpfs",
            "/",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let own = ["proc", "dev", "tmp", "etc", "opt", "run", "sys"];
        let bind_children = |args: &mut Vec<String>, dir: &Path, at: &Path, skip: &[&str]| -> Result<(), String> {
            let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(text) = name.to_str() else { continue };
                if skip.contains(&text) {
                    continue;
                }
                let (src, dst) = (e.path(), at.join(text));
                match e.file_type() {
                    Ok(t) if t.is_symlink() => {
                        if let Ok(target) = std::fs::read_link(&src) {
                            args.extend(["--symlink".into(), os(&target), os(&dst)]);
                        }
                    }
                    Ok(_) => args.extend(["--ro-bind".into(), os(&src), os(&dst)]),
                    Err(_) => {}
                }
            }
            Ok(())
        };
        bind_children(&mut args, rootfs, Path::new("/"), &own)?;
        if rootfs.join("opt").is_dir() {
            bind_children(&mut args, &rootfs.join("opt"), Path::new("/opt"), &["ml"])?;
        }
        std::fs::write(etc.join("hosts"), hosts_text(view.hostname, &view.hosts))
            .map_err(|e| format!("cannot write {}: {e}", etc.join("hosts").display()))?;
        std::fs::write(etc.join("hostname"), format!("{}\n", view.hostname))
            .map_err(|e| format!("cannot write {}: {e}", etc.join("hostname").display()))?;
        args.extend(["--ro-bind".into(), os(etc), "/etc".into()]);
        args.extend(["--ro-bind".into(), "/sys".into(), "/sys".into()]);
        for dir in ["/tmp", "/run", home] {
            args.extend(["--tmpfs".into(), dir.into()]);
        }
        args.extend(["--proc".into(), "/proc".into(), "--dev".into(), "/dev".into()]);
        args.extend(["--bind".into(), os(&view.tree.root), crate::tree::CONTAINER_ROOT.into()]);
        if let Some(cache) = &view.warm_pool_cache {
            args.extend([
                "--bind".into(),
                os(cache),
                format!("{}/sagemaker/warmpoolcache", crate::tree::CONTAINER_ROOT),
            ]);
        }
        for gpu in gpu_devices() {
            args.extend(["--dev-bind".into(), os(&gpu), os(&gpu)]);
        }
        args.extend(["--chdir".into(), os(&spawn.cwd), "--".into(), spawn.program.clone()]);
        args.extend(spawn.args);
        Ok(Spawn {
            program: self.bwrap.display().to_string(),
            args,
            cwd: PathBuf::from("/"),
            env: spawn.env,
        })
    }
}

fn os(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Whether `p` is already shown by the system directories.
fn is_system(p: &Path) -> bool {
    let mut parts = p.components().skip(1);
    parts
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .is_some_and(|top| SYSTEM_DIRS.contains(&top))
}

/// The sandbox's skeleton: namespaces, the system read-only, private scratch directories.
fn base_args(hostname: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--hostname",
        hostname,
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for name in SYSTEM_DIRS {
        let path = Path::new("/").join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&path) {
                    args.extend(["--symlink".into(), os(&target), os(&path)]);
                }
            }
            Ok(m) if m.is_dir() => args.extend(["--ro-bind".into(), os(&path), os(&path)]),
            _ => {}
        }
    }
    for dir in ["/tmp", "/var/tmp", "/run", HOME] {
        args.extend(["--tmpfs".into(), dir.into()]);
    }
    args.extend(["--proc".into(), "/proc".into(), "--dev".into(), "/dev".into()]);
    args
}

/// The address of host `algo-K` when it runs on this machine: a loopback address of its own,
/// `127.0.1.K` (`127.0.2.0` for K = 256 and so on), so that hosts that share a machine are still
/// different machines to what compares addresses (OpenMPI places ranks by them) while every
/// socket bound to `0.0.0.0` or to the address answers. Names other than `algo-K` get 127.0.0.1.
pub fn local_address(host: &str) -> String {
    match host.strip_prefix("algo-").and_then(|k| k.parse::<u32>().ok()) {
        Some(k) if k < 254 * 256 => format!("127.0.{}.{}", 1 + k / 256, k % 256),
        _ => "127.0.0.1".into(),
    }
}

/// `/etc/hosts` of a host: itself and every host of the job (127.0.0.1 unless an address is known).
pub fn hosts_text(hostname: &str, hosts: &BTreeMap<String, String>) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mut named = false;
    for (name, addr) in hosts {
        out.push_str(&format!("{addr}\t{name}\n"));
        named |= name == hostname;
    }
    if !named {
        out.push_str(&format!("127.0.0.1\t{hostname}\n"));
    }
    out
}

/// NVIDIA device nodes of the machine, shown to jobs that may use GPUs.
fn gpu_devices() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with("nvidia"))
        })
        .collect()
}

fn probe_uncached() -> Result<Sandbox, String> {
    let bwrap = find_in_path("bwrap").ok_or(
        "bubblewrap (`bwrap`) is not installed; install Debian's `bubblewrap` package, or set [jobs] sandbox = \"none\"",
    )?;
    let mut args = base_args("kiln-probe");
    args.extend(["--".into(), "/bin/true".into()]);
    let out = std::process::Command::new(&bwrap)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(format!(
            "bubblewrap cannot build a sandbox on this machine ({why}); unprivileged user namespaces may be \
             disabled (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)"
        ));
    }
    Ok(Sandbox { bwrap })
}

/// The interpreter `python` resolves to and the directory tree it needs (its installation prefix),
/// asked of the interpreter itself: launchers such as pyenv's shims are resolved to the real
/// executable, which the sandbox then shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Python {
    pub executable: PathBuf,
    /// `sys.base_prefix` and, for a virtualenv, `sys.prefix`.
    pub prefixes: Vec<PathBuf>,
}

/// Asks `python` (a name on `PATH` or a path) where it lives; the answer is kept for the process
/// (launchers such as pyenv's shims take a good part of a second to answer).
pub fn locate_python(python: &str, env: &BTreeMap<String, String>) -> Result<Python, String> {
    type Found = std::collections::HashMap<(String, String), Result<Python, String>>;
    static FOUND: OnceLock<std::sync::Mutex<Found>> = OnceLock::new();
    let key = (python.to_string(), env.get("PATH").cloned().unwrap_or_default());
    let cache = FOUND.get_or_init(Default::default);
    if let Some(found) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return found;
    }
    let found = locate_python_uncached(python, env);
    if let Ok(mut c) = cache.lock() {
        c.insert(key, found.clone());
    }
    found
}

fn locate_python_uncached(python: &str, env: &BTreeMap<String, String>) -> Result<Python, String> {
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys; print(sys.executable); print(sys.prefix); print(sys.base_prefix)",
        ])
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{python}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{python}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(PathBuf::from);
    let (Some(executable), Some(prefix), Some(base)) = (lines.next(), lines.next(), lines.next()) else {
        return Err(format!("`{python}` did not say where it lives"));
    };
    let mut prefixes = vec![base];
    if !prefixes.contains(&prefix) {
        prefixes.push(prefix);
    }
    Ok(Python { executable, prefixes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_name_every_host() {
        let hosts: BTreeMap<String, String> = [("algo-1", "10.0.0.1"), ("algo-2", "10.0.0.2")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let text = hosts_text("algo-2", &hosts);
        assert!(text.contains("10.0.0.1\talgo-1\n") && text.contains("10.0.0.2\talgo-2\n"));
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts_text("algo-1", &BTreeMap::new()).contains("127.0.0.1\talgo-1\n"));
        assert_eq!(local_address("algo-1"), "127.0.1.1");
        assert_eq!(local_address("algo-256"), "127.0.2.0");
        assert_eq!(local_address("node7"), "127.0.0.1");
    }

    #[test]
    fn system_paths_are_not_bound_twice() {
        assert!(is_system(Path::new("/usr/lib/python3")));
        assert!(!is_system(Path::new("/root/.pyenv/versions/3.11.7")));
        assert!(!is_system(Path::new("/usrx/y")));
    }
}
