"""Distributed training that really rendezvous, launched as the framework toolkits launch it:
`torch_distributed` through torchrun (gloo all_reduce across 2 hosts), `mpi` through mpirun from
algo-1 with kiln's remote shell (2 hosts x 2 processes, mpi4py allreduce), TensorFlow's
`parameter_server` (a parameter server on every host, then the script with TF_CONFIG), and a
model.tar.gz that holds every host's model/. The PyTorch image runs on Debian's python3-torch and
python3-mpi4py, the TensorFlow image on the same python3 (`[[environments]]` maps both to
/usr/bin/python3; TensorFlow itself is a stand-in shipped with the test's source, see FAKE_TF)."""
import io
import json
import os
import re
import shutil
import subprocess
import tarfile

import pytest

from kilntest import jobs_server, postgres_store
from test_jobs import bundle, script_job, wait


def has_module(name):
    return subprocess.run(["/usr/bin/python3", "-c", f"import {name}"], capture_output=True).returncode == 0


REQUIRED = os.environ.get("KILN_REQUIRE_DISTRIBUTED") == "1"
pytestmark = [
    pytest.mark.skipif(not os.path.exists("/usr/bin/bwrap") and not REQUIRED, reason="needs bubblewrap"),
    pytest.mark.skipif(postgres_store(), reason="launchers do not depend on the store: runs once, in the SQLite run"),
]
needs_torch = pytest.mark.skipif(not has_module("torch") and not REQUIRED, reason="needs python3-torch")
needs_mpi = pytest.mark.skipif((not has_module("mpi4py") or not shutil.which("mpirun")) and not REQUIRED,
                               reason="needs openmpi-bin and python3-mpi4py")

CONFIG = """[jobs]
sandbox = "bwrap"
stop_grace_seconds = 2

[[environments]]
image = "*pytorch-training*"
python = "/usr/bin/python3"
system_site_packages = true

[[environments]]
image = "*tensorflow-training*"
python = "/usr/bin/python3"
system_site_packages = true
"""


@pytest.fixture(scope="module")
def kiln():
    yield from jobs_server(CONFIG)


