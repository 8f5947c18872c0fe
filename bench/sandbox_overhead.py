#!/usr/bin/env python3
"""What the sandbox costs a script-mode job: create → Completed of the same one-line script on two
running kiln servers, one with [jobs] sandbox = "bwrap" and one with "none", jobs interleaved so both
see the same moment of the machine.

    python3 bench/sandbox_overhead.py <endpoint-bwrap> <endpoint-none> <access-key-file-bwrap> <access-key-file-none> [jobs]
"""
import json
import statistics
import sys

from kilnbench import clients, time_job, upload_source


def run(sm, src, name):
    return time_job(
        sm, TrainingJobName=name, RoleArn="arn:aws:iam::123456789012:role/R",
        AlgorithmSpecification={"TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
                                "TrainingInputMode": "File"},
        HyperParameters={"sagemaker_program": json.dumps("train.py"), "sagemaker_submit_directory": json.dumps(src)},
        OutputDataConfig={"S3OutputPath": "s3://bench/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 120})[0]


def main():
    bw, none, bw_keys, none_keys = sys.argv[1:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    (sm_b, s3_b), (sm_n, s3_n) = clients(bw, bw_keys), clients(none, none_keys)
    script = {"train.py": b"print('hello from the job', flush=True)\n"}
    src_b, src_n = upload_source(s3_b, script), upload_source(s3_n, script)
    # One warm-up each (the first job of a server resolves the interpreter, fills caches).
    run(sm_b, src_b, "warm"), run(sm_n, src_n, "warm")
    with_box, without = [], []
    for i in range(n):
        with_box.append(run(sm_b, src_b, f"job-{i}"))
        without.append(run(sm_n, src_n, f"job-{i}"))
    mb, mn = statistics.median(with_box), statistics.median(without)
    diffs = sorted(a - b for a, b in zip(with_box, without))
    print(f"script-mode job (1 host, a one-line script), create -> Completed, {n} interleaved pairs:")
    print(f"  sandbox = \"bwrap\": median {mb * 1000:.0f} ms (min {min(with_box) * 1000:.0f})")
    print(f"  sandbox = \"none\":  median {mn * 1000:.0f} ms (min {min(without) * 1000:.0f})")
    print(f"  the sandbox adds {(mb - mn) * 1000:.0f} ms a host (median of pairs {statistics.median(diffs) * 1000:.0f} ms); aim < 50 ms")


if __name__ == "__main__":
    main()
