"""Issue 24 item 6: idle and never-speaking connections cannot take the server down. Headers must
arrive within a deadline (which also bounds how long a kept-alive connection sits idle), a signed
request's body must keep coming (no pause longer than that deadline, at least 1 KiB/s), the soft
open-files limit is raised to the hard one at start, and at the connection cap a new connection
displaces the one idle longest, so that a signed request is still answered."""
import resource
import shutil
import socket
import time

import json

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kilntest import API_ONLY, Kiln, job_request


def open_idle(kiln, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", kiln.port), timeout=10)
        socks.append(s)
    return socks


def closed_by_server(s, wait):
    """Whether the server closes `s` within `wait` seconds."""
    s.settimeout(wait)
    try:
        return s.recv(4096) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def server(config):
    k = Kiln(config=API_ONLY + config).start()
    yield k
    k.stop()
    shutil.rmtree(k.data_dir, ignore_errors=True)


@pytest.fixture
def capped():
    """At most 64 connections (headers may take the default 30 s: only the cap closes idle ones)."""
    yield from server("[server]\nmax_connections = 64\n")


@pytest.fixture
def quick_headers():
    yield from server("[server]\nheader_timeout_seconds = 1.5\n")


@pytest.fixture(autouse=True)
def enough_files_for_the_test():
    """This process opens thousands of sockets: its own soft limit goes up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4200:
        pytest.skip(f"the open-files hard limit ({hard}) is too low to hold 2000 connections at both ends")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start_with_soft_fd_limit(config, soft_limit):
    """A server started with the usual soft open-files limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft_limit, hard), hard))
    try:
        return Kiln(config=config).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_signed_request_is_answered_with_2000_idle_connections_open():
    # Started with the usual soft limit of 1024 open files: 2000 idle connections used to exhaust it.
    kiln = start_with_soft_fd_limit(API_ONLY, 1024)
    try:
        kiln.client().create_training_job(**job_request("conn-describe"))
        socks = open_idle(kiln, 2000)
        try:
            t = time.monotonic()
            d = kiln.client(connect_timeout=5, read_timeout=10).describe_training_job(TrainingJobName="conn-describe")
            latency = time.monotonic() - t
            print(f"DescribeTrainingJob with 2000 idle connections open: {latency * 1000:.0f} ms")
            assert d["TrainingJobName"] == "conn-describe"
        finally:
            for s in socks:
                s.close()
        assert kiln.alive()
    finally:
        kiln.stop()
        shutil.rmtree(kiln.data_dir, ignore_errors=True)


def test_at_the_cap_idle_connections_make_room(capped):
    kiln = capped
    sm = kiln.client()
    sm.create_training_job(**job_request("conn-cap"))
    socks = open_idle(kiln, 300)
    try:
        t = time.monotonic()
        d = kiln.client().describe_training_job(TrainingJobName="conn-cap")
        print(f"DescribeTrainingJob past the cap of 64 with 300 idle connections: {(time.monotonic() - t) * 1000:.0f} ms")
        assert d["TrainingJobName"] == "conn-cap"
        # The oldest idle connections were closed to make room.
        assert closed_by_server(socks[0], 5)
    finally:
        for s in socks:
            s.close()


