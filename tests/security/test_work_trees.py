"""Issue 24, item 2: hosts' trees are keyed by account and placement, not by the job's name. Two
accounts running jobs of the same name at once, and a job deleted and created again under its name
while the first one's cleanup is pending, each keep their own tree (the old layout,
`<work>/<job>/<host>`, let account B's job overwrite account A's model and let the old job's
delayed cleanup delete the new job's tree)."""
import io
import tarfile
import time

import pytest

from kilntest import Kiln
from test_jobs import bundle, script_job, wait

# Writes its account's mark into the model, waits, and fails if the mark changed meanwhile.
SLOW = """
import os, sys, time
mark = os.environ["MARK"]
path = os.path.join(os.environ["SM_MODEL_DIR"], "who.txt")
open(path, "w").write(mark)
time.sleep(float(os.environ.get("WAIT", "0")))
seen = open(path).read()
if seen != mark:
    sys.exit(f"my model was overwritten: {seen!r}")
"""


@pytest.fixture(scope="module")
def kiln():
    k = Kiln().start()
    yield k
    k.stop()


def job(s3, bucket, name, mark, wait_s):
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    src = bundle(s3, "code/sourcedir.tar.gz", {"train.py": SLOW}, bucket=bucket)
    req = script_job(name, src)
    req["OutputDataConfig"] = {"S3OutputPath": f"s3://{bucket}/output"}
    req["Environment"] = {"MARK": mark, "WAIT": str(wait_s)}
    return req


def model_mark(s3, bucket, name):
    body = s3.get_object(Bucket=bucket, Key=f"output/{name}/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        return tar.extractfile("who.txt").read().decode()


def test_two_accounts_jobs_of_one_name_keep_their_own_trees(kiln):
    other = kiln.add_key(account="222233334444")
    sm_a, s3_a = kiln.client(), kiln.client("s3")
    sm_b, s3_b = kiln.client(key=other), kiln.client("s3", key=other)
    sm_a.create_training_job(**job(s3_a, "trees-a", "shared-name", "account A", 6))
    deadline = time.time() + 60
    while sm_a.describe_training_job(TrainingJobName="shared-name")["SecondaryStatus"] != "Training":
        assert time.time() < deadline
        time.sleep(0.1)
    sm_b.create_training_job(**job(s3_b, "trees-b", "shared-name", "account B", 0))
    b = wait(sm_b, "shared-name")
    assert b["TrainingJobStatus"] == "Completed", b.get("FailureReason")
    a = wait(sm_a, "shared-name")
    assert a["TrainingJobStatus"] == "Completed", a.get("FailureReason")
    assert model_mark(s3_a, "trees-a", "shared-name") == "account A"
    assert model_mark(s3_b, "trees-b", "shared-name") == "account B"


def test_a_job_created_again_under_its_name_keeps_its_tree(kiln):
    sm, s3 = kiln.client(), kiln.client("s3")
    sm.create_training_job(**job(s3, "trees-again", "again", "first", 0))
    assert wait(sm, "again")["TrainingJobStatus"] == "Completed"
    sm.delete_training_job(TrainingJobName="again")
    # The first job's trees are removed a few seconds after it ended; the second job runs past that.
    sm.create_training_job(**job(s3, "trees-again", "again", "second", 7))
    d = wait(sm, "again")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert model_mark(s3, "trees-again", "again") == "second"
