"""The CloudWatch metrics API against the real binary: a training job's metric definitions become
metrics of namespace /aws/sagemaker/TrainingJobs (dimension TrainingJobName) that the SageMaker SDK's
TrainingJobAnalytics, boto3's cloudwatch client (ListMetrics, GetMetricStatistics, GetMetricData,
PutMetricData) and the AWS CLI read; each account sees only its own. botocore speaks Smithy RPC v2
CBOR to CloudWatch; the JSON 1.0 and query protocols are exercised with the same model switched.
Host metrics (CPUUtilization, MemoryUtilization, DiskUtilization, dimension Host=<job>/algo-N) come
from a two-host job whose first host burns CPU while the second sleeps."""
import datetime
import json
import os
import shutil
import time

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from kilntest import Kiln
from test_jobs import bundle, script_job, wait

NS = "/aws/sagemaker/TrainingJobs"
JOB = "cw-metrics-job"
LOSSES = [1.0, 0.5, 0.3333]
ACCS = [0.25, 0.5, 0.75]

TRAIN_PY = """
import time
losses = [1.0, 0.5, 0.3333]
accs = [0.25, 0.5, 0.75]
for epoch in range(3):
    print(f"epoch={epoch} loss={losses[epoch]:.4f} acc={accs[epoch]:.2f}", flush=True)
    time.sleep(1.2)
"""

HOST_JOB = "cw-host-metrics"
# algo-1 spins one core for ~10 s, algo-2 sleeps as long.
HOST_PY = """
import os, time
end = time.time() + 10
if os.environ["SM_CURRENT_HOST"] == "algo-1":
    n = 0
    while time.time() < end:
        n += 1
    print("spun", n, flush=True)
else:
    time.sleep(10)
    print("slept", flush=True)
"""


def utc(ts):
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)


