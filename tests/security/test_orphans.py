"""Issue 24, item 11: killing a host's agent does not leave its algorithm running while the job is
failed and its capacity given away. The algorithm dies with its agent (PR_SET_PDEATHSIG; in the
sandbox, bubblewrap's --die-with-parent), and what it started in its process group is killed by
the executor once the agent is found gone. Run without the sandbox, where nothing else would."""
import os
import signal
import subprocess
import time
import uuid

import pytest

from kilntest import jobs_server
from test_jobs import bundle, script_job, wait

SPAWNS = """
import os, subprocess, sys, time
marker = sys.argv[sys.argv.index("--marker") + 1]
child = subprocess.Popen(["sleep", "600"])
open(marker, "w").write(f"{os.getpid()} {child.pid}")
time.sleep(600)
"""


@pytest.fixture(scope="module")
def kiln():
    yield from jobs_server('[jobs]\nsandbox = "none"\n')


def running(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killing_the_agent_takes_the_algorithm_and_its_children_down(kiln, tmp_path):
    sm = kiln.client()
    marker = tmp_path / f"pids-{uuid.uuid4().hex[:8]}"
    src = bundle(kiln.client("s3"), "code/orphans/sourcedir.tar.gz", {"train.py": SPAWNS})
    sm.create_training_job(**script_job("orphans", src, hps={"marker": str(marker)}))
    deadline = time.time() + 60
    while not marker.exists() or not marker.read_text().strip():
        assert time.time() < deadline, "the script never started"
        time.sleep(0.1)
    script, child = (int(p) for p in marker.read_text().split())
    assert running(script) and running(child)
    agents = subprocess.run(["pgrep", "-f", "agent .*--job orphans "], capture_output=True, text=True).stdout.split()
    assert agents, "no agent found"
    for pid in agents:
        os.kill(int(pid), signal.SIGKILL)
    d = wait(sm, "orphans", timeout=60)
    assert d["TrainingJobStatus"] == "Failed"
    assert "algo-1" in d["FailureReason"], d["FailureReason"]
    deadline = time.time() + 15
    while (running(script) or running(child)) and time.time() < deadline:
        time.sleep(0.2)
    assert not running(script), "the script outlived its agent"
    assert not running(child), "the script's child outlived its agent"
