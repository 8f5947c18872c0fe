"""Warm pools (`ResourceConfig.KeepAlivePeriodInSeconds`, reference §10): a job's hosts are kept
`Available` after it ends; the next matching job takes them over (the old job `Reused`/`ReusedByJob`,
the new one `InUse` then `Available`), with the pool's cache at `/opt/ml/sagemaker/warmpoolcache`
surviving from job to job; `UpdateTrainingJob` with 0 and expiry release the pool (`Terminated`);
`ListTrainingJobs(WarmPoolStatusEquals=…)` filters; an Available pool cannot be deleted."""
import io
import json
import tarfile
import time

import pytest
from botocore.exceptions import ClientError

from kilntest import jobs_server
from test_jobs import bundle, script_job, wait

# Lists what the pool's cache holds, leaves a file of its own there, and keeps the listing as the model.
CACHE_PY = """
import json, os, pathlib
cache = pathlib.Path(os.environ["SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY"])
seen = sorted(p.name for p in cache.iterdir())
print("cache", cache, "holds", seen, flush=True)
(cache / (os.environ["WHO"] + ".txt")).write_text(os.environ["WHO"])
json.dump({"cache": str(cache), "seen": seen},
          open(os.path.join(os.environ["SM_MODEL_DIR"], "seen.json"), "w"))
"""


@pytest.fixture(scope="module")
def kiln():
    yield from jobs_server()


@pytest.fixture(scope="module")
def src(kiln):
    return bundle(kiln.client("s3"), "code/warm/sourcedir.tar.gz", {"train.py": CACHE_PY})


def pooled_job(name, src, keep_alive=60, volume=10, count=1):
    req = script_job(name, src)
    req["ResourceConfig"] = {"InstanceType": "ml.m5.large", "InstanceCount": count, "VolumeSizeInGB": volume,
                             "KeepAlivePeriodInSeconds": keep_alive}
    req["Environment"] = {"WHO": name}
    return req


def run(sm, req):
    sm.create_training_job(**req)
    d = wait(sm, req["TrainingJobName"], timeout=120)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    return d


def seen(kiln, name):
    body = kiln.client("s3").get_object(Bucket="jobs", Key=f"output/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return json.load(tar.extractfile("seen.json"))


def pool(sm, name):
    return sm.describe_training_job(TrainingJobName=name).get("WarmPoolStatus")


def names_with_pool(sm, status):
    return {s["TrainingJobName"] for s in sm.list_training_jobs(WarmPoolStatusEquals=status, MaxResults=100)
            ["TrainingJobSummaries"]}


def test_a_pool_is_kept_reused_with_its_cache_and_released(kiln, src):
    sm = kiln.client()
    a = run(sm, pooled_job("wp-a", src))
    assert a["WarmPoolStatus"]["Status"] == "Available", a.get("WarmPoolStatus")
    assert a["SecondaryStatusTransitions"][-1]["StatusMessage"] == "Resource retained for reuse"
    first = seen(kiln, "wp-a")
    assert first == {"cache": "/opt/ml/sagemaker/warmpoolcache", "seen": []}, first

    # B matches A: it takes A's pool over, and sees what A left in the cache.
    b = run(sm, pooled_job("wp-b", src))
    assert seen(kiln, "wp-b")["seen"] == ["wp-a.txt"]
    starting = [t["StatusMessage"] for t in b["SecondaryStatusTransitions"] if t["Status"] == "Starting"]
    assert any("reusing the warm pool of training job wp-a" in m for m in starting), starting
    a_pool = pool(sm, "wp-a")
    assert (a_pool["Status"], a_pool.get("ReusedByJob")) == ("Reused", "wp-b"), a_pool
    assert a_pool["ResourceRetainedBillableTimeInSeconds"] >= 0
    assert sm.describe_training_job(TrainingJobName="wp-a")["SecondaryStatusTransitions"][-1]["StatusMessage"] \
        == "Resource reused by training job: wp-b"
    assert pool(sm, "wp-b")["Status"] == "Available"

    # A job that does not match (another volume size) gets a pool of its own, with an empty cache.
    run(sm, pooled_job("wp-other", src, volume=20))
    assert seen(kiln, "wp-other")["seen"] == []
    assert pool(sm, "wp-b")["Status"] == "Available"

    # C reuses B's pool: the cache holds both earlier files.
    run(sm, pooled_job("wp-c", src))
    assert seen(kiln, "wp-c")["seen"] == ["wp-a.txt", "wp-b.txt"]
    assert pool(sm, "wp-b").get("ReusedByJob") == "wp-c"
    assert {"wp-c", "wp-other"} <= names_with_pool(sm, "Available")
    assert {"wp-a", "wp-b"} <= names_with_pool(sm, "Reused")
    assert not {"wp-a", "wp-b"} & names_with_pool(sm, "Available")

    # An Available pool cannot be deleted; UpdateTrainingJob with 0 releases it.
    with pytest.raises(ClientError) as e:
        sm.delete_training_job(TrainingJobName="wp-c")
    assert "warm pool" in e.value.response["Error"]["Message"]
    sm.update_training_job(TrainingJobName="wp-c", ResourceConfig={"KeepAlivePeriodInSeconds": 0})
    assert pool(sm, "wp-c")["Status"] == "Terminated"
    assert "wp-c" in names_with_pool(sm, "Terminated")
    sm.delete_training_job(TrainingJobName="wp-c")
    with pytest.raises(ClientError) as e:
        sm.update_training_job(TrainingJobName="wp-b", ResourceConfig={"KeepAlivePeriodInSeconds": 60})
    assert "only an Available warm pool" in e.value.response["Error"]["Message"]

    # With C's pool released, the next matching job starts a new pool: an empty cache.
    run(sm, pooled_job("wp-d", src))
    assert seen(kiln, "wp-d")["seen"] == []


def test_a_pool_expires_after_its_keep_alive(kiln, src):
    sm = kiln.client()
    run(sm, pooled_job("wp-short", src, keep_alive=2, count=2))
    assert pool(sm, "wp-short")["Status"] == "Available"
    deadline = time.time() + 30
    while pool(sm, "wp-short")["Status"] == "Available" and time.time() < deadline:
        time.sleep(0.2)
    p = pool(sm, "wp-short")
    assert p["Status"] == "Terminated", p
    assert p["ResourceRetainedBillableTimeInSeconds"] >= 2, p
    # Expired: a matching job starts afresh.
    run(sm, pooled_job("wp-short-2", src, keep_alive=60, count=2))
    assert seen(kiln, "wp-short-2")["seen"] == []


def test_a_job_without_keep_alive_has_no_pool_and_no_cache(kiln, src):
    sm = kiln.client()
    req = pooled_job("wp-none", src)
    del req["ResourceConfig"]["KeepAlivePeriodInSeconds"]
    req["HyperParameters"]["sagemaker_program"] = json.dumps("train.py")
    sm.create_training_job(**req)
    d = wait(sm, "wp-none")
    # The script needs the cache's variable: without a pool it is not set, and the job fails.
    assert d["TrainingJobStatus"] == "Failed"
    assert "SAGEMAKER_MANAGED_WARMPOOL_CACHE_DIRECTORY" in d["FailureReason"], d["FailureReason"]
    assert "WarmPoolStatus" not in d
