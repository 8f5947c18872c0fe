"""Issue 24, item 4: metric regexes cannot run for seconds per line on the server. 40 definitions
of `(?=a)((?:a|a)+)(?=z)` on lines of forty `a`s took 0.75 s a line, kept both cores busy, and the
agent's retry of the slow batch stored 940 events for 22 lines. Now each definition gives up after
a bounded number of backtracking steps, and a re-sent batch is stored once."""
import statistics
import time

import pytest

from kilntest import jobs_server
from test_jobs import bundle, script_job

LINES = """
for i in range(22):
    print("a" * 40, flush=True)
"""


@pytest.fixture(scope="module")
def kiln():
    yield from jobs_server()


def test_hostile_metric_regexes_do_not_stall_the_server(kiln):
    sm = kiln.client()
    src = bundle(kiln.client("s3"), "code/regex/sourcedir.tar.gz", {"train.py": LINES})
    req = script_job("regex-bomb", src)
    req["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": f"m{i}", "Regex": r"(?=a)((?:a|a)+)(?=z)"} for i in range(40)]
    sm.create_training_job(**req)
    latencies = []
    deadline = time.time() + 120
    while True:
        t0 = time.perf_counter()
        d = sm.describe_training_job(TrainingJobName="regex-bomb")
        latencies.append(time.perf_counter() - t0)
        if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped") or time.time() > deadline:
            break
        time.sleep(0.05)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    print(f"Describe while the job logged: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} calls")
    assert "FinalMetricDataList" not in d or d["FinalMetricDataList"] == []
    logs = kiln.client("logs")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                       logStreamNamePrefix="regex-bomb/")["logStreams"][0]["logStreamName"]
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream,
                                 startFromHead=True, limit=10000)["events"]
    assert sum(e["message"] == "a" * 40 for e in events) == 22
