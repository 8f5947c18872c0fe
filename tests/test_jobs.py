"""Training jobs really run: the local executor, `kiln agent`, the container contract and script mode,
driven through boto3 against the real binary."""
import io
import json
import os
import tarfile
import tempfile
import textwrap
import time

import pytest
from botocore.exceptions import ClientError

from kilntest import SHARED, Kiln, job_request

TERMINAL = ("Completed", "Failed", "Stopped")
FAST_STOP = '[jobs]\nstop_grace_seconds = 2\n'


@pytest.fixture(scope="module")
def sm(runner):
    return runner.client()


@pytest.fixture(scope="module")
def s3(runner):
    c = runner.client("s3")
    c.create_bucket(Bucket="jobs")
    return c


def wait(sm, name, timeout=120, until=TERMINAL):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] in until:
            return d
        time.sleep(0.2)
    raise AssertionError(f"{name} still {d['TrainingJobStatus']}/{d['SecondaryStatus']} after {timeout} s")


def statuses(d):
    return [t["Status"] for t in d["SecondaryStatusTransitions"]]


def bundle(s3, key, files, bucket="jobs"):
    """Uploads a sourcedir.tar.gz with `files` ({name: text}) and returns its s3:// URI."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
    return f"s3://{bucket}/{key}"


def script_job(name, source, channels=None, hps=None, **kw):
    hyper = {"sagemaker_program": json.dumps("train.py"), "sagemaker_submit_directory": json.dumps(source)}
    hyper.update(hps or {})
    req = job_request(name, HyperParameters=hyper, **kw)
    req["AlgorithmSpecification"] = {
        "TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
        "TrainingInputMode": "File",
        "MetricDefinitions": [{"Name": "loss", "Regex": r"loss=([0-9.]+)"}],
    }
    req["OutputDataConfig"] = {"S3OutputPath": "s3://jobs/output"}
    if channels:
        req["InputDataConfig"] = [{"ChannelName": ch, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": dist}}} for ch, uri, dist in channels]
    return req


TRAIN_PY = """
import json, os, sys
train = os.environ["SM_CHANNEL_TRAIN"]
rows = sum(len(open(os.path.join(train, f)).read().split()) for f in sorted(os.listdir(train)))
args = sys.argv[1:]
print("args", args, flush=True)
for epoch in range(3):
    print(f"epoch={epoch}\\tloss={1.0 / (epoch + 1):.4f} rows={rows}", flush=True)
