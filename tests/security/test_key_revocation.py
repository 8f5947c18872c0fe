"""Issue 24 item 9: a key removed from keys.toml stops working at once, on every endpoint (SageMaker,
Logs and S3 read one keyring); `kiln keys list` and `kiln keys delete` manage the file."""
import subprocess

import pytest
from botocore.exceptions import ClientError

from kilntest import kiln_bin


def as_key(created):
    return {"access_key_id": created["AWS_ACCESS_KEY_ID"], "secret_access_key": created["AWS_SECRET_ACCESS_KEY"],
            "account_id": created["account_id"]}


def keys_cli(kiln, *args, check=True):
    return subprocess.run([kiln_bin(), "--data-dir", str(kiln.data_dir), "keys", *args],
                          capture_output=True, text=True, check=check)


def refused(call, **kw):
    with pytest.raises(ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"]


def works_everywhere(kiln, key, bucket):
    kiln.client(key=key).list_training_jobs()
    kiln.client("logs", key=key).describe_log_groups()
    kiln.client("s3", key=key).list_objects_v2(Bucket=bucket)


def test_key_removed_from_the_file_stops_working_at_once(two_accounts):
    kiln, _, b = two_accounts
    extra = as_key(kiln.add_key(account=b["account_id"]))
    kiln.client("s3", key=b).create_bucket(Bucket="revoke-by-edit")
    # Used (and so cached) on every endpoint first.
    works_everywhere(kiln, extra, "revoke-by-edit")
    path = kiln.data_dir / "keys.toml"
    text = path.read_text()
    blocks = text.split("[[keys]]")
    kept = [blk for blk in blocks[1:] if extra["access_key_id"] not in blk]
    assert len(kept) == len(blocks) - 2
    path.write_text(blocks[0] + "".join("[[keys]]" + blk for blk in kept))
    assert refused(kiln.client(key=extra).list_training_jobs) == "UnrecognizedClientException"
    assert refused(kiln.client("logs", key=extra).describe_log_groups) == "UnrecognizedClientException"
    assert refused(kiln.client("s3", key=extra).list_objects_v2, Bucket="revoke-by-edit") == "InvalidAccessKeyId"
    # The account's other key is untouched.
    works_everywhere(kiln, b, "revoke-by-edit")


def test_keys_delete_revokes_and_list_shows_what_is_left(two_accounts):
    kiln, a, b = two_accounts
    extra = as_key(kiln.add_key(account=b["account_id"]))
    kiln.client("s3", key=b).create_bucket(Bucket="revoke-by-cli")
    works_everywhere(kiln, extra, "revoke-by-cli")
    listed = keys_cli(kiln, "list").stdout
    assert f"{extra['access_key_id']}\t{b['account_id']}" in listed and a["access_key_id"] in listed
    assert "secret" not in listed.lower() and extra["secret_access_key"] not in listed
    out = keys_cli(kiln, "delete", extra["access_key_id"])
    assert extra["access_key_id"] in out.stdout
    assert extra["access_key_id"] not in keys_cli(kiln, "list").stdout
    assert refused(kiln.client(key=extra).list_training_jobs) == "UnrecognizedClientException"
    assert refused(kiln.client("s3", key=extra).list_objects_v2, Bucket="revoke-by-cli") == "InvalidAccessKeyId"
    works_everywhere(kiln, b, "revoke-by-cli")
    # Deleting an unknown key says so and fails.
    gone = keys_cli(kiln, "delete", extra["access_key_id"], check=False)
    assert gone.returncode != 0 and extra["access_key_id"] in gone.stderr
