//! A real registry for the tests: Debian's `docker-registry` on a free loopback port, with images
//! written as OCI layouts by hand and pushed with `skopeo`.

#![allow(dead_code)] // each test file uses part of this

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The programs the registry tests need, from Debian's `docker-registry`, `skopeo` and `busybox-static`.
pub struct Tools {
    pub registry: PathBuf,
    pub skopeo: PathBuf,
    pub busybox: PathBuf,
}

/// The tools, or `None` (with a message saying how to get them) when one is missing. With
/// `KILN_REQUIRE_REGISTRY=1` (set by scripts/test.sh, so CI never skips) a missing tool fails.
pub fn tools() -> Option<Tools> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_static(p));
    let found = (which("docker-registry"), which("skopeo"), busybox);
    if let (Some(registry), Some(skopeo), Some(busybox)) = found {
        return Some(Tools {
            registry,
            skopeo,
            busybox,
        });
    }
    let message = "registry tests need `docker-registry`, `skopeo` and a static `busybox` \
                   (apt-get install -y docker-registry skopeo busybox-static, or scripts/install-deps.sh)";
    assert!(std::env::var_os("KILN_REQUIRE_REGISTRY").is_none(), "{message}");
    eprintln!("SKIPPED: {message}");
    None
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A static binary runs from any rootfs; the dynamic busybox of Debian's `busybox` package would not.
fn is_static(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else { return false };
    // A 64-bit little-endian ELF file without a PT_INTERP program header (no dynamic loader).
    let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if !bytes.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..phnum).all(|i| {
        let at = phoff as usize + i * phentsize;
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != 3)
    })
}

/// A `docker-registry serve` process on 127.0.0.1, stopped on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// A bcrypt hash (cost 4) of the password `s3cret`, for the htpasswd file; the registry accepts no other format.
pub const HTPASSWD: &str = "kiln:$2b$04$dD8sPtlXivP30qLmqvOv9.DG7K0dVa05MbpnGhufraJhyECXptqoy\n";
pub const USER: &str = "kiln";
pub const PASSWORD: &str = "s3cret";

impl Registry {
    /// Starts a registry; with `basic_auth`, it requires user `kiln`, password `s3cret`.
    pub fn start(tools: &Tools, basic_auth: bool) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let auth = if basic_auth {
            let htpasswd = dir.path().join("htpasswd");
            fs::write(&htpasswd, HTPASSWD)?;
            format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                htpasswd.display()
            )
        } else {
            String::new()
        };
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: kiln-test-secret\n{auth}",
                dir.path().join("storage").display()
            ),
        )?;
        let log = fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(&tools.registry)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut registry = Self { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = registry.child.try_wait()? {
                let log = fs::read_to_string(registry._dir.path().join("registry.log")).unwrap_or_default();
                return Err(format!("docker-registry exited ({status}) at start: {log}").into());
            }
            if Instant::now() > deadline {
                return Err("docker-registry did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes tag `tag` of the OCI layout at `layout` to `<registry>/<repository>`.
    pub fn push(&self, tools: &Tools, layout: &Path, tag: &str, repository: &str, extra: &[&str]) -> TestResult {
        let mut command = Command::new(&tools.skopeo);
        command
            .args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repository}", self.host()));
        let output = command.output()?;
        if !output.status.success() {
            return Err(format!("skopeo copy failed: {}", String::from_utf8_lossy(&output.stderr)).into());
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (the registry binds it right after).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One entry of a test layer.
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, u32, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

/// An uncompressed tar layer.
pub fn tar(entries: &[Entry]) -> Result<Vec<u8>, std::io::Error> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, &[][..])?;
            }
            Entry::File(path, mode, content) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(content.len() as u64);
                builder.append_data(&mut header, path, *content)?;
            }
            Entry::Symlink(path, target) | Entry::HardLink(path, target) => {
                let kind = if matches!(entry, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                header.set_entry_type(kind);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target)?;
            }
        }
    }
    builder.into_inner()
}

pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes)?;
    encoder.finish()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
}

/// A layer for an image: the uncompressed tar (for the config's diff_ids) and the blob as stored.
pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: &'static str,
}

impl Layer {
    pub fn gzip(tar: Vec<u8>) -> Result<Self, std::io::Error> {
        Ok(Self {
            blob: gzip(&tar)?,
            tar,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        })
    }

    pub fn plain(tar: Vec<u8>) -> Self {
        Self {
            blob: tar.clone(),
            tar,
            media_type: "application/vnd.oci.image.layer.v1.tar",
        }
    }

    pub fn zstd(tar: Vec<u8>) -> Self {
        Self {
            blob: zstd(&tar),
            tar,
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`), written by hand.
pub struct OciLayout {
    pub dir: PathBuf,
    refs: Vec<serde_json::Value>,
}

impl OciLayout {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        fs::create_dir_all(dir.join("blobs/sha256"))?;
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Self { dir, refs: Vec::new() })
    }

    /// Stores a blob; returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> std::io::Result<serde_json::Value> {
        let digest = sha256(bytes);
        fs::write(self.dir.join("blobs/sha256").join(&digest["sha256:".len()..]), bytes)?;
        Ok(serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}))
    }

    /// Stores an image (config + layers) and returns its manifest's descriptor and bytes.
    pub fn image(&self, layers: &[Layer], config: serde_json::Value) -> std::io::Result<(serde_json::Value, Vec<u8>)> {
        let mut config = config;
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(&l.tar)).collect();
        config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": diff_ids});
        let config_bytes = serde_json::to_vec(&config)?;
        let config_descriptor = self.blob("application/vnd.oci.image.config.v1+json", &config_bytes)?;
        let layer_descriptors = layers
            .iter()
            .map(|l| self.blob(l.media_type, &l.blob))
            .collect::<std::io::Result<Vec<_>>>()?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_descriptor,
            "layers": layer_descriptors,
        }))?;
        let descriptor = self.blob("application/vnd.oci.image.manifest.v1+json", &manifest)?;
        Ok((descriptor, manifest))
    }

    /// Stores an image index over `(manifest descriptor, architecture)` pairs; returns its descriptor and bytes.
    pub fn index(&self, manifests: &[(serde_json::Value, &str)]) -> std::io::Result<(serde_json::Value, Vec<u8>)> {
        let entries: Vec<serde_json::Value> = manifests
            .iter()
            .map(|(descriptor, arch)| {
                let mut entry = descriptor.clone();
                entry["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
                entry
            })
            .collect();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))?;
        let descriptor = self.blob("application/vnd.oci.image.index.v1+json", &index)?;
        Ok((descriptor, index))
    }

    /// Names a manifest or index `tag` in the layout's index.json.
    pub fn tag(&mut self, descriptor: &serde_json::Value, tag: &str) -> std::io::Result<()> {
        let mut entry = descriptor.clone();
        entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        self.refs.push(entry);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": self.refs});
        fs::write(self.dir.join("index.json"), serde_json::to_vec(&index)?)
    }
}
