"""Managed spot: `kiln jobs interrupt` interrupts a spot job (its hosts stop, `Interrupted`), a new
attempt restores its checkpoints and carries on, and the job completes with billable time below
its training time; a spot job past MaxWaitTimeInSeconds ends Stopped / MaxWaitTimeExceeded."""
import subprocess
import time

import pytest

from kilntest import Kiln, flights_xgboost_request, jobs_server, kiln_bin
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
    yield from jobs_server('[jobs]\nstop_grace_seconds = 2\n')


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
    # Once the new attempt starts, the interrupted one has ended: it uploaded its checkpoints, not a model.
    deadline = time.time() + 60
    while [t["Status"] for t in sm.describe_training_job(TrainingJobName="spot-1")["SecondaryStatusTransitions"]][-1] \
            not in ("Starting", "Downloading", "Training"):
        assert time.time() < deadline
        time.sleep(0.1)
    s3 = kiln.client("s3")
    assert "Contents" not in s3.list_objects_v2(Bucket="jobs", Prefix="output/spot-1/"), "an interrupted attempt uploaded a model"
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


def test_built_in_xgboost_interrupted_twice_ends_with_the_uninterrupted_model(kiln):
    """The issue's check: the built-in XGBoost (300 rounds, checkpointing) interrupted twice
    completes with the same trees as an uninterrupted run, billable time below training time."""
    import io
    import json
    import tarfile
    sm, s3 = kiln.client(), kiln.client("s3")

    def request(name, spot):
        req = flights_xgboost_request(s3, name, "spotxgb", f"s3://jobs/spotxgb-checkpoints/{name}",
                                      num_round=300, max_depth=6, eta=0.05)
        if spot:
            req["EnableManagedSpotTraining"] = True
            req["StoppingCondition"] = {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200}
        return req

    def trees(name):
        body = s3.get_object(Bucket="jobs", Key=f"spotxgb-out/{name}/output/model.tar.gz")["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            model = json.load(tar.extractfile("xgboost-model"))
        return model["learner"]["gradient_booster"]["model"]["trees"]

    def wait_for_checkpoint(name, at_least):
        deadline = time.time() + 120
        while time.time() < deadline:
            found = [o["Key"] for o in s3.list_objects_v2(Bucket="jobs", Prefix=f"spotxgb-checkpoints/{name}/").get("Contents", [])]
            if any(int(k.rsplit(".", 1)[1]) >= at_least for k in found if "xgboost-checkpoint." in k):
                return
            time.sleep(0.1)
        raise AssertionError(f"{name}: no checkpoint of round {at_least}")

    sm.create_training_job(**request("xgb-steady", spot=False))
    sm.create_training_job(**request("xgb-spot", spot=True))
    wait_for_checkpoint("xgb-spot", 10)
    interrupt(kiln, "xgb-spot")
    # The second interruption once the new attempt has checkpointed a round of its own.
    first = max(int(o["Key"].rsplit(".", 1)[1]) for o in s3.list_objects_v2(
        Bucket="jobs", Prefix="spotxgb-checkpoints/xgb-spot/")["Contents"] if "xgboost-checkpoint." in o["Key"])
    wait_for_checkpoint("xgb-spot", first + 20)
    interrupt(kiln, "xgb-spot")
    d = wait(sm, "xgb-spot", timeout=300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses.count("Interrupted") == 2, statuses
    assert d["BillableTimeInSeconds"] <= d["TrainingTimeInSeconds"], d
    steady = wait(sm, "xgb-steady", timeout=300)
    assert steady["TrainingJobStatus"] == "Completed", steady.get("FailureReason")
    # Both new attempts resumed from a checkpoint (not from round 0).
    logs = kiln.client("logs")
    lines = [e["message"] for st in logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                                              logStreamNamePrefix="xgb-spot/")["logStreams"]
             for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                          logStreamName=st["logStreamName"], startFromHead=True)["events"]]
    resumed = [l for l in lines if "Resuming from checkpoint xgboost-checkpoint." in l]
    assert len(resumed) == 2, resumed
    # The same trees (hence the same predictions) as the run that was never interrupted.
    assert trees("xgb-spot") == trees("xgb-steady")


def test_the_random_injector_interrupts_training_spot_jobs_and_they_still_complete():
    """`[spot] interruptions_per_hour`: training spot jobs are interrupted at random (here 1.5 times
    a second of training), resume from their checkpoints, and complete; jobs that are not spot
    jobs are never interrupted."""
    k = Kiln(config='[jobs]\nstop_grace_seconds = 2\n[spot]\ninterruptions_per_hour = 5400\n').start()
    try:
        sm, s3 = k.client(), k.client("s3")
        s3.create_bucket(Bucket="jobs")
        src = bundle(s3, "code/injected/sourcedir.tar.gz", {"train.py": COUNTER})
        sm.create_training_job(**spot_job("injected", src))
        steady = script_job("not-spot", src)
        steady["CheckpointConfig"] = {"S3Uri": "s3://jobs/spot-checkpoints/not-spot"}
        sm.create_training_job(**steady)
        d = wait(sm, "injected", timeout=240)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        interrupted = [t for t in d["SecondaryStatusTransitions"] if t["Status"] == "Interrupted"]
        assert interrupted, [t["Status"] for t in d["SecondaryStatusTransitions"]]
        assert "interruption injector" in interrupted[0]["StatusMessage"], interrupted[0]
        s = wait(sm, "not-spot", timeout=120)
        assert s["TrainingJobStatus"] == "Completed", s.get("FailureReason")
        assert "Interrupted" not in [t["Status"] for t in s["SecondaryStatusTransitions"]]
    finally:
        k.stop()