def test_headers_must_arrive_within_the_deadline(quick_headers):
    kiln = quick_headers
    silent = socket.create_connection(("127.0.0.1", kiln.port))
    t = time.monotonic()
    assert closed_by_server(silent, 10)
    print(f"silent connection closed after {time.monotonic() - t:.1f} s")
    # A slow sender trickling its headers is cut off too.
    slow = socket.create_connection(("127.0.0.1", kiln.port))
    slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
    t = time.monotonic()
    cut = False
    while time.monotonic() - t < 10:
        try:
            slow.sendall(b"X-A: b\r\n")
        except OSError:
            cut = True
            break
        slow.settimeout(0.3)
        try:
            data = slow.recv(4096)
            if data == b"" or data.startswith(b"HTTP/1.1 408"):
                cut = True
                break
        except socket.timeout:
            pass
    assert cut, "a connection trickling headers was never closed"
    print(f"slow sender cut off after {time.monotonic() - t:.1f} s")
    # A kept-alive connection left idle after a response is closed as well.
    kept = socket.create_connection(("127.0.0.1", kiln.port))
    kept.sendall(f"GET /_kiln/health HTTP/1.1\r\nHost: 127.0.0.1:{kiln.port}\r\n\r\n".encode())
    kept.settimeout(5)
    assert kept.recv(4096).startswith(b"HTTP/1.1 200")
    assert closed_by_server(kept, 10)


def signed_head(kiln, body):
    """The request line and headers of a signed ListTrainingJobs carrying `body`."""
    req = AWSRequest(method="POST", url=kiln.endpoint + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.ListTrainingJobs"})
    SigV4Auth(Credentials(kiln.key["access_key_id"], kiln.key["secret_access_key"]), "sagemaker", "us-east-1").add_auth(req)
    headers = dict(req.headers.items(), Host=f"127.0.0.1:{kiln.port}", **{"Content-Length": str(len(body))})
    return ("POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


def cut_off_while_sending(s, pieces, every, wait):
    """Sends `pieces` one per `every` seconds; whether the server closed (or answered an error on)
    the connection within `wait` seconds. Returns (cut, seconds)."""
    t = time.monotonic()
    s.settimeout(every)
    for piece in pieces:
        if time.monotonic() - t > wait:
            break
        try:
            s.sendall(piece)
            data = s.recv(4096)
            if data == b"" or data.startswith(b"HTTP/1.1 4"):
                return True, time.monotonic() - t
        except socket.timeout:
            continue
        except OSError:
            return True, time.monotonic() - t
    return closed_by_server(s, max(0.1, wait - (time.monotonic() - t))), time.monotonic() - t


def test_a_signed_body_must_keep_coming(quick_headers):
    kiln = quick_headers
    body = b"{" + b" " * 4000 + json.dumps({"MaxResults": 10})[1:].encode()
    head = signed_head(kiln, body)
    # Sent in full, promptly: answered.
    s = socket.create_connection(("127.0.0.1", kiln.port), timeout=10)
    s.sendall(head + body)
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.close()
    # Half the body, then silence: the connection is closed after the 1.5 s deadline, not held.
    s = socket.create_connection(("127.0.0.1", kiln.port), timeout=10)
    s.sendall(head + body[:2000])
    t = time.monotonic()
    s.settimeout(10)
    answer = s.recv(4096)
    print(answer[:200])
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), "a body that stopped coming held its connection"
    assert closed_by_server(s, 5)
    print(f"stalled body cut off after {time.monotonic() - t:.1f} s")
    s.close()
    # Trickled at 40 bytes/s (never silent for the deadline): cut off for its rate.
    s = socket.create_connection(("127.0.0.1", kiln.port), timeout=10)
    s.sendall(head)
    pieces = [body[i:i + 10] for i in range(0, len(body), 10)]
    cut, took = cut_off_while_sending(s, pieces, 0.25, 15)
    assert cut, "a body trickled at 40 bytes/s held its connection"
    print(f"trickled body cut off after {took:.1f} s")
    s.close()
    assert kiln.alive()
    assert kiln.client().list_training_jobs()["TrainingJobSummaries"] == []


def test_open_files_soft_limit_is_raised_to_the_hard_limit():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.skip("the hard limit leaves nothing to raise")
    k = start_with_soft_fd_limit(API_ONLY, 256)
    try:
        limits = open(f"/proc/{k.proc.pid}/limits").read()
        line = next(l for l in limits.splitlines() if l.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)], line
    finally:
        k.stop()
        shutil.rmtree(k.data_dir, ignore_errors=True)
