//! Input channels into `input/data/<channel>/` (reference §7), the source bundle into `code/`, and
//! the artifacts out to `<output_prefix>/`. Which objects a host gets and where they land is
//! decided by pure functions ([`prefix_layout`], [`parse_manifest`], [`shard`]); the object access
//! itself goes through `kiln-blob`.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use kiln_api::agent::Assignment;
use kiln_api::shapes::{Channel, CreateTrainingJobRequest};

use crate::pipe::PipeChannel;
use crate::tree::{Tree, channel_distribution, channel_input_mode, safe_relative, sorted_hosts};

/// Where the objects under an `S3Prefix` go, relative to the channel directory.
///
/// As the SDK's local mode lays them out: a URI that names exactly one object puts it at
/// `<channel>/<basename>`; otherwise each key that starts with the (raw) prefix goes to
/// `key[len(prefix):].lstrip('/')`, keys ending in `/` (folder markers) are skipped. `keys` must
/// all start with `prefix`. A key that would land outside the channel is refused.
pub fn prefix_layout(prefix: &str, keys: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    if !prefix.is_empty() && !prefix.ends_with('/') && keys.iter().any(|k| k == prefix) {
        let base = prefix.rsplit('/').next().unwrap_or(prefix);
        let rel = safe_relative(base).map_err(|e| format!("object key '{prefix}' {e}"))?;
        return Ok(vec![(prefix.to_string(), rel)]);
    }
    let mut out = Vec::new();
    for key in keys {
        if key.ends_with('/') {
            continue;
        }
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        let rel = safe_relative(rest.trim_start_matches('/'))
            .map_err(|e| format!("object key '{key}' cannot be placed in the channel directory: {e}"))?;
        out.push((key.clone(), rel));
    }
    Ok(out)
}

/// A manifest file: `[{"prefix": "s3://bucket/p/"}, "rel/a", "rel/b", ...]` → the prefix URI and
/// the entries (each object is prefix + entry).
pub fn parse_manifest(text: &str) -> Result<(String, Vec<String>), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the manifest is not valid JSON ({e})"))?;
    let Some(items) = v.as_array() else {
        return Err(
            "the manifest must be a JSON array: [{\"prefix\": \"s3://bucket/prefix/\"}, \"relative/key\", ...]".into(),
        );
    };
    let Some(prefix) = items.first().and_then(|f| f.get("prefix")).and_then(|p| p.as_str()) else {
        return Err("the manifest's first element must be {\"prefix\": \"s3://bucket/prefix/\"}".into());
    };
    let mut entries = Vec::with_capacity(items.len().saturating_sub(1));
    for (i, item) in items.iter().enumerate().skip(1) {
        match item.as_str() {
            Some(s) => entries.push(s.to_string()),
            None => {
                return Err(format!(
                    "manifest element {i} is not a string (every element after the first is a key relative to the prefix)"
                ));
            }
        }
    }
    Ok((prefix.to_string(), entries))
}

/// The hosts that receive a channel, sorted: those of its `InstanceGroupNames`, or all.
pub fn receivers(channel: &Channel, a: &Assignment) -> Vec<String> {
    let groups = channel
        .data_source
        .s3_data_source
        .as_ref()
        .and_then(|s| s.instance_group_names.clone())
        .unwrap_or_default();
    if groups.is_empty() {
        return sorted_hosts(a);
    }
    let mut hosts: Vec<String> = a
        .instance_groups
        .iter()
        .filter(|g| groups.contains(&g.instance_group_name))
        .flat_map(|g| g.hosts.clone())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// `ShardedByS3Key`: object `i` of the (ordered) list goes to `hosts[i % n]`; a host may get
/// nothing. A host that is not among `hosts` gets nothing.
pub fn shard<T>(items: Vec<T>, hosts: &[String], host: &str) -> Vec<T> {
    let Some(me) = hosts.iter().position(|h| h == host) else {
        return Vec::new();
    };
    let n = hosts.len();
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % n == me)
        .map(|(_, t)| t)
        .collect()
}

