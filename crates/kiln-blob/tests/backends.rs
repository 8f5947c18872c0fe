//! kiln-blob against real S3 implementations: kiln's embedded endpoint (the `kiln serve` binary of
//! this build: `cargo build --bin kiln` first, or set `KILN_BIN`) and moto's server (an independent
//! implementation, `python3 -m moto.server`), plus routing buckets between the two.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kiln_blob::{BlobConfig, BlobError, Blobs, S3Endpoint, TransferConfig, pack_tar_gz, unpack_tar_gz};

const MIB: usize = 1 << 20;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` with a bare HTTP/1.0 request; the status code, if the server answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn wait_ready(port: u16, path: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        if http_status(port, path).is_some_and(|s| s < 500) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not start within 60 s");
}

/// A server process that is killed when dropped.
struct Server {
    child: Child,
    port: u16,
    endpoint: S3Endpoint,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kiln_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KILN_BIN") {
        return p.into();
    }
    // target/<profile>/deps/<this test> → target/<profile>/kiln
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("kiln"))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} not found: build it first (cargo build --bin kiln) or set KILN_BIN",
        bin.display()
    );
    bin
}

fn start_kiln() -> Server {
    let dir = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
    let mut child = Command::new(kiln_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("KILN_LOG", "warn")
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start kiln serve");
    wait_ready(port, "/_kiln/health", &mut child, "kiln serve");
    let keys: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.path().join("keys.toml")).expect("keys")).expect("keys.toml");
    let key = &keys["keys"].as_array().expect("keys")[0];
    let endpoint = S3Endpoint {
        endpoint_url: format!("http://127.0.0.1:{port}"),
        region: "us-east-1".into(),
        access_key_id: key["access_key_id"].as_str().expect("id").into(),
        secret_access_key: key["secret_access_key"].as_str().expect("secret").into(),
        path_style: true,
    };
    Server {
        child,
        port,
        endpoint,
        _dir: Some(dir),
    }
}

fn start_moto() -> Server {
    let port = free_port();
    let mut child = Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto (python3 -m moto.server)");
    wait_ready(port, "/moto-api/", &mut child, "moto.server");
    let endpoint = S3Endpoint {
        endpoint_url: format!("http://127.0.0.1:{port}"),
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        path_style: true,
    };
    Server {
        child,
        port,
        endpoint,
        _dir: None,
    }
}

/// Creates a bucket with boto3 (kiln-blob itself never creates buckets).
fn create_bucket(e: &S3Endpoint, bucket: &str) {
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2], \
             aws_secret_access_key=sys.argv[3], region_name='us-east-1').create_bucket(Bucket=sys.argv[4])",
            &e.endpoint_url,
            &e.access_key_id,
            &e.secret_access_key,
            bucket,
        ])
        .status()
        .expect("python3");
    assert!(status.success(), "cannot create bucket {bucket} at {}", e.endpoint_url);
}

/// Deterministic, incompressible-enough bytes (xorshift).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn blobs_for(e: &S3Endpoint) -> Blobs {
    Blobs::new(BlobConfig {
        embedded: e.clone(),
        external: vec![],
    })
}

/// Everything a job does with objects, against one backend.
async fn exercise(blobs: &Blobs, bucket: &str, scratch: &Path) {
    let root = format!("s3://{bucket}");

    // Small objects.
    blobs
        .put_bytes(&format!("{root}/small/hello.txt"), Bytes::from_static(b"hello"))
        .await
        .expect("put_bytes");
    assert_eq!(
        blobs
            .get_bytes(&format!("{root}/small/hello.txt"))
            .await
            .expect("get_bytes"),
        Bytes::from_static(b"hello")
    );

    // A large file: multipart up, parallel ranged down (80 MiB > the 64 MiB threshold), byte-for-byte.
    let big = scratch.join("big.bin");
    let content = data(80 * MIB + 12345, 7);
    std::fs::write(&big, &content).expect("write big");
    let uri = format!("{root}/models/big.bin");
    assert_eq!(
        blobs.upload(&big, &uri).await.expect("upload big"),
        content.len() as u64
    );
    let back = scratch.join("down/big.bin");
    assert_eq!(
        blobs.download(&uri, &back).await.expect("download big"),
        content.len() as u64
    );
    assert!(
        std::fs::read(&back).expect("read back") == content,
        "parallel download differs"
    );
    let leftovers: Vec<_> = std::fs::read_dir(scratch.join("down"))
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "partial files left behind");

    // A small file: single PUT, single GET.
    let small = scratch.join("small.csv");
    std::fs::write(&small, b"1,2,3\n").expect("write");
    blobs
        .upload(&small, &format!("{root}/data/train/a.csv"))
        .await
        .expect("upload");
    for (k, v) in [
        ("data/train/b.csv", "4"),
        ("data/training.csv", "5"),
        ("data/test/c.csv", "6"),
    ] {
        blobs
            .put_bytes(&format!("{root}/{k}"), Bytes::from(v.to_string()))
            .await
            .expect("put");
    }

    // Listing by raw string prefix, across pages (1,050 keys > one page of 1,000).
    let keys = |v: Vec<kiln_blob::ObjectInfo>| v.into_iter().map(|o| o.key).collect::<Vec<_>>();
    assert_eq!(
        keys(blobs.list(&format!("{root}/data/train")).await.expect("list")),
        ["data/train/a.csv", "data/train/b.csv", "data/training.csv"]
    );
    assert_eq!(
        keys(blobs.list(&format!("{root}/data/train/")).await.expect("list")),
        ["data/train/a.csv", "data/train/b.csv"]
    );
    let listed = blobs.list(&format!("{root}/data/train/a.csv")).await.expect("list");
    assert_eq!(listed[0].uri, format!("{root}/data/train/a.csv"));
    assert_eq!(listed[0].size, 6);
    assert!(blobs.list(&format!("{root}/nothing/")).await.expect("list").is_empty());
    let many: Vec<String> = (0..1050).map(|i| format!("{root}/many/{i:05}")).collect();
    futures::future::try_join_all(many.iter().map(|u| blobs.put_bytes(u, Bytes::from_static(b"x"))))
        .await
        .expect("put many");
    let listed = blobs.list(&format!("{root}/many/")).await.expect("list many");
    assert_eq!(listed.len(), 1050);
    assert_eq!(listed.last().map(|o| o.key.as_str()), Some("many/01049"));

    // Staging a prefix as SageMaker does.
    let staged = blobs
        .download_prefix(&format!("{root}/data/train/"), &scratch.join("channel"))
        .await
        .expect("download_prefix");
    assert_eq!(staged.len(), 2);
    assert_eq!(std::fs::read(scratch.join("channel/a.csv")).expect("a"), b"1,2,3\n");
    let one = blobs
        .download_prefix(&format!("{root}/data/test/c.csv"), &scratch.join("single"))
        .await
        .expect("single object");
    assert_eq!(one[0].1, scratch.join("single/c.csv"));
    let e = blobs
        .download_prefix(&format!("{root}/empty/"), scratch)
        .await
        .expect_err("no objects");
    assert_eq!(e.to_string(), format!("no objects under {root}/empty/"));

    // model.tar.gz round trip.
    let model = scratch.join("model");
    std::fs::create_dir_all(model.join("sub")).expect("mkdir");
    std::fs::write(model.join("xgboost-model"), data(100_000, 3)).expect("write");
    std::fs::write(model.join("sub/meta.json"), b"{\"a\":1}").expect("write");
    let tgz = scratch.join("model.tar.gz");
    pack_tar_gz(&model, &tgz).expect("pack");
    let tgz_uri = format!("{root}/job/output/model.tar.gz");
    blobs.upload(&tgz, &tgz_uri).await.expect("upload tar");
    let fetched = scratch.join("fetched.tar.gz");
    blobs.download(&tgz_uri, &fetched).await.expect("download tar");
    let unpacked = scratch.join("unpacked");
    unpack_tar_gz(&fetched, &unpacked).expect("unpack");
    assert_eq!(
        std::fs::read(unpacked.join("xgboost-model")).expect("model"),
        data(100_000, 3)
    );
    assert_eq!(
        std::fs::read(unpacked.join("sub/meta.json")).expect("meta"),
        b"{\"a\":1}"
    );

    // Errors name the URI.
    blobs.delete(&format!("{root}/small/hello.txt")).await.expect("delete");
    blobs
        .delete(&format!("{root}/small/hello.txt"))
        .await
        .expect("delete missing");
    let e = blobs
        .get_bytes(&format!("{root}/small/hello.txt"))
        .await
        .expect_err("deleted");
    assert!(matches!(e, BlobError::NotFound { .. }), "{e}");
    assert_eq!(e.to_string(), format!("{root}/small/hello.txt does not exist"));
    let e = blobs
        .download(&format!("{root}/missing.bin"), &scratch.join("missing.bin"))
        .await
        .expect_err("missing");
    assert!(e.to_string().contains(&format!("{root}/missing.bin")), "{e}");
    assert!(!scratch.join("missing.bin").exists());

    // Keys with empty segments (a prefix ending in '/' joined with "/train") and odd characters:
    // legal in S3, beyond object_store's paths, so they go through plain signed requests.
    let odd = format!("{root}/dbl//train/a b+c.txt");
    blobs
        .put_bytes(&odd, Bytes::from_static(b"odd"))
        .await
        .expect("put_bytes //");
    assert_eq!(
        blobs.get_bytes(&odd).await.expect("get_bytes //"),
        Bytes::from_static(b"odd")
    );
    let file = scratch.join("upload-dbl.bin");
    std::fs::write(&file, data(3 * MIB, 11)).expect("write");
    let up = format!("{root}/dbl//train/sub/x.bin");
    assert_eq!(blobs.upload(&file, &up).await.expect("upload //"), (3 * MIB) as u64);
    let listed = blobs.list(&format!("{root}/dbl//train/")).await.expect("list //");
    assert_eq!(
        listed.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        ["dbl//train/a b+c.txt", "dbl//train/sub/x.bin"]
    );
    assert_eq!(listed[1].size, (3 * MIB) as u64);
    let down = scratch.join("down-dbl/x.bin");
    blobs.download(&up, &down).await.expect("download //");
    assert_eq!(std::fs::read(&down).expect("read"), data(3 * MIB, 11));
    let e = blobs
        .get_bytes(&format!("{root}/dbl//missing"))
        .await
        .expect_err("missing //");
    assert!(matches!(e, BlobError::NotFound { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_operations_on_the_embedded_store() {
    let kiln = start_kiln();
    create_bucket(&kiln.endpoint, "embedded-data");
    let scratch = tempfile::tempdir().expect("scratch");
    exercise(&blobs_for(&kiln.endpoint), "embedded-data", scratch.path()).await;

    // Wrong credentials: access denied, naming the URI.
    let mut wrong = kiln.endpoint.clone();
    wrong.secret_access_key = "wrong".into();
    let e = blobs_for(&wrong)
        .get_bytes("s3://embedded-data/data/train/a.csv")
        .await
        .expect_err("refused");
    assert!(matches!(e, BlobError::AccessDenied { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("access denied to s3://embedded-data/data/train/a.csv"),
        "{e}"
    );
    assert!(http_status(kiln.port, "/_kiln/health") == Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_operations_on_moto() {
    let moto = start_moto();
    create_bucket(&moto.endpoint, "moto-data");
    let scratch = tempfile::tempdir().expect("scratch");
    exercise(&blobs_for(&moto.endpoint), "moto-data", scratch.path()).await;
    assert!(http_status(moto.port, "/moto-api/").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buckets_route_to_their_configured_endpoint() {
    let kiln = start_kiln();
    let moto = start_moto();
    create_bucket(&kiln.endpoint, "shared-name");
    create_bucket(&moto.endpoint, "shared-name");
    create_bucket(&moto.endpoint, "external-only");
    let routed = Blobs::new(BlobConfig {
        embedded: kiln.endpoint.clone(),
        external: vec![("external-only".into(), moto.endpoint.clone())],
    })
    .with_transfer(TransferConfig {
        parallel_download_threshold: 6 * MIB as u64,
        range_size: MIB as u64,
        multipart_threshold: 5 * MIB as u64,
        part_size: 5 * MIB,
        concurrency: 3,
        unsigned_payload: true,
    });
    routed
        .put_bytes("s3://shared-name/who", Bytes::from_static(b"embedded"))
        .await
        .expect("put embedded");
    routed
        .put_bytes("s3://external-only/who", Bytes::from_static(b"external"))
        .await
        .expect("put external");
    // Each write landed where the configuration sent it, and nowhere else.
    let at_kiln = blobs_for(&kiln.endpoint);
    let at_moto = blobs_for(&moto.endpoint);
    assert_eq!(
        at_kiln.get_bytes("s3://shared-name/who").await.expect("kiln"),
        "embedded"
    );
    assert!(at_moto.get_bytes("s3://shared-name/who").await.is_err());
    assert_eq!(
        at_moto.get_bytes("s3://external-only/who").await.expect("moto"),
        "external"
    );
    assert!(at_kiln.get_bytes("s3://external-only/who").await.is_err());

    // `*` sends every other bucket to the external endpoint.
    let everything_external = Blobs::new(BlobConfig {
        embedded: kiln.endpoint.clone(),
        external: vec![("*".into(), moto.endpoint.clone())],
    });
    assert_eq!(
        everything_external
            .get_bytes("s3://shared-name/who")
            .await
            .err()
            .map(|e| e.to_string()),
        Some("s3://shared-name/who does not exist".into())
    );

    // Small transfer settings: a 7 MiB file goes multipart and comes back in 1 MiB ranges.
    let scratch = tempfile::tempdir().expect("scratch");
    let file = scratch.path().join("seven.bin");
    let content = data(7 * MIB + 3, 11);
    std::fs::write(&file, &content).expect("write");
    for bucket in ["shared-name", "external-only"] {
        let uri = format!("s3://{bucket}/seven.bin");
        routed.upload(&file, &uri).await.expect("upload");
        let back = scratch.path().join(format!("{bucket}.bin"));
        routed.download(&uri, &back).await.expect("download");
        assert!(std::fs::read(&back).expect("read") == content, "{bucket}: bytes differ");
    }
    // A local file URI next to S3 ones.
    let local = format!("file://{}", scratch.path().join("local/copy.bin").display());
    routed.upload(&file, &local).await.expect("upload to file://");
    assert_eq!(
        routed.list(&local).await.expect("list file://")[0].size,
        content.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prefix_of_large_small_and_empty_objects_stages_byte_for_byte() {
    let kiln = start_kiln();
    create_bucket(&kiln.endpoint, "staging");
    // Small settings, so that several objects at once each want more ranges than are allowed in
    // flight across all of them.
    let blobs = blobs_for(&kiln.endpoint).with_transfer(TransferConfig {
        parallel_download_threshold: 6 * MIB as u64,
        range_size: MIB as u64,
        concurrency: 3,
        ..TransferConfig::default()
    });
    let objects: Vec<(String, Vec<u8>)> = [
        ("a.bin", 7 * MIB + 3),
        ("b.bin", 9 * MIB),
        ("c.bin", 2 * MIB + 1),
        ("empty.bin", 0),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, len))| (name.to_string(), data(len, 20 + i as u64)))
    .collect();
    for (name, content) in &objects {
        blobs
            .put_bytes(&format!("s3://staging/channel/{name}"), Bytes::from(content.clone()))
            .await
            .expect("put");
    }
    let scratch = tempfile::tempdir().expect("scratch");
    let staged = blobs
        .download_prefix("s3://staging/channel/", &scratch.path().join("train"))
        .await
        .expect("stage");
    assert_eq!(staged.len(), objects.len());
    for (name, content) in &objects {
        let got = std::fs::read(scratch.path().join("train").join(name)).expect("staged file");
        assert!(
            got == *content,
            "{name}: staged bytes differ ({} vs {} bytes)",
            got.len(),
            content.len()
        );
    }
}
