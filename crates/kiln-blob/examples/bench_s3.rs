//! Throughput of an S3 endpoint through kiln-blob: uploads a file (multipart, parts in parallel)
//! and downloads it back (parallel ranges), timing each, and checks the copy has the same size.
//! Used by `scripts/bench-s3.sh` against `kiln serve`.
//!
//! usage: bench_s3 <endpoint-url> <access-key-id> <secret> <bucket> <file> <download-to> [unsigned]
//! (`unsigned`: requests carry `UNSIGNED-PAYLOAD` instead of the body's SHA-256)

use std::path::Path;
use std::time::Instant;

use kiln_blob::{BlobConfig, Blobs, S3Endpoint, TransferConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (args, unsigned) = match args.split_last() {
        Some((last, rest)) if last == "unsigned" => (rest, true),
        _ => (args.as_slice(), false),
    };
    let [
        _,
        endpoint_url,
        access_key_id,
        secret_access_key,
        bucket,
        file,
        download_to,
    ] = args
    else {
        return Err(
            "usage: bench_s3 <endpoint-url> <access-key-id> <secret> <bucket> <file> <download-to> [unsigned]".into(),
        );
    };
    let blobs = Blobs::new(BlobConfig {
        embedded: S3Endpoint {
            endpoint_url: endpoint_url.clone(),
            region: "us-east-1".into(),
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
            path_style: true,
        },
        external: vec![],
    })
    .with_transfer(TransferConfig {
        unsigned_payload: unsigned,
        ..TransferConfig::default()
    });
    let uri = format!("s3://{bucket}/bench/object.bin");
    let t = Instant::now();
    let size = blobs.upload(Path::new(file), &uri).await?;
    let put = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let got = blobs.download(&uri, Path::new(download_to)).await?;
    let get = t.elapsed().as_secs_f64();
    if got != size {
        return Err(format!("downloaded {got} bytes of {size}").into());
    }
    let mb = size as f64 / 1e6;
    println!("put_seconds={put:.3} put_mb_s={:.1}", mb / put);
    println!("get_seconds={get:.3} get_mb_s={:.1}", mb / get);
    Ok(())
}