/// `ShuffleConfig.Seed`: a deterministic shuffle of the object order (every host computes the
/// same permutation, so shards stay disjoint).
pub fn shuffle<T>(items: &mut [T], seed: i64) {
    // splitmix64: small, deterministic, and the same on every host.
    let mut state = seed as u64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Object access as the agent needs it: the real one goes through `kiln-blob`, tests use maps.
/// URIs are `s3://bucket/key` or `file:///path`.
pub trait Objects: Sync {
    /// The URIs of every object whose URI starts with `prefix` (a raw string prefix, not a
    /// folder), sorted.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, String>> + Send;
    /// Downloads one object to `dest` (its parent directory exists).
    fn download(&self, uri: &str, dest: &Path) -> impl Future<Output = Result<(), String>> + Send;
    /// The bytes of one small object (a manifest).
    fn get_bytes(&self, uri: &str) -> impl Future<Output = Result<Vec<u8>, String>> + Send;
    /// Uploads a local file to `uri`.
    fn upload(&self, src: &Path, uri: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Deletes one object (a missing one is not an error).
    fn delete(&self, uri: &str) -> impl Future<Output = Result<(), String>> + Send {
        let uri = uri.to_string();
        async move { Err(format!("cannot delete {uri}: this store is read-only")) }
    }
}

/// Downloads in flight at once per channel.
const PARALLEL_DOWNLOADS: usize = 8;

/// The objects this host gets for `channel` and where they go under its directory, in order.
pub async fn plan_channel<O: Objects>(o: &O, a: &Assignment, ch: &Channel) -> Result<Vec<(String, PathBuf)>, String> {
    let name = &ch.channel_name;
    let Some(s3) = &ch.data_source.s3_data_source else {
        return Err(if ch.data_source.file_system_data_source.is_some() {
            format!(
                "channel '{name}' uses a FileSystemDataSource (EFS/FSx), which kiln does not support; copy the data to S3 and use an S3DataSource"
            )
        } else {
            format!("channel '{name}' has no S3DataSource; give it DataSource.S3DataSource with an S3Uri")
        });
    };
    let uri = &s3.s3_uri;
    let mut items = match s3.s3_data_type.as_str() {
        "S3Prefix" => {
            let listed = o
                .list(uri)
                .await
                .map_err(|e| format!("channel '{name}': cannot list {uri}: {e}"))?;
            let layout = prefix_layout(uri, &listed).map_err(|e| format!("channel '{name}': {e}"))?;
            if layout.is_empty() {
                return Err(format!(
                    "channel '{name}' is empty: no objects under {uri}; upload the data there or correct the channel's S3Uri"
                ));
            }
            layout
        }
        "ManifestFile" => {
            let bytes = o.get_bytes(uri).await.map_err(|e| {
                format!(
                    "channel '{name}': cannot read the manifest file {uri}: {e}; check that it exists and is readable"
                )
            })?;
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("channel '{name}': the manifest file {uri} is not UTF-8 text"))?;
            let (prefix, entries) =
                parse_manifest(&text).map_err(|e| format!("channel '{name}': manifest file {uri}: {e}"))?;
            if entries.is_empty() {
                return Err(format!("channel '{name}': the manifest file {uri} lists no objects"));
            }
            let mut items = Vec::with_capacity(entries.len());
            for e in entries {
                let rel = safe_relative(e.trim_start_matches('/')).map_err(|err| {
                    format!("channel '{name}': manifest file {uri}: entry '{e}' cannot be placed in the channel: {err}")
                })?;
                items.push((format!("{prefix}{e}"), rel));
            }
            items
        }
        "AugmentedManifestFile" => {
            return Err(format!(
                "channel '{name}' uses an AugmentedManifestFile, which kiln does not support yet; use S3Prefix or ManifestFile"
            ));
        }
        other => {
            return Err(format!(
                "channel '{name}' has S3DataType '{other}'; use S3Prefix or ManifestFile"
            ));
        }
    };
    if let Some(sc) = &ch.shuffle_config {
        shuffle(&mut items, sc.seed);
    }
    if channel_distribution(ch) == "ShardedByS3Key" {
        items = shard(items, &receivers(ch, a), &a.host);
    }
    Ok(items)
}

/// Stages every channel of this host: File and FastFile channels into `input/data/<channel>/`,
/// Pipe channels into `<host>/pipe/<channel>/` (outside the tree) for [`crate::pipe`] to stream.
pub async fn stage_channels<O: Objects>(
    o: &O,
    a: &Assignment,
    spec: &CreateTrainingJobRequest,
    channels: &[&Channel],
    tree: &Tree,
) -> Result<Vec<PipeChannel>, String> {
    let mut pipes = Vec::new();
    for ch in channels {
        let name = &ch.channel_name;
        let pipe_mode = channel_input_mode(spec, ch) == "Pipe";
        let dir = if pipe_mode {
            tree.host_dir.join("pipe").join(name)
        } else {
            tree.channel_dir(name)
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let items = plan_channel(o, a, ch).await?;
        let started = std::time::Instant::now();
        let count = items.len();
        // Pipe objects are kept in order under numbered names; File objects go where the layout says.
        let items: Vec<(String, PathBuf)> = if pipe_mode {
            items
                .into_iter()
                .enumerate()
                .map(|(i, (uri, _))| (uri, PathBuf::from(format!("{i:08}"))))
                .collect()
        } else {
            items
        };
        let files: Vec<PathBuf> = items.iter().map(|(_, rel)| dir.join(rel)).collect();
        let mut downloads = futures::stream::iter(items.into_iter().map(|(uri, rel)| {
            let dest = dir.join(&rel);
            async move {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("channel '{name}': cannot create {}: {e}", parent.display()))?;
                }
                o.download(&uri, &dest)
                    .await
                    .map_err(|e| format!("channel '{name}': cannot download {uri}: {e}"))
            }
        }))
        .buffer_unordered(PARALLEL_DOWNLOADS);
        while let Some(r) = downloads.next().await {
            r?;
        }
        eprintln!(
            "kiln agent: channel '{name}': {count} objects in {:.2}s",
            started.elapsed().as_secs_f64()
        );
        if pipe_mode {
            pipes.push(PipeChannel {
                name: name.clone(),
                fifo_dir: tree.data_dir(),
                files,
                gzip: ch
                    .compression_type
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case("Gzip")),
                recordio: ch
                    .record_wrapper_type
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case("RecordIO")),
                shuffle_seed: ch.shuffle_config.as_ref().map(|c| c.seed),
            });
        }
    }
    Ok(pipes)
}

