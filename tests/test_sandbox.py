"""Every host runs in a sandbox (bubblewrap), as SageMaker runs a container: scripts use `/opt/ml` by
its absolute paths, nothing they write outside it reaches the machine, they cannot see the server's
data directory, other processes or the agent's token, and the hosts of one job find each other by
name."""
import io
import json
import os
import pathlib
import tarfile
import uuid

import pytest

from kilntest import Kiln
from test_jobs import bundle, script_job, wait

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/bwrap"), reason="needs bubblewrap (scripts/install-deps.sh)")


@pytest.fixture(scope="module")
def jailed():
    k = Kiln(config='[jobs]\nsandbox = "bwrap"\nstop_grace_seconds = 2\n').start()
    yield k
    k.stop()


@pytest.fixture(scope="module")
def sm(jailed):
    return jailed.client()


@pytest.fixture(scope="module")
def s3(jailed):
    c = jailed.client("s3")
    c.create_bucket(Bucket="jobs")
    return c


ABSOLUTE_PATHS = """
import json, os, socket
hp = json.load(open("/opt/ml/input/config/hyperparameters.json"))
rows = open("/opt/ml/input/data/train/rows.csv").read().split()
assert os.getcwd() == "/opt/ml/code", os.getcwd()
assert os.environ["SM_MODEL_DIR"] == "/opt/ml/model", os.environ["SM_MODEL_DIR"]
assert socket.gethostname() == "algo-1", socket.gethostname()
with open("/opt/ml/model/model.txt", "w") as f:
    f.write(f"{hp['greeting']} {len(rows)}")
print("wrote the model", flush=True)
"""


def test_scripts_use_opt_ml_by_absolute_paths(sm, s3):
    s3.put_object(Bucket="jobs", Key="abs/train/rows.csv", Body=b"1\n2\n3\n")
    src = bundle(s3, "code/abs/sourcedir.tar.gz", {"train.py": ABSOLUTE_PATHS})
    sm.create_training_job(**script_job("abs-paths", src, [("train", "s3://jobs/abs/train/", "FullyReplicated")],
                                        hps={"greeting": "hello"}))
    d = wait(sm, "abs-paths")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    body = s3.get_object(Bucket="jobs", Key="output/abs-paths/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.extractfile("model.txt").read() == b"hello 3"


ESCAPE = """
import json, os, sys
mark = sys.argv[sys.argv.index("--mark") + 1]
data_dir = sys.argv[sys.argv.index("--data-dir") + 1]
report = {}
for path in (f"/tmp/{mark}", os.path.join(os.environ["HOME"], mark), f"/var/tmp/{mark}", f"/dev/shm/{mark}"):
    open(path, "w").write("x")
    report[path] = "written in the sandbox"
for path in (f"/usr/{mark}", f"/etc/{mark}"):
    try:
        open(path, "w").write("x")
        report[path] = "WRITTEN"
    except OSError as e:
        report[path] = type(e).__name__
# What a job must not see: the server's data directory, other processes, the agent's token.
report["data_dir_visible"] = os.path.exists(data_dir)
report["keys_visible"] = os.path.exists(os.path.join(data_dir, "keys.toml"))
report["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
report["kiln_env"] = sorted(k for k in os.environ if k.startswith("KILN"))
report["hosts"] = open("/etc/hosts").read()
os.makedirs("/opt/ml/model", exist_ok=True)
json.dump(report, open("/opt/ml/model/report.json", "w"))
"""


def test_nothing_escapes_and_secrets_stay_out_of_reach(jailed, sm, s3):
    mark = f"kiln-escape-{uuid.uuid4().hex[:8]}"
    src = bundle(s3, "code/escape/sourcedir.tar.gz", {"train.py": ESCAPE})
    sm.create_training_job(**script_job("escape", src, hps={"mark": mark, "data-dir": str(jailed.data_dir)}))
    d = wait(sm, "escape")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    body = s3.get_object(Bucket="jobs", Key="output/escape/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        report = json.load(tar.extractfile("report.json"))
    assert report[f"/usr/{mark}"] in ("OSError", "PermissionError"), report
    assert report[f"/etc/{mark}"] in ("OSError", "PermissionError"), report
    # Written inside, and nowhere on the machine.
    for path in (f"/tmp/{mark}", f"/var/tmp/{mark}", f"/dev/shm/{mark}", f"/usr/{mark}", f"/etc/{mark}",
                 os.path.join(os.environ.get("HOME", "/root"), mark)):
        assert not os.path.exists(path), path
    assert report["data_dir_visible"] is False and report["keys_visible"] is False
    assert len(report["pids"]) <= 3, report["pids"]
    assert report["kiln_env"] == []
    assert "127.0.1.1\talgo-1" in report["hosts"]


PEERS = """
import json, os, socket, time
me = os.environ["SM_CURRENT_HOST"]
assert socket.gethostname() == me, socket.gethostname()
if me == "algo-1":
    srv = socket.create_server(("0.0.0.0", 29511))
    srv.settimeout(60)
    conn, _ = srv.accept()
    got = conn.recv(100).decode()
    conn.sendall(b"hello " + got.encode())
    conn.close()
    result = got
else:
    addr = socket.gethostbyname("algo-1")
    for _ in range(300):
        try:
            c = socket.create_connection(("algo-1", 29511), timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    c.sendall(me.encode())
    result = c.recv(100).decode() + " via " + addr
print("peer says:", result, flush=True)
"""


def test_hosts_of_a_job_find_each_other_by_name(sm, s3, jailed):
    src = bundle(s3, "code/peers/sourcedir.tar.gz", {"train.py": PEERS})
    req = script_job("peers", src)
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait(sm, "peers")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    logs = jailed.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="peers/")["logStreams"]
    lines = [e["message"] for s in streams for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"], startFromHead=True)["events"]]
    assert "peer says: algo-2" in lines, lines
    # Each host has a loopback address of its own on the local executor.
    assert "peer says: hello algo-2 via 127.0.1.1" in lines, lines


def test_without_a_sandbox_the_server_says_so_loudly(tmp_path):
    k = Kiln(data_dir=tmp_path, config='[jobs]\nsandbox = "none"\n').start()
    try:
        assert "WITHOUT a sandbox" in k.log_path.read_text()
    finally:
        k.stop()
