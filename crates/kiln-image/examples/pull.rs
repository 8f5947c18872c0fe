//! Pulls an image into a cache directory, as kiln will before running it.
//!
//! ```text
//! cargo run -p kiln-image --example pull -- IMAGE CACHE_DIR [REGISTRIES_TOML]
//! cargo run -p kiln-image --example pull -- busybox /tmp/kiln-images
//! ```
//!
//! REGISTRIES_TOML is a file with `[[registries]]` entries, as in `kiln.toml`.

use std::process::ExitCode;

use kiln_image::{Puller, Registries};

#[derive(serde::Deserialize)]
struct RegistriesFile {
    #[serde(default)]
    registries: Registries,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (image, cache, registries_file) = match args.as_slice() {
        [image, cache] => (image, cache, None),
        [image, cache, file] => (image, cache, Some(file)),
        _ => {
            eprintln!("usage: pull IMAGE CACHE_DIR [REGISTRIES_TOML]");
            return ExitCode::from(2);
        }
    };
    match run(image, cache, registries_file).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ClientError: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(image: &str, cache: &str, registries_file: Option<&String>) -> Result<(), String> {
    let registries = match registries_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            toml::from_str::<RegistriesFile>(&text)
                .map_err(|e| format!("{path}: {e}"))?
                .registries
        }
        None => Registries::default(),
    };
    let puller = Puller::new(cache, registries).map_err(|e| e.to_string())?;
    let pulled = puller
        .pull(image, |progress| eprintln!("{progress}"))
        .await
        .map_err(|e| e.to_string())?;
    println!("image:      {}", pulled.reference);
    println!("digest:     {}", pulled.digest);
    println!("rootfs:     {}", pulled.rootfs.display());
    println!("command:    {:?}", pulled.config.command(&["train".to_owned()]));
    println!("workdir:    {}", pulled.config.working_dir.as_deref().unwrap_or("/"));
    for (name, value) in &pulled.config.env {
        println!("env:        {name}={value}");
    }
    Ok(())
}
