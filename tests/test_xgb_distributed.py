"""Distributed training of the built-in XGBoost: a 2-instance job trains ONE model with its hosts talking
over TCP (algo-1 listens, algo-2 connects by name), driven through boto3 against the real binary."""
import io
import json
import os
import signal
import tarfile
import time

import pytest

from kilntest import SHARED, free_port, job_request

XGB = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
TERMINAL = ("Completed", "Failed", "Stopped")
GROUP = "/aws/sagemaker/TrainingJobs"


@pytest.fixture(scope="module")
def sm(runner):
    return runner.client()


@pytest.fixture(scope="module")
def s3(runner):
    c = runner.client("s3")
    c.create_bucket(Bucket="dist")
    flights = SHARED / "data" / "flights"
    # The training data as four files: with ShardedByS3Key algo-1 gets parts 0 and 2, algo-2 parts 1 and 3.
    lines = (flights / "train.csv").read_text().splitlines(keepends=True)
    quarter = (len(lines) + 3) // 4
    for i in range(4):
        c.put_object(Bucket="dist", Key=f"flights/train/part-{i}.csv", Body="".join(lines[i * quarter:(i + 1) * quarter]).encode())
    c.upload_file(str(flights / "test.csv"), "dist", "flights/validation/test.csv")
    return c


def wait(sm, name, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] in TERMINAL:
            return d
        time.sleep(0.2)
    raise AssertionError(f"{name} still {d['TrainingJobStatus']}/{d['SecondaryStatus']} after {timeout} s")


def xgb_job(name, instances, rounds, sharding="ShardedByS3Key"):
    req = job_request(name, HyperParameters={"objective": "binary:logistic", "num_round": str(rounds), "max_depth": "6",
                                             "eta": "0.3", "eval_metric": "auc", "nthread": "1"})
    req["AlgorithmSpecification"] = {"TrainingImage": XGB, "TrainingInputMode": "File"}
    req["OutputDataConfig"] = {"S3OutputPath": "s3://dist/out"}
    req["ResourceConfig"]["InstanceCount"] = instances
    # A port of its own: jobs of this machine share its network.
    req["Environment"] = {"KILN_XGB_PORT": str(free_port())}
    req["InputDataConfig"] = [
        {"ChannelName": "train", "ContentType": "text/csv", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://dist/flights/train/", "S3DataDistributionType": sharding}}},
        {"ChannelName": "validation", "ContentType": "text/csv", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://dist/flights/validation/", "S3DataDistributionType": "FullyReplicated"}}},
    ]
    return req


def log_lines(runner, name):
    """{host: [messages]} of a job's log streams."""
    logs = runner.client("logs")
    out = {}
    for s in logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=f"{name}/")["logStreams"]:
        host = s["logStreamName"].split("/")[1].rsplit("-", 1)[0]
        events = logs.get_log_events(logGroupName=GROUP, logStreamName=s["logStreamName"], startFromHead=True)["events"]
        out[host] = [e["message"] for e in events]
    return out


def test_two_hosts_train_one_model_as_good_as_one_host(runner, sm, s3):
    sm.create_training_job(**xgb_job("dxgb-one", 1, 30))
    sm.create_training_job(**xgb_job("dxgb-two", 2, 30))
    one, two = wait(sm, "dxgb-one"), wait(sm, "dxgb-two")
    assert one["TrainingJobStatus"] == "Completed", one.get("FailureReason")
    assert two["TrainingJobStatus"] == "Completed", two.get("FailureReason")
    auc = {d["TrainingJobName"]: {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}["validation:auc"]
           for d in (one, two)}
    print("validation auc:", auc)
    assert auc["dxgb-two"] >= auc["dxgb-one"] - 0.002, auc
    assert auc["dxgb-two"] > 0.75, auc
    # One model of 30 trees, written by algo-1.
    body = s3.get_object(Bucket="dist", Key="out/dxgb-two/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        model = json.load(tar.extractfile("xgboost-model"))
    assert model["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] == "30"
    # Both hosts trained (each on its shard), only algo-1 printed the global metrics.
    lines = log_lines(runner, "dxgb-two")
    assert set(lines) == {"algo-1", "algo-2"}, lines.keys()
    rounds = [l for l in lines["algo-1"] if l.startswith("[29]")]
    assert rounds and "validation-auc" in rounds[0], lines["algo-1"][-5:]
    assert not [l for l in lines["algo-2"] if l.startswith("[")], lines["algo-2"]
    assert any("algo-2 of 2 hosts" in l for l in lines["algo-2"]), lines["algo-2"]


def algo_pids(job, host):
    """Pids of the `kiln algo xgboost train` process of `host` of `job`: the process whose command line
    names the host's tree (bubblewrap, or the algorithm itself without a sandbox), or its descendants."""
    tree = f"/{job}/{host}/opt/ml"

    def cmdline(pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def children(pid):
        out = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(c) for c in f.read().split()]
        except OSError:
            pass
        return out

    found = []
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        if tree not in cmdline(pid):
            continue
        todo = [pid]
        while todo:
            p = todo.pop()
            if "\0algo\0xgboost\0train" in cmdline(p):
                found.append(p)
            todo += children(p)
    return sorted(set(found))


def test_a_host_killed_mid_training_fails_the_job_naming_it(runner, sm, s3):
    name = "dxgb-kill"
    sm.create_training_job(**xgb_job(name, 2, 5000))
    # Wait until both hosts are in the boosting loop (algo-1 prints rounds only once they are connected).
    deadline = time.time() + 120
    while True:
        assert time.time() < deadline, "the job never started training"
        d = sm.describe_training_job(TrainingJobName=name)
        assert d["TrainingJobStatus"] == "InProgress", d.get("FailureReason")
        if d["SecondaryStatus"] == "Training" and any(l.startswith("[1]") for l in log_lines(runner, name).get("algo-1", [])):
            break
        time.sleep(0.3)
    pids = algo_pids(name, "algo-2")
    assert pids, "algo-2's algorithm process not found"
    killed = time.time()
    # Descendants first; a process that died with its parent (bubblewrap's --die-with-parent)
    # meanwhile is gone already.
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    d = wait(sm, name, timeout=60)
    took = time.time() - killed
    assert d["TrainingJobStatus"] == "Failed", d
    assert took < 30, took
    reason = d["FailureReason"]
    print(f"failed {took:.1f} s after the kill: {reason}")
    # algo-1's "lost contact with algo-2" or, when algo-2's own report wins the race, its
    # "killed by signal 9 (host algo-2)".
    assert "algo-2" in reason and ("lost contact" in reason or "killed by signal 9" in reason), reason
