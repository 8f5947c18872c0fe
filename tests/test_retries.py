"""RetryStrategy: a platform failure (here the host's `kiln agent` SIGKILLed) restarts the job as a
new attempt (`Restarting` → `Starting` …), which completes; without a retry strategy the job fails
with a reason naming the lost host. The algorithm's own failure is never retried."""
import os
import signal
import subprocess
import time

import pytest

from kilntest import jobs_server
from test_jobs import bundle, script_job, wait

SLOW = """
import os, time
print("attempt on", os.environ["SM_CURRENT_HOST"], flush=True)
time.sleep(3)
open(os.path.join(os.environ["SM_MODEL_DIR"], "done.txt"), "w").write("ok")
"""


@pytest.fixture(scope="module")
def kiln():
    yield from jobs_server('[jobs]\nstop_grace_seconds = 2\n')


def agent_pids(name):
    out = subprocess.run(["pgrep", "-f", f"agent .*--job {name} "], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def kill_agent_while_training(sm, name):
    deadline = time.time() + 60
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["SecondaryStatus"] == "Training" and agent_pids(name):
            for pid in agent_pids(name):
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} never trained")


def test_a_lost_agent_restarts_the_job_which_completes(kiln):
    sm = kiln.client()
    src = bundle(kiln.client("s3"), "code/retry/sourcedir.tar.gz", {"train.py": SLOW})
    req = script_job("retry-ok", src)
    req["RetryStrategy"] = {"MaximumRetryAttempts": 2}
    sm.create_training_job(**req)
    kill_agent_while_training(sm, "retry-ok")
    d = wait(sm, "retry-ok", timeout=90)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses == ["Starting", "Downloading", "Training", "Restarting", "Starting", "Downloading",
                        "Training", "Uploading", "Completed"], statuses
    restarting = next(t for t in d["SecondaryStatusTransitions"] if t["Status"] == "Restarting")
    assert "retry 1 of 2" in restarting["StatusMessage"] and "algo-1" in restarting["StatusMessage"], restarting
    assert d["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    assert "ModelArtifacts" in d


def test_without_a_retry_strategy_a_lost_agent_fails_the_job_naming_the_host(kiln):
    sm = kiln.client()
    src = bundle(kiln.client("s3"), "code/retry/sourcedir.tar.gz", {"train.py": SLOW})
    sm.create_training_job(**script_job("retry-none", src))
    kill_agent_while_training(sm, "retry-none")
    d = wait(sm, "retry-none", timeout=60)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith("InternalServerError: ") and "algo-1" in d["FailureReason"], d["FailureReason"]


def test_the_algorithms_own_failure_is_not_retried(kiln):
    sm = kiln.client()
    src = bundle(kiln.client("s3"), "code/retry-bad/sourcedir.tar.gz", {"train.py": "raise SystemExit(3)\n"})
    req = script_job("retry-bad", src)
    req["RetryStrategy"] = {"MaximumRetryAttempts": 2}
    sm.create_training_job(**req)
    d = wait(sm, "retry-bad", timeout=60)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith("AlgorithmError"), d["FailureReason"]
    assert "Restarting" not in [t["Status"] for t in d["SecondaryStatusTransitions"]]
