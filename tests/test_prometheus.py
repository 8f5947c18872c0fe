"""Issue 23: Prometheus text exposition at `/_kiln/metrics`, parsed with prometheus_client's own
parser and checked against what the test did: jobs by status and instance type, the API's requests
by operation and status with latency histograms, S3 bytes in and out, log lines ingested. Aggregates
only (no job names); `[metrics] token` requires a bearer token."""
import urllib.error
import urllib.request

import pytest

from kilntest import Kiln
from test_jobs import bundle, script_job, wait

prometheus = pytest.importorskip("prometheus_client.parser")


def scrape(kiln, token=None):
    req = urllib.request.Request(kiln.endpoint + "/_kiln/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples = {}
    for family in prometheus.text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def test_metrics_count_jobs_requests_bytes_and_log_lines():
    k = Kiln(config='[jobs]\nstop_grace_seconds = 2\n').start()
    try:
        sm, s3 = k.client(), k.client("s3")
        s3.create_bucket(Bucket="jobs")
        s3.put_object(Bucket="jobs", Key="blob", Body=b"x" * 100_000)
        assert len(s3.get_object(Bucket="jobs", Key="blob")["Body"].read()) == 100_000
        src = bundle(s3, "code/prom/sourcedir.tar.gz", {"train.py": """
for i in range(5):
    print(f"step {i} loss={1 / (i + 1):.3f}", flush=True)
"""})
        for name in ("prom-1", "prom-2"):
            sm.create_training_job(**script_job(name, src))
        for name in ("prom-1", "prom-2"):
            assert wait(sm, name)["TrainingJobStatus"] == "Completed"
        bad = script_job("prom-bad", src)
        bad["ResourceConfig"]["InstanceCount"] = 0
        with pytest.raises(Exception):
            sm.create_training_job(**bad)
        text, samples = scrape(k)
        assert value(samples, "kiln_training_jobs", status="Completed") == 2
        assert value(samples, "kiln_training_jobs", status="InProgress") == 0
        assert value(samples, "kiln_queue_length") == 0
        ok = value(samples, "kiln_api_requests_total", service="sagemaker", operation="CreateTrainingJob", status="200")
        refused = value(samples, "kiln_api_requests_total", service="sagemaker", operation="CreateTrainingJob", status="400")
        assert (ok, refused) == (2, 1)
        assert value(samples, "kiln_api_request_duration_seconds_count", service="sagemaker", operation="CreateTrainingJob") == 3
        inf = value(samples, "kiln_api_request_duration_seconds_bucket", service="sagemaker",
                    operation="DescribeTrainingJob", le="+Inf")
        assert inf >= 2
        assert value(samples, "kiln_s3_received_bytes_total") >= 100_000
        assert value(samples, "kiln_s3_sent_bytes_total") >= 100_000
        # Agents' calls are counted, and each job's five lines (and the agent's own) were ingested.
        assert value(samples, "kiln_api_requests_total", service="agent", operation="done", status="200") == 2
        assert value(samples, "kiln_log_lines_ingested_total") >= 10
        # Aggregates only: no job names in the exposition.
        assert "prom-1" not in text and "prom-2" not in text
        # A running job shows by instance type while it runs.
        sleeper = script_job("prom-run", bundle(s3, "code/prom-run/sourcedir.tar.gz", {"train.py": "import time\ntime.sleep(30)\n"}))
        sleeper["ResourceConfig"]["InstanceType"] = "ml.c5.xlarge"
        sm.create_training_job(**sleeper)
        wait(sm, "prom-run", until=("InProgress",))
        _, samples = scrape(k)
        assert value(samples, "kiln_training_jobs", status="InProgress") == 1
        active = {labels: v for (name, labels), v in samples.items() if name == "kiln_training_jobs_active"}
        assert sum(v for labels, v in active.items() if ("instance_type", "ml.c5.xlarge") in labels) == 1, active
        sm.stop_training_job(TrainingJobName="prom-run")
    finally:
        k.stop()


def test_a_metrics_token_is_required_when_configured():
    k = Kiln(config='[jobs]\nexecutor = "none"\n[metrics]\ntoken = "s3cret-token"\n').start()
    try:
        for token in (None, "wrong"):
            with pytest.raises(urllib.error.HTTPError) as e:
                scrape(k, token)
            assert e.value.code == 401
        _, samples = scrape(k, "s3cret-token")
        assert ("kiln_queue_length", ()) in samples
    finally:
        k.stop()
