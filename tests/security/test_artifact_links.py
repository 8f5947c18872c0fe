"""Issue 24, item 10: the model's symbolic links are archived as links, never followed. A job that
links `model/leak` to the server's `keys.toml` and `model/up` to an ancestor directory got every
account's secrets packed into its `model.tar.gz` and a tarball recursing to gigabytes. Also the
source archive's link chains (`up -> .`, `out -> up/..`) are refused: they stay inside `code/`
lexically but leave it for real."""
import io
import tarfile

import pytest

from kilntest import jobs_server
from test_jobs import bundle, script_job, wait

LINKS = """
import os, sys
model = os.environ["SM_MODEL_DIR"]
keys = sys.argv[sys.argv.index("--keys") + 1]
open(os.path.join(model, "weights.bin"), "w").write("w")
os.symlink(keys, os.path.join(model, "leak"))
os.symlink("..", os.path.join(model, "up"))
"""


@pytest.fixture(scope="module")
def kiln():
    yield from jobs_server()


def test_model_links_are_archived_as_links(kiln):
    sm, s3 = kiln.client(), kiln.client("s3")
    keys = str(kiln.data_dir / "keys.toml")
    src = bundle(s3, "code/links/sourcedir.tar.gz", {"train.py": LINKS})
    sm.create_training_job(**script_job("links", src, hps={"keys": keys}))
    d = wait(sm, "links")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    body = s3.get_object(Bucket="jobs", Key="output/links/output/model.tar.gz")["Body"].read()
    assert len(body) < 10_000, f"model.tar.gz is {len(body)} bytes"
    secret = kiln.key["secret_access_key"].encode()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["leak", "up", "weights.bin"], sorted(members)
        assert members["leak"].issym() and members["leak"].linkname == keys
        assert members["up"].issym() and members["up"].linkname == ".."
        for m in members.values():
            if m.isfile():
                assert secret not in tar.extractfile(m).read()


def test_source_archives_with_link_chains_out_of_code_are_refused(kiln):
    sm, s3 = kiln.client(), kiln.client("s3")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"print('hello')\n"
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name, target in (("up", "."), ("out", "up/..")):
            link = tarfile.TarInfo(name)
            link.type = tarfile.SYMTYPE
            link.linkname = target
            tar.addfile(link)
    s3.put_object(Bucket="jobs", Key="code/chain/sourcedir.tar.gz", Body=buf.getvalue())
    sm.create_training_job(**script_job("chain", "s3://jobs/code/chain/sourcedir.tar.gz"))
    d = wait(sm, "chain")
    assert d["TrainingJobStatus"] == "Failed"
    assert "out" in d["FailureReason"], d["FailureReason"]
