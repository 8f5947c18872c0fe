#!/usr/bin/env python3
"""Platform overhead of a training job on the embedded defaults: CreateTrainingJob of a no-op job
(image kiln/noop) until DescribeTrainingJob says Completed, through boto3 against a running kiln.

    python3 bench/job_overhead.py <endpoint> <access-key> <secret> [jobs]
"""
import statistics
import sys
import time

from kilnbench import bench_bucket, clients, time_job

REFERENCE_S = 198  # a published SageMaker XGBoost tutorial, create → Completed, for 0.06 s of training


def main():
    endpoint, key, secret = sys.argv[1:4]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    sm, s3 = clients(endpoint, key=key, secret=secret)
    bench_bucket(s3)
    stamp = int(time.time())
    times = []
    for i in range(n):
        name = f"noop-{stamp}-{i}"
        elapsed, _ = time_job(
            sm, TrainingJobName=name, RoleArn="arn:aws:iam::123456789012:role/R",
            AlgorithmSpecification={"TrainingImage": "kiln/noop", "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": "s3://bench/out"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            StoppingCondition={"MaxRuntimeInSeconds": 60})
        times.append(elapsed)
    times.sort()
    med = statistics.median(times)
    print(f"no-op job, create -> Completed, {n} jobs one after another:")
    print(f"  median {med * 1000:.0f} ms, mean {statistics.mean(times) * 1000:.0f} ms, "
          f"p90 {times[int(0.9 * (n - 1))] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms")
    print(f"  vs SageMaker's {REFERENCE_S} s end to end for a 0.06 s training job: {REFERENCE_S / med:.0f}x faster")


if __name__ == "__main__":
    main()
