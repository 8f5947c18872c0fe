"""The CloudWatch Logs API as the SageMaker SDK, boto3 and the AWS CLI use it."""
import json
import os
import shutil
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

GROUP = "/aws/sagemaker/TrainingJobs"


@pytest.fixture(scope="module")
def logs(kiln):
    return kiln.client("logs")


def put_lines(logs, stream, lines, t0, group=GROUP):
    for i in range(0, len(lines), 10000):
        chunk = lines[i:i + 10000]
        logs.put_log_events(logGroupName=group, logStreamName=stream,
                            logEvents=[{"timestamp": t0 + (i + j) // 10, "message": m} for j, m in enumerate(chunk)])


def sdk_log_stream(client, log_group, stream_name, start_time=0, skip=0):
    """The SageMaker SDK's `sagemaker.logs.log_stream` loop, verbatim in behaviour."""
    next_token = None
    event_count = 1
    while event_count > 0:
        token_arg = {"nextToken": next_token} if next_token is not None else {}
        response = client.get_log_events(logGroupName=log_group, logStreamName=stream_name,
                                         startTime=start_time, startFromHead=True, **token_arg)
        next_token = response["nextForwardToken"]
        events = response["events"]
        event_count = len(events)
        if event_count > skip:
            events = events[skip:]
            skip = 0
        else:
            skip = skip - event_count
            events = []
        yield from events


def sdk_streams(client, job, instance_count):
    """The SDK's DescribeLogStreams loop in `logs_for_job` (it re-calls *without* nextToken while one
    is returned, so a spurious nextToken would loop forever)."""
    calls = 0
    while True:
        calls += 1
        assert calls < 50, "DescribeLogStreams kept returning nextToken"
        resp = client.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=job if job.endswith("algo-1") else job + "/",
                                           orderBy="LogStreamName", limit=min(instance_count, 50))
        streams = [s["logStreamName"] for s in resp["logStreams"]]
        if "nextToken" not in resp or len(streams) >= instance_count:
            return streams


def test_training_log_group_exists_per_account(kiln, logs):
    names = [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]
    assert GROUP in names
    other = kiln.client("logs", key=kiln.add_key())
    assert GROUP in [g["logGroupName"] for g in other.describe_log_groups(logGroupNamePrefix="/aws/sagemaker")["logGroups"]]


def test_100k_lines_read_back_like_the_sdk(logs):
    job = "sdk-logs-job"
    stream = f"{job}/algo-1-1715883093"
    logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    lines = [f"[{i}]#011train-rmse:{i / 1000:.5f}" for i in range(100_000)]
    t0 = int(time.time() * 1000)
    put_lines(logs, stream, lines, t0)
    assert sdk_streams(logs, job, 1) == [stream]
    got = [e["message"] for e in sdk_log_stream(logs, GROUP, stream)]
    assert got == lines
    # A later poll from the last timestamp, skipping what was already seen at that timestamp, yields nothing new.
    last_ts = t0 + (len(lines) - 1) // 10
    seen_at_last = sum(1 for i in range(len(lines)) if t0 + i // 10 == last_ts)
    assert list(sdk_log_stream(logs, GROUP, stream, start_time=last_ts, skip=seen_at_last)) == []
    # An empty final page still carries the forward token.
    page = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, startFromHead=True, limit=5)
    assert [e["message"] for e in page["events"]] == lines[:5]
    tail = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, limit=3)
    assert [e["message"] for e in tail["events"]] == lines[-3:]
    back = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, nextToken=tail["nextBackwardToken"], limit=2)
    assert [e["message"] for e in back["events"]] == lines[-5:-3]
    end = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, nextToken=tail["nextForwardToken"])
    assert end["events"] == [] and end["nextForwardToken"] == tail["nextForwardToken"]


