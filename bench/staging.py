#!/usr/bin/env python3
"""How long a job's `Downloading` phase takes to stage a File-mode channel from kiln's embedded S3
endpoint, next to `cp -r` + `sync` of the same bytes on the same disk, in the same run.

Each layout under <src-dir> (a directory of files) is uploaded once to s3://bench/staging/<layout>/
of every server given, then each round copies it with `cp -r` + `sync` and runs, on each server, a
no-op job (image kiln/noop, which stages its channels like any job and then exits) whose `train`
channel is that prefix. The job's time is its `Downloading` transition in DescribeTrainingJob's
SecondaryStatusTransitions (the agent lists, downloads and fsyncs every object of the channel).
Best and median of the rounds are printed, as ratios cp+sync time / Downloading time.

    python3 bench/staging.py <src-dir> <rounds> "<layout>..." (<label> <endpoint> <key> <secret>)...
"""
import os
import shutil
import statistics
import subprocess
import sys
import time

from boto3.s3.transfer import TransferConfig
from kilnbench import bench_bucket, clients, time_job


def upload(s3, src, layout):
    """Uploads every file of src/layout under staging/<layout>/ (16 MiB parts, 8 in flight)."""
    config = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20, max_concurrency=8)
    for name in sorted(os.listdir(os.path.join(src, layout))):
        s3.upload_file(os.path.join(src, layout, name), "bench", f"staging/{layout}/{name}", Config=config)


def copy_seconds(src, dest):
    """`cp -r` of the layout's directory and a `sync`, as one wall time."""
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", src, dest], check=True)
    subprocess.run(["sync"], check=True)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(dest)
    return elapsed


def downloading_seconds(sm, name, layout):
    """Runs a no-op job with the layout as its `train` channel; its Downloading phase in seconds."""
    _, d = time_job(
        sm, TrainingJobName=name, RoleArn="arn:aws:iam::123456789012:role/R",
        AlgorithmSpecification={"TrainingImage": "kiln/noop", "TrainingInputMode": "File"},
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://bench/staging/{layout}/",
            "S3DataDistributionType": "FullyReplicated"}}}],
        OutputDataConfig={"S3OutputPath": "s3://bench/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600})
    phase = [t for t in d["SecondaryStatusTransitions"] if t["Status"] == "Downloading"]
    if len(phase) != 1 or "EndTime" not in phase[0]:
        sys.exit(f"{name}: expected one finished Downloading transition, got {d['SecondaryStatusTransitions']}")
    return (phase[0]["EndTime"] - phase[0]["StartTime"]).total_seconds()


def load():
    return open("/proc/loadavg").read().split()[0]


def main():
    src, rounds, layouts = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
    rest = sys.argv[4:]
    servers = []
    for i in range(0, len(rest), 4):
        label, endpoint, key, secret = rest[i:i + 4]
        sm, s3 = clients(endpoint, key=key, secret=secret)
        bench_bucket(s3)
        servers.append((label, sm, s3))
    stamp = int(time.time())
    summary = []
    for layout in layouts:
        names = os.listdir(os.path.join(src, layout))
        mb = sum(os.path.getsize(os.path.join(src, layout, n)) for n in names) / 1e6
        for _, _, s3 in servers:
            upload(s3, src, layout)
        # A warm-up of each, not counted: the first touch of memory on a VM is slow, whoever touches it.
        copy_seconds(os.path.join(src, layout), os.path.join(src, f"{layout}.copy"))
        for label, sm, _ in servers:
            downloading_seconds(sm, f"staging-{stamp}-{layout}-warm", layout)
        cps, jobs = [], {label: [] for label, _, _ in servers}
        for r in range(rounds):
            c = copy_seconds(os.path.join(src, layout), os.path.join(src, f"{layout}.copy"))
            cps.append(c)
            line = f"{layout} round {r + 1}: cp+sync {c:.2f} s ({mb / c:.0f} MB/s)"
            for label, sm, _ in servers:
                j = downloading_seconds(sm, f"staging-{stamp}-{layout}-{r}", layout)
                jobs[label].append(j)
                line += f"; {label}: Downloading {j:.2f} s ({mb / j:.0f} MB/s) = {c / j:.2f}x of cp"
            print(f"{line}; load {load()}", flush=True)
        summary.append((layout, len(names), mb, cps, jobs))
    print(f"best of {rounds} [median]; ratio = cp+sync time / Downloading time; load now {load()}:")
    for layout, files, mb, cps, jobs in summary:
        c, mc = min(cps), statistics.median(cps)
        print(f"  {layout}: {files} object(s), {mb:.0f} MB: cp+sync {c:.2f} s ({mb / c:.0f} MB/s) [{mc:.2f} s]")
        for label, js in jobs.items():
            j, mj = min(js), statistics.median(js)
            print(f"    {label:<12} Downloading {j:.2f} s ({mb / j:.0f} MB/s) [{mj:.2f} s]: "
                  f"{c / j:.2f}x of cp [{mc / mj:.2f}x]")


if __name__ == "__main__":
    main()
