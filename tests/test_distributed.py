"""Distributed training that really rendezvous, launched as the framework toolkits launch it:
`torch_distributed` through torchrun (gloo all_reduce across 2 hosts), `mpi` through mpirun from
algo-1 with kiln's remote shell (2 hosts x 2 processes, mpi4py allreduce), and a model.tar.gz that
holds every host's model/. The PyTorch image runs on Debian's python3-torch and python3-mpi4py
(`[[environments]]` maps it to /usr/bin/python3)."""
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
