"""Training jobs on a real Slurm cluster: `[jobs] executor = "slurm"` against Debian's Slurm 22.05
(2 emulated nodes, node1 and node2, and slurmrestd with JWT auth; ../shared/slurm/setup.sh), driven
through boto3 and the SageMaker SDK. Each training job is one Slurm job whose batch script `srun`s
one `kiln agent` per node.

The cluster is started by the module's fixture unless it is up already (scripts/test.sh starts it
before the suite and stops it after); a cluster this module started is stopped at its end."""
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError

from kilntest import TEST_ENVIRONMENTS, SHARED, Kiln, free_port, job_request, kiln_bin, postgres_store
from test_jobs import bundle, script_job, statuses

pytestmark = pytest.mark.skipif(postgres_store(), reason="runs once, in the SQLite run of the suite")

SETUP = SHARED / "slurm" / "setup.sh"
BASE = pathlib.Path(os.environ.get("KILN_SLURM_BASE", "/tmp/kiln-slurm"))
XGB = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
TERMINAL = ("Completed", "Failed", "Stopped")
# Slurm keeps finished jobs for an hour and the cluster may outlive this module: names are unique
# per run so that `scontrol show job` finds this run's job.
RUN = uuid.uuid4().hex[:6]


def cluster_env():
    """SLURM_CONF, SLURMRESTD_URL and SLURMRESTD_TOKEN from the cluster's env.sh."""
    env = {}
    for line in (BASE / "env.sh").read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export "):].split("=", 1)
            env[k] = v
    return env


def rest_up():
    try:
        env = cluster_env()
        req = urllib.request.Request(env["SLURMRESTD_URL"] + "/slurm/v0.0.38/ping", headers={
            "X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": env["SLURMRESTD_TOKEN"]})
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200 and len(nodes()) == 2
    except (OSError, KeyError, subprocess.SubprocessError):
        return False


def scontrol(*args, check=True):
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=check).stdout


def nodes():
    """Node name → state, e.g. {"node1": "idle", "node2": "down*"}."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, **cluster_env()), timeout=10).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def slurm_jobs(name):
    """`scontrol show job` records of the Slurm jobs named `name` (a heterogeneous job has one per
    component), as dicts of their fields."""
    out = scontrol("-o", "show", "job", check=False)
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("JobName") == name:
            jobs.append(fields)
    return jobs


def wait(sm, name, timeout=120, until=TERMINAL):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] in until:
            return d
        time.sleep(0.2)
    raise AssertionError(f"{name} still {d['TrainingJobStatus']}/{d['SecondaryStatus']} after {timeout} s: "
                         f"{d['SecondaryStatusTransitions'][-1]['StatusMessage']}")


def wait_secondary(sm, name, status, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["SecondaryStatus"] == status:
            return d
        assert d["TrainingJobStatus"] not in TERMINAL, (d["TrainingJobStatus"], d.get("FailureReason"))
        time.sleep(0.2)
    raise AssertionError(f"{name} not {status} after {timeout} s")


def wait_until(what, check, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def log_lines(k, job):
    logs = k.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{job}/")
    out = {}
    for s in streams["logStreams"]:
        host = s["logStreamName"].split("/", 1)[1].rsplit("-", 1)[0]
        out[host] = [e["message"] for e in logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"], startFromHead=True)["events"]]
    return out


def slurm_config(k):
    """kiln.toml for a server on `k`'s port whose jobs go to the test cluster."""
    rest = cluster_env()["SLURMRESTD_URL"]
    return f"""[jobs]
executor = "slurm"
stop_grace_seconds = 2
public_url = "http://127.0.0.1:{k.port}"

[slurm]
url = "{rest}"
user = "root"
jwt_key = "{BASE / 'etc' / 'jwt_hs256.key'}"
partition = "debug"
work_dir = "{k.data_dir / 'slurm-work'}"

# Smaller than the AWS type, as on nodes smaller than the instances jobs name.
[slurm.instance_types."ml.t3.medium"]
cpus = 1
memory_mib = 2048
"""


def start_kiln(data_dir=None, port=None):
    k = Kiln(data_dir=data_dir, port=port)
    if data_dir is None:
        (k.data_dir / "slurm-work").mkdir()
        (k.data_dir / "kiln.toml").write_text(slurm_config(k) + TEST_ENVIRONMENTS)
    return k.start()


