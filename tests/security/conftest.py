"""Fixtures of the security suite: a real `kiln serve` with two accounts, A (the data directory's
first key) and B (a key made with `kiln keys create`); each test plays one account, or nobody,
against the other and the server."""
import shutil

import pytest

from kilntest import API_ONLY, Kiln


@pytest.fixture(scope="module")
def two_accounts():
    """`(kiln, key_a, key_b)`: one API-only server, two accounts."""
    k = Kiln(config=API_ONLY).start()
    b = k.add_key()
    key_b = {"access_key_id": b["AWS_ACCESS_KEY_ID"], "secret_access_key": b["AWS_SECRET_ACCESS_KEY"],
             "account_id": b["account_id"]}
    yield k, k.key, key_b
    k.stop()
    shutil.rmtree(k.data_dir, ignore_errors=True)
