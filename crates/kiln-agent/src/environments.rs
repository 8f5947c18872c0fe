//! Which Python a script-mode job runs on. A SageMaker framework image (scikit-learn, XGBoost,
//! PyTorch, TensorFlow, Hugging Face, MXNet) is an environment with that image's pinned library
//! versions (`environments.toml`: what each image ships and where the pins come from), built once
//! into the cache with `uv` (pip where uv is missing), isolated from the host's site-packages; a
//! job's `requirements.txt` is installed on top into an environment of its own (cached by both
//! hashes). The operator's `[[environments]]` map images to interpreters they already have. An
//! image kiln has no pins for runs on the host's `python3`, as before, and the log says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_api::agent::EnvironmentRule;
use serde::Deserialize;

use crate::launch::Spawn;
use crate::logs::LogSink;
use crate::venv::{Build, Outcome, Runner, content_hash, ensure, env_dir};

/// One framework image version and what it ships.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageEnv {
    pub family: String,
    /// Image repositories (the last path segment of the image URI's name) this entry covers.
    pub repositories: Vec<String>,
    /// Version tags: an image tag matches if it equals one, or starts with one followed by `-`.
    pub tags: Vec<String>,
    /// The image's Python (`major.minor`).
    pub python: String,
    /// Pinned requirements, exact versions.
    pub packages: Vec<String>,
    /// Libraries the image installs without an exact version, with the constraints its build
    /// implies (`numpy<2`): installed too, so the resolver picks what the image would.
    #[serde(default)]
    pub unpinned: Vec<String>,
    /// Exact pins of libraries few scripts need (not installed).
    #[serde(default)]
    pub optional: Vec<String>,
    /// The index the packages come from, if not PyPI.
    #[serde(default)]
    pub index_url: String,
    /// The SageMaker toolkits the image carries (kiln implements the toolkit itself).
    #[serde(default)]
    pub toolkit: Vec<String>,
    /// Where the pins come from.
    pub source: String,
}

#[derive(Deserialize)]
struct CatalogFile {
    #[serde(default)]
    image: Vec<ImageEnv>,
}

/// Every image kiln knows the environment of (`environments.toml`, compiled in).
pub fn catalog() -> &'static [ImageEnv] {
    static CATALOG: OnceLock<Vec<ImageEnv>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        toml::from_str::<CatalogFile>(include_str!("../environments.toml"))
            .map(|c| c.image)
            .unwrap_or_default()
    })
}

/// The repository name and tag of an image URI: `…/sagemaker-scikit-learn:1.2-1-cpu-py3` →
/// (`sagemaker-scikit-learn`, `1.2-1-cpu-py3`). A digest reference has no tag.
pub fn repository_and_tag(image: &str) -> (String, Option<String>) {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        Some((repo, tag)) => (repo.to_string(), Some(tag.to_string())),
        None => (last.to_string(), None),
    }
}