@pytest.fixture(scope="module")
def server():
    k = Kiln(config='[jobs]\nstop_grace_seconds = 2\n').start()
    s3 = k.client("s3")
    s3.create_bucket(Bucket="jobs")
    sm = k.client()
    src = bundle(s3, "code/cw/sourcedir.tar.gz", {"train.py": TRAIN_PY})
    req = script_job(JOB, src)
    req["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "loss", "Regex": r"loss=([0-9.]+)"}, {"Name": "acc", "Regex": r"acc=([0-9.]+)"}]
    sm.create_training_job(**req)
    src = bundle(s3, "code/cw-host/sourcedir.tar.gz", {"train.py": HOST_PY})
    req = script_job(HOST_JOB, src)
    req["ResourceConfig"]["InstanceCount"] = 2
    sm.create_training_job(**req)
    d = wait(sm, JOB, timeout=180)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    h = wait(sm, HOST_JOB, timeout=180)
    assert h["TrainingJobStatus"] == "Completed", h.get("FailureReason")
    k.host_job = h
    yield k, d
    k.stop()
    shutil.rmtree(k.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cw(server):
    return server[0].client("cloudwatch")


def window(d):
    """The job's time range, a minute on either side."""
    return d["TrainingStartTime"] - datetime.timedelta(minutes=1), d["TrainingEndTime"] + datetime.timedelta(minutes=1)


def job_dims(name=JOB):
    return [{"Name": "TrainingJobName", "Value": name}]


def test_training_job_analytics_dataframe(server):
    sagemaker = pytest.importorskip("sagemaker")
    k, _ = server
    key = k.key
    saved = {v: os.environ.get(v) for v in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ENDPOINT_URL=k.endpoint, AWS_ACCESS_KEY_ID=key["access_key_id"],
                      AWS_SECRET_ACCESS_KEY=key["secret_access_key"])
    try:
        session = sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1"), default_bucket="jobs")
        # One point a second, so a one-second period gives back every printed value.
        df = sagemaker.analytics.TrainingJobAnalytics(JOB, metric_names=["loss", "acc"], sagemaker_session=session,
                                                      period=1).dataframe()
        loss = df[df["metric_name"] == "loss"].sort_values("timestamp")
        acc = df[df["metric_name"] == "acc"].sort_values("timestamp")
        assert list(loss["value"]) == pytest.approx(LOSSES)
        assert list(acc["value"]) == pytest.approx(ACCS)
        assert loss["timestamp"].iloc[0] == 0 and loss["timestamp"].iloc[-1] >= 2
        # The SDK's default period (60 s) averages what falls in each minute; without metric_names
        # it finds the names in the job's MetricDefinitions.
        df = sagemaker.analytics.TrainingJobAnalytics(JOB, sagemaker_session=session).dataframe()
        assert set(df["metric_name"]) == {"loss", "acc"}
        assert all(min(LOSSES) <= v <= max(LOSSES) for v in df[df["metric_name"] == "loss"]["value"])
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


def test_list_metrics(cw):
    metrics = cw.list_metrics(Namespace=NS)["Metrics"]
    assert {"Namespace": NS, "MetricName": "loss", "Dimensions": job_dims()} in metrics
    assert {"Namespace": NS, "MetricName": "acc", "Dimensions": job_dims()} in metrics
    assert cw.list_metrics(Namespace=NS, MetricName="acc")["Metrics"] == [
        {"Namespace": NS, "MetricName": "acc", "Dimensions": job_dims()}]
    by_dim = cw.list_metrics(Dimensions=[{"Name": "TrainingJobName", "Value": JOB}])["Metrics"]
    assert sorted(m["MetricName"] for m in by_dim) == ["acc", "loss"]
    assert len(cw.list_metrics(Dimensions=[{"Name": "TrainingJobName"}])["Metrics"]) == 2
    assert cw.list_metrics(Dimensions=[{"Name": "TrainingJobName", "Value": "nope"}])["Metrics"] == []
    assert cw.list_metrics(Namespace="Other")["Metrics"] == []
    # The paginator reads every page.
    pages = list(cw.get_paginator("list_metrics").paginate(Namespace=NS, Dimensions=[{"Name": "TrainingJobName"}]))
    assert sum(len(p["Metrics"]) for p in pages) == 2


def test_get_metric_statistics(server, cw):
    _, d = server
    start, end = window(d)
    r = cw.get_metric_statistics(Namespace=NS, MetricName="loss", Dimensions=job_dims(), StartTime=start,
                                 EndTime=end, Period=60, Statistics=["Average", "Maximum", "Minimum", "SampleCount",
                                                                      "Sum"])
    assert r["Label"] == "loss"
    points = r["Datapoints"]
    assert 1 <= len(points) <= 2
    assert sum(p["SampleCount"] for p in points) == 3
    assert sum(p["Sum"] for p in points) == pytest.approx(sum(LOSSES))
    assert max(p["Maximum"] for p in points) == 1.0
    assert min(p["Minimum"] for p in points) == pytest.approx(0.3333)
    for p in points:
        assert p["Timestamp"].tzinfo is not None and p["Timestamp"].timestamp() % 60 == 0
        assert p["Average"] == pytest.approx(p["Sum"] / p["SampleCount"])
    # One-second buckets: each printed value on its own.
    r = cw.get_metric_statistics(Namespace=NS, MetricName="acc", Dimensions=job_dims(), StartTime=start,
                                 EndTime=end, Period=1, Statistics=["Maximum"])
    assert [p["Maximum"] for p in sorted(r["Datapoints"], key=lambda p: p["Timestamp"])] == pytest.approx(ACCS)
    # Percentiles.
    r = cw.get_metric_statistics(Namespace=NS, MetricName="acc", Dimensions=job_dims(), StartTime=start,
                                 EndTime=end, Period=3600, ExtendedStatistics=["p100", "p0"])
    assert max(p["ExtendedStatistics"]["p100"] for p in r["Datapoints"]) == 0.75
    # A range without points, or a job that does not exist: no datapoints.
    r = cw.get_metric_statistics(Namespace=NS, MetricName="loss", Dimensions=job_dims(), StartTime=utc(0),
                                 EndTime=utc(3600), Period=60, Statistics=["Average"])
    assert r["Datapoints"] == []
    r = cw.get_metric_statistics(Namespace=NS, MetricName="loss", Dimensions=job_dims("nope"), StartTime=start,
                                 EndTime=end, Period=60, Statistics=["Average"])
    assert r["Datapoints"] == []


def test_get_metric_data(server, cw):
    _, d = server
    start, end = window(d)

    def stat(metric, s, period=1):
        return {"Metric": {"Namespace": NS, "MetricName": metric, "Dimensions": job_dims()}, "Period": period,
                "Stat": s}

    r = cw.get_metric_data(StartTime=start, EndTime=end, ScanBy="TimestampAscending", MetricDataQueries=[
        {"Id": "loss", "MetricStat": stat("loss", "Average")},
        {"Id": "acc", "MetricStat": stat("acc", "Maximum"), "Label": "accuracy"},
        {"Id": "hidden", "MetricStat": stat("acc", "Minimum"), "ReturnData": False},
        {"Id": "all", "MetricStat": stat("loss", "SampleCount", 3600)},
    ])
    results = {m["Id"]: m for m in r["MetricDataResults"]}
    assert set(results) == {"loss", "acc", "all"}
    assert results["loss"]["Values"] == pytest.approx(LOSSES)
    assert results["loss"]["StatusCode"] == "Complete" and results["loss"]["Label"] == "loss"
    assert results["acc"]["Values"] == pytest.approx(ACCS) and results["acc"]["Label"] == "accuracy"
    assert results["loss"]["Timestamps"] == sorted(results["loss"]["Timestamps"])
    assert sum(results["all"]["Values"]) == 3
    assert "NextToken" not in r
    # Newest first by default; MaxDatapoints pages with NextToken.
    query = [{"Id": "loss", "MetricStat": stat("loss", "Average")}]
    r = cw.get_metric_data(StartTime=start, EndTime=end, MetricDataQueries=query, MaxDatapoints=2)
    assert r["MetricDataResults"][0]["Values"] == pytest.approx(LOSSES[::-1][:2])
    assert r["MetricDataResults"][0]["StatusCode"] == "PartialData"
    r2 = cw.get_metric_data(StartTime=start, EndTime=end, MetricDataQueries=query, MaxDatapoints=2,
                            NextToken=r["NextToken"])
    assert r2["MetricDataResults"][0]["Values"] == pytest.approx(LOSSES[:1])
    assert "NextToken" not in r2
    pages = list(cw.get_paginator("get_metric_data").paginate(StartTime=start, EndTime=end, MetricDataQueries=query,
                                                              MaxDatapoints=1))
    assert [p["MetricDataResults"][0]["Values"][0] for p in pages] == pytest.approx(LOSSES[::-1])
    # Metric math is refused with a clear error.
    with pytest.raises(ClientError) as e:
        cw.get_metric_data(StartTime=start, EndTime=end, MetricDataQueries=[
            {"Id": "loss", "MetricStat": stat("loss", "Average")}, {"Id": "e", "Expression": "loss * 2"}])
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "Expression" in e.value.response["Error"]["Message"]


def test_put_metric_data_then_read_back(cw):
    now = time.time()
    dims = [{"Name": "Run", "Value": "a"}, {"Name": "Host", "Value": "h1"}]
    cw.put_metric_data(Namespace="Kiln/Test", MetricData=[
        {"MetricName": "throughput", "Dimensions": dims, "Value": 10.0, "Timestamp": utc(now - 5), "Unit": "Count"},
        {"MetricName": "throughput", "Dimensions": dims, "Values": [20.0, 30.0], "Counts": [1, 2],
         "Timestamp": utc(now - 4)},
        {"MetricName": "other", "Value": 1.5},
    ])
    metrics = cw.list_metrics(Namespace="Kiln/Test")["Metrics"]
    assert {m["MetricName"] for m in metrics} == {"throughput", "other"}
    tp = next(m for m in metrics if m["MetricName"] == "throughput")
    assert sorted(tp["Dimensions"], key=lambda x: x["Name"]) == sorted(dims, key=lambda x: x["Name"])
    # Dimensions match whatever their order.
    r = cw.get_metric_statistics(Namespace="Kiln/Test", MetricName="throughput", Dimensions=dims[::-1],
                                 StartTime=utc(now - 3600), EndTime=utc(now + 60), Period=3600,
                                 Statistics=["Sum", "SampleCount", "Maximum"])
    assert sum(p["Sum"] for p in r["Datapoints"]) == 90.0
    assert sum(p["SampleCount"] for p in r["Datapoints"]) == 4
    # A subset of the dimensions is another series: nothing.
    r = cw.get_metric_statistics(Namespace="Kiln/Test", MetricName="throughput", Dimensions=dims[:1],
                                 StartTime=utc(now - 3600), EndTime=utc(now + 60), Period=3600, Statistics=["Sum"])
    assert r["Datapoints"] == []
    r = cw.get_metric_data(StartTime=utc(now - 3600), EndTime=utc(now + 60), MetricDataQueries=[
        {"Id": "o", "MetricStat": {"Metric": {"Namespace": "Kiln/Test", "MetricName": "other"}, "Period": 60,
                                    "Stat": "Average"}}])
    assert r["MetricDataResults"][0]["Values"] == [1.5]


def test_errors(server, cw):
    k, d = server
    raw = k.client("cloudwatch", validate=False)
    start, end = window(d)

    def code(call, **kw):
        with pytest.raises(ClientError) as e:
            call(**kw)
        return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]

    base = dict(Namespace=NS, MetricName="loss", StartTime=start, EndTime=end, Period=60, Statistics=["Average"])
    assert code(raw.get_metric_statistics, **{k: v for k, v in base.items() if k != "Namespace"}) == \
        ("MissingParameter", 400)
    assert code(raw.get_metric_statistics, **dict(base, Period=7)) == ("InvalidParameterValue", 400)
    assert code(raw.get_metric_statistics, **dict(base, StartTime=end, EndTime=start)) == \
        ("InvalidParameterValue", 400)
    assert code(raw.get_metric_statistics, **dict(base, Statistics=["Median"])) == ("InvalidParameterValue", 400)
    assert code(raw.get_metric_statistics, **dict(base, ExtendedStatistics=["p90"])) == \
        ("InvalidParameterCombination", 400)
    assert code(raw.get_metric_statistics, **dict(base, Period=1, StartTime=utc(0), EndTime=utc(86400))) == \
        ("InvalidParameterValue", 400)
    assert code(raw.list_metrics, NextToken="bogus") == ("InvalidNextToken", 400)
    assert code(raw.put_metric_data, Namespace="AWS/EC2", MetricData=[{"MetricName": "x", "Value": 1}]) == \
        ("InvalidParameterValue", 400)
    assert code(raw.put_metric_data, Namespace=NS, MetricData=[{"MetricName": "x", "Value": 1}]) == \
        ("InvalidParameterValue", 400)
    assert code(raw.put_metric_data, Namespace="N", MetricData=[{"MetricName": "x"}]) == ("MissingParameter", 400)
    assert code(raw.get_metric_data, StartTime=start, EndTime=end, MetricDataQueries=[{"Id": "Bad-Id"}]) == \
        ("InvalidParameterValue", 400)
    # The modeled exception classes are raised.
    with pytest.raises(raw.exceptions.InvalidParameterValueException):
        raw.get_metric_statistics(**dict(base, Period=7))
    with pytest.raises(raw.exceptions.MissingRequiredParameterException):
        raw.put_metric_data(Namespace="N", MetricData=[{"MetricName": "x"}])


def test_accounts_are_isolated(server, cw):
    k, d = server
    start, end = window(d)
    other = k.client("cloudwatch", key=k.add_key(account="222233334444"))
    assert other.list_metrics()["Metrics"] == []
    r = other.get_metric_statistics(Namespace=NS, MetricName="loss", Dimensions=job_dims(), StartTime=start,
                                    EndTime=end, Period=60, Statistics=["Average"])
    assert r["Datapoints"] == []
    r = other.get_metric_data(StartTime=start, EndTime=end, MetricDataQueries=[{"Id": "l", "MetricStat": {
        "Metric": {"Namespace": NS, "MetricName": "loss", "Dimensions": job_dims()}, "Period": 1, "Stat": "Sum"}}])
    assert r["MetricDataResults"][0]["Values"] == []
    other.put_metric_data(Namespace="Isolated", MetricData=[{"MetricName": "m", "Value": 2.0}])
    assert [m["Namespace"] for m in other.list_metrics()["Metrics"]] == ["Isolated"]
    assert cw.list_metrics(Namespace="Isolated")["Metrics"] == []


def test_aws_cli(server):
    k, d = server
    p = k.aws("cloudwatch", "list-metrics", "--namespace", NS, "--dimensions", "Name=TrainingJobName", "--output",
              "json")
    names = sorted(m["MetricName"] for m in json.loads(p.stdout)["Metrics"])
    assert names == ["acc", "loss"]
    start, end = window(d)
    queries = json.dumps([{"Id": "loss", "MetricStat": {"Metric": {"Namespace": NS, "MetricName": "loss",
                                                                     "Dimensions": job_dims()},
                                                          "Period": 1, "Stat": "Average"}}])
    p = k.aws("cloudwatch", "get-metric-data", "--metric-data-queries", queries, "--start-time", start.isoformat(),
              "--end-time", end.isoformat(), "--scan-by", "TimestampAscending", "--output", "json")
    result = json.loads(p.stdout)["MetricDataResults"][0]
    assert result["Values"] == pytest.approx(LOSSES) and result["StatusCode"] == "Complete"
    p = k.aws("cloudwatch", "get-metric-statistics", "--namespace", NS, "--metric-name", "acc", "--dimensions",
              f"Name=TrainingJobName,Value={JOB}", "--start-time", start.isoformat(), "--end-time", end.isoformat(),
              "--period", "3600", "--statistics", "Maximum", "--output", "json")
    assert max(p["Maximum"] for p in json.loads(p.stdout)["Datapoints"]) == 0.75
    p = k.aws("cloudwatch", "get-metric-statistics", "--namespace", NS, "--metric-name", "acc", "--start-time",
              start.isoformat(), "--end-time", end.isoformat(), "--period", "7", "--statistics", "Maximum", check=False)
    assert p.returncode != 0 and "InvalidParameterValue" in p.stderr


@pytest.mark.parametrize("protocol", ["json", "query"])
def test_older_protocols(server, tmp_path, protocol):
    """The same calls over AWS JSON 1.0 and the query protocol (XML), which older botocore and the
    CLI v2 use: botocore's own model, with its protocol switched, read from a data path of its own."""
    k, d = server
    session = botocore.session.get_session()
    loader = session.get_component("data_loader")
    model = loader.load_service_model("cloudwatch", "service-2")
    model["metadata"]["protocol"] = protocol
    model["metadata"]["protocols"] = [protocol]
    version = model["metadata"]["apiVersion"]
    target = tmp_path / "cloudwatch" / version
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(model))
    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, str(tmp_path))
    key = k.key
    cw = session.create_client("cloudwatch", region_name="us-east-1", endpoint_url=k.endpoint,
                               aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
                               config=Config(retries={"max_attempts": 1}))
    assert cw.meta.service_model.protocol == protocol
    metrics = cw.list_metrics(Namespace=NS, Dimensions=[{"Name": "TrainingJobName"}])["Metrics"]
    assert sorted(m["MetricName"] for m in metrics) == ["acc", "loss"]
    start, end = window(d)
    r = cw.get_metric_statistics(Namespace=NS, MetricName="acc", Dimensions=job_dims(), StartTime=start,
                                 EndTime=end, Period=1, Statistics=["Maximum"])
    assert [p["Maximum"] for p in sorted(r["Datapoints"], key=lambda p: p["Timestamp"])] == pytest.approx(ACCS)
    r = cw.get_metric_data(StartTime=start, EndTime=end, ScanBy="TimestampAscending", MetricDataQueries=[
        {"Id": "loss", "ReturnData": True, "MetricStat": {"Metric": {"Namespace": NS, "MetricName": "loss",
                                                                     "Dimensions": job_dims()},
                                                          "Period": 1, "Stat": "Average"}}])
    assert r["MetricDataResults"][0]["Values"] == pytest.approx(LOSSES)
    assert r["MetricDataResults"][0]["Timestamps"][0].tzinfo is not None
    cw.put_metric_data(Namespace=f"Proto/{protocol}", MetricData=[
        {"MetricName": "m", "Dimensions": [{"Name": "a", "Value": "b"}], "Values": [1.0, 2.5], "Counts": [1, 1]}])
    assert cw.list_metrics(Namespace=f"Proto/{protocol}")["Metrics"][0]["Dimensions"] == [{"Name": "a", "Value": "b"}]
    with pytest.raises(ClientError) as e:
        cw.get_metric_statistics(Namespace=NS, MetricName="acc", StartTime=start, EndTime=end, Period=7,
                                 Statistics=["Maximum"])
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"


