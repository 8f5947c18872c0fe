"""Helpers for the integration tests: run the real `kiln` binary and point real AWS clients at it."""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request

# A server that accepts jobs but runs none: for tests of the API alone.
API_ONLY = '[jobs]\nexecutor = "none"\n'

# Every test server runs the PyTorch-image scripts of the tests (plain Python, or CPU PyTorch from
# Debian's python3-torch where a test needs it) on this machine's python3 instead of building the
# image's pinned environment (PyPI's torch wheels pull gigabytes of CUDA libraries).
TEST_ENVIRONMENTS = """
[[environments]]
image = "*pytorch-training*"
python = "python3"
system_site_packages = true
"""

import boto3
import hashlib
from botocore.config import Config

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def kiln_bin():
    return os.environ.get("KILN_BIN", str(ROOT / "target" / "debug" / "kiln"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_store():
    """Whether the suite runs on PostgreSQL (`KILN_TEST_STORE=postgres`, as `scripts/test.sh` does for
    its second run): every server then keeps its metadata in a database of its own on the server
    named by `KILN_TEST_DATABASE_URL`."""
    return os.environ.get("KILN_TEST_STORE") == "postgres"


def pg_database(name):
    """Creates database `name` on the test server unless it exists; returns its URL."""
    admin = os.environ["KILN_TEST_DATABASE_URL"]
    exists = subprocess.run(["psql", admin, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                            check=True, capture_output=True, text=True).stdout.strip()
    if exists != "1":
        subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return admin.rsplit("/", 1)[0] + "/" + name


# Data directories the servers of this test session created, removed when the session ends
# (servers are often restarted on their directory, so a server's stop cannot remove it).
CREATED_DIRS = []


def remove_created_dirs():
    """Stops what the session's servers left running and removes their data directories (kept with
    KILN_KEEP_TEST_DIRS=1, for a look after a failure)."""
    if os.environ.get("KILN_KEEP_TEST_DIRS") == "1":
        return
    for d in CREATED_DIRS:
        shutil.rmtree(d, ignore_errors=True)
    CREATED_DIRS.clear()


class Kiln:
    """A `kiln serve` process on its own port and data directory."""

    def __init__(self, data_dir=None, extra_env=None, config=None, port=None, database_url=None):
        """`config` is kiln.toml text written into the data directory (e.g. `[jobs]\nexecutor = "none"`).
        `database_url` keeps the metadata in PostgreSQL; under `KILN_TEST_STORE=postgres` every server
        gets a database named after its data directory (a restart on the same directory finds it)."""
        self.data_dir = pathlib.Path(data_dir or tempfile.mkdtemp(prefix="kiln-test-"))
        if data_dir is None:
            CREATED_DIRS.append(self.data_dir)
        toml = self.data_dir / "kiln.toml"
        if config is not None:
            toml.write_text(config + TEST_ENVIRONMENTS)
        elif not toml.exists():
            toml.write_text(TEST_ENVIRONMENTS)
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.extra_env = extra_env or {}
        self.log_path = self.data_dir / "serve.log"
        self.database_url = database_url
        if self.database_url is None and postgres_store():
            digest = hashlib.sha1(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
            self.database_url = pg_database(f"kiln_it_{digest}")

    def start(self):
        env = dict(os.environ, KILN_LOG=os.environ.get("KILN_TEST_LOG", "warn"), **self.extra_env)
        self.log = open(self.log_path, "ab")
        args = [kiln_bin(), "serve", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}"]
        if self.database_url:
            args += ["--database-url", self.database_url]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kiln serve exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.endpoint + "/_kiln/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("kiln serve did not become healthy in 30 s")

    def keys(self):
        with open(self.data_dir / "keys.toml", "rb") as f:
            return tomllib.load(f)["keys"]

    @property
    def key(self):
        return self.keys()[0]

    def add_key(self, account=None):
        args = [kiln_bin(), "--data-dir", str(self.data_dir), "keys", "create"]
        if account:
            args += ["--account", account]
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        return dict(line.split("=", 1) for line in out.split())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.cleanup()

    def kill(self):
        """SIGKILLs the server (its process group); jobs' agents live on, as after a crash."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def cleanup(self):
        """SIGKILLs every process this server's jobs left behind (agents run in their own process
        groups so that they survive a restart of the server): those whose command line names the
        data directory or whose working directory is inside it."""
        root = str(self.data_dir)
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if root in cmd or cwd.startswith(root):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass

    def env(self, key=None):
        key = key or self.key
        return dict(os.environ, AWS_ENDPOINT_URL=self.endpoint,
                    AWS_ACCESS_KEY_ID=key["access_key_id"] if "access_key_id" in key else key["AWS_ACCESS_KEY_ID"],
                    AWS_SECRET_ACCESS_KEY=key.get("secret_access_key") or key["AWS_SECRET_ACCESS_KEY"],
                    AWS_DEFAULT_REGION="us-east-1", AWS_PAGER="")

    def client(self, service="sagemaker", key=None, validate=True, **kw):
        key = key or self.key
        akid = key.get("access_key_id") or key["AWS_ACCESS_KEY_ID"]
        secret = key.get("secret_access_key") or key["AWS_SECRET_ACCESS_KEY"]
        cfg = Config(parameter_validation=validate, retries={"max_attempts": 1}, **kw)
        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=akid, aws_secret_access_key=secret, config=cfg)

    def aws(self, *args, key=None, check=True):
        """Runs the AWS CLI against this server; returns the CompletedProcess."""
        p = subprocess.run(["aws", *args], capture_output=True, text=True, env=self.env(key))
        if check and p.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed: {p.stderr}")
        return p



def jobs_server(config=None):
    """A started server with the bucket `jobs`, stopped afterwards: the body of a module fixture
    (`yield from jobs_server(...)`)."""
    k = Kiln(config=config).start()
    k.client("s3").create_bucket(Bucket="jobs")
    yield k
    k.stop()


def flights_xgboost_request(s3, name, prefix, checkpoint_uri, **hyperparameters):
    """A built-in XGBoost job (`eval_metric=auc`) on the flights data, uploaded under
    `s3://jobs/<prefix>/{train,validation}/` (once), checkpointing to `checkpoint_uri`, its output
    under `s3://jobs/<prefix>-out`."""
    flights = SHARED / "data" / "flights"
    for channel, file in (("train", "train.csv"), ("validation", "test.csv")):
        key = f"{prefix}/{channel}/{file}"
        if "Contents" not in s3.list_objects_v2(Bucket="jobs", Prefix=key):
            s3.upload_file(str(flights / file), "jobs", key)
    hps = {"objective": "binary:logistic", "eval_metric": "auc", "subsample": "0.8", "colsample_bytree": "0.8"}
    hps.update({k: str(v) for k, v in hyperparameters.items()})
    req = job_request(name, HyperParameters=hps)
    req["AlgorithmSpecification"] = {
        "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
        "TrainingInputMode": "File"}
    req["OutputDataConfig"] = {"S3OutputPath": f"s3://jobs/{prefix}-out"}
    req["InputDataConfig"] = [{"ChannelName": ch, "ContentType": "text/csv", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://jobs/{prefix}/{ch}/"}}} for ch in ("train", "validation")]
    req["CheckpointConfig"] = {"S3Uri": checkpoint_uri}
    return req


def job_request(name, **overrides):
    req = {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "AlgorithmSpecification": {"TrainingImage": "kiln/noop", "TrainingInputMode": "File"},
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    req.update(overrides)
    return req
