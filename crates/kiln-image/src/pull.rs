//! The pull: reference → manifest → config and layers → unpacked rootfs in the cache.

use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::config::ImageConfig;
use crate::digest::Digest;
use crate::error::{Context, PullError};
use crate::manifest::{Descriptor, Manifest, Platform, select_platform};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::registry::{Session, http_client};
use crate::settings::Registries;
use crate::unpack::{UnpackError, Unpacker, open_layer};

/// An index may point at another index; more than this many levels is a loop or nonsense.
const INDEX_DEPTH: usize = 3;
/// Download progress is reported at most once per this many bytes.
const PROGRESS_STEP: u64 = 1 << 20;

/// Pulls images into a cache directory. Cheap to share: one per process is enough.
pub struct Puller {
    cache: Cache,
    registries: Registries,
    platform: Platform,
    http: reqwest::Client,
}

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference as parsed (normalised).
    pub reference: Reference,
    /// The digest of the image manifest for this platform: the cache key, stable across tags.
    pub digest: Digest,
    /// `<cache>/images/sha256/<hex>`, holding `rootfs/`, `config.json` and `manifest.json`.
    pub dir: PathBuf,
    /// The unpacked root filesystem. Treat it as read-only: every job of this image shares it.
    pub rootfs: PathBuf,
    /// How the image wants to be run.
    pub config: ImageConfig,
    /// Whether the image was already unpacked in the cache (nothing downloaded but the tag's manifest digest).
    pub from_cache: bool,
}

/// The manifest of one image (one platform), as fetched.
struct ImageManifest {
    digest: Digest,
    body: Vec<u8>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// Reports a cached image as ready.
fn ready(image: Image, progress: &mut impl FnMut(Progress)) -> Image {
    progress(Progress::Ready {
        manifest: image.digest.clone(),
        rootfs: image.rootfs.clone(),
        from_cache: true,
    });
    image
}

impl Puller {
    /// A puller using the cache at `cache_dir` (created if missing) and the `[[registries]]` table.
    pub fn new(cache_dir: impl Into<PathBuf>, registries: Registries) -> Result<Self, PullError> {
        Ok(Self {
            cache: Cache::open(cache_dir.into())?,
            registries,
            platform: Platform::host(),
            http: http_client()?,
        })
    }

    /// Chooses another platform from multi-platform images than this host's (`linux/<arch>`).
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        self.cache.root()
    }

    /// Pulls `image` (a reference as `docker pull` takes it) unless the cache has it, reporting
    /// steps to `progress`. A reference by digest whose image is cached needs no network at all; a
    /// tag costs one `HEAD` of its manifest.
    pub async fn pull<F>(&self, image: &str, mut progress: F) -> Result<Image, PullError>
    where
        F: FnMut(Progress) + Send,
    {
        let reference = Reference::parse(image)?;
        let endpoint = self.registries.endpoint(&reference);
        let context = Context {
            image: reference.to_string(),
            registry: endpoint.describe(),
        };

        if let Some(digest) = reference.digest()
            && let Some(found) = self.cached(&reference, digest, &context)?
        {
            return Ok(ready(found, &mut progress));
        }
        let mut session = Session::new(&self.http, endpoint, reference.repository(), context.clone());
        let top = self.resolve(&mut session, &reference).await?;
        if let Some(found) = self.cached(&reference, &top, &context)? {
            return Ok(ready(found, &mut progress));
        }

        let manifest = self.image_manifest(&mut session, top, &context).await?;
        let bytes = manifest.layers.iter().map(|l| l.size).sum();
        progress(Progress::Resolved {
            manifest: manifest.digest.clone(),
            layers: manifest.layers.len(),
            bytes,
        });
        let config_bytes = match self.cache.read_blob(&manifest.config.digest)? {
            Some(bytes) => bytes,
            None => {
                let what = format!("config {}", manifest.config.digest);
                let bytes = session.small_blob(&manifest.config, &what).await?;
                self.cache.write_blob(&manifest.config.digest, &bytes)?;
                bytes
            }
        };
        let config = ImageConfig::parse(&config_bytes).map_err(|reason| context.invalid("image config", reason))?;
        self.download_layers(&mut session, &manifest.layers, &mut progress)
            .await?;
        let dir = self.unpack(&manifest, &config_bytes, &context, &mut progress).await?;

        let rootfs = dir.join("rootfs");
        progress(Progress::Ready {
            manifest: manifest.digest.clone(),
            rootfs: rootfs.clone(),
            from_cache: false,
        });
        Ok(Image {
            reference,
            digest: manifest.digest,
            dir,
            rootfs,
            config,
            from_cache: false,
        })
    }

    /// The digest the reference names: its own, or its tag's (one `HEAD`, or a `GET` where the
    /// registry does not announce digests).
    async fn resolve(&self, session: &mut Session<'_>, reference: &Reference) -> Result<Digest, PullError> {
        if let Some(digest) = reference.digest() {
            return Ok(digest.clone());
        }
        let tag = reference.manifest_reference();
        if let Some(digest) = session.resolve(&tag).await? {
            return Ok(digest);
        }
        let fetched = session.manifest(&tag, None).await?;
        self.cache.write_blob(&fetched.digest, &fetched.body)?;
        Ok(fetched.digest)
    }