os.makedirs(os.environ["SM_MODEL_DIR"], exist_ok=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"rows": rows, "hosts": json.loads(os.environ["SM_HOSTS"]), "args": args}, f)
"""


def test_script_mode_job_completes_with_artifact_and_metrics(sm, s3):
    for i in range(3):
        s3.put_object(Bucket="jobs", Key=f"data/train/part-{i}.txt", Body=b"1 2 3\n4 5\n")
    src = bundle(s3, "code/ok/sourcedir.tar.gz", {"train.py": TRAIN_PY})
    sm.create_training_job(**script_job("script-ok", src, [("train", "s3://jobs/data/train/", "FullyReplicated")],
                                        hps={"epochs": "3", "lr": "0.1"}))
    d = wait(sm, "script-ok")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert statuses(d) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all(t["StatusMessage"] for t in d["SecondaryStatusTransitions"])
    assert d["ModelArtifacts"]["S3ModelArtifacts"] == "s3://jobs/output/script-ok/output/model.tar.gz"
    assert d["TrainingTimeInSeconds"] >= 1 and d["BillableTimeInSeconds"] >= 1
    assert d["TrainingStartTime"] <= d["TrainingEndTime"]
    metrics = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    assert metrics == {"loss": pytest.approx(1 / 3, abs=1e-4)}
    body = s3.get_object(Bucket="jobs", Key="output/script-ok/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        model = json.load(tar.extractfile("model.json"))
    assert model["rows"] == 15 and model["hosts"] == ["algo-1"]
    assert model["args"] == ["--epochs", "3", "--lr", "0.1"]


def test_failing_script_reports_failure_file(sm, s3):
    src = bundle(s3, "code/fail/sourcedir.tar.gz", {"train.py": """
        import os
        with open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w") as f:
            f.write("ValueError: learning rate must be positive")
        raise SystemExit(3)
    """})
    sm.create_training_job(**script_job("script-fail", src))
    d = wait(sm, "script-fail")
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"] == "AlgorithmError: ValueError: learning rate must be positive"
    assert statuses(d)[-1] == "Failed" and "TrainingEndTime" in d and "ModelArtifacts" not in d


def test_script_exception_without_failure_file(sm, s3):
    src = bundle(s3, "code/crash/sourcedir.tar.gz", {"train.py": "raise RuntimeError('boom in user code')\n"})
    sm.create_training_job(**script_job("script-crash", src))
    d = wait(sm, "script-crash")
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith("AlgorithmError: ") and "boom in user code" in d["FailureReason"]


def test_stop_a_sleeping_job_uploads_artifacts(sm, s3):
    src = bundle(s3, "code/sleep/sourcedir.tar.gz", {"train.py": """
        import os, time
        open(os.path.join(os.environ["SM_MODEL_DIR"], "partial.txt"), "w").write("checkpoint")
        print("sleeping", flush=True)
        time.sleep(600)
    """})
    sm.create_training_job(**script_job("script-stop", src))
    wait(sm, "script-stop", until=("InProgress",))
    deadline = time.time() + 60
    while sm.describe_training_job(TrainingJobName="script-stop")["SecondaryStatus"] != "Training":
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(1)
    sm.stop_training_job(TrainingJobName="script-stop")
    assert sm.describe_training_job(TrainingJobName="script-stop")["TrainingJobStatus"] in ("Stopping", "Stopped")
    d = wait(sm, "script-stop", timeout=60)
    assert d["TrainingJobStatus"] == "Stopped" and d["SecondaryStatus"] == "Stopped"
    assert statuses(d)[-2:] == ["Stopping", "Stopped"]
    assert d["ModelArtifacts"]["S3ModelArtifacts"].endswith("/script-stop/output/model.tar.gz")
    body = s3.get_object(Bucket="jobs", Key="output/script-stop/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.extractfile("partial.txt").read() == b"checkpoint"


def test_max_runtime_exceeded(sm, s3):
    src = bundle(s3, "code/slow/sourcedir.tar.gz", {"train.py": "import time\ntime.sleep(600)\n"})
    req = script_job("script-slow", src)
    req["StoppingCondition"] = {"MaxRuntimeInSeconds": 3}
    sm.create_training_job(**req)
    d = wait(sm, "script-slow", timeout=60)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert statuses(d)[-2:] == ["Stopping", "MaxRuntimeExceeded"]
    assert (d["TrainingEndTime"] - d["TrainingStartTime"]).total_seconds() < 30


def test_sharded_by_s3_key_gives_disjoint_shards(runner, sm, s3):
    for i in range(6):
        s3.put_object(Bucket="jobs", Key=f"shards/f{i}.txt", Body=f"{i}\n".encode())
    src = bundle(s3, "code/shard/sourcedir.tar.gz", {"train.py": """
        import os
        files = sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"]))
        print("host", os.environ["SM_CURRENT_HOST"], "files", ",".join(files), flush=True)
    """})
    req = script_job("script-shard", src, [("train", "s3://jobs/shards/", "ShardedByS3Key")])
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait(sm, "script-shard")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    logs = runner.client("logs")
    streams = [s["logStreamName"] for s in logs.describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="script-shard/")["logStreams"]]
    assert len(streams) == 2 and streams[0].startswith("script-shard/algo-1-")
    seen = {}
    for s in streams:
        for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s, startFromHead=True)["events"]:
            if e["message"].startswith("host "):
                _, host, _, files = e["message"].split(" ")
                seen[host] = files.split(",")
    assert seen == {"algo-1": ["f0.txt", "f2.txt", "f4.txt"], "algo-2": ["f1.txt", "f3.txt", "f5.txt"]}


def test_unknown_image_fails_clearly(sm):
    req = job_request("bad-image")
    req["AlgorithmSpecification"]["TrainingImage"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-custom:latest"
    sm.create_training_job(**req)
    d = wait(sm, "bad-image", timeout=30)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith("ClientError: ") and "my-custom:latest" in d["FailureReason"], d["FailureReason"]
    # Not a SageMaker image kiln maps: pulled as the job's own image, which fails while downloading.
    assert statuses(d) == ["Starting", "Downloading", "Failed"]


def test_noop_job_flow(sm):
    req = job_request("noop-1", OutputDataConfig={"S3OutputPath": "s3://jobs/output/"})
    sm.create_training_job(**req)
    d = wait(sm, "noop-1", timeout=30)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert statuses(d) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    # A trailing slash in S3OutputPath is not doubled.
    assert d["ModelArtifacts"]["S3ModelArtifacts"] == "s3://jobs/output/noop-1/output/model.tar.gz"


def test_capacity_waits_and_refuses(tmp_path):
    # A [capacity] table that names only vCPUs: the rest keeps its defaults.
    k = Kiln(config=FAST_STOP + "[capacity]\nvcpus = 4\n").start()
    try:
        sm = k.client()
        k.client("s3").create_bucket(Bucket="jobs")
        with pytest.raises(ClientError) as e:
            big = job_request("too-big")
            big["ResourceConfig"]["InstanceType"] = "ml.m5.4xlarge"
            sm.create_training_job(**big)
        assert e.value.response["Error"]["Code"] == "ResourceLimitExceeded"
        assert "16 vCPUs (has 4)" in e.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as e:
            gpu = job_request("needs-gpu")
            gpu["ResourceConfig"]["InstanceType"] = "ml.g5.xlarge"
            sm.create_training_job(**gpu)
        assert e.value.response["Error"]["Code"] == "ResourceLimitExceeded" and "GPUs" in e.value.response["Error"]["Message"]
        sleeper = {"TrainingImage": "kiln/sleep", "TrainingInputMode": "File",
                   "ContainerEntrypoint": ["/bin/sh"], "ContainerArguments": ["-c", "sleep 600"]}
        first = job_request("hold-1", AlgorithmSpecification=sleeper, OutputDataConfig={"S3OutputPath": "s3://jobs/o"})
        first["ResourceConfig"]["InstanceType"] = "ml.m5.xlarge"
        sm.create_training_job(**first)
        wait(sm, "hold-1", until=("InProgress",))
        second = job_request("hold-2", OutputDataConfig={"S3OutputPath": "s3://jobs/o"})
        sm.create_training_job(**second)
        deadline = time.time() + 20
        while True:
            d = sm.describe_training_job(TrainingJobName="hold-2")
            if "Waiting for capacity" in d["SecondaryStatusTransitions"][-1]["StatusMessage"]:
                break
            assert time.time() < deadline, d
            time.sleep(0.2)
        assert d["SecondaryStatus"] == "Starting"
        sm.stop_training_job(TrainingJobName="hold-1")
        assert wait(sm, "hold-2", timeout=60)["TrainingJobStatus"] == "Completed"
        assert wait(sm, "hold-1", timeout=60)["TrainingJobStatus"] == "Stopped"
    finally:
        k.stop()


def test_job_survives_sigkill_of_the_server(tmp_path):
    k = Kiln(config=FAST_STOP).start()
    try:
        sm = k.client()
        s3 = k.client("s3")
        s3.create_bucket(Bucket="jobs")
        src = bundle(s3, "code/survive/sourcedir.tar.gz", {"train.py": """
            import os, time
            for i in range(8):
                print(f"step {i} loss={1.0/(i+1):.3f}", flush=True)
                time.sleep(1)
            open(os.path.join(os.environ["SM_MODEL_DIR"], "done.txt"), "w").write("ok")
        """})
        sm.create_training_job(**script_job("survivor", src))
        deadline = time.time() + 60
        while sm.describe_training_job(TrainingJobName="survivor")["SecondaryStatus"] != "Training":
            assert time.time() < deadline
            time.sleep(0.2)
        time.sleep(1)
        k.proc.kill()  # SIGKILL the server only; the agent runs in its own process group
        k.proc.wait()
        time.sleep(2)
        # The server comes back at the same address; the agent has kept retrying its reports.
        again = Kiln(data_dir=k.data_dir, port=k.port).start()
        k = again
        sm = again.client()
        d = wait(sm, "survivor", timeout=90)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        logs = again.client("logs")
        stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="survivor/")["logStreams"][0]
        lines = [e["message"] for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                                            logStreamName=stream["logStreamName"], startFromHead=True)["events"]]
        assert [l for l in lines if l.startswith("step ")] == [f"step {i} loss={1.0/(i+1):.3f}" for i in range(8)]
    finally:
        k.stop()


def test_agent_dead_job_is_failed_after_restart(tmp_path):
    k = Kiln(config=FAST_STOP).start()
    try:
        sm = k.client()
        k.client("s3").create_bucket(Bucket="jobs")
        spec = {"TrainingImage": "kiln/sleep", "TrainingInputMode": "File",
                "ContainerEntrypoint": ["/bin/sh"], "ContainerArguments": ["-c", "sleep 600"]}
        sm.create_training_job(**job_request("orphan", AlgorithmSpecification=spec, OutputDataConfig={"S3OutputPath": "s3://jobs/o"}))
        deadline = time.time() + 60
        while sm.describe_training_job(TrainingJobName="orphan")["SecondaryStatus"] != "Training":
            assert time.time() < deadline
            time.sleep(0.2)
        k.kill()  # SIGKILL the server's whole process group: agents die with it
        import subprocess
        k.cleanup()  # and every agent and algorithm it started
        time.sleep(1)
        k = Kiln(data_dir=k.data_dir).start()
        d = wait(k.client(), "orphan", timeout=60)
        assert d["TrainingJobStatus"] == "Failed" and "stopped without reporting" in d["FailureReason"]
    finally:
        k.stop()


def test_builtin_xgboost_job_on_flights_through_boto3(runner, sm, s3):
    flights = SHARED / "data" / "flights"
    s3.upload_file(str(flights / "train.csv"), "jobs", "flights/train/train.csv")
    s3.upload_file(str(flights / "test.csv"), "jobs", "flights/validation/test.csv")
    req = job_request("flights-xgb", HyperParameters={"objective": "binary:logistic", "num_round": "40", "max_depth": "6",
                                                       "eta": "0.3", "eval_metric": "auc"})
    req["AlgorithmSpecification"] = {"TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
                                     "TrainingInputMode": "File"}
    req["OutputDataConfig"] = {"S3OutputPath": "s3://jobs/xgb"}
    req["InputDataConfig"] = [{"ChannelName": ch, "ContentType": "text/csv", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://jobs/flights/{ch}/"}}} for ch in ("train", "validation")]
    sm.create_training_job(**req)
    d = wait(sm, "flights-xgb", timeout=300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    metrics = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    assert metrics["validation:auc"] > 0.75 and "train:auc" in metrics
    # The service injected the built-in image's metric definitions, as SageMaker does.
    names = {m["Name"] for m in d["AlgorithmSpecification"]["MetricDefinitions"]}
    assert {"validation:auc", "train:auc", "validation:rmse"} <= names
    body = s3.get_object(Bucket="jobs", Key="xgb/flights-xgb/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        model = json.load(tar.extractfile("xgboost-model"))
    assert model["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] == "40"


def test_uris_with_empty_segments_round_trip(sm, s3):
    """`f"{prefix}/train"` with a prefix ending in `/` makes `prefix//train/`: legal S3 keys, which
    staging, the source bundle and the model upload must all handle."""
    s3.put_object(Bucket="jobs", Key="dbl//train/rows.txt", Body=b"1 2 3\n4 5\n")
    src = bundle(s3, "dbl//code/sourcedir.tar.gz", {"train.py": TRAIN_PY})
    assert src == "s3://jobs/dbl//code/sourcedir.tar.gz"
    req = script_job("double-slash", src, [("train", "s3://jobs/dbl//train/", "FullyReplicated")])
    req["OutputDataConfig"] = {"S3OutputPath": "s3://jobs/out//put"}
    sm.create_training_job(**req)
    d = wait(sm, "double-slash")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["ModelArtifacts"]["S3ModelArtifacts"] == "s3://jobs/out//put/double-slash/output/model.tar.gz"
    body = s3.get_object(Bucket="jobs", Key="out//put/double-slash/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert json.load(tar.extractfile("model.json"))["rows"] == 5