HOST_METRICS = ["CPUUtilization", "DiskUtilization", "MemoryUtilization"]


def host_dims(host, job=HOST_JOB):
    return [{"Name": "Host", "Value": f"{job}/{host}"}]


def host_series(cw, k, host, metric):
    """(timestamps, values) of one host metric over the host job's run, 1-second buckets."""
    h = k.host_job
    start = h["TrainingStartTime"] - datetime.timedelta(minutes=1)
    end = h["TrainingEndTime"] + datetime.timedelta(minutes=1)
    r = cw.get_metric_data(StartTime=start, EndTime=end, ScanBy="TimestampAscending", MetricDataQueries=[
        {"Id": "m", "MetricStat": {"Metric": {"Namespace": NS, "MetricName": metric, "Dimensions": host_dims(host)},
                                   "Period": 1, "Stat": "Average"}}])
    result = r["MetricDataResults"][0]
    return result["Timestamps"], result["Values"]


def test_host_metrics_listed(server, cw):
    k, _ = server
    metrics = cw.list_metrics(Namespace=NS, Dimensions=[{"Name": "Host"}])["Metrics"]
    want = [{"Namespace": NS, "MetricName": m, "Dimensions": host_dims(h)}
            for h in ("algo-1", "algo-2") for m in HOST_METRICS]
    for m in want:
        assert m in metrics
    # The short job has host metrics too (its first sample is taken a second after it starts).
    short = cw.list_metrics(Namespace=NS, MetricName="CPUUtilization",
                            Dimensions=[{"Name": "Host", "Value": f"{JOB}/algo-1"}])["Metrics"]
    assert len(short) == 1
    assert not any(m["MetricName"].startswith("GPU") for m in metrics)