/// Puts the source bundle (`sagemaker_submit_directory`: an `s3://` tar.gz, or a local/`file://`
/// directory or tar.gz) into `code/`, unless `code/` already has files (as the toolkit does).
pub async fn fetch_source<O: Objects>(o: &O, submit: Option<&str>, tree: &Tree) -> Result<(), String> {
    let code = tree.code_dir();
    if !crate::script::dir_is_empty(&code) {
        return Ok(());
    }
    let Some(submit) = submit else {
        return Ok(());
    };
    let archive = if submit.starts_with("s3://") {
        let dest = tree.host_dir.join("sourcedir.tar.gz");
        o.download(submit, &dest).await.map_err(|e| {
            format!(
                "cannot download the source bundle sagemaker_submit_directory={submit}: {e}; check that it exists and the job's credentials can read it"
            )
        })?;
        dest
    } else {
        let path = PathBuf::from(submit.strip_prefix("file://").unwrap_or(submit));
        if path.is_dir() {
            return crate::script::copy_dir(&path, &code);
        }
        if !path.is_file() {
            return Err(format!(
                "sagemaker_submit_directory '{submit}' does not exist on this host; give an s3:// URI of a sourcedir.tar.gz or a local directory"
            ));
        }
        path
    };
    crate::blob::unpack_tar_gz(&archive, &code)
        .await
        .map_err(|e| format!("cannot unpack the source bundle {submit}: {e}; it must be a .tar.gz archive"))
}