def test_describe_log_streams_paginates_only_when_more(logs):
    job = "multi-host"
    for h in range(1, 61):
        logs.create_log_stream(logGroupName=GROUP, logStreamName=f"{job}/algo-{h}-1700000000")
    assert len(sdk_streams(logs, job + "/algo-1", 11)) == 11  # algo-1, algo-10..19
    resp = logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=job + "/", limit=10)
    assert len(resp["logStreams"]) == 10 and "nextToken" in resp
    all_streams = [s["logStreamName"] for p in logs.get_paginator("describe_log_streams").paginate(
        logGroupName=GROUP, logStreamNamePrefix=job + "/") for s in p["logStreams"]]
    assert len(all_streams) == 60 and all_streams == sorted(all_streams)
    resp = logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=job + "/algo-1-")
    assert [s["logStreamName"] for s in resp["logStreams"]] == [f"{job}/algo-1-1700000000"] and "nextToken" not in resp
    with pytest.raises(ClientError) as e:
        logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix="x", orderBy="LastEventTime")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        logs.describe_log_streams(logGroupName="/no/such/group")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_filter_log_events_interleaves_streams_and_matches_patterns(logs):
    job = "filtered"
    t0 = 1_700_000_000_000
    for h in (1, 2):
        stream = f"{job}/algo-{h}-1"
        logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
        logs.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=[
            {"timestamp": t0 + 2 * i + h, "message": f"host {h} epoch {i} loss={1 / (i + 1):.3f}" + (" ERROR" if i == 7 else "")}
            for i in range(1500)])
    pages = list(logs.get_paginator("filter_log_events").paginate(logGroupName=GROUP, logStreamNamePrefix=job + "/"))
    events = [e for p in pages for e in p["events"]]
    assert len(events) == 3000 and len({e["eventId"] for e in events}) == 3000
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    assert {e["logStreamName"] for e in events[:2]} == {f"{job}/algo-1-1", f"{job}/algo-2-1"}
    errors = logs.filter_log_events(logGroupName=GROUP, logStreamNamePrefix=job, filterPattern="ERROR")["events"]
    assert len(errors) == 2 and all("ERROR" in e["message"] for e in errors)
    only2 = logs.filter_log_events(logGroupName=GROUP, logStreamNames=[f"{job}/algo-2-1"], filterPattern='"epoch 14 " -ERROR')["events"]
    assert [e["message"] for e in only2] == ["host 2 epoch 14 loss=0.067"]
    window = logs.filter_log_events(logGroupName=GROUP, logStreamNamePrefix=job, startTime=t0 + 10, endTime=t0 + 20)["events"]
    assert [e["timestamp"] for e in window] == list(range(t0 + 10, t0 + 20))
    with pytest.raises(ClientError) as e:
        logs.filter_log_events(logGroupName=GROUP, logStreamNames=["a"], logStreamNamePrefix="a")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"


def test_put_errors(logs):
    with pytest.raises(ClientError) as e:
        logs.put_log_events(logGroupName=GROUP, logStreamName="missing/stream", logEvents=[{"timestamp": 1, "message": "x"}])
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    logs.create_log_group(logGroupName="/my/group")
    with pytest.raises(ClientError) as e:
        logs.create_log_group(logGroupName="/my/group")
    assert e.value.response["Error"]["Code"] == "ResourceAlreadyExistsException"
    logs.create_log_stream(logGroupName="/my/group", logStreamName="s")
    with pytest.raises(ClientError) as e:
        logs.put_log_events(logGroupName="/my/group", logStreamName="s",
                            logEvents=[{"timestamp": 5, "message": "b"}, {"timestamp": 1, "message": "a"}])
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"


def test_accounts_do_not_see_each_others_logs(kiln, logs):
    logs.create_log_stream(logGroupName=GROUP, logStreamName="private/algo-1-1")
    other = kiln.client("logs", key=kiln.add_key())
    assert other.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix="private/")["logStreams"] == []


def aws_v2():
    """The AWS CLI v2 (`aws logs tail` exists only there); Debian's awscli package installs it."""
    for path in ("/usr/bin/aws", shutil.which("aws") or ""):
        if path and os.path.exists(path):
            out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
            if out.startswith("aws-cli/2"):
                return path
    return None


def test_aws_logs_tail(kiln, logs):
    cli = aws_v2()
    if cli is None:
        pytest.skip("AWS CLI v2 not installed (scripts/install-deps.sh installs Debian's awscli)")
    job = "tail-job"
    stream = f"{job}/algo-1-1"
    logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    lines = [f"line {i}" for i in range(100_000)]
    put_lines(logs, stream, lines, int(time.time() * 1000) - 3_600_000)
    env = kiln.env()
    env.pop("AWS_PAGER", None)
    # This CLI (2.9) predates AWS_ENDPOINT_URL, so the endpoint is given explicitly.
    p = subprocess.run([cli, "--endpoint-url", kiln.endpoint, "logs", "tail", GROUP, "--log-stream-name-prefix", job, "--since", "2h", "--format", "short"],
                       capture_output=True, text=True, env=dict(env, AWS_PAGER=""), timeout=300)
    assert p.returncode == 0, p.stderr
    got = [line.split(" ", 1)[1] for line in p.stdout.splitlines()]
    assert got == lines
