"""What the built-in algorithms' tests share: a kiln that runs jobs, the SageMaker SDK's session and
boto3 clients pointed at it (each test module names its bucket in `BUCKET`), waiting for a job, a
job request for a built-in image, a job's model.tar.gz unpacked, and `kiln algo NAME predict`.

A test module imports the fixtures it uses (`from builtin_jobs import kiln, session, sm, s3`);
they replace conftest's API-only `kiln` and `sm` there."""
import io
import os
import subprocess
import tarfile
import time

import boto3
import pytest

from kilntest import Kiln, job_request, kiln_bin

TERMINAL = ("Completed", "Failed", "Stopped")
ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="module")
def kiln():
    """A server that runs jobs (local executor; stops give up after 2 s)."""
    k = Kiln(config='[jobs]\nstop_grace_seconds = 2\n').start()
    yield k
    k.stop()


@pytest.fixture(scope="module")
def session(kiln, request):
    """The SDK's session on kiln, its default bucket the test module's `BUCKET`. The SDK reads
    the endpoint and keys from the environment, which is restored afterwards."""
    import sagemaker

    key = kiln.key
    saved = {v: os.environ.get(v) for v in ENV}
    os.environ.update(AWS_ENDPOINT_URL=kiln.endpoint, AWS_ACCESS_KEY_ID=key["access_key_id"],
                      AWS_SECRET_ACCESS_KEY=key["secret_access_key"], AWS_DEFAULT_REGION="us-east-1")
    s = sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1"),
                          default_bucket=request.module.BUCKET)
    s.default_bucket()
    yield s
    for v, old in saved.items():
        if old is None:
            os.environ.pop(v, None)
        else:
            os.environ[v] = old


@pytest.fixture(scope="module")
def sm(kiln, session):
    # The SDK session's own boto3 session: boto3's default session would keep these credentials
    # for later modules' servers.
    return session.boto_session.client("sagemaker")


@pytest.fixture(scope="module")
def s3(kiln, session):
    return session.boto_session.client("s3")


def wait(sm, name, timeout=180):
    """The job's description once it has ended."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] in TERMINAL:
            return d
        time.sleep(0.5)
    raise AssertionError(f"{name} did not finish")


def wait_tuning(sm, name, timeout=180):
    """The tuning job's description once it has ended."""
    deadline = time.time() + timeout
    while True:
        d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        if d["HyperParameterTuningJobStatus"] in TERMINAL:
            return d
        assert time.time() < deadline, d["TrainingJobStatusCounters"]
        time.sleep(0.5)


def builtin_request(name, image, hps, channels, output, mode="File"):
    """A CreateTrainingJob request for a built-in image; `channels` maps a channel name to
    (S3 URI, ContentType or None for the algorithm's default)."""
    req = job_request(name, HyperParameters={k: str(v) for k, v in hps.items()})
    req["AlgorithmSpecification"] = {"TrainingImage": image, "TrainingInputMode": mode}
    req["OutputDataConfig"] = {"S3OutputPath": output}
    req["InputDataConfig"] = [
        dict({"ChannelName": ch, "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}}},
             **({"ContentType": ct} if ct else {}))
        for ch, (uri, ct) in channels.items()]
    return req


def s3_bytes(s3, uri):
    bucket, key = uri[len("s3://"):].split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def extract_model(s3, uri, dest):
    """Unpacks the model.tar.gz at `uri` into `dest`; returns `dest`."""
    with tarfile.open(fileobj=io.BytesIO(s3_bytes(s3, uri))) as tar:
        tar.extractall(dest)
    return dest


def predict(algo, model_dir, data, *extra):
    """`kiln algo ALGO predict`'s output lines."""
    p = subprocess.run([kiln_bin(), "algo", algo, "predict", "--model", str(model_dir), "--data", str(data), *extra],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()