def log_lines(k, name):
    logs = k.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/")
    out = {}
    for s in streams["logStreams"]:
        host = s["logStreamName"].split("/", 1)[1].rsplit("-", 1)[0]
        out[host] = [e["message"] for e in logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"], startFromHead=True)["events"]]
    return out


def model_files(k, name):
    body = k.client("s3").get_object(Bucket="jobs", Key=f"output/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return {m.name.lstrip("./"): tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}


TORCH_PY = """
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(1)
dist.all_reduce(t)
host = os.environ["SM_CURRENT_HOST"]
print(f"rank={os.environ['RANK']} world={os.environ['WORLD_SIZE']} master={os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} sum={int(t.item())} on {host}", flush=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], f"part-{host}.txt"), "w") as f:
    f.write(f"rank {os.environ['RANK']}")
with open(os.path.join(os.environ["SM_MODEL_DIR"], "shared.txt"), "w") as f:
    f.write(host)
dist.destroy_process_group()
"""


@needs_torch
def test_torch_distributed_rendezvous_across_two_hosts_and_merges_their_models(kiln):
    sm = kiln.client()
    src = bundle(kiln.client("s3"), "code/torch-dist/sourcedir.tar.gz", {"train.py": TORCH_PY})
    req = script_job("torch-dist", src, hps={"sagemaker_torch_distributed_enabled": "true",
                                             "sagemaker_instance_type": json.dumps("ml.m5.large")})
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait(sm, "torch-dist", timeout=180)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    logs = log_lines(kiln, "torch-dist")
    assert "rank=0 world=2 master=algo-1:7777 sum=2 on algo-1" in logs["algo-1"], logs["algo-1"]
    assert "rank=1 world=2 master=algo-1:7777 sum=2 on algo-2" in logs["algo-2"], logs["algo-2"]
    assert any("torchrun --nnodes 2 --nproc_per_node 1 --master_addr algo-1 --master_port 7777 --node_rank 1 train.py"
               in l for l in logs["algo-2"]), logs["algo-2"]
    # Every host's model/ is in model.tar.gz; on a clash the later host wins, as on SageMaker.
    files = model_files(kiln, "torch-dist")
    assert files == {"part-algo-1.txt": "rank 0", "part-algo-2.txt": "rank 1", "shared.txt": "algo-2"}, files


MPI_PY = """
import os, socket
from mpi4py import MPI
c = MPI.COMM_WORLD
total = c.allreduce(1)
print(f"mpi rank={c.Get_rank()} size={c.Get_size()} sum={total} on {socket.gethostname()}", flush=True)
"""


@needs_mpi
def test_mpi_runs_two_processes_on_each_of_two_hosts(kiln):
    sm = kiln.client()
    src = bundle(kiln.client("s3"), "code/mpi/sourcedir.tar.gz", {"train.py": MPI_PY})
    req = script_job("mpi-2x2", src, hps={"sagemaker_mpi_enabled": "true",
                                          "sagemaker_mpi_num_of_processes_per_host": "2",
                                          "sagemaker_mpi_custom_mpi_options": json.dumps("")})
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait(sm, "mpi-2x2", timeout=180)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    lines = log_lines(kiln, "mpi-2x2")["algo-1"]
    # --tag-output prefixes each line with [job,rank]<stdout>: (and may glue an empty tag on).
    ranks = sorted(m for l in lines for m in re.findall(r"mpi (rank=\d+ size=\d+ sum=\d+ on algo-\d+)", l))
    assert ranks == [f"rank={r} size=4 sum=4 on algo-{r // 2 + 1}" for r in range(4)], lines
    worker = log_lines(kiln, "mpi-2x2")["algo-2"]
    assert any("waiting for mpirun on algo-1" in l for l in worker), worker


HETERO_PY = """
import json, os
files = sorted(os.listdir(os.environ["SM_CHANNEL_DATA"])) if "SM_CHANNEL_DATA" in os.environ else []
dist = "RANK" in os.environ
print(f"host={os.environ['SM_CURRENT_HOST']} group={os.environ['SM_CURRENT_INSTANCE_GROUP']} "
      f"group_hosts={','.join(json.loads(os.environ['SM_CURRENT_INSTANCE_GROUP_HOSTS']))} "
      f"groups={','.join(sorted(json.loads(os.environ['SM_INSTANCE_GROUPS'])))} files={','.join(files)} "
      f"rank={os.environ.get('RANK', '-')} world={os.environ.get('WORLD_SIZE', '-')}", flush=True)
if dist:
    import torch, torch.distributed as d
    d.init_process_group("gloo")
    t = torch.ones(1)
    d.all_reduce(t)
    print(f"train allreduce={int(t.item())}", flush=True)
"""


@needs_torch
def test_a_heterogeneous_cluster_distributes_only_over_its_training_group(kiln):
    """A 1-host group `data` (the only one with the `data` channel) and a 2-host group `train`;
    `distribution={"instance_groups": ["train"], "torch_distributed": ...}` runs torchrun over the
    train group's hosts only, and the data host runs its script alone."""
    sm, s3 = kiln.client(), kiln.client("s3")
    for i in range(2):
        s3.put_object(Bucket="jobs", Key=f"hetero/part-{i}.csv", Body=b"1\n")
    src = bundle(s3, "code/hetero/sourcedir.tar.gz", {"train.py": HETERO_PY})
    req = script_job("hetero", src, hps={"sagemaker_torch_distributed_enabled": "true",
                                         "sagemaker_distribution_instance_groups": json.dumps(["train"])})
    req["ResourceConfig"] = {"VolumeSizeInGB": 10, "InstanceGroups": [
        {"InstanceGroupName": "data", "InstanceType": "ml.m5.large", "InstanceCount": 1},
        {"InstanceGroupName": "train", "InstanceType": "ml.m5.xlarge", "InstanceCount": 2}]}
    req["InputDataConfig"] = [{"ChannelName": "data", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://jobs/hetero/", "S3DataDistributionType": "FullyReplicated",
        "InstanceGroupNames": ["data"]}}}]
    sm.create_training_job(**req)
    d = wait(sm, "hetero", timeout=180)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    logs = log_lines(kiln, "hetero")
    line = {h: next(l for l in ls if l.startswith("host=")) for h, ls in logs.items()}
    assert line["algo-1"] == ("host=algo-1 group=data group_hosts=algo-1 groups=data,train "
                              "files=part-0.csv,part-1.csv rank=- world=-"), line
    assert line["algo-2"] == "host=algo-2 group=train group_hosts=algo-2,algo-3 groups=data,train files= rank=0 world=2", line
    assert line["algo-3"] == "host=algo-3 group=train group_hosts=algo-2,algo-3 groups=data,train files= rank=1 world=2", line
    assert "train allreduce=2" in logs["algo-2"] and "train allreduce=2" in logs["algo-3"], logs


@needs_mpi
def test_sagemaker_sdk_pytorch_estimator_with_mpi_shows_both_hosts(kiln, tmp_path, capsys):
    import boto3
    import sagemaker
    from sagemaker.pytorch import PyTorch
    key = kiln.key
    saved = {v: os.environ.get(v) for v in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=kiln.endpoint, AWS_ACCESS_KEY_ID=key["access_key_id"],
                      AWS_SECRET_ACCESS_KEY=key["secret_access_key"], AWS_DEFAULT_REGION="us-east-1")
    try:
        session = sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket="sdk-dist")
        assert session.default_bucket() == "sdk-dist"  # creates it
        src = tmp_path / "src"
        src.mkdir()
        (src / "train.py").write_text(MPI_PY)
        est = PyTorch(entry_point="train.py", source_dir=str(src), role="arn:aws:iam::111122223333:role/kiln",
                      framework_version="2.1", py_version="py310", instance_count=2, instance_type="ml.m5.large",
                      output_path="s3://sdk-dist/output", sagemaker_session=session,
                      distribution={"mpi": {"enabled": True, "processes_per_host": 1}})
        est.fit(wait=True, logs=True)
        out = capsys.readouterr().out
        # Both hosts' streams: algo-1's mpirun output and algo-2's own lines.
        assert "mpi rank=0 size=2 sum=2 on algo-1" in out and "mpi rank=1 size=2 sum=2 on algo-2" in out, out
        assert "waiting for mpirun on algo-1" in out and "mpirun on algo-1 runs:  orted" in out, out
        assert est.latest_training_job.describe()["TrainingJobStatus"] == "Completed"
    finally:
        # The SDK may have made boto3's default session with this server's key: later tests
        # must not inherit it.
        boto3.DEFAULT_SESSION = None
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


