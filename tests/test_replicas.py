"""Two `kiln serve` replicas on one PostgreSQL database and one data directory, behind a load
balancer (as an operator would run them): every replica answers the API, one leads (runs the
scheduler and tuner), and when the leader is SIGKILLed the other takes over. Running jobs keep
running and complete; a tuning job ends with exactly its children."""
import io
import json
import os
import selectors
import socket
import tarfile
import textwrap
import threading
import time
import urllib.request
import uuid

import pytest

from kilntest import Kiln, free_port, pg_database, postgres_store

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
SCRIPT_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310"

pytestmark = [
    pytest.mark.skipif(not os.environ.get("KILN_TEST_DATABASE_URL") and os.environ.get("KILN_REQUIRE_POSTGRES") != "1",
                       reason="needs a PostgreSQL server (KILN_TEST_DATABASE_URL; scripts/pg.sh start)"),
    # The suite's PostgreSQL run would only repeat this file.
    pytest.mark.skipif(postgres_store(), reason="runs once, in the SQLite run of the suite"),
]


class Balancer:
    """A TCP load balancer on 127.0.0.1: each connection goes to the next backend that accepts it."""

    def __init__(self, ports):
        self.ports = ports
        self.port = free_port()
        self.next = 0
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.stopped = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopped:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.relay, args=(client,), daemon=True).start()

    def relay(self, client):
        backend = None
        for i in range(len(self.ports)):
            port = self.ports[(self.next + i) % len(self.ports)]
            try:
                backend = socket.create_connection(("127.0.0.1", port), timeout=2)
                self.next = (self.next + i + 1) % len(self.ports)
                break
            except OSError:
                continue
        if backend is None:
            client.close()
            return
        backend.settimeout(None)
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, backend)
        sel.register(backend, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in sel.select():
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            backend.close()

    def close(self):
        self.stopped = True
        self.server.close()


def leader_flag(k):
    try:
        with urllib.request.urlopen(k.endpoint + "/_kiln/health", timeout=1) as r:
            return json.load(r)["leader"]
    except OSError:
        return None


def wait_for(what, check, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture
def replicas():
    url = pg_database(f"kiln_rep_{uuid.uuid4().hex[:12]}")
    a_port, b_port = free_port(), free_port()
    lb = Balancer([a_port, b_port])
    config = f'[jobs]\nstop_grace_seconds = 2\npublic_url = "http://127.0.0.1:{lb.port}"\n'
    a = Kiln(config=config, port=a_port, database_url=url)
    a.log_path = a.data_dir / "serve-a.log"
    a.start()
    b = Kiln(data_dir=a.data_dir, port=b_port, database_url=url)
    b.log_path = b.data_dir / "serve-b.log"
    b.start()
    wait_for("a leader", lambda: leader_flag(a) or leader_flag(b), 15)
    yield a, b, lb
    for k in (a, b):
        k.kill()
    a.cleanup()
    lb.close()


def upload_script(s3, bucket, key, body):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = textwrap.dedent(body).encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
    return f"s3://{bucket}/{key}"


TRAINER = """
    import json, os, sys, time
    hp = json.load(open(os.path.join(os.environ["SM_INPUT_CONFIG_DIR"], "hyperparameters.json")))
    x = float(hp.get("x", "0.5"))
    for step in range(int(hp.get("steps", "6"))):
        print(f"step={step} score={x * (step + 1):.4f}", flush=True)
        time.sleep(0.5)
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w") as f:
        f.write(str(x))
"""


def script_job(name, src, steps):
    return {
        "TrainingJobName": name,
        "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": SCRIPT_IMAGE, "TrainingInputMode": "File",
                                   "MetricDefinitions": [{"Name": "score", "Regex": r"score=([0-9.]+)"}]},
        "HyperParameters": {"sagemaker_program": json.dumps("train.py"), "sagemaker_submit_directory": json.dumps(src),
                            "steps": str(steps)},
        "OutputDataConfig": {"S3OutputPath": "s3://rep/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def leader_and_follower(a, b):
    return (a, b) if leader_flag(a) else (b, a)


def test_every_replica_answers_and_shares_everything(replicas):
    a, b, _ = replicas
    sa, sb = a.client(), b.client()
    s3a, s3b = a.client("s3"), b.client("s3")
    s3a.create_bucket(Bucket="shared")
    sa.create_training_job(TrainingJobName="made-on-a", RoleArn=ROLE,
                           AlgorithmSpecification={"TrainingImage": "kiln/noop", "TrainingInputMode": "File"},
                           OutputDataConfig={"S3OutputPath": "s3://shared/out"},
                           ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
                           StoppingCondition={"MaxRuntimeInSeconds": 60}, Tags=[{"Key": "team", "Value": "ml"}])
    d = sb.describe_training_job(TrainingJobName="made-on-a")
    assert d["TrainingJobName"] == "made-on-a"
    wait_for("the no-op job to complete (run by the leader, whichever it is)",
             lambda: sb.describe_training_job(TrainingJobName="made-on-a")["TrainingJobStatus"] == "Completed", 30)
    assert sb.list_tags(ResourceArn=d["TrainingJobArn"])["Tags"] == [{"Key": "team", "Value": "ml"}]
    # An S3 multipart upload begun on one replica is finished on the other.
    up = s3a.create_multipart_upload(Bucket="shared", Key="big")["UploadId"]
    p1 = s3a.upload_part(Bucket="shared", Key="big", UploadId=up, PartNumber=1, Body=b"a" * (5 << 20))["ETag"]
    p2 = s3b.upload_part(Bucket="shared", Key="big", UploadId=up, PartNumber=2, Body=b"b" * 10)["ETag"]
    s3b.complete_multipart_upload(Bucket="shared", Key="big", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]})
    assert s3a.get_object(Bucket="shared", Key="big")["Body"].read() == b"a" * (5 << 20) + b"b" * 10
    # A key created while both run works on both.
    key = a.add_key(account="210987654321")
    for k in (a, b):
        other = k.client("s3", key=key)
        other.create_bucket(Bucket=f"other-{k.port}")
    assert {x["Name"] for x in b.client("s3", key=key).list_buckets()["Buckets"]} == {f"other-{a.port}", f"other-{b.port}"}
    # Exactly one leads.
    assert sorted([leader_flag(a), leader_flag(b)]) == [False, True]


def test_the_follower_takes_over_and_running_work_completes(replicas):
    a, b, lb = replicas
    lb_client = Kiln.__new__(Kiln)
    lb_client.endpoint = f"http://127.0.0.1:{lb.port}"
    lb_client.data_dir = a.data_dir
    sm, s3 = lb_client.client(key=a.key), lb_client.client("s3", key=a.key)
    s3.create_bucket(Bucket="rep")
    src = upload_script(s3, "rep", "code/sourcedir.tar.gz", TRAINER)

    # A script-mode job runs while its leader is killed.
    sm.create_training_job(**script_job("survivor", src, steps=12))
    wait_for("the job to train", lambda: sm.describe_training_job(TrainingJobName="survivor")["SecondaryStatus"] == "Training", 60)
    leader, follower = leader_and_follower(a, b)
    killed = time.time()
    leader.kill()
    wait_for("the follower to lead", lambda: leader_flag(follower), 10)
    failover = time.time() - killed
    print(f"\nfailover after SIGKILL of the leader: {failover:.2f} s")
    assert failover < 10
    d = wait_for("the job to end", lambda: (lambda d: d if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped") else None)(
        sm.describe_training_job(TrainingJobName="survivor")), 90)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["FinalMetricDataList"][0]["Value"] == pytest.approx(0.5 * 12)
    assert d["ModelArtifacts"]["S3ModelArtifacts"].endswith("survivor/output/model.tar.gz")

    # The killed replica comes back as a follower; a tuning job loses its leader mid-way.
    leader.start()
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="failover-tune",
        HyperParameterTuningJobConfig={
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "score"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {"ContinuousParameterRanges": [{"Name": "x", "MinValue": "0.1", "MaxValue": "1.0"}]},
            "RandomSeed": 11,
        },
        TrainingJobDefinition={
            "StaticHyperParameters": {"sagemaker_program": json.dumps("train.py"),
                                      "sagemaker_submit_directory": json.dumps(src), "steps": "3"},
            "AlgorithmSpecification": {"TrainingImage": SCRIPT_IMAGE, "TrainingInputMode": "File",
                                       "MetricDefinitions": [{"Name": "score", "Regex": r"score=([0-9.]+)"}]},
            "RoleArn": ROLE,
            "OutputDataConfig": {"S3OutputPath": "s3://rep/output"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        })

    def children():
        return [j for p in sm.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job").paginate(
            HyperParameterTuningJobName="failover-tune") for j in p["TrainingJobSummaries"]]

    wait_for("two children", lambda: len(children()) >= 2, 60)
    leader, follower = leader_and_follower(follower, leader)
    killed = time.time()
    leader.kill()
    wait_for("the follower to lead", lambda: leader_flag(follower), 10)
    print(f"failover during a tuning job: {time.time() - killed:.2f} s")
    d = wait_for("the tuning job to end", lambda: (lambda d: d if d["HyperParameterTuningJobStatus"] in ("Completed", "Failed", "Stopped") else None)(
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="failover-tune")), 240)
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    kids = children()
    names = sorted(j["TrainingJobName"] for j in kids)
    assert len(names) == 6 and len(set(names)) == 6, names
    assert [n.split("-")[2] for n in names] == ["001", "002", "003", "004", "005", "006"]
    assert d["TrainingJobStatusCounters"]["Completed"] == 6
    all_jobs = [j["TrainingJobName"] for p in sm.get_paginator("list_training_jobs").paginate(NameContains="failover-tune")
                for j in p["TrainingJobSummaries"]]
    assert sorted(all_jobs) == names, "no child outside the tuning job's list"
