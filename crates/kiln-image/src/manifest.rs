//! Manifests and indexes, OCI and Docker: what a tag or digest points at, and the choice of a platform.

use std::fmt;

use serde::Deserialize;

use crate::digest::Digest;

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The `Accept` header of manifest requests: without it registries fall back to Docker's schema 1.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression of a layer of `media_type`, or `None` when it is not a filesystem layer kiln can unpack.
pub(crate) fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// A content descriptor: what a manifest says about a blob it refers to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An image's operating system and CPU architecture, as indexes label their manifests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// Go's architecture names: `amd64`, `arm64`, `ppc64le`, …
    pub architecture: String,
    /// `v8` for arm64, `v7` for arm, …
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// Linux on the architecture this program runs on.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// Whether a manifest labelled `offered` runs here; no variant wanted means any, and arm64's
    /// only variant, v8, is the same as none.
    fn accepts(&self, offered: &Platform) -> bool {
        let variant_ok = match (&self.variant, &offered.variant) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            (Some(want), None) => self.architecture == "arm64" && want == "v8",
        };
        self.os == offered.os && self.architecture == offered.architecture && variant_ok
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// A parsed manifest document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Manifest {
    /// An OCI image index or Docker manifest list: one manifest per platform.
    Index(Vec<Descriptor>),
    /// One image: its config blob and its layers, bottom first.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Parses a manifest; `content_type` is the registry's `Content-Type` header when there was one.
    /// The error says what was found, for an "unsupported manifest" message.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, String> {
        let raw: RawManifest = serde_json::from_slice(body)
            .map_err(|e| format!("the manifest is not valid JSON of a known shape: {e}"))?;
        // The document's own mediaType is authoritative; the header is the fallback (OCI manifests
        // may omit it), and the shape decides when neither says.
        let header = content_type.map(|c| c.split(';').next().unwrap_or(c).trim());
        let media_type = raw
            .media_type
            .as_deref()
            .or(header.filter(|h| h.starts_with("application/vnd.")));
        if raw.schema_version == Some(1) {
            return Err("Docker image manifest schema 1 (deprecated; push the image again with a current tool)".into());
        }
        match media_type {
            Some(OCI_INDEX | DOCKER_LIST) => {}
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => {}
            Some(other) => return Err(format!("manifest media type '{other}'")),
            None => {}
        }
        match (raw.manifests, raw.config, raw.layers) {
            (Some(manifests), None, _) if !matches!(media_type, Some(OCI_MANIFEST | DOCKER_MANIFEST)) => {
                Ok(Manifest::Index(manifests))
            }
            (None, Some(config), Some(layers)) if !matches!(media_type, Some(OCI_INDEX | DOCKER_LIST)) => {
                if !config.media_type.is_empty() && !CONFIG_TYPES.contains(&config.media_type.as_str()) {
                    return Err(format!(
                        "config media type '{}' (an artifact, not a container image)",
                        config.media_type
                    ));
                }
                if let Some(layer) = layers.iter().find(|l| layer_compression(&l.media_type).is_none()) {
                    return Err(format!("layer media type '{}'", layer.media_type));
                }
                Ok(Manifest::Image { config, layers })
            }
            _ => Err(format!(
                "a manifest{} that has neither `manifests` nor `config` and `layers`",
                media_type.map(|m| format!(" of type '{m}'")).unwrap_or_default()
            )),
        }
    }
}

/// The manifest of an index to use on `platform`, or the platforms it has instead.
pub(crate) fn select_platform<'a>(entries: &'a [Descriptor], platform: &Platform) -> Result<&'a Descriptor, String> {
    if let Some(found) = entries
        .iter()
        .find(|e| e.platform.as_ref().is_some_and(|p| platform.accepts(p)))
    {
        return Ok(found);
    }
    // An index of one unlabelled manifest (allowed by OCI) has nothing to choose from.
    if let [only] = entries
        && only.platform.is_none()
    {
        return Ok(only);
    }
    let offered: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        // BuildKit's attestation manifests are labelled unknown/unknown; they are not images.
        .filter(|p| p.os != "unknown")
        .map(|p| p.to_string())
        .collect();
    Err(if offered.is_empty() {
        "none labelled".to_owned()
    } else {
        offered.join(", ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        }
    }

    fn index_entry(digest: &str, p: Option<Platform>) -> Result<Descriptor, String> {
        Ok(Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.parse()?,
            size: 1,
            platform: p,
        })
    }

    #[test]
    fn parses_docker_v2_and_oci_manifests() -> Result<(), String> {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":7}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":9}}]}}"#
        );
        let Manifest::Image { config, layers } = Manifest::parse(None, docker.as_bytes())? else {
            return Err("not an image".into());
        };
        assert_eq!((config.size, layers.len(), layers[0].size), (7, 1, 9));

        // OCI without mediaType in the body: the header decides, and the shape when there is none.
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":7}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{D2}","size":9}}]}}"#
        );
        assert!(matches!(
            Manifest::parse(Some(OCI_MANIFEST), oci.as_bytes())?,
            Manifest::Image { .. }
        ));
        assert!(matches!(Manifest::parse(None, oci.as_bytes())?, Manifest::Image { .. }));
        Ok(())
    }

    #[test]
    fn parses_indexes() -> Result<(), String> {
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D2}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let Manifest::Index(entries) = Manifest::parse(Some("application/json; charset=utf-8"), list.as_bytes())?
        else {
            return Err("not an index".into());
        };
        assert_eq!(
            select_platform(&entries, &platform("linux", "amd64", None))?
                .digest
                .to_string(),
            D2
        );
        assert_eq!(
            select_platform(&entries, &platform("linux", "arm64", None))?
                .digest
                .to_string(),
            D1
        );
        assert_eq!(
            select_platform(&entries, &platform("linux", "arm64", Some("v8")))?
                .digest
                .to_string(),
            D1
        );
        Ok(())
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        let schema1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(
            Manifest::parse(None, schema1.as_bytes())
                .unwrap_err()
                .contains("schema 1")
        );
        let helm = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{D1}","size":1}},"layers":[]}}"#
        );
        assert!(Manifest::parse(None, helm.as_bytes()).unwrap_err().contains("artifact"));
        let odd_layer = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":1}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+lz4","digest":"{D2}","size":1}}]}}"#
        );
        assert!(
            Manifest::parse(None, odd_layer.as_bytes())
                .unwrap_err()
                .contains("tar+lz4")
        );
        assert!(Manifest::parse(None, b"<html>").unwrap_err().contains("JSON"));
        assert!(Manifest::parse(None, b"{}").unwrap_err().contains("neither"));
        let wrong_type = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","config":{{"digest":"{D1}","size":1}},"layers":[]}}"#
        );
        assert!(Manifest::parse(None, wrong_type.as_bytes()).is_err());
    }

    #[test]
    fn platform_choice_and_what_is_offered() -> Result<(), String> {
        let entries = vec![
            index_entry(D1, Some(platform("linux", "arm", Some("v7"))))?,
            index_entry(D2, Some(platform("unknown", "unknown", None)))?,
        ];
        assert_eq!(
            select_platform(&entries, &platform("linux", "amd64", None)).unwrap_err(),
            "linux/arm/v7"
        );
        assert!(select_platform(&entries, &platform("linux", "arm", Some("v6"))).is_err());
        let single = vec![index_entry(D1, None)?];
        assert!(select_platform(&single, &platform("linux", "amd64", None)).is_ok());
        assert_eq!(select_platform(&[], &Platform::host()).unwrap_err(), "none labelled");
        Ok(())
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(layer_compression("application/octet-stream"), None);
    }
}