# A stand-in for TensorFlow (too big to install here) with just what the toolkit's parameter server
# uses. Each server it is asked to start is recorded in the host's model/ (so in model.tar.gz), and
# its join() records the process that serves and then blocks forever, as a real server does.
FAKE_TF = """
import json, os, time, types

def _record(kind, data):
    path = os.path.join(os.environ["SM_MODEL_DIR"], f"{kind}-{os.environ['SM_CURRENT_HOST']}.json")
    with open(path, "w") as f:
        json.dump(data, f)

class ClusterSpec:
    def __init__(self, cluster):
        self.cluster = cluster

class ConfigProto:
    def __init__(self, device_count=None):
        self.device_count = device_count

class Server:
    def __init__(self, server_or_cluster_def, job_name=None, task_index=None, config=None):
        _record("ps", {"cluster": server_or_cluster_def.cluster, "job_name": job_name, "task_index": task_index,
                       "device_count": config.device_count})

    def join(self):
        _record("ps-join", {"pid": os.getpid()})
        while True:
            time.sleep(3600)

distribute = types.SimpleNamespace(Server=Server)
train = types.SimpleNamespace(ClusterSpec=ClusterSpec, Server=Server)
compat = types.SimpleNamespace(v1=types.SimpleNamespace(ConfigProto=ConfigProto))
"""

TF_PY = """
import os, time
host, model = os.environ["SM_CURRENT_HOST"], os.environ["SM_MODEL_DIR"]
# The parameter server was started before this script, and its serving process is up.
assert os.path.exists(os.path.join(model, f"ps-{host}.json")), "no parameter server before the script"
for _ in range(300):
    if os.path.exists(os.path.join(model, f"ps-join-{host}.json")):
        break
    time.sleep(0.1)
with open(os.path.join(model, f"tf_config-{host}.txt"), "w") as f:
    f.write(os.environ["TF_CONFIG"])
print(f"TF_CONFIG on {host}: {os.environ['TF_CONFIG']}", flush=True)
"""


def processes_with(marker):
    """The processes (pid, command line) whose environment holds `marker`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found.append((int(pid), f.read().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue
    return found


def test_tensorflow_parameter_servers_on_every_host_with_the_toolkits_tf_config(kiln):
    sm = kiln.client()
    name = f"tf-ps-{os.getpid()}"
    src = bundle(kiln.client("s3"), "code/tf-ps/sourcedir.tar.gz",
                 {"train.py": TF_PY, "tensorflow/__init__.py": FAKE_TF})
    req = script_job(name, src, hps={"sagemaker_parameter_server_enabled": "true"})
    req["AlgorithmSpecification"]["TrainingImage"] = \
        "763104351884.dkr.ecr.us-west-2.amazonaws.com/tensorflow-training:2.13-cpu-py310"
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait(sm, name, timeout=180)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    files = model_files(kiln, name)
    cluster = {"master": ["algo-1:2222"], "ps": ["algo-1:2223", "algo-2:2223"], "worker": ["algo-2:2222"]}
    # Each host's script saw the toolkit's TF_CONFIG, byte for byte as its json.dumps writes it.
    for host, task in [("algo-1", '{"index": 0, "type": "master"}'), ("algo-2", '{"index": 0, "type": "worker"}')]:
        assert files[f"tf_config-{host}.txt"] == (
            '{"cluster": {"master": ["algo-1:2222"], "ps": ["algo-1:2223", "algo-2:2223"], '
            '"worker": ["algo-2:2222"]}, "environment": "cloud", "task": ' + task + "}"), files
    # A parameter server on each host: task = the host's index, on CPU only, joined in a process.
    for i, host in enumerate(["algo-1", "algo-2"]):
        assert json.loads(files[f"ps-{host}.json"]) == {
            "cluster": cluster, "job_name": "ps", "task_index": i, "device_count": {"GPU": 0}}, files
        assert f"ps-join-{host}.json" in files, files
    logs = log_lines(kiln, name)
    for host in ("algo-1", "algo-2"):
        assert "Launching parameter server process" in logs[host], logs[host]
        assert any(l.startswith(f"TF_CONFIG on {host}: ") for l in logs[host]), logs[host]
        assert any("Invoking script with the following command:" in l and l.rstrip().endswith("train.py")
                   for l in logs[host]), logs[host]
    # The worker waits for the master to go (its port 2222 closed here: at once).
    assert "master algo-1 is down, stopping parameter server" in logs["algo-2"], logs["algo-2"]
    # The parameter servers (blocked in join() for ever) ended with the job.
    assert processes_with(f"TRAINING_JOB_NAME={name}") == []