/// Uploads the model (`model.tar.gz`, or the files under `model/` with `CompressionType` `NONE`)
/// and `output.tar.gz` to `<output_prefix>/`; returns `S3ModelArtifacts`.
pub async fn upload_artifacts<O: Objects>(
    o: &O,
    a: &Assignment,
    spec: &CreateTrainingJobRequest,
    tree: &Tree,
) -> Result<String, String> {
    let prefix = a.output_prefix.trim_end_matches('/');
    let work = tree.host_dir.join("artifacts");
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let upload = |src: PathBuf, uri: String| async move {
        o.upload(&src, &uri).await.map_err(|e| {
            format!("cannot upload {uri}: {e}; check that the S3OutputPath bucket exists and the job may write to it")
        })
    };
    let uncompressed = spec
        .output_data_config
        .compression_type
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case("NONE"));
    let model_uri = if uncompressed {
        for (path, rel) in crate::blob::files_under(&tree.model_dir())? {
            upload(path, format!("{prefix}/model/{rel}")).await?;
        }
        format!("{prefix}/model")
    } else {
        let tarball = work.join("model.tar.gz");
        crate::blob::pack_tar_gz(&tree.model_dir(), &tarball)
            .await
            .map_err(|e| format!("cannot pack {}: {e}", tree.model_dir().display()))?;
        let uri = format!("{prefix}/model.tar.gz");
        upload(tarball, uri.clone()).await?;
        uri
    };
    let tarball = work.join("output.tar.gz");
    crate::blob::pack_tar_gz(&tree.output_data_dir(), &tarball)
        .await
        .map_err(|e| format!("cannot pack {}: {e}", tree.output_data_dir().display()))?;
    upload(tarball, format!("{prefix}/output.tar.gz")).await?;
    Ok(model_uri)
}

/// Where host `host` leaves its `model/` and `output/data/` for the first host to merge:
/// `<output_prefix>/hosts/<host>/`.
fn host_part_prefix(a: &Assignment, host: &str) -> String {
    format!("{}/hosts/{host}", a.output_prefix.trim_end_matches('/'))
}

/// A host other than the first: packs its `model/` and `output/data/` and uploads them for the
/// first host to merge into the job's archives.
pub async fn upload_host_part<O: Objects>(o: &O, a: &Assignment, tree: &Tree) -> Result<(), String> {
    let prefix = host_part_prefix(a, &a.host);
    let work = tree.host_dir.join("artifacts");
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    // The model last: its arrival tells the first host that both are there.
    for (dir, name) in [
        (tree.output_data_dir(), "output.tar.gz"),
        (tree.model_dir(), "model.tar.gz"),
    ] {
        let tarball = work.join(name);
        crate::blob::pack_tar_gz(&dir, &tarball)
            .await
            .map_err(|e| format!("cannot pack {}: {e}", dir.display()))?;
        let uri = format!("{prefix}/{name}");
        o.upload(&tarball, &uri)
            .await
            .map_err(|e| format!("cannot upload {uri}: {e}"))?;
    }
    Ok(())
}