def test_host_metrics_busy_host_above_idle_one(server, cw):
    k, _ = server
    _, busy = host_series(cw, k, "algo-1", "CPUUtilization")
    _, idle = host_series(cw, k, "algo-2", "CPUUtilization")
    # 10 s at one point per 5 s, plus the early first one.
    assert len(busy) >= 2 and len(idle) >= 2, (busy, idle)
    mean = lambda v: sum(v) / len(v)
    assert max(busy) > 30 and mean(busy) > mean(idle) + 20, (busy, idle)
    assert max(idle) < 20, idle
    for host in ("algo-1", "algo-2"):
        times, memory = host_series(cw, k, host, "MemoryUtilization")
        assert memory and all(0 < m < 100 for m in memory), memory
        assert k.host_job["TrainingStartTime"] - datetime.timedelta(seconds=5) <= times[0]
        _, disk = host_series(cw, k, host, "DiskUtilization")
        assert disk and all(0 < d <= 100 for d in disk), disk
    h = k.host_job
    r = cw.get_metric_statistics(Namespace=NS, MetricName="CPUUtilization", Dimensions=host_dims("algo-1"),
                                 StartTime=h["TrainingStartTime"] - datetime.timedelta(minutes=1),
                                 EndTime=h["TrainingEndTime"] + datetime.timedelta(minutes=1), Period=3600,
                                 Statistics=["Maximum", "SampleCount"])
    assert sum(p["SampleCount"] for p in r["Datapoints"]) == len(busy)
    assert max(p["Maximum"] for p in r["Datapoints"]) == pytest.approx(max(busy))


