"""Checkpoints (CheckpointConfig): the directory is mirrored to its S3 prefix while the job runs, in
full at the end, and a job on the same prefix starts with it restored (reference §9)."""
import io
import json
import tarfile
import time

from kilntest import flights_xgboost_request, jobs_server
from test_jobs import bundle, script_job, wait

import pytest


@pytest.fixture(scope="module")
def kiln():
    yield from jobs_server('[jobs]\nstop_grace_seconds = 2\n')


WRITER = """
import os, time
d = __import__("json").load(open("/opt/ml/input/config/checkpointconfig.json")).get("LocalPath", "/opt/ml/checkpoints")
found = sorted(os.listdir(d))
print("restored:", ",".join(found) or "-", flush=True)
start = len(found)
for n in range(start, start + 4):
    with open(os.path.join(d, f"epoch-{n}"), "w") as f:
        f.write(f"state {n}")
    print(f"wrote epoch-{n}", flush=True)
    time.sleep(1.5)
"""


def keys(s3, prefix):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket="jobs", Prefix=prefix).get("Contents", []))


def test_checkpoints_sync_while_running_and_come_back_for_the_next_job(kiln):
    sm, s3 = kiln.client(), kiln.client("s3")
    src = bundle(s3, "code/ckpt/sourcedir.tar.gz", {"train.py": WRITER})
    req = script_job("ckpt-1", src)
    req["CheckpointConfig"] = {"S3Uri": "s3://jobs/checkpoints/run"}
    sm.create_training_job(**req)
    # Files reach S3 while the job is still training.
    seen_while_running = []
    deadline = time.time() + 60
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName="ckpt-1")
        found = keys(s3, "checkpoints/run/")
        if d["TrainingJobStatus"] != "InProgress":
            break
        if found and not seen_while_running and d["SecondaryStatus"] == "Training":
            seen_while_running = found
        time.sleep(0.1)
    d = wait(sm, "ckpt-1", timeout=60)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert seen_while_running and len(seen_while_running) < 4, seen_while_running
    assert keys(s3, "checkpoints/run/") == [f"checkpoints/run/epoch-{n}" for n in range(4)]
    assert s3.get_object(Bucket="jobs", Key="checkpoints/run/epoch-3")["Body"].read() == b"state 3"
    # A second job on the same prefix (here with its own LocalPath) starts from them.
    req = script_job("ckpt-2", src)
    req["CheckpointConfig"] = {"S3Uri": "s3://jobs/checkpoints/run/", "LocalPath": "/opt/ml/checkpoints2"}
    sm.create_training_job(**req)
    d = wait(sm, "ckpt-2", timeout=60)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    logs = kiln.client("logs")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="ckpt-2/")["logStreams"][0]
    lines = [e["message"] for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                                         logStreamName=stream["logStreamName"], startFromHead=True)["events"]]
    assert "restored: epoch-0,epoch-1,epoch-2,epoch-3" in lines, lines
    assert any("restored 4 checkpoint file(s) from s3://jobs/checkpoints/run/" in l for l in lines), lines
    assert keys(s3, "checkpoints/run/") == [f"checkpoints/run/epoch-{n}" for n in range(8)]


def _log_lines(kiln, job):
    logs = kiln.client("logs")
    out = []
    for stream in logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                            logStreamNamePrefix=f"{job}/")["logStreams"]:
        out += [e["message"] for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                                          logStreamName=stream["logStreamName"],
                                                          startFromHead=True)["events"]]
    return out


def test_builtin_xgboost_checkpoints_and_resumes(kiln):
    """The built-in XGBoost writes `xgboost-checkpoint.<round>` (the last 5) to the checkpoint
    directory, mirrored to the S3 URI; a job on the same URI with a larger num_round resumes from
    the newest and trains only the rounds left."""
    sm, s3 = kiln.client(), kiln.client("s3")

    def request(name, rounds):
        return flights_xgboost_request(s3, name, "xgbck", "s3://jobs/xgb-checkpoints/run",
                                       num_round=rounds, max_depth=4, eta=0.3)

    sm.create_training_job(**request("xgb-ck-1", 8))
    d = wait(sm, "xgb-ck-1", timeout=300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert keys(s3, "xgb-checkpoints/run/") == [f"xgb-checkpoints/run/xgboost-checkpoint.{r}" for r in range(3, 8)]
    body = s3.get_object(Bucket="jobs", Key="xgb-checkpoints/run/xgboost-checkpoint.7")["Body"].read()
    model = json.loads(body)
    assert model["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] == "8"

    sm.create_training_job(**request("xgb-ck-2", 12))
    d = wait(sm, "xgb-ck-2", timeout=300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    lines = _log_lines(kiln, "xgb-ck-2")
    assert any("Resuming from checkpoint xgboost-checkpoint.7 (round 8 of 12)" in l for l in lines), lines
    rounds = [l.split("]")[0].lstrip("[") for l in lines if l.startswith("[") and "train-auc" in l]
    assert rounds == ["8", "9", "10", "11"], lines
    assert keys(s3, "xgb-checkpoints/run/") == sorted(f"xgb-checkpoints/run/xgboost-checkpoint.{r}" for r in range(7, 12))
    out = s3.get_object(Bucket="jobs", Key="xgbck-out/xgb-ck-2/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        final = json.load(tar.extractfile("xgboost-model"))
    assert final["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] == "12"
