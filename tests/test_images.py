"""Bring your own container: an image built by the test (a static busybox and a `train` script, written
as an OCI layout by hand), pushed with skopeo to a local registry (Debian's docker-registry), run by
kiln as SageMaker runs a container. Missing images and bad credentials fail with clear reasons."""
import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time

import pytest

from kilntest import Kiln, free_port, job_request, postgres_store
from test_jobs import wait

BUSYBOX = pathlib.Path("/bin/busybox")
TOOLS = [shutil.which("docker-registry"), shutil.which("skopeo"), BUSYBOX.exists() and str(BUSYBOX)]
pytestmark = [
    pytest.mark.skipif(not all(TOOLS) and os.environ.get("KILN_REQUIRE_REGISTRY") != "1",
                       reason="needs docker-registry, skopeo and busybox-static (scripts/install-deps.sh)"),
    pytest.mark.skipif(postgres_store(), reason="images do not depend on the store: runs once, in the SQLite run"),
]

# bcrypt (cost 4) of "s3cret" for user "kiln": the registry accepts no other htpasswd format.
HTPASSWD = "kiln:$2b$04$dD8sPtlXivP30qLmqvOv9.DG7K0dVa05MbpnGhufraJhyECXptqoy\n"

TRAIN = b"""#!/bin/sh
set -e
echo "hello from the image on $(hostname), args: $*"
echo "hyperparameters: $(cat /opt/ml/input/config/hyperparameters.json)"
echo "rows: $(cat /opt/ml/input/data/train/*.csv | wc -l)"
echo "env: GREETING=$GREETING"
echo "trained" > /opt/ml/model/model.txt
"""


class Registry:
    def __init__(self, auth=False):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="kiln-registry-"))
        self.port = free_port()
        extra = ""
        if auth:
            (self.dir / "htpasswd").write_text(HTPASSWD)
            extra = f"auth:\n  htpasswd:\n    realm: kiln-test\n    path: {self.dir / 'htpasswd'}\n"
        (self.dir / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'storage'}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: kiln-test\n{extra}")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.dir / "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("docker-registry did not start")
                time.sleep(0.05)
        self.host = f"127.0.0.1:{self.port}"

    def push(self, layout, ref, creds=None):
        args = ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
        if creds:
            args += ["--dest-creds", creds]
        subprocess.run(args + [f"oci:{layout}:latest", f"docker://{self.host}/{ref}"], check=True)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def build_image(dest):
    """An OCI layout of one gzip layer: /bin/busybox (static), /bin/sh -> busybox, /usr/local/bin/train."""
    layout = pathlib.Path(dest)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for d in ("bin", "usr", "usr/local", "usr/local/bin", "etc", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for tool in ("sh", "cat", "echo", "hostname", "wc"):
            link = tarfile.TarInfo(f"bin/{tool}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        info = tarfile.TarInfo("usr/local/bin/train")
        info.size, info.mode = len(TRAIN), 0o755
        tar.addfile(info, io.BytesIO(TRAIN))
        info = tarfile.TarInfo("etc/passwd")
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    raw = tar_bytes.getvalue()
    layer_digest, layer_size = blob(layout, gzip.compress(raw))
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/bin", "GREETING=from-the-image-config"], "WorkingDir": "/opt/ml"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]},
    }).encode()
    config_digest, config_size = blob(layout, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
    }).encode()
    manifest_digest, manifest_size = blob(layout, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    return layout


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    layout = build_image(tmp_path_factory.mktemp("image"))
    open_registry, locked = Registry(), Registry(auth=True)
    open_registry.push(layout, "team/trainer:1")
    locked.push(layout, "team/trainer:1", creds="kiln:s3cret")
    yield open_registry, locked
    open_registry.close()
    locked.close()


@pytest.fixture(scope="module")
def byoc(registries):
    _, locked = registries
    config = ('[jobs]\nsandbox = "bwrap"\n\n'
              f'[[registries]]\nhost = "{locked.host}"\nusername = "kiln"\npassword = "wrong"\n')
    k = Kiln(config=config).start()
    s3 = k.client("s3")
    s3.create_bucket(Bucket="byoc")
    s3.put_object(Bucket="byoc", Key="data/train/rows.csv", Body=b"1,2\n3,4\n5,6\n")
    yield k
    k.stop()


def image_job(name, image, **spec):
    req = job_request(name, HyperParameters={"epochs": "2"}, **spec)
    req["AlgorithmSpecification"] = {"TrainingImage": image, "TrainingInputMode": "File"}
    req["OutputDataConfig"] = {"S3OutputPath": "s3://byoc/output"}
    req["InputDataConfig"] = [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://byoc/data/train/"}}}]
    req["Environment"] = {"GREETING": "from-the-job"}
    return req


def log_lines(k, name):
    logs = k.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/")["logStreams"]
    return [e["message"] for s in streams for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"], startFromHead=True)["events"]]


def test_a_custom_image_runs_as_sagemaker_runs_containers(byoc, registries):
    open_registry, _ = registries
    sm = byoc.client()
    sm.create_training_job(**image_job("byoc-ok", f"{open_registry.host}/team/trainer:1"))
    d = wait(sm, "byoc-ok", timeout=120)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert [t["Status"] for t in d["SecondaryStatusTransitions"]] == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    lines = log_lines(byoc, "byoc-ok")
    # As `docker run IMAGE train`: an image without an ENTRYPOINT runs `train` itself, with no arguments.
    assert "hello from the image on algo-1, args: " in lines, "\n".join(lines)
    assert 'hyperparameters: {"epochs":"2"}' in lines, lines
    assert "rows: 3" in lines, lines
    # The job's Environment wins over the image's Env.
    assert "env: GREETING=from-the-job" in lines, lines
    assert any("pulling the training image" in l for l in lines), lines
    body = byoc.client("s3").get_object(Bucket="byoc", Key="output/byoc-ok/output/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.extractfile("model.txt").read() == b"trained\n"
    # A second job finds the image in the cache, and ContainerEntrypoint replaces the entrypoint.
    req = image_job("byoc-entry", f"{open_registry.host}/team/trainer:1")
    req["AlgorithmSpecification"].update(ContainerEntrypoint=["/bin/sh", "-c"],
                                         ContainerArguments=["echo custom entrypoint && echo x > /opt/ml/model/x"])
    sm.create_training_job(**req)
    d = wait(sm, "byoc-entry", timeout=60)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    lines = log_lines(byoc, "byoc-entry")
    assert "custom entrypoint" in lines, lines
    assert any("found in the cache" in l for l in lines), lines


def test_missing_images_and_bad_credentials_fail_clearly(byoc, registries):
    open_registry, locked = registries
    sm = byoc.client()
    sm.create_training_job(**image_job("byoc-missing", f"{open_registry.host}/team/trainer:nope"))
    d = wait(sm, "byoc-missing", timeout=60)
    assert d["TrainingJobStatus"] == "Failed"
    reason = d["FailureReason"]
    assert reason.startswith("ClientError: ") and "team/trainer:nope" in reason and open_registry.host in reason, reason
    assert "not found" in reason.lower(), reason
    # The locked registry with the wrong password kiln.toml gives.
    sm.create_training_job(**image_job("byoc-denied", f"{locked.host}/team/trainer:1"))
    d = wait(sm, "byoc-denied", timeout=60)
    assert d["TrainingJobStatus"] == "Failed"
    reason = d["FailureReason"]
    assert reason.startswith("ClientError: ") and locked.host in reason, reason
    assert any(w in reason.lower() for w in ("denied", "unauthorized", "credentials")), reason
