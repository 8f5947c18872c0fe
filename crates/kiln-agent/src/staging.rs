//! Input channels into `input/data/<channel>/` (reference §7), the source bundle into `code/`, and
//! the artifacts out to `<output_prefix>/`. Which objects a host gets and where they land is
//! decided by pure functions ([`prefix_layout`], [`parse_manifest`], [`shard`]); the object access
//! itself goes through `kiln-blob`.

use std::path::{Path, PathBuf};

use kiln_api::agent::Assignment;
use kiln_api::shapes::{Channel, CreateTrainingJobRequest};

use crate::logs::LogSink;
use crate::tree::{Tree, safe_relative, sorted_hosts};

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

/// Stages every channel of this host.
pub async fn stage_channels(
    _a: &Assignment,
    _spec: &CreateTrainingJobRequest,
    channels: &[&Channel],
    tree: &Tree,
    _sink: &LogSink,
) -> Result<(), String> {
    if let Some(ch) = channels.first() {
        let dir = tree.channel_dir(&ch.channel_name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        return Err(format!(
            "channel '{}': staging input data is not available in this build yet",
            ch.channel_name
        ));
    }
    Ok(())
}

/// Puts the source bundle into `code/` unless it already has files.
pub async fn fetch_source(_a: &Assignment, submit: Option<&str>, code: &Path, _sink: &LogSink) -> Result<(), String> {
    if !crate::script::dir_is_empty(code) {
        return Ok(());
    }
    let Some(submit) = submit else {
        return Ok(());
    };
    let local = submit.strip_prefix("file://").unwrap_or(submit);
    let path = Path::new(local);
    if path.is_dir() {
        return crate::script::copy_dir(path, code);
    }
    Err(format!(
        "sagemaker_submit_directory '{submit}' cannot be fetched by this build yet (local directories only)"
    ))
}

/// Uploads `model.tar.gz` and `output.tar.gz`; returns `S3ModelArtifacts`.
pub async fn upload_artifacts(
    a: &Assignment,
    _spec: &CreateTrainingJobRequest,
    _tree: &Tree,
) -> Result<String, String> {
    Ok(format!("{}/model.tar.gz", a.output_prefix))
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