/// `*` (any text) and `?` (one character) glob over the whole text.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// What a job's image runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice<'a> {
    /// An interpreter the operator mapped the image to.
    Operator(&'a EnvironmentRule),
    /// The image's pinned environment.
    Pinned(&'a ImageEnv),
    /// The host's `python3`; `why` says why there is nothing better.
    Host { why: String },
}

/// Chooses the environment of `image`: the operator's rules first, then the pinned catalog.
pub fn choose<'a>(image: &str, rules: &'a [EnvironmentRule], catalog: &'a [ImageEnv]) -> Choice<'a> {
    if let Some(rule) = rules.iter().find(|r| glob_match(&r.image, image)) {
        return Choice::Operator(rule);
    }
    let (repo, tag) = repository_and_tag(image);
    let family: Vec<&ImageEnv> = catalog.iter().filter(|e| e.repositories.contains(&repo)).collect();
    if family.is_empty() {
        return Choice::Host {
            why: format!("kiln has no pinned environment for the image repository '{repo}'"),
        };
    }
    let Some(tag) = tag else {
        return Choice::Host {
            why: format!("the image '{image}' names no version tag"),
        };
    };
    let found = family.iter().find(|e| {
        e.tags
            .iter()
            .any(|t| tag == *t || tag.strip_prefix(t.as_str()).is_some_and(|rest| rest.starts_with('-')))
    });
    match found {
        Some(e) => Choice::Pinned(e),
        None => Choice::Host {
            why: format!(
                "kiln has no pinned environment for {repo}:{tag} (it has {})",
                family
                    .iter()
                    .flat_map(|e| e.tags.first())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

/// The tools a build can use on this machine.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `uv`, if installed.
    pub uv: Option<PathBuf>,
    /// The host's `python3`, resolved to its real executable, and its installation prefixes.
    pub python: crate::sandbox::Python,
}

fn find_in_path(program: &str, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    let path = env.get("PATH")?;
    std::env::split_paths(path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

impl Tools {
    /// Finds `uv` and `python3` on the job's `PATH`.
    pub fn find(env: &BTreeMap<String, String>) -> Result<Tools, String> {
        let python = crate::sandbox::locate_python("python3", env)
            .map_err(|e| format!("script mode needs Python 3 on this machine: {e}"))?;
        // `pip install uv` puts the binary beside the interpreter; a `uv` found on PATH may be a
        // launcher script (pyenv's shims) that does not work in a sandbox.
        let beside = python.executable.parent().map(|d| d.join("uv")).filter(|p| p.is_file());
        Ok(Tools {
            uv: beside.or_else(|| find_in_path("uv", env)),
            python,
        })
    }

    /// An interpreter of Python `version` (`3.9`) on this machine, if there is one.
    pub fn python_version(&self, version: &str, env: &BTreeMap<String, String>) -> Option<crate::sandbox::Python> {
        let name = format!("python{version}");
        let found = crate::sandbox::locate_python(&name, env).ok()?;
        Some(found)
    }
}

/// What a script-mode job runs on once prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The interpreter to run the entry point with.
    pub python: String,
    /// The environment directory, if one was built (for `PATH` and `VIRTUAL_ENV`).
    pub env_dir: Option<PathBuf>,
    /// What a sandbox must show read-only for the interpreter to work.
    pub read_only: Vec<PathBuf>,
}

/// A requirements file to layer on top: its path as the build sees it, and its hash.
pub struct Requirements {
    pub seen_path: String,
    pub seen_dir: PathBuf,
    pub hash: String,
}

/// The pins of `image` as this machine can install them. `relaxed`: the framework (the first
/// package) stays exact and every other package may be the newest release of the pinned version's
/// major version (minor, for 0.x versions), for a Python the image's own pins have no builds for.
pub fn pins(image: &ImageEnv, relaxed: bool) -> Vec<String> {
    image
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| if relaxed && i > 0 { relax(p) } else { p.clone() })
        .chain(image.unpinned.iter().cloned())
        .collect()
}

/// `name==1.24.1` → `name>=1.24.1,<2`; `name==0.23.2` → `name>=0.23.2,<0.24`; anything else as is.
fn relax(pin: &str) -> String {
    let Some((name, version)) = pin.split_once("==") else {
        return pin.to_string();
    };
    let release: Vec<u64> = version
        .split(['+', '-'])
        .next()
        .unwrap_or(version)
        .split('.')
        .map_while(|p| p.parse().ok())
        .collect();
    // A lower bound cannot carry a local version label (`+cpu`).
    let base = version.split('+').next().unwrap_or(version);
    match release.as_slice() {
        [0, minor, ..] => format!("{name}>={base},<0.{}", minor + 1),
        [major, ..] => format!("{name}>={base},<{}", major + 1),
        [] => pin.to_string(),
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

/// The steps that create an environment in `dir` from `base` (an interpreter), with `packages`
/// (and an index), then `requirements` on top.
#[allow(clippy::too_many_arguments)]
fn steps(
    tools: &Tools,
    base: &str,
    dir: &Path,
    system_site_packages: bool,
    packages: &[String],
    index_url: &str,
    requirements: Option<&Requirements>,
    env: &BTreeMap<String, String>,
    cwd: &Path,
) -> Vec<Spawn> {
    let d = dir.display().to_string();
    let py = dir.join("bin/python").display().to_string();
    let step = |program: String, args: Vec<String>, cwd: &Path| Spawn {
        program,
        args,
        cwd: cwd.to_path_buf(),
        env: env.clone(),
    };
    let mut out = Vec::new();
    let mut index: Vec<String> = Vec::new();
    if !index_url.is_empty() {
        index = vec![
            "--index-url".into(),
            index_url.into(),
            "--extra-index-url".into(),
            "https://pypi.org/simple".into(),
        ];
        // uv prefers the extra index and stops at the first index that has a package; the best
        // match across both is what pip does and what the pins mean (`torch==2.1.0+cpu`).
        if tools.uv.is_some() {
            index.extend(["--index-strategy".into(), "unsafe-best-match".into()]);
        }
    }
    match &tools.uv {
        Some(uv) => {
            let uv = uv.display().to_string();
            let mut venv = vec!["venv".to_string(), "--python".into(), base.into()];
            if system_site_packages {
                venv.push("--system-site-packages".into());
            }
            venv.push(d);
            out.push(step(uv.clone(), venv, cwd));
            if !packages.is_empty() {
                // Pins install from wheels only: a pin without a build for this Python fails at
                // once (and the relaxed pins are tried) instead of compiling for minutes.
                let mut args = vec![
                    "pip".into(),
                    "install".into(),
                    "--no-build".into(),
                    "--python".into(),
                    py.clone(),
                ];
                args.extend(index.iter().cloned());
                args.extend(packages.iter().cloned());
                out.push(step(uv.clone(), args, cwd));
            }
            if let Some(r) = requirements {
                let args = vec![
                    "pip".into(),
                    "install".into(),
                    "--python".into(),
                    py,
                    "-r".into(),
                    r.seen_path.clone(),
                ];
                out.push(step(uv, args, &r.seen_dir));
            }
        }
        None => {
            let mut venv = vec!["-m".to_string(), "venv".into()];
            if system_site_packages {
                venv.push("--system-site-packages".into());
            }
            venv.push(d);
            out.push(step(base.into(), venv, cwd));
            if !packages.is_empty() {
                let mut args = vec![
                    "-m".into(),
                    "pip".into(),
                    "install".into(),
                    "--only-binary".into(),
                    ":all:".into(),
                ];
                args.extend(index.iter().cloned());
                args.extend(packages.iter().cloned());
                out.push(step(py.clone(), args, cwd));
            }
            if let Some(r) = requirements {
                let args = vec![
                    "-m".into(),
                    "pip".into(),
                    "install".into(),
                    "-r".into(),
                    r.seen_path.clone(),
                ];
                out.push(step(py, args, &r.seen_dir));
            }
        }
    }
    out
}

/// What to build for `choice` (with `requirements` on top), or `None` when the job runs on an
/// interpreter as it is. `notes` receives the lines the job's log should show.
#[allow(clippy::too_many_arguments)]
pub fn plan_build(
    choice: &Choice,
    requirements: Option<&Requirements>,
    tools: &Tools,
    cache_dir: &Path,
    env: &BTreeMap<String, String>,
    relaxed: bool,
    notes: &mut Vec<String>,
) -> Result<(Option<Build>, Prepared), String> {
    let builder = if tools.uv.is_some() { "uv" } else { "pip" };
    let mut read_only = tools.python.prefixes.clone();
    if let Some(uv) = &tools.uv {
        read_only.push(uv.clone());
    }
    let build_env = crate::venv::build_env(env, cache_dir);
    let cwd = PathBuf::from("/");
    let (base, system_site_packages, packages, index_url, label): (String, bool, Vec<String>, String, String) =
        match choice {
            Choice::Operator(rule) => {
                notes.push(format!(
                    "[kiln agent] environment: the image matches [[environments]] image = \"{}\": Python {}",
                    rule.image, rule.python
                ));
                let found = crate::sandbox::locate_python(&rule.python, env)
                    .map_err(|e| format!("the [[environments]] interpreter '{}' for this image: {e}", rule.python))?;
                read_only.extend(found.prefixes.clone());
                if requirements.is_none() {
                    return Ok((
                        None,
                        Prepared {
                            python: found.executable.display().to_string(),
                            env_dir: None,
                            read_only,
                        },
                    ));
                }
                (
                    found.executable.display().to_string(),
                    rule.system_site_packages,
                    Vec::new(),
                    String::new(),
                    format!("operator-{}", short(&content_hash(rule.python.as_bytes()))),
                )
            }
            Choice::Pinned(image) => {
                let python = match tools.python_version(&image.python, env) {
                    Some(p) => {
                        read_only.extend(p.prefixes.clone());
                        p.executable.display().to_string()
                    }
                    None => {
                        notes.push(format!(
                            "[kiln agent] environment: the image's Python is {}, which this machine does not have; using {}",
                            image.python,
                            tools.python.executable.display()
                        ));
                        tools.python.executable.display().to_string()
                    }
                };
                let pinned = pins(image, relaxed);
                notes.push(format!(
                    "[kiln agent] environment: {} {} ({}), from {}",
                    image.family,
                    image.tags.first().map(String::as_str).unwrap_or(""),
                    pinned.join(" "),
                    image.source
                ));
                let label = format!(
                    "{}-{}",
                    image.family,
                    image.tags.first().map(String::as_str).unwrap_or("any")
                );
                (
                    python,
                    false,
                    pinned,
                    image.index_url.clone(),
                    if relaxed { format!("{label}-relaxed") } else { label },
                )
            }
            Choice::Host { why } => {
                notes.push(format!(
                    "[kiln agent] environment: {why}; the script runs on this machine's {}",
                    tools.python.executable.display()
                ));
                if requirements.is_none() {
                    return Ok((
                        None,
                        Prepared {
                            python: tools.python.executable.display().to_string(),
                            env_dir: None,
                            read_only,
                        },
                    ));
                }
                (
                    tools.python.executable.display().to_string(),
                    true,
                    Vec::new(),
                    String::new(),
                    "host".to_string(),
                )
            }
        };
    let key = content_hash(
        format!(
            "{base}\n{system_site_packages}\n{}\n{index_url}\n{builder}\n{}",
            packages.join("\n"),
            requirements.map(|r| r.hash.as_str()).unwrap_or("")
        )
        .as_bytes(),
    );
    let name = format!("{label}-{}", short(&key));
    let dir = env_dir(cache_dir, &name);
    let what = match requirements {
        Some(_) => format!("{label} + requirements.txt"),
        None => label.clone(),
    };
    let build = Build {
        name,
        what,
        steps: steps(
            tools,
            &base,
            &dir,
            system_site_packages,
            &packages,
            &index_url,
            requirements,
            &build_env,
            &cwd,
        ),
        read_only: read_only.clone(),
        read_write: vec![cache_dir.join("uv")],
    };
    read_only.push(dir.clone());
    Ok((
        Some(build),
        Prepared {
            python: dir.join("bin/python").display().to_string(),
            env_dir: Some(dir),
            read_only,
        },
    ))
}

/// Gets the environment of `choice` ready (built, or found in the cache), trying relaxed pins
/// (see [`pins`]) when this machine's Python cannot install the image's own. Returns how the build
/// went and what the job then runs on.
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    choice: &Choice<'_>,
    requirements: Option<&Requirements>,
    tools: &Tools,
    cache_dir: &Path,
    env: &BTreeMap<String, String>,
    sink: &LogSink,
    stop: &tokio::sync::watch::Receiver<bool>,
    grace: std::time::Duration,
    runner: &dyn Runner,
) -> Result<(Outcome, Prepared), String> {
    let mut relaxed = false;
    loop {
        let mut notes = Vec::new();
        let (build, prepared) = plan_build(choice, requirements, tools, cache_dir, env, relaxed, &mut notes)?;
        for n in notes {
            sink.line(n);
        }
        let Some(build) = build else {
            return Ok((Outcome::Ready(PathBuf::new()), prepared));
        };
        let outcome = ensure(build, cache_dir, sink, stop, grace, runner).await?;
        let pins_failed = matches!(&outcome, Outcome::Failed { command, .. }
            if command.contains("--no-build") || command.contains("--only-binary"));
        if pins_failed && !relaxed && matches!(choice, Choice::Pinned(_)) {
            sink.line(
                "[kiln agent] environment: the image's exact pins have no builds for this machine's Python; \
                 keeping the framework's version and taking the newest release of each other package's pinned \
                 major version",
            );
            relaxed = true;
            continue;
        }
        return Ok((outcome, prepared));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_well_formed() {
        let c = catalog();
        assert!(!c.is_empty(), "environments.toml did not parse");
        for e in c {
            assert!(!e.repositories.is_empty() && !e.tags.is_empty(), "{e:?}");
            assert!(e.python.starts_with("3."), "{e:?}");
            assert!(!e.source.is_empty(), "{e:?}");
            for p in &e.packages {
                assert!(p.contains("=="), "pins are exact: {p} in {}", e.family);
            }
        }
    }

    #[test]
    fn relaxed_pins_keep_the_framework_and_the_major_versions() {
        let mut e = entry(&["1.2-1"]);
        e.packages = vec![
            "scikit-learn==1.2.1".into(),
            "numpy==1.24.1".into(),
            "joblib==0.14.1".into(),
            "torch==2.1.0+cpu".into(),
            "odd>=1".into(),
        ];
        assert_eq!(pins(&e, false), e.packages);
        assert_eq!(
            pins(&e, true),
            [
                "scikit-learn==1.2.1",
                "numpy>=1.24.1,<2",
                "joblib>=0.14.1,<0.15",
                "torch>=2.1.0,<3",
                "odd>=1"
            ]
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "*pytorch-training:*",
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("*sklearn*", "xgboost"));
    }

    #[test]
    fn repositories_and_tags() {
        assert_eq!(
            repository_and_tag("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"),
            ("sagemaker-scikit-learn".into(), Some("1.2-1-cpu-py3".into()))
        );
        assert_eq!(repository_and_tag("localhost:5000/x@sha256:ab"), ("x".into(), None));
    }

    fn entry(tags: &[&str]) -> ImageEnv {
        ImageEnv {
            family: "sklearn".into(),
            repositories: vec!["sagemaker-scikit-learn".into()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            python: "3.9".into(),
            packages: vec!["scikit-learn==1.2.1".into()],
            unpinned: Vec::new(),
            optional: Vec::new(),
            index_url: String::new(),
            toolkit: Vec::new(),
            source: "test".into(),
        }
    }

    #[test]
    fn choices() {
        let catalog = vec![entry(&["1.2-1"]), entry(&["1.0-1"])];
        let img = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3";
        assert_eq!(choose(img, &[], &catalog), Choice::Pinned(&catalog[0]));
        assert_eq!(
            choose("x/sagemaker-scikit-learn:1.0-1", &[], &catalog),
            Choice::Pinned(&catalog[1])
        );
        // "1.2-10" is not "1.2-1": a tag matches whole or before a '-'.
        assert!(matches!(
            choose("x/sagemaker-scikit-learn:1.2-10", &[], &catalog),
            Choice::Host { .. }
        ));
        assert!(matches!(choose("x/other:1", &[], &catalog), Choice::Host { .. }));
        let rules = vec![EnvironmentRule {
            image: "*scikit-learn*".into(),
            python: "/usr/bin/python3".into(),
            system_site_packages: true,
        }];
        assert_eq!(choose(img, &rules, &catalog), Choice::Operator(&rules[0]));
    }
}
