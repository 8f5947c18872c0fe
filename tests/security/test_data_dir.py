"""Issue 24 item 12 (server side): the credential scope's region is validated before it goes into
ARNs; the data directory is private (0700, files 0600); `kiln serve --data-dir data` (a relative path)
runs jobs."""
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kilntest import API_ONLY, TEST_ENVIRONMENTS, Kiln, free_port, job_request, kiln_bin


def raw_call(kiln, key, region, target, body):
    req = AWSRequest(method="POST", url=kiln.endpoint + "/", data=json.dumps(body).encode(),
                     headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
    SigV4Auth(Credentials(key["access_key_id"], key["secret_access_key"]), "sagemaker", region).add_auth(req)
    r = urllib.request.Request(kiln.endpoint + "/", data=req.body, method="POST", headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_credential_scope_region_must_be_a_region(two_accounts):
    kiln, _, b = two_accounts
    status, err = raw_call(kiln, b, "us-east-1:999999999999", "SageMaker.CreateTrainingJob",
                           job_request("region-inject"))
    assert status == 403 and err["__type"] == "InvalidSignatureException", err
    assert "region" in err["message"]
    for region in ("us-east-1/x", "US-EAST-1", "anything"):
        status, err = raw_call(kiln, b, region, "SageMaker.ListTrainingJobs", {})
        assert status in (400, 403), (region, err)
    # A well-formed region (any, not only us-east-1) is accepted and is the ARN's.
    status, out = raw_call(kiln, b, "eu-west-3", "SageMaker.CreateTrainingJob", job_request("region-ok"))
    assert status == 200 and out["TrainingJobArn"].startswith(f"arn:aws:sagemaker:eu-west-3:{b['account_id']}:")


def private(mode):
    return mode & (stat.S_IRWXG | stat.S_IRWXO) == 0


def test_data_directory_is_private():
    parent = tempfile.mkdtemp(prefix="kiln-sec-")
    data = os.path.join(parent, "data")
    os.mkdir(data, 0o755)
    os.chmod(data, 0o755)
    k = Kiln(data_dir=data, config=API_ONLY).start()
    try:
        s3 = k.client("s3")
        s3.create_bucket(Bucket="private-files")
        s3.put_object(Bucket="private-files", Key="obj", Body=b"secret bytes")
        k.client().create_training_job(**job_request("private-1"))
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        # Everything the server created; kiln.toml and serve.log are the test's own.
        leaky = []
        for root, dirs, files in os.walk(data):
            for name in dirs + files:
                path = os.path.join(root, name)
                if path in (os.path.join(data, "kiln.toml"), os.path.join(data, "serve.log")):
                    continue
                if not private(os.lstat(path).st_mode):
                    leaky.append(f"{path} {oct(stat.S_IMODE(os.lstat(path).st_mode))}")
        assert not leaky, leaky
        # The databases are files only on SQLite (the suite's PostgreSQL run keeps them elsewhere).
        files = ["keys.toml"] + ([] if os.environ.get("KILN_TEST_STORE") == "postgres" else ["kiln.db", "logs.db"])
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(data, name)).st_mode) == 0o600, name
    finally:
        k.stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_relative_data_dir_runs_jobs():
    cwd = tempfile.mkdtemp(prefix="kiln-sec-rel-")
    os.mkdir(os.path.join(cwd, "data"))
    port = free_port()
    with open(os.path.join(cwd, "data", "kiln.toml"), "w") as f:
        f.write("[jobs]\nstop_grace_seconds = 2\n" + TEST_ENVIRONMENTS)
    k = Kiln(data_dir=os.path.join(cwd, "data"), port=port)
    log = open(os.path.join(cwd, "serve.log"), "ab")
    # Started from `cwd` with a relative data directory, as an operator would.
    k.proc = subprocess.Popen([kiln_bin(), "serve", "--data-dir", "data", "--listen", f"127.0.0.1:{port}"],
                              cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env=dict(os.environ, KILN_LOG="warn"))
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(k.endpoint + "/_kiln/health", timeout=1):
                    break
            except OSError:
                assert time.time() < deadline and k.alive(), open(os.path.join(cwd, "serve.log")).read()
                time.sleep(0.1)
        s3 = k.client("s3")
        s3.create_bucket(Bucket="rel")
        rows = "".join(f"{i % 2},{i},{(i * 7) % 5}\n" for i in range(40))
        s3.put_object(Bucket="rel", Key="train/train.csv", Body=rows.encode())
        sm = k.client()
        req = job_request("relative-dir", HyperParameters={"num_round": "2", "objective": "binary:logistic"},
                          InputDataConfig=[{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {
                              "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://rel/train/"}}}],
                          OutputDataConfig={"S3OutputPath": "s3://rel/output"})
        req["AlgorithmSpecification"] = {
            "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
            "TrainingInputMode": "File"}
        sm.create_training_job(**req)
        deadline = time.time() + 120
        while True:
            d = sm.describe_training_job(TrainingJobName="relative-dir")
            if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
                break
            assert time.time() < deadline, d["SecondaryStatus"]
            time.sleep(0.3)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        # The job's tree was built inside the data directory, not relative to some other directory.
        assert os.path.isdir(os.path.join(cwd, "data", "work"))
    finally:
        k.stop()
        shutil.rmtree(cwd, ignore_errors=True)