@pytest.fixture(scope="module")
def cluster():
    started = False
    if not rest_up():
        subprocess.run([str(SETUP)], env=dict(os.environ, NODES="2", REST="1"), check=True,
                       capture_output=True, timeout=600)
        started = True
    os.environ["SLURM_CONF"] = cluster_env()["SLURM_CONF"]
    yield
    if started:
        subprocess.run([str(SETUP), "stop"], check=False, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def kiln(cluster):
    k = start_kiln()
    s3 = k.client("s3")
    s3.create_bucket(Bucket="jobs")
    yield k
    k.stop()
    shutil.rmtree(k.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sm(kiln):
    return kiln.client()


@pytest.fixture(scope="module")
def s3(kiln):
    return kiln.client("s3")


WHERE_PY = """
import json, os
print("host", os.environ["SM_CURRENT_HOST"], "node", os.environ["SLURMD_NODENAME"],
      "slurm_job", os.environ["SLURM_JOB_ID"], flush=True)
"""


def test_bad_slurm_settings_stop_the_server_with_what_to_fix(tmp_path):
    (tmp_path / "kiln.toml").write_text('[jobs]\nexecutor = "slurm"\n[slurm]\nurl = "http://127.0.0.1:1"\n'
                                        f'user = "root"\njwt_key = "{tmp_path}/missing.key"\n')
    p = subprocess.run([kiln_bin(), "serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert f"cannot read the Slurm JWT key {tmp_path}/missing.key" in p.stderr and "[slurm] jwt_key" in p.stderr, p.stderr
    p = subprocess.run([kiln_bin(), "serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0",
                        "--slurm-token", "t"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, KILN_SLURM_URL="slurm-head:6820"))
    assert p.returncode != 0 and "is not an http:// or https:// URL" in p.stderr, p.stderr


def test_an_unreachable_slurmrestd_is_a_warning_and_jobs_wait(tmp_path):
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    k = Kiln(config=f'[jobs]\nexecutor = "slurm"\n[slurm]\nurl = "http://127.0.0.1:{free_port()}"\n'
                    f'user = "root"\njwt_key = "{key}"\nwork_dir = "{tmp_path}"\n').start()
    try:
        sm = k.client()
        sm.create_training_job(**job_request("waits"))
        message = lambda: sm.describe_training_job(TrainingJobName="waits")["SecondaryStatusTransitions"][-1]["StatusMessage"]
        wait_until("the waiting message", lambda: "slurm executor cannot be reached" in message())
        assert sm.describe_training_job(TrainingJobName="waits")["SecondaryStatus"] == "Starting"
        wait_until("a warning in the log", lambda: "cannot be reached" in k.log_path.read_text())
    finally:
        k.stop()
        shutil.rmtree(k.data_dir, ignore_errors=True)


def test_script_mode_job_completes_on_slurm(kiln, sm, s3):
    name = f"slurm-script-{RUN}"
    for i in range(3):
        s3.put_object(Bucket="jobs", Key=f"data/train/part-{i}.txt", Body=b"1 2 3\n4 5\n")
    src = bundle(s3, "code/slurm-ok/sourcedir.tar.gz", {"train.py": WHERE_PY + """
rows = sum(len(open(os.path.join(os.environ["SM_CHANNEL_TRAIN"], f)).read().split())
           for f in os.listdir(os.environ["SM_CHANNEL_TRAIN"]))
for epoch in range(3):
    print(f"epoch={epoch} loss={1.0 / (epoch + 1):.4f} rows={rows}", flush=True)
json.dump({"rows": rows}, open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w"))
"""})
    sm.create_training_job(**script_job(name, src, [("train", "s3://jobs/data/train/", "FullyReplicated")]))
    d = wait(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert statuses(d) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]} == {"loss": pytest.approx(1 / 3, abs=1e-4)}
    body = s3.get_object(Bucket="jobs", Key=f"output/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert json.load(tar.extractfile("model.json")) == {"rows": 15}
    lines = log_lines(kiln, name)["algo-1"]
    where = next(l for l in lines if l.startswith("host "))
    _, host, _, node, _, slurm_id = where.split()
    assert host == "algo-1" and node in ("node1", "node2")
    # The Slurm job carries the training job's name and ARN, ran on the node the host printed, and
    # completed on its own (not cancelled) once the agent had reported.
    job = wait_until("the Slurm job to end", lambda: [j for j in slurm_jobs(name) if j["JobState"] == "COMPLETED"])[0]
    assert job["JobId"] == slurm_id and job["NodeList"] == node
    assert d["TrainingJobArn"] in scontrol("show", "job", slurm_id)
    assert job["Requeue"] == "0"
    # The host's tree is removed once the job has ended (kiln sees the work directory here); the
    # agent's log stays.
    # Trees live under <work_dir>/<account>/<placement>/<job>/<host>.
    host_dir = next((kiln.data_dir / "slurm-work").glob(f"*/*/{name}/algo-1"))
    wait_until("the host's tree removed", lambda: not (host_dir / "opt").exists())
    assert "finished" in (host_dir / "agent.log").read_text()


def test_builtin_xgboost_job_completes_on_slurm(kiln, sm, s3):
    name = f"slurm-xgb-{RUN}"
    titanic = SHARED / "data" / "titanic"
    s3.upload_file(str(titanic / "train.csv"), "jobs", "titanic/train/train.csv")
    s3.upload_file(str(titanic / "test.csv"), "jobs", "titanic/validation/test.csv")
    req = job_request(name, HyperParameters={"objective": "binary:logistic", "num_round": "20", "max_depth": "4",
                                             "eval_metric": "auc"})
    req["AlgorithmSpecification"] = {"TrainingImage": XGB, "TrainingInputMode": "File"}
    req["OutputDataConfig"] = {"S3OutputPath": "s3://jobs/xgb"}
    req["InputDataConfig"] = [{"ChannelName": ch, "ContentType": "text/csv", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://jobs/titanic/{ch}/"}}} for ch in ("train", "validation")]
    sm.create_training_job(**req)
    d = wait(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    metrics = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    assert metrics["validation:auc"] > 0.7 and "train:auc" in metrics
    body = s3.get_object(Bucket="jobs", Key=f"xgb/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        model = json.load(tar.extractfile("xgboost-model"))
    assert model["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] == "20"
    assert any("validation-auc" in l for l in log_lines(kiln, name)["algo-1"])
    assert [j["JobState"] for j in slurm_jobs(name)] in (["COMPLETED"], ["COMPLETING"])


def test_two_hosts_run_on_both_nodes_with_disjoint_shards(kiln, sm, s3):
    name = f"slurm-shard-{RUN}"
    for i in range(6):
        s3.put_object(Bucket="jobs", Key=f"shards/f{i}.txt", Body=f"{i}\n".encode())
    src = bundle(s3, "code/slurm-shard/sourcedir.tar.gz", {"train.py": WHERE_PY + """
print("files", ",".join(sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"]))), flush=True)
print("hosts", ",".join(json.loads(os.environ["SM_HOSTS"])), flush=True)
# The hosts find each other by name (the sandbox's /etc/hosts, from the allocation's NodeAddr).
import socket, time
if os.environ["SM_CURRENT_HOST"] == "algo-1":
    srv = socket.create_server(("0.0.0.0", 29517))
    srv.settimeout(60)
    conn, _ = srv.accept()
    print("got", conn.recv(100).decode(), flush=True)
else:
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("algo-1", 29517), timeout=5).sendall(b"hello-from-algo-2")
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    print("algo-1 is", socket.gethostbyname("algo-1"), flush=True)
"""})
    req = script_job(name, src, [("train", "s3://jobs/shards/", "ShardedByS3Key")])
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    seen = {}
    for host, lines in log_lines(kiln, name).items():
        where = next(l.split() for l in lines if l.startswith("host "))
        files = next(l.split()[1] for l in lines if l.startswith("files "))
        assert next(l for l in lines if l.startswith("hosts ")) == "hosts algo-1,algo-2"
        seen[host] = (where[3], files.split(","))
    # algo-(i+1) is task i of the step, which Slurm places on the i-th node of the allocation.
    assert seen == {"algo-1": ("node1", ["f0.txt", "f2.txt", "f4.txt"]),
                    "algo-2": ("node2", ["f1.txt", "f3.txt", "f5.txt"])}
    assert [j["NodeList"] for j in slurm_jobs(name)] == ["node[1-2]"]
    logs = log_lines(kiln, name)
    assert "got hello-from-algo-2" in logs["algo-1"], logs["algo-1"]
    assert "algo-1 is 127.0.0.1" in logs["algo-2"], logs["algo-2"]  # node1's NodeAddr on the test cluster


def test_instance_groups_become_a_heterogeneous_slurm_job(kiln, sm, s3):
    name = f"slurm-het-{RUN}"
    src = bundle(s3, "code/slurm-het/sourcedir.tar.gz", {"train.py": WHERE_PY + """
rc = json.load(open(os.path.join(os.environ["SM_INPUT_CONFIG_DIR"], "resourceconfig.json")))
print("group", rc["current_group_name"], rc["current_instance_type"], os.environ["SM_NUM_CPUS"], flush=True)
"""})
    req = script_job(name, src)
    req["ResourceConfig"] = {"VolumeSizeInGB": 10, "InstanceGroups": [
        {"InstanceGroupName": "big", "InstanceType": "ml.m5.large", "InstanceCount": 1},
        {"InstanceGroupName": "small", "InstanceType": "ml.t3.medium", "InstanceCount": 1}]}
    sm.create_training_job(**req)
    d = wait(sm, name)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    groups = {}
    for host, lines in log_lines(kiln, name).items():
        groups[host] = next(l.split()[1:] for l in lines if l.startswith("group "))
    # SM_NUM_CPUS is what Slurm allocates: the override's 1 CPU for ml.t3.medium.
    assert groups == {"algo-1": ["big", "ml.m5.large", "2"], "algo-2": ["small", "ml.t3.medium", "1"]}
    # Each group asks for its own node size: one Slurm component per group, on nodes of their own.
    components = sorted(slurm_jobs(name), key=lambda j: int(j["HetJobOffset"]))
    assert [(j["HetJobOffset"], j["MinMemoryNode"], j["NumCPUs"]) for j in components] == [
        ("0", "8G", "2"), ("1", "2G", "1")]
    assert sorted(j["NodeList"] for j in components) == ["node1", "node2"]


def test_stop_ends_the_job_with_artifacts_and_no_slurm_job_left(kiln, sm, s3):
    name = f"slurm-stop-{RUN}"
    src = bundle(s3, "code/slurm-stop/sourcedir.tar.gz", {"train.py": """
        import os, time
        open(os.path.join(os.environ["SM_MODEL_DIR"], "partial.txt"), "w").write("checkpoint")
        print("sleeping", flush=True)
        time.sleep(600)
    """})
    sm.create_training_job(**script_job(name, src))
    wait_secondary(sm, name, "Training")
    time.sleep(1)
    sm.stop_training_job(TrainingJobName=name)
    d = wait(sm, name, timeout=60)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "Stopped")
    body = s3.get_object(Bucket="jobs", Key=f"output/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.extractfile("partial.txt").read() == b"checkpoint"
    wait_until("no Slurm job left running", lambda: all(
        j["JobState"] not in ("PENDING", "RUNNING", "COMPLETING") for j in slurm_jobs(name)))


def test_a_job_that_can_never_fit_is_refused(sm):
    with pytest.raises(ClientError) as e:
        req = job_request(f"slurm-three-{RUN}")
        req["ResourceConfig"]["InstanceCount"] = 3
        sm.create_training_job(**req)
    assert e.value.response["Error"]["Code"] == "ResourceLimitExceeded"
    assert "3 Slurm nodes" in e.value.response["Error"]["Message"] and "has 2" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        req = job_request(f"slurm-big-{RUN}")
        req["ResourceConfig"]["InstanceType"] = "ml.m5.xlarge"  # 4 vCPUs; the nodes have 2 CPUs
        sm.create_training_job(**req)
    assert e.value.response["Error"]["Code"] == "ResourceLimitExceeded"
    assert "ml.m5.xlarge asks each Slurm node for 4 CPUs" in e.value.response["Error"]["Message"]


def test_a_job_waits_behind_another_with_slurms_reason_then_runs(kiln, sm, s3):
    sleeper = {"TrainingImage": "kiln/sleep", "TrainingInputMode": "File",
               "ContainerEntrypoint": ["/bin/sh"], "ContainerArguments": ["-c", "sleep 600"]}
    hold = f"slurm-hold-{RUN}"
    req = job_request(hold, AlgorithmSpecification=sleeper, OutputDataConfig={"S3OutputPath": "s3://jobs/o"})
    req["ResourceConfig"]["InstanceCount"] = 2  # both nodes
    sm.create_training_job(**req)
    wait_secondary(sm, hold, "Training")
    waiter, dropped = f"slurm-wait-{RUN}", f"slurm-drop-{RUN}"
    for n in (waiter, dropped):
        sm.create_training_job(**job_request(n, OutputDataConfig={"S3OutputPath": "s3://jobs/o"}))
    message = lambda n: sm.describe_training_job(TrainingJobName=n)["SecondaryStatusTransitions"][-1]["StatusMessage"]
    wait_until("Slurm's pending reason", lambda: re.search(r"pending \((Resources|Priority)", message(waiter)))
    assert message(waiter).startswith("Waiting for the cluster to start the hosts: Slurm job ")
    wait_until("Slurm's pending reason", lambda: re.search(r"pending \((Resources|Priority)", message(dropped)))
    # A job stopped while Slurm still queues it ends at once, its Slurm job cancelled.
    sm.stop_training_job(TrainingJobName=dropped)
    d = wait(sm, dropped, timeout=15)
    assert d["TrainingJobStatus"] == "Stopped"
    wait_until("the queued Slurm job cancelled", lambda: [j["JobState"] for j in slurm_jobs(dropped)] == ["CANCELLED"])
    sm.stop_training_job(TrainingJobName=hold)
    assert wait(sm, hold, timeout=60)["TrainingJobStatus"] == "Stopped"
    d = wait(sm, waiter, timeout=60)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert statuses(d) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]


def test_a_node_going_down_fails_the_job_naming_the_node(kiln, sm, s3):
    name = f"slurm-down-{RUN}"
    sleeper = {"TrainingImage": "kiln/sleep", "TrainingInputMode": "File",
               "ContainerEntrypoint": ["/bin/sh"], "ContainerArguments": ["-c", "sleep 600"]}
    req = job_request(name, AlgorithmSpecification=sleeper, OutputDataConfig={"S3OutputPath": "s3://jobs/o"})
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    wait_secondary(sm, name, "Training")
    try:
        scontrol("update", "nodename=node2", "state=down", "reason=kiln-test")
        d = wait(sm, name, timeout=60)
    finally:
        scontrol("update", "nodename=node2", "state=resume", check=False)
        wait_until("node2 back in service", lambda: nodes().get("node2") == "idle", timeout=60)
    assert d["TrainingJobStatus"] == "Failed"
    reason = d["FailureReason"]
    assert reason.startswith("InternalServerError: ") and "node2" in reason, reason
    assert "algo-2" in reason, reason
    # A failed job's trees stay for inspection.
    assert any(d.is_dir() for d in (kiln.data_dir / "slurm-work").glob(f"*/*/{name}/algo-1/opt/ml"))
    wait_until("no Slurm job left running", lambda: all(
        j["JobState"] not in ("PENDING", "RUNNING", "COMPLETING") for j in slurm_jobs(name)))


def test_a_requeued_allocation_interrupts_a_spot_job_which_resumes_from_its_checkpoints(kiln, sm, s3):
    # Slurm requeues an allocation when a higher-priority job preempts it (PreemptMode=REQUEUE) or
    # an administrator says so; the test cluster has no preemption, so the test says so.
    name = f"slurm-spot-{RUN}"
    src = bundle(s3, "code/slurm-spot/sourcedir.tar.gz", {"train.py": WHERE_PY + """
import time
ckpt = "/opt/ml/checkpoints/epoch"
start = int(open(ckpt).read()) if os.path.exists(ckpt) else 0
print(f"resuming at epoch {start}", flush=True)
for epoch in range(start, 8):
    print(f"epoch={epoch} loss={1.0 / (epoch + 1):.4f}", flush=True)
    open(ckpt, "w").write(str(epoch + 1))
    time.sleep(1)
"""})
    req = script_job(name, src)
    req["EnableManagedSpotTraining"] = True
    req["StoppingCondition"] = {"MaxRuntimeInSeconds": 300, "MaxWaitTimeInSeconds": 600}
    req["CheckpointConfig"] = {"S3Uri": f"s3://jobs/slurm-checkpoints/{name}"}
    sm.create_training_job(**req)
    wait_until("epoch 3 logged", lambda: any(l.startswith("epoch=3") for l in log_lines(kiln, name).get("algo-1", [])),
               timeout=120)
    first = wait_until("the Slurm job running", lambda: [j for j in slurm_jobs(name) if j["JobState"] == "RUNNING"])[0]
    assert first["Requeue"] == "1"  # spot jobs' allocations may be requeued; others' may not
    scontrol("requeue", first["JobId"])
    d = wait(sm, name, timeout=180)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    interrupted = [t for t in d["SecondaryStatusTransitions"] if t["Status"] == "Interrupted"]
    assert len(interrupted) == 1, statuses(d)
    assert f"Slurm requeued job {first['JobId']}" in interrupted[0]["StatusMessage"], interrupted[0]
    # The new attempt (its log stream is the host's newest) resumed from the synced checkpoint.
    resumed = [int(l.split()[-1]) for l in log_lines(kiln, name)["algo-1"] if l.startswith("resuming at epoch")]
    assert resumed and resumed[0] >= 2, resumed
    # kiln cancelled the requeued Slurm job rather than let it run again.
    jobs = wait_until("both Slurm jobs ended", lambda: (lambda js: js if len(js) == 2 and all(
        j["JobState"] in ("COMPLETED", "CANCELLED") for j in js) else None)(slurm_jobs(name)))
    states = {j["JobId"]: j["JobState"] for j in jobs}
    assert states[first["JobId"]] == "CANCELLED", states
    assert d["BillableTimeInSeconds"] <= d["TrainingTimeInSeconds"]


def test_a_slurm_job_survives_sigkill_of_the_server(kiln, cluster):
    k = start_kiln()
    try:
        sm, s3 = k.client(), k.client("s3")
        s3.create_bucket(Bucket="jobs")
        name = f"slurm-survivor-{RUN}"
        src = bundle(s3, "code/survive/sourcedir.tar.gz", {"train.py": """
            import os, time
            for i in range(6):
                print(f"step {i} loss={1.0/(i+1):.3f}", flush=True)
                time.sleep(1)
            open(os.path.join(os.environ["SM_MODEL_DIR"], "done.txt"), "w").write("ok")
        """})
        sm.create_training_job(**script_job(name, src))
        wait_secondary(sm, name, "Training")
        time.sleep(1)
        k.proc.kill()  # SIGKILL the server alone; the agent runs under slurmstepd
        k.proc.wait()
        time.sleep(2)
        assert [j["JobState"] for j in slurm_jobs(name)] == ["RUNNING"]
        k = Kiln(data_dir=k.data_dir, port=k.port).start()
        d = wait(k.client(), name, timeout=90)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        lines = log_lines(k, name)["algo-1"]
        assert [l for l in lines if l.startswith("step ")] == [f"step {i} loss={1.0/(i+1):.3f}" for i in range(6)]
        wait_until("the Slurm job completed", lambda: [j["JobState"] for j in slurm_jobs(name)] == ["COMPLETED"])
    finally:
        k.stop()
        shutil.rmtree(k.data_dir, ignore_errors=True)


def test_sagemaker_sdk_estimator_fit_with_logs_on_slurm(kiln, tmp_path, capsys):
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    sagemaker = pytest.importorskip("sagemaker")
    import boto3
    key = kiln.key
    saved = {v: os.environ.get(v) for v in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=kiln.endpoint, AWS_ACCESS_KEY_ID=key["access_key_id"],
                      AWS_SECRET_ACCESS_KEY=key["secret_access_key"], AWS_DEFAULT_REGION="us-east-1")
    try:
        session = sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket="sdk-slurm")
        session.default_bucket()
        src = tmp_path / "src"
        src.mkdir()
        (src / "train.py").write_text(WHERE_PY + """
import argparse
p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int)
a = p.parse_args()
for e in range(a.epochs):
    print(f"epoch {e}: loss={0.5 / (e + 1):.4f}", flush=True)
json.dump({"ok": True}, open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w"))
""")
        train = session.upload_data(str(SHARED / "data" / "titanic" / "train.csv"), bucket="sdk-slurm", key_prefix="titanic/train")
        est = sagemaker.estimator.Estimator(
            image_uri="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
            entry_point="train.py", source_dir=str(src), role="arn:aws:iam::123456789012:role/SageMakerRole",
            instance_count=1, instance_type="ml.m5.large", output_path="s3://sdk-slurm/output",
            sagemaker_session=session, hyperparameters={"epochs": 3},
            base_job_name=f"sdk-slurm-{RUN}",
            metric_definitions=[{"Name": "loss", "Regex": r"loss=([0-9.]+)"}])
        est.fit({"train": train}, wait=True, logs=True)
        out = capsys.readouterr().out
        assert "epoch 2: loss=0.1667" in out and re.search(r"host algo-1 node node[12] slurm_job \d+", out)
        assert "Completed - Training job completed" in out
        job = est.latest_training_job.describe()
        assert job["TrainingJobStatus"] == "Completed"
        assert [j["JobState"] for j in slurm_jobs(job["TrainingJobName"])] in (["COMPLETED"], ["COMPLETING"])
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


POOL_PY = WHERE_PY + """
import pathlib
cache = pathlib.Path(os.environ["SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY"])
print("cache holds", sorted(p.name for p in cache.iterdir()), flush=True)
(cache / (os.environ["TRAINING_JOB_NAME"] + ".txt")).write_text("x")
"""


def test_a_warm_pool_keeps_its_slurm_allocation_for_the_next_job(kiln, sm, s3):
    """Reference §10 on a cluster: the Slurm job of a job with a keep-alive outlives it while its warm
    pool is Available; the next matching job runs its hosts in that allocation (no new Slurm job, no
    queue), sees the pool's cache, and releasing the pool ends the allocation."""
    first, second = f"slurm-pool-a-{RUN}", f"slurm-pool-b-{RUN}"
    src = bundle(s3, "code/slurm-pool/sourcedir.tar.gz", {"train.py": POOL_PY})

    def pooled(name):
        req = script_job(name, src)
        req["ResourceConfig"]["KeepAlivePeriodInSeconds"] = 120
        return req

    def slurm_job_of(name):
        line = next(l for l in log_lines(kiln, name)["algo-1"] if l.startswith("host "))
        return line.split()[-1]

    sm.create_training_job(**pooled(first))
    d = wait(sm, first)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["WarmPoolStatus"]["Status"] == "Available"
    allocation = slurm_job_of(first)
    # The allocation stays: its hosts have exited, and it waits for the pool's next job.
    time.sleep(3)
    held = [j for j in slurm_jobs(first) if j["JobId"] == allocation]
    assert held and held[0]["JobState"] == "RUNNING", held

    # The other node taken by someone else's job: the cluster has no free node, so a new Slurm job
    # would queue; the pool's job does not.
    env = dict(os.environ, **cluster_env())
    blocker = subprocess.run(["sbatch", "--parsable", "-N1", "-J", f"blocker-{RUN}", "-o", "/dev/null",
                              "--wrap", "sleep 300"], capture_output=True, text=True, check=True, env=env).stdout.strip()
    try:
        wait_until("the blocker to run", lambda: [j for j in slurm_jobs(f"blocker-{RUN}") if j["JobState"] == "RUNNING"])
        assert all(state.startswith(("alloc", "mix")) for state in nodes().values()), nodes()
        started = time.time()
        sm.create_training_job(**pooled(second))
        d = wait(sm, second, timeout=60)
        took = time.time() - started
    finally:
        subprocess.run(["scancel", blocker], check=False, env=env)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert sm.describe_training_job(TrainingJobName=first)["WarmPoolStatus"] == {
        "Status": "Reused", "ResourceRetainedBillableTimeInSeconds": pytest.approx(
            sm.describe_training_job(TrainingJobName=first)["WarmPoolStatus"]["ResourceRetainedBillableTimeInSeconds"]),
        "ReusedByJob": second}
    assert d["WarmPoolStatus"]["Status"] == "Available"
    # Same Slurm job, none submitted for the second training job; the pool's cache came along.
    assert slurm_job_of(second) == allocation
    assert slurm_jobs(second) == []
    assert f"cache holds ['{first}.txt']" in log_lines(kiln, second)["algo-1"], log_lines(kiln, second)
    print(f"second job on the warm pool's allocation: create -> Completed {took:.1f} s")

    # Released: the allocation ends by itself (completed, not cancelled).
    sm.update_training_job(TrainingJobName=second, ResourceConfig={"KeepAlivePeriodInSeconds": 0})
    assert sm.describe_training_job(TrainingJobName=second)["WarmPoolStatus"]["Status"] == "Terminated"
    ended = wait_until("the allocation to end", lambda: [
        j for j in slurm_jobs(first) if j["JobId"] == allocation and j["JobState"] not in ("RUNNING", "COMPLETING")], 40)
    assert ended[0]["JobState"] == "COMPLETED", ended


def test_a_warm_pool_whose_allocation_is_gone_gives_the_next_job_a_new_one(kiln, sm, s3):
    """The allocation a pool kept can end under it (cancelled by an administrator, a node failure, its
    time limit): the next job then gets an allocation of its own and completes."""
    first, second = f"slurm-lost-pool-a-{RUN}", f"slurm-lost-pool-b-{RUN}"
    src = bundle(s3, "code/slurm-lost-pool/sourcedir.tar.gz", {"train.py": POOL_PY})

    def pooled(name):
        req = script_job(name, src)
        req["ResourceConfig"]["KeepAlivePeriodInSeconds"] = 120
        return req

    sm.create_training_job(**pooled(first))
    assert wait(sm, first)["TrainingJobStatus"] == "Completed"
    held = wait_until("the kept allocation", lambda: [j for j in slurm_jobs(first) if j["JobState"] == "RUNNING"])
    subprocess.run(["scancel", held[0]["JobId"]], check=True, env=dict(os.environ, **cluster_env()))
    wait_until("the allocation cancelled", lambda: all(j["JobState"] == "CANCELLED" for j in slurm_jobs(first)))
    sm.create_training_job(**pooled(second))
    d = wait(sm, second)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert sm.describe_training_job(TrainingJobName=first)["WarmPoolStatus"]["ReusedByJob"] == second
    mine = slurm_jobs(second)
    assert mine and mine[0]["JobId"] != held[0]["JobId"], mine
    sm.update_training_job(TrainingJobName=second, ResourceConfig={"KeepAlivePeriodInSeconds": 0})
    wait_until("the second allocation to end", lambda: all(j["JobState"] == "COMPLETED" for j in slurm_jobs(second)), 40)


def test_a_kept_allocation_whose_agent_dies_fails_the_job_naming_the_host(kiln, sm, s3):
    """With a keep-alive the Slurm job outlives its hosts, so a host that dies without reporting is not
    seen as the Slurm job's end: the allocation's question for the pool's next job says so instead."""
    name = f"slurm-pool-lost-{RUN}"
    src = bundle(s3, "code/slurm-pool-lost/sourcedir.tar.gz", {"train.py": "import time\nprint('up', flush=True)\ntime.sleep(120)\n"})
    req = script_job(name, src)
    req["ResourceConfig"]["KeepAlivePeriodInSeconds"] = 120
    sm.create_training_job(**req)
    wait_until("the script to run", lambda: "up" in log_lines(kiln, name).get("algo-1", []), 90)
    agent = subprocess.run(["pgrep", "-f", f"agent --server .* --job {name}"], capture_output=True, text=True).stdout.split()
    assert agent, "no agent process"
    for pid in agent:
        os.kill(int(pid), 9)
    d = wait(sm, name, timeout=60)
    assert d["TrainingJobStatus"] == "Failed", d["TrainingJobStatus"]
    assert "algo-1" in d["FailureReason"] and "its step in allocation" in d["FailureReason"], d["FailureReason"]
    assert d["WarmPoolStatus"]["Status"] == "Terminated"
    wait_until("the allocation to end", lambda: all(
        j["JobState"] not in ("RUNNING", "COMPLETING") for j in slurm_jobs(name)), 40)
