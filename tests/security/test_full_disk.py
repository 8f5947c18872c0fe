"""Issue 24 item 12: a full disk is reported as such and can be freed through `DeleteObject`. The
data directory sits on a small tmpfs (the test needs the right to mount one; it is skipped
otherwise): uploads fill it until the server answers 507 `XKilnStorageFull` (not a 500), then
deleting objects frees their space at once and uploads work again."""
import os
import shutil
import subprocess
import tempfile

import pytest
from botocore.exceptions import ClientError

from kilntest import API_ONLY, Kiln


@pytest.fixture
def small_disk():
    mount = tempfile.mkdtemp(prefix="kiln-full-disk-")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mount], capture_output=True, text=True)
    if p.returncode != 0:
        os.rmdir(mount)
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", mount], check=False)
    shutil.rmtree(mount, ignore_errors=True)


def free_bytes(path):
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


def fill(s3, size, start):
    """PUTs `size`-byte objects until the server refuses one; returns (next index, the refusal)."""
    i = start
    while True:
        try:
            s3.put_object(Bucket="full", Key=f"k{i:05d}", Body=os.urandom(size))
            i += 1
        except ClientError as e:
            return i, e


def test_a_full_disk_says_so_and_delete_object_frees_it(small_disk):
    os.makedirs(os.path.join(small_disk, "data"), mode=0o700)
    k = Kiln(data_dir=os.path.join(small_disk, "data"), config=API_ONLY).start()
    try:
        s3 = k.client("s3")
        s3.create_bucket(Bucket="full")
        n, refusal = fill(s3, 1 << 20, 0)
        assert n > 10
        assert refusal.response["Error"]["Code"] == "XKilnStorageFull", refusal.response
        assert refusal.response["ResponseMetadata"]["HTTPStatusCode"] == 507
        assert "Delete objects" in refusal.response["Error"]["Message"]
        # Every last byte: small objects until those are refused too.
        n, _ = fill(s3, 16 << 10, n)
        print(f"{n} objects, {free_bytes(small_disk)} bytes free")
        before = free_bytes(small_disk)
        for i in range(5):
            s3.delete_object(Bucket="full", Key=f"k{i:05d}")
        freed = free_bytes(small_disk) - before
        assert freed >= 4 << 20, f"deleting 5 MiB of objects freed {freed} bytes"
        s3.put_object(Bucket="full", Key="again", Body=os.urandom(1 << 20))
        assert s3.head_object(Bucket="full", Key="again")["ContentLength"] == 1 << 20
        keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="full") for o in p.get("Contents", [])]
        assert len(keys) == n - 5 + 1 and "k00000" not in keys
        assert k.alive()
    finally:
        k.stop()
