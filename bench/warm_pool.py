#!/usr/bin/env python3
"""What a warm pool saves a script-mode job with a requirements.txt: create → Completed of the same
job started cold (a fresh server: empty environment caches), then, interleaved, reusing a warm pool
(KeepAlivePeriodInSeconds) and started anew with the caches warm (no keep-alive).

    python3 bench/warm_pool.py <endpoint> <access-key-file> [rounds]
"""
import io
import json
import statistics
import sys
import tarfile
import time
import tomllib

import boto3
from botocore.config import Config

REQUIREMENTS = "tabulate==0.9.0\n"
TRAIN = b"import tabulate\nprint(tabulate.tabulate([[1, 2]]), flush=True)\n"


def clients(endpoint, keys_file):
    key = tomllib.load(open(keys_file, "rb"))["keys"][0]
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key["access_key_id"],
              aws_secret_access_key=key["secret_access_key"], config=Config(retries={"max_attempts": 1}))
    return boto3.client("sagemaker", **kw), boto3.client("s3", **kw)


def source(s3):
    s3.create_bucket(Bucket="bench")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("train.py", TRAIN), ("requirements.txt", REQUIREMENTS.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket="bench", Key="code/sourcedir.tar.gz", Body=buf.getvalue())
    return "s3://bench/code/sourcedir.tar.gz"


def run(sm, src, name, keep_alive):
    resources = {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1}
    if keep_alive:
        resources["KeepAlivePeriodInSeconds"] = keep_alive
    t0 = time.perf_counter()
    sm.create_training_job(
        TrainingJobName=name, RoleArn="arn:aws:iam::123456789012:role/R",
        AlgorithmSpecification={"TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
                                "TrainingInputMode": "File"},
        HyperParameters={"sagemaker_program": json.dumps("train.py"), "sagemaker_submit_directory": json.dumps(src)},
        OutputDataConfig={"S3OutputPath": "s3://bench/out"},
        ResourceConfig=resources,
        StoppingCondition={"MaxRuntimeInSeconds": 900})
    while True:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            break
        time.sleep(0.005)
    if d["TrainingJobStatus"] != "Completed":
        sys.exit(f"{name} ended {d['TrainingJobStatus']}: {d.get('FailureReason')}")
    return time.perf_counter() - t0, d


def main():
    endpoint, keys = sys.argv[1:3]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    sm, s3 = clients(endpoint, keys)
    src = source(s3)
    cold, _ = run(sm, src, "cold", 600)
    reused, fresh = [], []
    for i in range(rounds):
        t, d = run(sm, src, f"pooled-{i}", 600)
        starting = " ".join(t["StatusMessage"] for t in d["SecondaryStatusTransitions"] if t["Status"] == "Starting")
        if "reusing the warm pool" not in starting:
            sys.exit(f"pooled-{i} did not reuse the warm pool: {starting}")
        reused.append(t)
        fresh.append(run(sm, src, f"fresh-{i}", 0)[0])
    print("script-mode job, SKLearn 1.2-1 image + requirements.txt (tabulate), create -> Completed:")
    print(f"  cold (fresh server, environment built):      {cold:.2f} s")
    print(f"  reusing a warm pool (median of {rounds}):          {statistics.median(reused):.2f} s (min {min(reused):.2f})")
    print(f"  no pool, caches warm (median of {rounds}):         {statistics.median(fresh):.2f} s (min {min(fresh):.2f})")
    print(f"  cold / warm pool: {cold / statistics.median(reused):.1f}x")


if __name__ == "__main__":
    main()
