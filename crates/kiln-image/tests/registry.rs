//! Pulls from a real registry (Debian's `docker-registry`) images that the test writes as OCI
//! layouts and pushes with `skopeo`: a busybox image of three layers (gzip, plain tar, zstd) with a
//! whiteout and an opaque directory, the same as a Docker schema 2 image, and a two-platform index.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use kiln_image::{Image, Platform, Progress, PullError, Puller, Registries, RegistrySettings};
use serde_json::json;
use support::{Entry, Layer, OciLayout, PASSWORD, Registry, TestResult, Tools, USER};

/// The test image's layout: tag `1` (OCI, three layers), `docker` (two gzip layers, pushed as
/// Docker schema 2) and `multi` (an index: this host's architecture and another one).
struct Images {
    layout: OciLayout,
    /// sha256 of the `multi` index as written.
    index_digest: String,
    _dir: tempfile::TempDir,
}

fn build_images(tools: &Tools) -> Result<Images, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut layout = OciLayout::new(dir.path().join("oci"))?;
    let busybox = std::fs::read(&tools.busybox)?;
    let base = support::tar(&[
        Entry::Dir("bin"),
        Entry::File("bin/busybox", 0o755, &busybox),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::File("etc/removed.txt", 0o644, b"deleted by a whiteout in layer 2"),
        Entry::File("etc/kept.txt", 0o644, b"kept"),
        Entry::File("opt/data/old.txt", 0o644, b"hidden by an opaque directory in layer 2"),
    ])?;
    let train = support::tar(&[
        Entry::File(
            "train",
            0o755,
            b"#!/bin/sh\necho \"training with $GREETING in $(pwd)\"\n",
        ),
        Entry::File("etc/.wh.removed.txt", 0o644, b""),
        Entry::File("opt/data/.wh..wh..opq", 0o644, b""),
        Entry::File("opt/data/new.txt", 0o644, b"new"),
        Entry::HardLink("bin/linked", "bin/busybox"),
        Entry::Dir("opt/ml/code"),
    ])?;
    let extra = support::tar(&[Entry::File("etc/zstd.txt", 0o600, b"from a zstd layer")])?;
    let config = |arch: &str| {
        json!({
            "architecture": arch, "os": "linux",
            "config": {
                "Entrypoint": ["/bin/sh", "/train"],
                "Env": ["PATH=/bin", "GREETING=hello", format!("ARCH={arch}")],
                "WorkingDir": "/opt/ml/code",
                "ExposedPorts": {"8080/tcp": {}}
            }
        })
    };
    let host = Platform::host().architecture;

    let (image, _) = layout.image(
        &[
            Layer::gzip(base.clone())?,
            Layer::plain(train.clone()),
            Layer::zstd(extra),
        ],
        config(&host),
    )?;
    layout.tag(&image, "1")?;
    let (docker, _) = layout.image(&[Layer::gzip(base.clone())?, Layer::gzip(train)?], config(&host))?;
    layout.tag(&docker, "docker")?;
    let other = if host == "s390x" { "ppc64le" } else { "s390x" };
    let (foreign, _) = layout.image(&[Layer::gzip(base.clone())?], config(other))?;
    let (native, _) = layout.image(&[Layer::gzip(base)?], config(&host))?;
    let (index, index_bytes) = layout.index(&[(foreign, other), (native, &host)])?;
    layout.tag(&index, "multi")?;
    Ok(Images {
        layout,
        index_digest: support::sha256(&index_bytes),
        _dir: dir,
    })
}

async fn pull_logged(puller: &Puller, image: &str) -> (Result<Image, PullError>, Vec<Progress>) {
    let mut events = Vec::new();
    let result = puller.pull(image, |p| events.push(p)).await;
    (result, events)
}

