"""What the job benchmarks share: boto3 clients for a running kiln, a script-mode source uploaded to
the bucket `bench`, and a job timed from CreateTrainingJob to Completed."""
import io
import sys
import tarfile
import time
import tomllib

import boto3
from botocore.config import Config


def clients(endpoint, keys_file=None, key=None, secret=None):
    """SageMaker and S3 clients with the first key of `keys_file` (or `key`/`secret`), no retries."""
    if keys_file:
        first = tomllib.load(open(keys_file, "rb"))["keys"][0]
        key, secret = first["access_key_id"], first["secret_access_key"]
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
              aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))
    return boto3.client("sagemaker", **kw), boto3.client("s3", **kw)


def bench_bucket(s3):
    try:
        s3.create_bucket(Bucket="bench")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


def upload_source(s3, files):
    """Uploads `files` ({name: bytes}) as s3://bench/code/sourcedir.tar.gz and returns its URI."""
    bench_bucket(s3)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket="bench", Key="code/sourcedir.tar.gz", Body=buf.getvalue())
    return "s3://bench/code/sourcedir.tar.gz"


def time_job(sm, **request):
    """Creates the job and polls until it ends: (seconds from create to the end, its description).
    Exits the benchmark if it did not complete."""
    name = request["TrainingJobName"]
    t0 = time.perf_counter()
    sm.create_training_job(**request)
    while True:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    if d["TrainingJobStatus"] != "Completed":
        sys.exit(f"{name} ended {d['TrainingJobStatus']}: {d.get('FailureReason')}")
    return elapsed, d
