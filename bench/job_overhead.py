#!/usr/bin/env python3
"""Platform overhead of a training job on the embedded defaults: CreateTrainingJob of a no-op job
(image kiln/noop) until DescribeTrainingJob says Completed, through boto3 against a running kiln.

    python3 bench/job_overhead.py <endpoint> <access-key> <secret> [jobs]
"""
import statistics
import sys
import time

import boto3
from botocore.config import Config

REFERENCE_S = 198  # a published SageMaker XGBoost tutorial, create → Completed, for 0.06 s of training


def main():
    endpoint, key, secret = sys.argv[1:4]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret,
              config=Config(retries={"max_attempts": 1}))
    sm, s3 = boto3.client("sagemaker", **kw), boto3.client("s3", **kw)
    try:
        s3.create_bucket(Bucket="bench")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    stamp = int(time.time())
    times = []
    for i in range(n):
        name = f"noop-{stamp}-{i}"
        t0 = time.perf_counter()
        sm.create_training_job(
            TrainingJobName=name, RoleArn="arn:aws:iam::123456789012:role/R",
            AlgorithmSpecification={"TrainingImage": "kiln/noop", "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": "s3://bench/out"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            StoppingCondition={"MaxRuntimeInSeconds": 60})
        while True:
            d = sm.describe_training_job(TrainingJobName=name)
            if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
                break
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        if d["TrainingJobStatus"] != "Completed":
            sys.exit(f"{name} ended {d['TrainingJobStatus']}: {d.get('FailureReason')}")
        times.append(elapsed)
    times.sort()
    med = statistics.median(times)
    print(f"no-op job, create -> Completed, {n} jobs one after another:")
    print(f"  median {med * 1000:.0f} ms, mean {statistics.mean(times) * 1000:.0f} ms, "
          f"p90 {times[int(0.9 * (n - 1))] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms")
    print(f"  vs SageMaker's {REFERENCE_S} s end to end for a 0.06 s training job: {REFERENCE_S / med:.0f}x faster")


if __name__ == "__main__":
    main()