fn run(rootfs: &Path, args: &[&str], env: &[(String, String)]) -> Result<String, Box<dyn std::error::Error>> {
    let output = Command::new(rootfs.join("bin/busybox"))
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .output()?;
    if !output.status.success() {
        return Err(format!("busybox {args:?} failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test]
async fn pulls_unpacks_and_caches_images_from_a_real_registry() -> TestResult {
    let Some(tools) = support::tools() else { return Ok(()) };
    let images = build_images(&tools)?;
    let registry = Registry::start(&tools, false)?;
    registry.push(&tools, &images.layout.dir, "1", "kiln/test:1", &[])?;
    registry.push(
        &tools,
        &images.layout.dir,
        "docker",
        "kiln/test:docker",
        &["--format", "v2s2"],
    )?;
    registry.push(
        &tools,
        &images.layout.dir,
        "multi",
        "kiln/test:multi",
        &["--all", "--preserve-digests"],
    )?;
    let host = registry.host();
    let cache = tempfile::tempdir()?;
    let puller = Puller::new(cache.path(), Registries::default())?;

    // A first pull downloads and unpacks three layers, reporting each.
    let reference = format!("{host}/kiln/test:1");
    let (image, events) = pull_logged(&puller, &reference).await;
    let image = image?;
    assert!(!image.from_cache);
    assert!(
        matches!(events.first(), Some(Progress::Resolved { layers: 3, .. })),
        "{events:?}"
    );
    let finished: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Progress::Layer {
                index,
                done,
                total,
                cached: false,
                ..
            } if done == total => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(finished, vec![1, 2, 3], "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Progress::Unpacking { .. }))
            .count(),
        3
    );
    assert!(matches!(events.last(), Some(Progress::Ready { from_cache: false, .. })));
    assert_eq!(
        image.rootfs,
        cache
            .path()
            .join("images/sha256")
            .join(image.digest.hex())
            .join("rootfs")
    );

    // The rootfs: files of both layers, the whiteout and the opaque directory applied, links kept.
    let rootfs = &image.rootfs;
    assert_eq!(std::fs::read_to_string(rootfs.join("etc/kept.txt"))?, "kept");
    assert!(
        !rootfs.join("etc/removed.txt").exists(),
        "the whiteout deleted the first layer's file"
    );
    assert!(
        !rootfs.join("opt/data/old.txt").exists(),
        "the opaque directory hid the first layer's file"
    );
    assert_eq!(std::fs::read_to_string(rootfs.join("opt/data/new.txt"))?, "new");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/zstd.txt"))?,
        "from a zstd layer"
    );
    assert_eq!(std::fs::read_link(rootfs.join("bin/sh"))?, Path::new("busybox"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(rootfs.join("bin/linked"))?.ino(),
        std::fs::metadata(rootfs.join("bin/busybox"))?.ino()
    );
    assert_eq!(std::fs::metadata(rootfs.join("etc/zstd.txt"))?.mode() & 0o777, 0o600);
    assert!(image.dir.join("config.json").is_file() && image.dir.join("manifest.json").is_file());

    // The config, and the unpacked busybox runs the image's own script.
    let config = &image.config;
    assert_eq!(config.entrypoint, vec!["/bin/sh", "/train"]);
    assert_eq!(config.command(&["train".into()]), vec!["/bin/sh", "/train", "train"]);
    assert!(config.env.contains(&("GREETING".into(), "hello".into())));
    assert_eq!(config.working_dir.as_deref(), Some("/opt/ml/code"));
    assert_eq!(config.exposed_ports, vec!["8080/tcp"]);
    assert_eq!(run(rootfs, &["echo", "ok"], &[])?, "ok\n");
    let script = rootfs.join("train").display().to_string();
    let workdir = rootfs.join("opt/ml/code").display().to_string();
    let out = run(
        rootfs,
        &["sh", "-c", &format!("cd {workdir} && sh {script}")],
        &config.env,
    )?;
    assert_eq!(out, format!("training with hello in {workdir}\n"));

    // A second pull of the tag is served from the cache (one HEAD for the tag).
    let (again, events) = pull_logged(&puller, &reference).await;
    let again = again?;
    assert!(again.from_cache);
    assert_eq!(again.digest, image.digest);
    assert!(
        matches!(events.as_slice(), [Progress::Ready { from_cache: true, .. }]),
        "{events:?}"
    );

    // The Docker schema 2 copy: same files, layers shared with the OCI image not downloaded again.
    let (docker, events) = pull_logged(&puller, &format!("{host}/kiln/test:docker")).await;
    let docker = docker?;
    assert_ne!(docker.digest, image.digest);
    assert!(!docker.rootfs.join("etc/removed.txt").exists());
    assert_eq!(
        run(
            &docker.rootfs,
            &["cat", &docker.rootfs.join("opt/data/new.txt").display().to_string()],
            &[]
        )?,
        "new"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(docker.dir.join("manifest.json"))?)?;
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Progress::Layer { cached: false, .. })),
        "{events:?}"
    );

    // The index: this host's platform is chosen.
    let (multi, _) = pull_logged(&puller, &format!("{host}/kiln/test:multi")).await;
    let multi = multi?;
    let arch = Platform::host().architecture;
    assert!(
        multi.config.env.contains(&("ARCH".into(), arch.clone())),
        "{:?}",
        multi.config.env
    );
    // Another platform can be asked for, and one the index lacks is a clear error.
    let other = if arch == "s390x" { "ppc64le" } else { "s390x" };
    let other_puller = Puller::new(cache.path(), Registries::default())?.with_platform(Platform {
        os: "linux".into(),
        architecture: other.into(),
        variant: None,
    });
    let (foreign, _) = pull_logged(&other_puller, &format!("{host}/kiln/test:multi")).await;
    assert!(foreign?.config.env.contains(&("ARCH".into(), other.into())));
    let riscv = Puller::new(cache.path(), Registries::default())?.with_platform(Platform {
        os: "linux".into(),
        architecture: "riscv64".into(),
        variant: None,
    });
    let message = riscv
        .pull(&format!("{host}/kiln/test:multi"), |_| {})
        .await
        .err()
        .map(|e| e.to_string());
    let message = message.unwrap_or_default();
    assert!(
        message.contains("no linux/riscv64 variant") && message.contains(&format!("linux/{arch}")),
        "{message}"
    );

    // A missing tag and a missing repository: the registry's own answer, the image and the registry named.
    let missing = puller.pull(&format!("{host}/kiln/test:nope"), |_| {}).await;
    let Err(error @ PullError::NotFound { .. }) = missing else {
        panic!("expected NotFound, got {missing:?}")
    };
    let message = error.to_string();
    assert!(error.is_client_error());
    assert!(message.contains(&format!("'{host}/kiln/test:nope'")), "{message}");
    assert!(message.contains(&format!("registry {host}")), "{message}");
    assert!(message.contains("MANIFEST_UNKNOWN"), "{message}");
    let absent = puller.pull(&format!("{host}/kiln/absent:1"), |_| {}).await;
    let Err(error @ PullError::NotFound { .. }) = absent else {
        panic!("expected NotFound, got {absent:?}")
    };
    assert!(
        error.to_string().contains("'127.0.0.1:") && error.to_string().contains("/kiln/absent:1'"),
        "{error}"
    );

    // A mirror: an ECR name served by the local registry, into a fresh cache.
    let mirrored_cache = tempfile::tempdir()?;
    let mirrors = Registries::new(vec![RegistrySettings {
        host: "*.dkr.ecr.*.amazonaws.com".into(),
        mirror: Some(host.clone()),
        insecure: Some(true),
        ..Default::default()
    }])?;
    let mirrored = Puller::new(mirrored_cache.path(), mirrors)?
        .pull("123456789012.dkr.ecr.us-east-1.amazonaws.com/kiln/test:1", |_| {})
        .await?;
    assert_eq!(mirrored.digest, image.digest);
    assert!(!mirrored.from_cache);

    // Two processes pulling one image into one cache end with one good copy.
    let shared_cache = tempfile::tempdir()?;
    let helpers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .args([
                    "--exact",
                    "helper_pull_from_env",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("KILN_IMAGE_HELPER_PULL", &reference)
                .env("KILN_IMAGE_HELPER_CACHE", shared_cache.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for helper in helpers {
        let output = helper.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(&format!("pulled {}", image.digest)), "{stdout}");
    }
    let installed = std::fs::read_dir(shared_cache.path().join("images/sha256"))?.count();
    let leftovers = std::fs::read_dir(shared_cache.path().join("tmp"))?.count();
    assert_eq!((installed, leftovers), (1, 0));

    // By digest, with the registry gone: no network at all, for the manifest and for the index.
    let index_digest = images.index_digest.clone();
    drop(registry);
    let pinned = puller
        .pull(&format!("{host}/kiln/test@{}", image.digest), |_| {})
        .await?;
    assert!(pinned.from_cache);
    let pinned_index = puller.pull(&format!("{host}/kiln/test@{index_digest}"), |_| {}).await?;
    assert_eq!(pinned_index.digest, multi.digest);
    // A tag needs the registry, which is gone now: unreachable, clearly.
    let gone = puller.pull(&reference, |_| {}).await;
    let Err(error @ PullError::Unreachable { .. }) = gone else {
        panic!("expected Unreachable, got {gone:?}")
    };
    assert!(
        error.to_string().contains(&format!("registry {host} is unreachable")),
        "{error}"
    );
    Ok(())
}

/// Run by the test above as a separate process: pulls $KILN_IMAGE_HELPER_PULL into $KILN_IMAGE_HELPER_CACHE.
#[tokio::test]
#[ignore = "a helper process of pulls_unpacks_and_caches_images_from_a_real_registry"]
async fn helper_pull_from_env() -> TestResult {
    let (Some(image), Some(cache)) = (
        std::env::var_os("KILN_IMAGE_HELPER_PULL"),
        std::env::var_os("KILN_IMAGE_HELPER_CACHE"),
    ) else {
        return Ok(());
    };
    let image = image.to_string_lossy().into_owned();
    let pulled = Puller::new(cache, Registries::default())?.pull(&image, |_| {}).await?;
    assert!(run(&pulled.rootfs, &["true"], &[]).is_ok());
    println!("pulled {}", pulled.digest);
    Ok(())
}

#[tokio::test]
async fn basic_auth_refuses_bad_credentials_and_accepts_good_ones() -> TestResult {
    let Some(tools) = support::tools() else { return Ok(()) };
    let images = build_images(&tools)?;
    let registry = Registry::start(&tools, true)?;
    let creds = format!("{USER}:{PASSWORD}");
    registry.push(
        &tools,
        &images.layout.dir,
        "1",
        "kiln/private:1",
        &["--dest-creds", &creds],
    )?;
    let host = registry.host();
    let reference = format!("{host}/kiln/private:1");
    let cache = tempfile::tempdir()?;
    let with = |username: Option<&str>, password: Option<&str>| -> Result<Puller, Box<dyn std::error::Error>> {
        let registries = Registries::new(vec![RegistrySettings {
            host: "127.0.0.1:*".into(),
            username: username.map(Into::into),
            password: password.map(Into::into),
            ..Default::default()
        }])?;
        Ok(Puller::new(cache.path(), registries)?)
    };

    let anonymous = with(None, None)?.pull(&reference, |_| {}).await;
    let Err(error @ PullError::Denied { .. }) = anonymous else {
        panic!("expected Denied, got {anonymous:?}")
    };
    let message = error.to_string();
    assert!(
        message.contains(&format!("'{reference}'")) && message.contains("HTTP 401"),
        "{message}"
    );
    assert!(message.contains("needs credentials"), "{message}");

    let wrong = with(Some(USER), Some("wrong"))?.pull(&reference, |_| {}).await;
    let Err(error @ PullError::Denied { .. }) = wrong else {
        panic!("expected Denied, got {wrong:?}")
    };
    let message = error.to_string();
    assert!(
        message.contains("credentials of user 'kiln'") && message.contains("were refused"),
        "{message}"
    );
    assert!(
        !message.contains("wrong"),
        "the password never appears in a message: {message}"
    );

    let good = with(Some(USER), Some(PASSWORD))?.pull(&reference, |_| {}).await?;
    assert_eq!(run(&good.rootfs, &["echo", "ok"], &[])?, "ok\n");
    assert!(!good.rootfs.join("etc/removed.txt").exists());
    Ok(())
}

/// The progress callback can feed a log shared with other tasks.
#[tokio::test]
async fn progress_lines_read_like_a_log() -> TestResult {
    let Some(tools) = support::tools() else { return Ok(()) };
    let images = build_images(&tools)?;
    let registry = Registry::start(&tools, false)?;
    registry.push(
        &tools,
        &images.layout.dir,
        "docker",
        "kiln/log:1",
        &["--format", "v2s2"],
    )?;
    let cache = tempfile::tempdir()?;
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = log.clone();
    let puller = Puller::new(cache.path(), Registries::default())?;
    let image = format!("{}/kiln/log:1", registry.host());
    let task = tokio::spawn(async move {
        puller
            .pull(&image, move |p| {
                if let Ok(mut lines) = sink.lock() {
                    lines.push(p.to_string());
                }
            })
            .await
    });
    task.await??;
    let lines = log.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        lines[0].starts_with("pulling image sha256:") && lines[0].contains("2 layers"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("layer 1/2 ") && l.contains(" of ")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("unpacking layer 2/2 ")), "{lines:?}");
    assert!(
        lines.last().is_some_and(|l| l.ends_with("pulled and unpacked")),
        "{lines:?}"
    );
    Ok(())
}
