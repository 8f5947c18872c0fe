//! `kiln environments`: the Python environments script-mode jobs run on, shown and built ahead of
//! the first job that needs them (into `<data-dir>/cache`, where agents of this machine find them).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use kiln_agent::environments::{Choice, Tools, catalog, choose, prepare};
use kiln_agent::logs::LogSink;
use kiln_agent::venv::{Direct, Outcome, is_ready};

use crate::config::Settings;

fn cache_dir(settings: &Settings) -> std::path::PathBuf {
    settings.data_dir.join("cache")
}

fn built(cache: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(cache.join("envs")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix) && is_ready(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// `kiln environments list`.
pub fn list(settings: &Settings) -> Result<()> {
    let cache = cache_dir(settings);
    for e in catalog() {
        let tag = e.tags.first().map(String::as_str).unwrap_or("any");
        let built = built(&cache, &format!("{}-{tag}-", e.family));
        println!(
            "{} {} (tags {}; Python {}): {}\n    built: {}\n    source: {}",
            e.family,
            tag,
            e.tags.join(", "),
            e.python,
            e.packages.join(" "),
            if built.is_empty() {
                "no".to_string()
            } else {
                built.join(", ")
            },
            e.source
        );
    }
    if settings.environments.is_empty() {
        println!("No [[environments]] in kiln.toml: every image above gets its pinned environment.");
    }
    for r in &settings.environments {
        println!(
            "[[environments]] image = \"{}\": python = \"{}\", system_site_packages = {}",
            r.image, r.python, r.system_site_packages
        );
    }
    Ok(())
}

/// `kiln environments build IMAGE [--requirements FILE]`.
pub async fn build(settings: &Settings, image: &str, requirements: Option<&Path>) -> Result<()> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let tools = Tools::find(&env).map_err(anyhow::Error::msg)?;
    let choice = choose(image, &settings.environments, catalog());
    if let Choice::Host { why } = &choice
        && requirements.is_none()
    {
        bail!("nothing to build for {image}: {why}; its jobs run on this machine's python3");
    }
    let reqs = match requirements {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let abs = std::fs::canonicalize(path).with_context(|| format!("cannot resolve {}", path.display()))?;
            Some(kiln_agent::environments::Requirements {
                seen_path: abs.display().to_string(),
                seen_dir: abs.parent().map(Path::to_path_buf).unwrap_or_else(|| "/".into()),
                hash: kiln_agent::venv::content_hash(&bytes),
            })
        }
        None => None,
    };
    let cache = cache_dir(settings);
    let sink = LogSink::new(16 * 1024 * 1024, true);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let (outcome, prepared) = prepare(
        &choice,
        reqs.as_ref(),
        &tools,
        &cache,
        &env,
        &sink,
        &stop,
        std::time::Duration::from_secs(10),
        &Direct,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    match outcome {
        Outcome::Ready(_) if prepared.env_dir.is_none() => {
            println!("nothing to build: jobs of {image} run on {}", prepared.python);
            Ok(())
        }
        Outcome::Ready(dir) => {
            println!("ready: {} (python {})", dir.display(), prepared.python);
            Ok(())
        }
        Outcome::Failed { command, .. } => bail!("the build failed at `{command}` (its output is above)"),
        Outcome::Stopped => bail!("the build was stopped"),
    }
}