/// The first host: waits for every other host's part (while `waiting()` says to), then unpacks
/// them over its own `model/` and `output/data/` in host order, so that on a name clash the later
/// host's file wins, as SageMaker merges hosts. Returns the hosts whose part never came.
pub async fn merge_host_parts<O: Objects>(
    o: &O,
    a: &Assignment,
    tree: &Tree,
    waiting: impl Fn() -> bool,
) -> Result<Vec<String>, String> {
    let work = tree.host_dir.join("artifacts");
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let mut missing = Vec::new();
    for host in sorted_hosts(a).into_iter().filter(|h| *h != a.host) {
        let prefix = host_part_prefix(a, &host);
        let model = format!("{prefix}/model.tar.gz");
        loop {
            if o.list(&model).await?.contains(&model) {
                break;
            }
            if !waiting() {
                missing.push(host.clone());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        if missing.last() == Some(&host) {
            continue;
        }
        for (dir, name) in [
            (tree.output_data_dir(), "output.tar.gz"),
            (tree.model_dir(), "model.tar.gz"),
        ] {
            let tarball = work.join(format!("{host}-{name}"));
            o.download(&format!("{prefix}/{name}"), &tarball).await?;
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            crate::blob::unpack_tar_gz(&tarball, &dir)
                .await
                .map_err(|e| format!("cannot unpack {host}'s {name}: {e}"))?;
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn single_object_goes_to_its_basename() {
        let l = prefix_layout("data/train.csv", &keys(&["data/train.csv", "data/train.csv.bak"])).unwrap();
        assert_eq!(l, vec![("data/train.csv".into(), PathBuf::from("train.csv"))]);
    }

    #[test]
    fn prefixes_are_raw_and_lstripped() {
        let l = prefix_layout(
            "data/tr",
            &keys(&["data/train/a.csv", "data/train/", "data/tr/b.csv", "data/tr//c.csv"]),
        )
        .unwrap();
        assert_eq!(
            l,
            vec![
                ("data/train/a.csv".into(), PathBuf::from("ain/a.csv")),
                ("data/tr/b.csv".into(), PathBuf::from("b.csv")),
                ("data/tr//c.csv".into(), PathBuf::from("c.csv")),
            ]
        );
        let l = prefix_layout("data/", &keys(&["data/x/y.csv", "data/x/"])).unwrap();
        assert_eq!(l, vec![("data/x/y.csv".into(), PathBuf::from("x/y.csv"))]);
        // The whole bucket.
        let l = prefix_layout("", &keys(&["a", "b/c"])).unwrap();
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn escaping_keys_are_refused() {
        let e = prefix_layout("p/", &keys(&["p/../../etc/passwd"])).unwrap_err();
        assert!(e.contains("p/../../etc/passwd"), "{e}");
    }

    #[test]
    fn manifests() {
        let (p, e) = parse_manifest(r#"[{"prefix": "s3://b/p/"}, "a.csv", "sub/b.csv"]"#).unwrap();
        assert_eq!(p, "s3://b/p/");
        assert_eq!(e, vec!["a.csv", "sub/b.csv"]);
        assert!(parse_manifest("{}").is_err());
        assert!(parse_manifest(r#"["a"]"#).is_err());
        assert!(parse_manifest(r#"[{"prefix": "s3://b/"}, 1]"#).is_err());
    }

    #[test]
    fn sharding_is_disjoint_and_complete() {
        let hosts = keys(&["algo-1", "algo-2", "algo-3"]);
        let items: Vec<u32> = (0..10).collect();
        let a = shard(items.clone(), &hosts, "algo-1");
        let b = shard(items.clone(), &hosts, "algo-2");
        let c = shard(items.clone(), &hosts, "algo-3");
        assert_eq!(a, vec![0, 3, 6, 9]);
        assert_eq!(b, vec![1, 4, 7]);
        assert_eq!(c, vec![2, 5, 8]);
        assert!(shard(vec![1], &hosts, "algo-2").is_empty(), "a host may get nothing");
        assert!(shard(items, &hosts, "algo-9").is_empty());
    }

    /// Objects in memory, by URI.
    struct MapObjects(std::collections::BTreeMap<String, Vec<u8>>);

    impl Objects for MapObjects {
        async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
            Ok(self.0.keys().filter(|k| k.starts_with(prefix)).cloned().collect())
        }
        async fn download(&self, uri: &str, dest: &Path) -> Result<(), String> {
            let b = self.0.get(uri).ok_or_else(|| format!("NoSuchKey {uri}"))?;
            std::fs::write(dest, b).map_err(|e| e.to_string())
        }
        async fn get_bytes(&self, uri: &str) -> Result<Vec<u8>, String> {
            self.0.get(uri).cloned().ok_or_else(|| format!("NoSuchKey {uri}"))
        }
        async fn upload(&self, _src: &Path, _uri: &str) -> Result<(), String> {
            Err("read-only".into())
        }
    }

    fn objects(uris: &[&str]) -> MapObjects {
        MapObjects(uris.iter().map(|u| (u.to_string(), u.as_bytes().to_vec())).collect())
    }

    fn s3_channel(name: &str, kind: &str, uri: &str, dist: Option<&str>) -> Channel {
        use kiln_api::shapes::{DataSource, S3DataSource};
        Channel {
            channel_name: name.into(),
            data_source: DataSource {
                s3_data_source: Some(S3DataSource {
                    s3_data_type: kind.into(),
                    s3_uri: uri.into(),
                    s3_data_distribution_type: dist.map(str::to_string),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn two_hosts(host: &str) -> Assignment {
        let mut a = crate::tree::tests::assignment();
        a.host = host.into();
        a
    }

    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn plans_prefix_channels_with_sharding() {
        let o = objects(&[
            "s3://b/d/0",
            "s3://b/d/1",
            "s3://b/d/2",
            "s3://b/d/sub/",
            "s3://b/other",
        ]);
        let ch = s3_channel("train", "S3Prefix", "s3://b/d/", Some("ShardedByS3Key"));
        let p1 = run(plan_channel(&o, &two_hosts("algo-1"), &ch)).unwrap();
        let p2 = run(plan_channel(&o, &two_hosts("algo-2"), &ch)).unwrap();
        assert_eq!(
            p1,
            vec![
                ("s3://b/d/0".into(), PathBuf::from("0")),
                ("s3://b/d/2".into(), PathBuf::from("2"))
            ]
        );
        assert_eq!(p2, vec![("s3://b/d/1".into(), PathBuf::from("1"))]);
        let full = s3_channel("train", "S3Prefix", "s3://b/d/", None);
        assert_eq!(run(plan_channel(&o, &two_hosts("algo-2"), &full)).unwrap().len(), 3);
    }

    #[test]
    fn plans_manifests() {
        let mut o = objects(&["s3://b/p/x.csv", "s3://b/p/y/z.csv"]);
        o.0.insert(
            "s3://b/m.json".into(),
            br#"[{"prefix": "s3://b/p/"}, "x.csv", "y/z.csv"]"#.to_vec(),
        );
        let ch = s3_channel("train", "ManifestFile", "s3://b/m.json", None);
        let p = run(plan_channel(&o, &two_hosts("algo-1"), &ch)).unwrap();
        assert_eq!(
            p,
            vec![
                ("s3://b/p/x.csv".into(), PathBuf::from("x.csv")),
                ("s3://b/p/y/z.csv".into(), PathBuf::from("y/z.csv"))
            ]
        );
        let missing = s3_channel("train", "ManifestFile", "s3://b/nope.json", None);
        let e = run(plan_channel(&o, &two_hosts("algo-1"), &missing)).unwrap_err();
        assert!(e.contains("cannot read the manifest file s3://b/nope.json"), "{e}");
    }

    #[test]
    fn empty_prefixes_and_unsupported_sources_are_client_errors() {
        let o = objects(&["s3://b/d/0"]);
        let e = run(plan_channel(
            &o,
            &two_hosts("algo-1"),
            &s3_channel("train", "S3Prefix", "s3://b/none/", None),
        ))
        .unwrap_err();
        assert_eq!(
            e,
            "channel 'train' is empty: no objects under s3://b/none/; upload the data there or correct the channel's S3Uri"
        );
        let e = run(plan_channel(
            &o,
            &two_hosts("algo-1"),
            &s3_channel("train", "AugmentedManifestFile", "s3://b/d/0", None),
        ))
        .unwrap_err();
        assert!(e.contains("AugmentedManifestFile"), "{e}");
    }

    #[test]
    fn shuffles_are_deterministic_permutations() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        shuffle(&mut a, 42);
        shuffle(&mut b, 42);
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}
