#!/usr/bin/env python3
"""What kiln adds to Slurm's own start-up: create → `Training` of a no-op training job on the Slurm
executor, next to Slurm's submit → RUNNING of a trivial batch job of the same size submitted through
the same slurmrestd, alternating, in the same run. Each job waits until the cluster is idle again.

    python3 bench/slurm_latency.py <kiln endpoint> <access-key> <secret> <slurmrestd url> <token> [rounds]
"""
import json
import statistics
import sys
import time
import urllib.request

import boto3
from botocore.config import Config

POLL = 0.005


def rest(url, token, method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def idle(url, token):
    """Waits until no job is pending, running or completing."""
    while True:
        jobs = rest(url, token, "GET", "/slurm/v0.0.38/jobs")["jobs"]
        if not any(j["job_state"] in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING") for j in jobs):
            return
        time.sleep(0.05)


def slurm_start(url, token, i):
    """Submit → first answer that is no longer PENDING, for a 1-node job asking what ml.m5.large asks."""
    body = {"script": "#!/bin/bash\nsleep 1\n", "job": {
        "name": f"bench-ref-{i}", "partition": "debug", "nodes": [1, 1], "tasks": 1, "tasks_per_node": 1,
        "cpus_per_task": 2, "memory_per_node": 8192, "time_limit": 5, "no_requeue": True,
        "current_working_directory": "/tmp", "standard_output": "/dev/null",
        "environment": {"PATH": "/usr/bin:/bin"}}}
    t0 = time.perf_counter()
    job_id = rest(url, token, "POST", "/slurm/v0.0.38/job/submit", body)["job_id"]
    while rest(url, token, "GET", f"/slurm/v0.0.38/job/{job_id}")["jobs"][0]["job_state"] in ("PENDING", "CONFIGURING"):
        time.sleep(POLL)
    return time.perf_counter() - t0


def kiln_training(sm, i, stamp):
    """CreateTrainingJob → DescribeTrainingJob shows Training (client side), and the same from the
    server's own timestamps (CreationTime → the Training transition)."""
    name = f"bench-slurm-{stamp}-{i}"
    t0 = time.perf_counter()
    sm.create_training_job(
        TrainingJobName=name, RoleArn="arn:aws:iam::123456789012:role/R",
        AlgorithmSpecification={"TrainingImage": "kiln/noop", "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": "s3://bench/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60})
    while True:
        d = sm.describe_training_job(TrainingJobName=name)
        seen = [t["Status"] for t in d["SecondaryStatusTransitions"]]
        if "Training" in seen or d["TrainingJobStatus"] in ("Failed", "Stopped"):
            break
        time.sleep(POLL)
    client = time.perf_counter() - t0
    if "Training" not in seen:
        sys.exit(f"{name} ended {d['TrainingJobStatus']}: {d.get('FailureReason')}")
    training = next(t for t in d["SecondaryStatusTransitions"] if t["Status"] == "Training")
    server = (training["StartTime"] - d["CreationTime"]).total_seconds()
    while sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress":
        time.sleep(0.05)
    return client, server


def summary(xs):
    xs = sorted(xs)
    return f"median {statistics.median(xs) * 1000:.0f} ms (min {xs[0] * 1000:.0f}, max {xs[-1] * 1000:.0f})"


def main():
    endpoint, key, secret, url, token = sys.argv[1:6]
    rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 10
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret,
              config=Config(retries={"max_attempts": 1}))
    sm, s3 = boto3.client("sagemaker", **kw), boto3.client("s3", **kw)
    try:
        s3.create_bucket(Bucket="bench")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    stamp = int(time.time())
    ref, client, server = [], [], []
    for i in range(rounds):
        idle(url, token)
        ref.append(slurm_start(url, token, i))
        idle(url, token)
        c, s = kiln_training(sm, i, stamp)
        client.append(c)
        server.append(s)
    print(f"{rounds} rounds, one job at a time on an idle cluster:")
    print(f"  Slurm, submit -> RUNNING (REST, trivial batch job): {summary(ref)}")
    print(f"  kiln,  create -> Training (boto3 polling):          {summary(client)}")
    print(f"  kiln,  create -> Training (server timestamps):      {summary(server)}")
    added = statistics.median(client) - statistics.median(ref)
    print(f"  kiln adds {added * 1000:.0f} ms to Slurm's start (medians; aim: at most 300 ms): "
          f"{'met' if added <= 0.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
