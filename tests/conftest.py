"""pytest fixtures: a running `kiln serve` and clients pointed at it (helpers in kilntest.py)."""
import shutil

import pytest

from kilntest import API_ONLY, Kiln, remove_created_dirs


@pytest.fixture(scope="session", autouse=True)
def _remove_data_dirs():
    """The servers' temporary data directories go when the session ends (a full run made gigabytes)."""
    yield
    remove_created_dirs()


@pytest.fixture(scope="module")
def kiln():
    """A server for API tests: jobs are accepted but not run."""
    k = Kiln(config=API_ONLY).start()
    yield k
    k.stop()
    shutil.rmtree(k.data_dir, ignore_errors=True)


@pytest.fixture
def fresh_kiln():
    k = Kiln(config=API_ONLY).start()
    yield k
    k.kill()
    shutil.rmtree(k.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sm(kiln):
    return kiln.client()


@pytest.fixture(scope="module")
def sm_raw(kiln):
    """A client that sends what it is given: server-side validation is what is under test."""
    return kiln.client(validate=False)


@pytest.fixture(scope="module")
def runner():
    """A server that runs jobs (local executor; stops give up after 2 s)."""
    k = Kiln(config='[jobs]\nstop_grace_seconds = 2\n').start()
    yield k
    k.stop()
    shutil.rmtree(k.data_dir, ignore_errors=True)
