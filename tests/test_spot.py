"""Managed spot: `kiln jobs interrupt` interrupts a spot job (its hosts stop, `Interrupted`), a new
attempt restores its checkpoints and carries on, and the job completes with billable time below
its training time; a spot job past MaxWaitTimeInSeconds ends Stopped / MaxWaitTimeExceeded."""
import subprocess
import time

import pytest

from kilntest import Kiln, kiln_bin
from test_jobs import bundle, script_job, wait

# Counts to 6, one step a second, resuming from the newest checkpoint.
COUNTER = """
import json, os, time
d = json.load(open("/opt/ml/input/config/checkpointconfig.json"))["LocalPath"]
done = sorted(int(f.split("-")[1]) for f in os.listdir(d) if f.startswith("step-"))
start = done[-1] + 1 if done else 0
print(f"resuming at step {start}", flush=True)
for n in range(start, 6):
    time.sleep(1)
    open(os.path.join(d, f"step-{n}"), "w").write(str(n))
    print(f"step {n}", flush=True)
open(os.path.join(os.environ["SM_MODEL_DIR"], "steps.json"), "w").write(json.dumps(sorted(os.listdir(d))))
"""


@pytest.fixture(scope="module")
def kiln():
    k = Kiln(config='[jobs]\nstop_grace_seconds = 2\n').start()
    k.client("s3").create_bucket(Bucket="jobs")
    yield k
    k.stop()


def interrupt(kiln, name):
    p = subprocess.run([kiln_bin(), "jobs", "interrupt", name], env=kiln.env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p


def spot_job(name, src, max_wait=300):
    req = script_job(name, src)
    req["EnableManagedSpotTraining"] = True
    req["StoppingCondition"] = {"MaxRuntimeInSeconds": min(120, max_wait), "MaxWaitTimeInSeconds": max_wait}
    req["CheckpointConfig"] = {"S3Uri": f"s3://jobs/spot-checkpoints/{name}"}
    return req


def wait_for_step(sm, kiln, name, step, timeout=60):
    logs = kiln.client("logs")
    deadline = time.time() + timeout
    while time.time() < deadline:
        streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/")["logStreams"]
        lines = [e["message"] for s in streams for e in logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"], startFromHead=True)["events"]]
        if f"step {step}" in lines:
            return lines
        time.sleep(0.2)
    raise AssertionError(f"{name} never reached step {step}")


def test_interrupted_spot_job_resumes_from_its_checkpoints_and_completes(kiln):
    sm = kiln.client()
    src = bundle(kiln.client("s3"), "code/spot/sourcedir.tar.gz", {"train.py": COUNTER})
    sm.create_training_job(**spot_job("spot-1", src))
    wait_for_step(sm, kiln, "spot-1", 1)
    interrupt(kiln, "spot-1")
    time.sleep(0.5)
    wait_for_step(sm, kiln, "spot-1", 3)
    interrupt(kiln, "spot-1")
    d = wait(sm, "spot-1", timeout=120)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses.count("Interrupted") == 2, statuses
    assert statuses[-2:] == ["Uploading", "Completed"], statuses
    assert statuses[statuses.index("Interrupted") + 1] == "Starting", statuses
    interrupted = next(t for t in d["SecondaryStatusTransitions"] if t["Status"] == "Interrupted")
    assert "spot capacity was reclaimed" in interrupted["StatusMessage"]
    assert d["BillableTimeInSeconds"] <= d["TrainingTimeInSeconds"], d
    # Every step ran once across the attempts; later attempts resumed after the newest checkpoint.
    logs = wait_for_step(sm, kiln, "spot-1", 5)
    resumed = [l for l in logs if l.startswith("resuming at step")]
    assert resumed[0] == "resuming at step 0" and len(resumed) == 3 and "resuming at step 0" not in resumed[1:], resumed
    keys = sorted(o["Key"] for o in kiln.client("s3").list_objects_v2(Bucket="jobs", Prefix="spot-checkpoints/spot-1/")["Contents"])
    assert keys == [f"spot-checkpoints/spot-1/step-{n}" for n in range(6)], keys


def test_only_running_spot_jobs_can_be_interrupted(kiln):
    sm = kiln.client()
    src = bundle(kiln.client("s3"), "code/spot/sourcedir.tar.gz", {"train.py": COUNTER})
    sm.create_training_job(**script_job("on-demand", src))
    p = subprocess.run([kiln_bin(), "jobs", "interrupt", "on-demand"], env=kiln.env(), capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "not a managed spot job" in p.stderr, p.stderr
    sm.stop_training_job(TrainingJobName="on-demand")


def test_a_spot_job_past_its_max_wait_ends_max_wait_time_exceeded(kiln):
    sm = kiln.client()
    src = bundle(kiln.client("s3"), "code/spot/sourcedir.tar.gz", {"train.py": COUNTER})
    sm.create_training_job(**spot_job("spot-wait", src, max_wait=4))
    wait_for_step(sm, kiln, "spot-wait", 0)
    interrupt(kiln, "spot-wait")
    d = wait(sm, "spot-wait", timeout=60)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "MaxWaitTimeExceeded"), d["SecondaryStatusTransitions"]
