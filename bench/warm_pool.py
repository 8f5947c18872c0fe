#!/usr/bin/env python3
"""What a warm pool saves a script-mode job with a requirements.txt: create → Completed of the same
job started cold (a fresh server: empty environment caches), then, interleaved, reusing a warm pool
(KeepAlivePeriodInSeconds) and started anew with the caches warm (no keep-alive).

    python3 bench/warm_pool.py <endpoint> <access-key-file> [rounds]
"""
import json
import statistics
import sys

from kilnbench import clients, time_job, upload_source

REQUIREMENTS = b"tabulate==0.9.0\n"
TRAIN = b"import tabulate\nprint(tabulate.tabulate([[1, 2]]), flush=True)\n"


def run(sm, src, name, keep_alive):
    resources = {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1}
    if keep_alive:
        resources["KeepAlivePeriodInSeconds"] = keep_alive
    return time_job(
        sm, TrainingJobName=name, RoleArn="arn:aws:iam::123456789012:role/R",
        AlgorithmSpecification={"TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
                                "TrainingInputMode": "File"},
        HyperParameters={"sagemaker_program": json.dumps("train.py"), "sagemaker_submit_directory": json.dumps(src)},
        OutputDataConfig={"S3OutputPath": "s3://bench/out"},
        ResourceConfig=resources,
        StoppingCondition={"MaxRuntimeInSeconds": 900})


def main():
    endpoint, keys = sys.argv[1:3]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    sm, s3 = clients(endpoint, keys)
    src = upload_source(s3, {"train.py": TRAIN, "requirements.txt": REQUIREMENTS})
    cold, _ = run(sm, src, "cold", 600)
    reused, fresh = [], []
    for i in range(rounds):
        t, d = run(sm, src, f"pooled-{i}", 600)
        starting = " ".join(tr["StatusMessage"] for tr in d["SecondaryStatusTransitions"] if tr["Status"] == "Starting")
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