def test_host_metrics_aws_cli_and_other_account(server):
    k, _ = server
    p = k.aws("cloudwatch", "list-metrics", "--namespace", NS, "--dimensions", "Name=Host", "--output", "json")
    seen = {(m["MetricName"], m["Dimensions"][0]["Value"]) for m in json.loads(p.stdout)["Metrics"]}
    assert ("CPUUtilization", f"{HOST_JOB}/algo-2") in seen and ("MemoryUtilization", f"{HOST_JOB}/algo-1") in seen
    other = k.client("cloudwatch", key=k.add_key(account="333344445555"))
    assert other.list_metrics(Namespace=NS, Dimensions=[{"Name": "Host"}])["Metrics"] == []
    _, values = host_series(other, k, "algo-1", "CPUUtilization")
    assert values == []


def test_points_older_than_the_retention_are_deleted():
    """`[metrics] retention_days`: the leader deletes host and PutMetricData points older than it when
    it starts leading and every hour after; newer points stay."""
    k = Kiln(config="[metrics]\nretention_days = 1\n").start()
    try:
        cw = k.client("cloudwatch")
        now = datetime.datetime.now(datetime.timezone.utc)
        cw.put_metric_data(Namespace="Retention", MetricData=[
            {"MetricName": "m", "Value": 1.0, "Timestamp": now - datetime.timedelta(days=3)},
            {"MetricName": "m", "Value": 2.0, "Timestamp": now - datetime.timedelta(minutes=5)},
        ])

        def values():
            got = cw.get_metric_statistics(Namespace="Retention", MetricName="m", Statistics=["Sum"], Period=3600,
                                           StartTime=now - datetime.timedelta(days=5), EndTime=now)
            return sorted(p["Sum"] for p in got["Datapoints"])

        assert values() == [1.0, 2.0]
        # A restart takes the leadership again, which expires old points at once.
        k.stop()
        k.start()
        deadline = time.time() + 20
        while values() != [2.0]:
            assert time.time() < deadline, values()
            time.sleep(0.2)
    finally:
        k.stop()