    /// Downloads the layers the cache lacks into `blobs/`, verified.
    async fn download_layers<F>(
        &self,
        session: &mut Session<'_>,
        layers: &[Descriptor],
        progress: &mut F,
    ) -> Result<(), PullError>
    where
        F: FnMut(Progress) + Send,
    {
        let count = layers.len();
        for (i, layer) in layers.iter().enumerate() {
            let index = i + 1;
            let report = |done: u64, cached: bool| Progress::Layer {
                index,
                count,
                digest: layer.digest.clone(),
                done,
                total: layer.size,
                cached,
            };
            if self.cache.has_blob(&layer.digest) {
                progress(report(layer.size, true));
                continue;
            }
            progress(report(0, false));
            let temp = self.cache.blob_file()?;
            let path = temp.path().to_owned();
            let mut file = tokio::fs::File::from_std(temp.as_file().try_clone().map_err(PullError::cache(&path))?);
            let mut reported = 0;
            let what = format!("layer {index}/{count} {}", layer.digest);
            session
                .download(layer, &what, &mut file, &path, |done| {
                    if done >= reported + PROGRESS_STEP && done < layer.size {
                        reported = done;
                        progress(report(done, false));
                    }
                })
                .await?;
            self.cache.commit_blob(temp, &layer.digest)?;
            progress(report(layer.size, false));
        }
        Ok(())
    }

    /// Applies the downloaded layers to a fresh rootfs and installs the image in the cache.
    async fn unpack<F>(
        &self,
        manifest: &ImageManifest,
        config_bytes: &[u8],
        context: &Context,
        progress: &mut F,
    ) -> Result<PathBuf, PullError>
    where
        F: FnMut(Progress) + Send,
    {
        let build = self.cache.build()?;
        let mut unpacker = Unpacker::new(build.rootfs());
        let count = manifest.layers.len();
        for (i, layer) in manifest.layers.iter().enumerate() {
            progress(Progress::Unpacking {
                index: i + 1,
                count,
                digest: layer.digest.clone(),
            });
            let blob = self.cache.blob_path(&layer.digest);
            // tar and gzip are blocking work: off the async runtime's threads.
            let (returned, result) = tokio::task::spawn_blocking(move || {
                let result = std::fs::File::open(&blob)
                    .map_err(|source| UnpackError::Io {
                        path: blob.display().to_string(),
                        source,
                    })
                    .and_then(open_layer)
                    .and_then(|reader| unpacker.apply(reader));
                (unpacker, result)
            })
            .await
            .map_err(|e| context.bad_layer(layer.digest.to_string(), format!("the unpacking task failed: {e}")))?;
            unpacker = returned;
            let stats = result.map_err(|e| context.bad_layer(layer.digest.to_string(), e.to_string()))?;
            tracing::debug!(layer = %layer.digest, entries = stats.entries, whiteouts = stats.whiteouts,
                skipped = stats.skipped, "layer unpacked");
        }
        unpacker
            .finish()
            .map_err(|e| context.bad_layer("(all)".into(), e.to_string()))?;
        for (name, bytes) in [("config.json", config_bytes), ("manifest.json", &manifest.body)] {
            let path = build.dir().join(name);
            std::fs::write(&path, bytes).map_err(PullError::cache(&path))?;
        }
        self.cache.install(build, &manifest.digest)
    }

    /// Follows indexes from `top` to the image manifest for this platform, fetching what the cache
    /// lacks.
    async fn image_manifest(
        &self,
        session: &mut Session<'_>,
        top: Digest,
        context: &Context,
    ) -> Result<ImageManifest, PullError> {
        let mut digest = top;
        for _ in 0..=INDEX_DEPTH {
            let (content_type, body) = match self.cache.read_blob(&digest)? {
                Some(body) => (None, body),
                None => {
                    let fetched = session.manifest(&digest.to_string(), Some(&digest)).await?;
                    self.cache.write_blob(&fetched.digest, &fetched.body)?;
                    (fetched.content_type, fetched.body)
                }
            };
            match Manifest::parse(content_type.as_deref(), &body).map_err(|what| context.unsupported(what))? {
                Manifest::Image { config, layers } => {
                    return Ok(ImageManifest {
                        digest,
                        body,
                        config,
                        layers,
                    });
                }
                Manifest::Index(entries) => {
                    let chosen = select_platform(&entries, &self.platform)
                        .map_err(|available| context.no_platform(self.platform.to_string(), available))?;
                    digest = chosen.digest.clone();
                }
            }
        }
        Err(context.unsupported(format!("indexes nested more than {INDEX_DEPTH} deep")))
    }

    /// The unpacked image `digest` names, directly or through a cached index; no network.
    fn cached(&self, reference: &Reference, digest: &Digest, context: &Context) -> Result<Option<Image>, PullError> {
        let mut digest = digest.clone();
        for _ in 0..=INDEX_DEPTH {
            let dir = self.cache.image_dir(&digest);
            let config_path = dir.join("config.json");
            match std::fs::read(&config_path) {
                Ok(bytes) => {
                    let config =
                        ImageConfig::parse(&bytes).map_err(|reason| context.invalid("cached image config", reason))?;
                    let rootfs = dir.join("rootfs");
                    return Ok(Some(Image {
                        reference: reference.clone(),
                        digest,
                        dir,
                        rootfs,
                        config,
                        from_cache: true,
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(PullError::Cache {
                        path: config_path,
                        source: e,
                    });
                }
            }
            let Some(body) = self.cache.read_blob(&digest)? else {
                return Ok(None);
            };
            match Manifest::parse(None, &body) {
                Ok(Manifest::Index(entries)) => match select_platform(&entries, &self.platform) {
                    Ok(chosen) => digest = chosen.digest.clone(),
                    Err(_) => return Ok(None),
                },
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_puller_can_be_shared_between_tasks() {
        fn shared<T: Send + Sync>() {}
        shared::<super::Puller>();
        shared::<super::Image>();
    }
}
