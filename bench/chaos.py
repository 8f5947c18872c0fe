"""Chaos and soak (issue 24): built-in XGBoost jobs on Titanic while the server is SIGKILLed and
restarted, agents are SIGKILLed at random, and idle, slow-header and slow-body connections are held
open against the server. All along, DescribeTrainingJob's latency is measured and the server's RSS
sampled. At the end every job must be accounted for: created once, ended, a Completed job's model
in S3 and its metric reported, a Failed job's reason given.

    python3 bench/chaos.py [JOBS]        (scripts/chaos.sh builds the release binary and runs it)

`Chaos` is also what tests/test_chaos.py runs, with fewer jobs."""
import io
import json
import multiprocessing
import os
import random
import signal
import socket
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from kilntest import SHARED, Kiln  # noqa: E402

XGB = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
TERMINAL = ("Completed", "Failed", "Stopped")
# A short header deadline, so that the soak's slow connections are cut off and reopened (churn)
# within the run.
CONFIG = """[server]
header_timeout_seconds = 5
[jobs]
stop_grace_seconds = 2
[capacity]
vcpus = 16
memory_gib = 64
"""


def job_request(name):
    return {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "AlgorithmSpecification": {"TrainingImage": XGB, "TrainingInputMode": "File"},
        "HyperParameters": {"num_round": "20", "objective": "binary:logistic", "eval_metric": "auc", "max_depth": "4"},
        "InputDataConfig": [
            {"ChannelName": ch, "ContentType": "text/csv", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://chaos/titanic/{ch}/"}}} for ch in ("train", "validation")],
        "OutputDataConfig": {"S3OutputPath": "s3://chaos/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        # An agent killed under a job is a platform failure: the job is retried.
        "RetryStrategy": {"MaximumRetryAttempts": 3},
    }


def parent_of(pid):
    """The parent pid of `pid` (None once it is gone)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
    return int(stat[stat.rindex(")") + 2:].split()[1])


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


@dataclass
class Report:
    jobs: int = 0
    statuses: dict = field(default_factory=dict)
    server_kills: int = 0
    agent_kills: int = 0
    retried_jobs: int = 0
    describe_ms: list = field(default_factory=list)
    describe_errors: int = 0
    peak_rss_mb: float = 0.0
    soak_cut_off: int = 0
    soak_open: int = 0
    seconds: float = 0.0
    lost: list = field(default_factory=list)
    # For each lost job: its transitions, log stream and agent logs, so that a failure explains itself.
    evidence: list = field(default_factory=list)
    # (seconds since the server's last start, milliseconds) of Describe calls over 100 ms.
    slow_calls: list = field(default_factory=list)
    # Describe calls in flight across a server's SIGKILL and restart (not in the percentiles).
    spanning_restart: int = 0

    def summary(self):
        return (f"{self.jobs} jobs in {self.seconds:.0f} s: {self.statuses}; {self.server_kills} server SIGKILLs, "
                f"{self.agent_kills} agent SIGKILLs ({self.retried_jobs} jobs retried); soak: {self.soak_open} "
                f"idle/slow connections held, {self.soak_cut_off} cut off by the server and reopened\n"
                f"DescribeTrainingJob: {len(self.describe_ms)} calls answered, p50 {percentile(self.describe_ms, 50):.1f} ms, "
                f"p99 {percentile(self.describe_ms, 99):.1f} ms, max {max(self.describe_ms, default=0):.1f} ms; "
                f"{self.describe_errors} refused while the server was down, {self.spanning_restart} answered across a restart\n"
                f"server peak RSS {self.peak_rss_mb:.0f} MB; lost: {self.lost or 'nothing'}"
                + "".join("\n" + e for e in self.evidence))


class Chaos:
    def __init__(self, jobs, server_kill_every, agent_kill_every, idle, slow, seed):
        self.n = jobs
        self.server_kill_every = server_kill_every
        self.agent_kill_every = agent_kill_every
        self.idle, self.slow = idle, slow
        self.rng = random.Random(seed)
        self.report = Report(jobs=jobs)
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.kiln = None
        self.names = [f"chaos-{i:04d}" for i in range(jobs)]
        self.created = []
        self.killed = {}
        self.clients = {}
        self.starts = [time.monotonic()]
        self.downs = []
        self.agent_logs = {}

    # The server: started, SIGKILLed and started again on the same directory and port.
    def start(self):
        self.kiln = Kiln(config=CONFIG).start()
        s3 = self.kiln.client("s3")
        s3.create_bucket(Bucket="chaos")
        titanic = SHARED / "data" / "titanic"
        s3.upload_file(str(titanic / "train.csv"), "chaos", "titanic/train/train.csv")
        s3.upload_file(str(titanic / "test.csv"), "chaos", "titanic/validation/test.csv")

    def restart(self):
        with self.lock:
            old = self.kiln
            self.note_rss(old.proc.pid)
            self.downs.append(time.monotonic())
            old.kill()
            self.report.server_kills += 1
            time.sleep(0.5)
            self.kiln = Kiln(data_dir=old.data_dir, port=old.port).start()
            self.starts.append(time.monotonic())

    def client(self, service="sagemaker"):
        """A client of the server (boto3 clients are slow to make and to make their first call: one
        per thread, kept across restarts, which keep the port and keys)."""
        key = (threading.get_ident(), service)
        if key not in self.clients:
            self.clients[key] = self.kiln.client(service, connect_timeout=2, read_timeout=10)
        return self.clients[key]

    def note_rss(self, pid):
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                self.report.peak_rss_mb = max(self.report.peak_rss_mb, int(line.split()[1]) / 1024)

    def started_at(self, t):
        """When the server answering at monotonic time `t` was started."""
        return max((s for s in self.starts if s <= t), default=self.starts[0])

    # Threads.
    def create_all(self):
        for name in self.names:
            while not self.done.is_set():
                try:
                    self.client().create_training_job(**job_request(name))
                    break
                except Exception as e:  # noqa: BLE001 - the server may be down; try again
                    if "ResourceInUse" in str(e):
                        break  # a create answered by a server killed before it replied
                    time.sleep(0.2)
            self.created.append(name)
            self.created_count.value = len(self.created)
            time.sleep(0.02)

    def agent_logs_loop(self):
        """Keeps a copy of every agent's log (the executor deletes a Completed job's tree): the
        evidence printed for a lost job."""
        import glob
        while not self.done.wait(0.1):
            kiln = self.kiln
            if kiln is None:
                continue
            for path in glob.glob(f"{kiln.data_dir}/work/*/*/*/*/agent.log"):
                try:
                    with open(path, errors="replace") as f:
                        self.agent_logs[path] = f.read()
                except OSError:
                    pass

    def explain(self, name):
        """What the server and the agents recorded of job `name`, for a report of a lost job."""
        out = [f"--- {name}"]
        try:
            d = self.client().describe_training_job(TrainingJobName=name)
            out += [f"  {t['Status']}: {t.get('StatusMessage', '')}" for t in d.get("SecondaryStatusTransitions", [])]
            out.append(f"  final metrics: {[m['MetricName'] for m in d.get('FinalMetricDataList', [])]}")
            logs = self.client("logs")
            group = "/aws/sagemaker/TrainingJobs"
            for s in logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{name}/")["logStreams"]:
                events, kw = [], {}
                while True:
                    page = logs.get_log_events(logGroupName=group, logStreamName=s["logStreamName"],
                                               startFromHead=True, **kw)
                    events += page["events"]
                    if not page["events"] or page["nextForwardToken"] == kw.get("nextToken"):
                        break
                    kw = {"nextToken": page["nextForwardToken"]}
                rounds = [e for e in events if "validation-auc" in e["message"]]
                out.append(f"  log stream {s['logStreamName']}: {len(events)} lines, {len(rounds)} with validation-auc")
                out += [f"    {e['message'][:200]}" for e in events if "auc:" not in e["message"]][:40]
        except Exception as e:  # noqa: BLE001 - evidence is best effort
            out.append(f"  (the server's record could not be read: {e})")
        for path, text in sorted(self.agent_logs.items()):
            if f"/{name}/" in path:
                lines = text.splitlines()
                rounds = sum("validation-auc" in line for line in lines)
                out.append(f"  agent log {path}: {len(lines)} lines, {rounds} with validation-auc")
                out += [f"    {line[:300]}" for line in lines if "auc:" not in line][:40]
        return "\n".join(out)

    def rss_loop(self):
        while not self.done.is_set():
            kiln = self.kiln
            if kiln and kiln.alive():
                self.note_rss(kiln.proc.pid)
            time.sleep(0.2)

    def agents(self):
        """(pid, job) of the running agents of this server's jobs."""
        out = []
        root = str(self.kiln.data_dir)
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            args = [a.decode(errors="replace") for a in args]
            if len(args) > 1 and args[1] == "agent" and any(root in a for a in args) and "--job" in args:
                out.append((int(pid), args[args.index("--job") + 1]))
        # A child an agent has forked but not yet exec'd (the sandbox, the algorithm) still shows the
        # agent's command line: killing it would fail the job as the algorithm's error. Agents only.
        pids = {pid for pid, _ in out}
        return [(pid, job) for pid, job in out if parent_of(pid) not in pids]

    def chaos_loop(self):
        next_server = time.monotonic() + self.server_kill_every
        while not self.done.wait(self.agent_kill_every):
            # An agent, of a job not yet hit twice (each job has 3 retries).
            victims = [(pid, job) for pid, job in self.agents() if self.killed.get(job, 0) < 2]
            if victims:
                pid, job = self.rng.choice(victims)
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.killed[job] = self.killed.get(job, 0) + 1
                    self.report.agent_kills += 1
                except OSError:
                    pass
            if time.monotonic() >= next_server:
                self.restart()
                next_server = time.monotonic() + self.server_kill_every

    # The check.
    def wait_all(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(self.created) == self.n:
                try:
                    sm = self.client()
                    jobs = [j for p in sm.get_paginator("list_training_jobs").paginate(MaxResults=100)
                            for j in p["TrainingJobSummaries"]]
                    if len(jobs) >= self.n and all(j["TrainingJobStatus"] in TERMINAL for j in jobs):
                        return jobs
                except Exception:  # noqa: BLE001 - the server may be restarting
                    pass
            time.sleep(1)
        raise AssertionError(f"not every job ended in {timeout} s")

    def verify(self, jobs):
        sm, s3 = self.client(), self.client("s3")
        names = sorted(j["TrainingJobName"] for j in jobs)
        if names != sorted(self.names):
            self.report.lost.append(f"jobs listed {len(names)} != created {len(self.names)}")
        for name in self.names:
            d = sm.describe_training_job(TrainingJobName=name)
            status = d["TrainingJobStatus"]
            self.report.statuses[status] = self.report.statuses.get(status, 0) + 1
            if any(t["Status"] == "Restarting" for t in d.get("SecondaryStatusTransitions", [])):
                self.report.retried_jobs += 1
            if status == "Completed":
                uri = d.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
                bucket, _, key = uri.removeprefix("s3://").partition("/")
                try:
                    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                        if not tar.getnames():
                            self.report.lost.append(f"{name}: empty model")
                except Exception as e:  # noqa: BLE001 - recorded as lost
                    self.report.lost.append(f"{name}: model {uri}: {e}")
                if not any(m["MetricName"] == "validation:auc" for m in d.get("FinalMetricDataList", [])):
                    self.report.lost.append(f"{name}: no validation:auc")
            elif not d.get("FailureReason"):
                self.report.lost.append(f"{name}: {status} without a reason")
            elif status == "Failed":
                self.report.lost.append(f"{name}: Failed: {d['FailureReason']}")
        for name in sorted({entry.split(":")[0] for entry in self.report.lost} & set(self.names)):
            self.report.evidence.append(self.explain(name))

    def run(self, timeout):
        t = time.monotonic()
        self.start()
        threads = [threading.Thread(target=f, daemon=True)
                   for f in (self.rss_loop, self.chaos_loop, self.agent_logs_loop)]
        for th in threads:
            th.start()
        # The soak runs in a process of its own, so that its sockets do not slow the measuring.
        stop, cut, most = multiprocessing.Event(), multiprocessing.Value("i", 0), multiprocessing.Value("i", 0)
        key = self.kiln.key
        soak = multiprocessing.Process(target=soak_loop, daemon=True, args=(
            self.kiln.port, key["access_key_id"], key["secret_access_key"], self.idle, self.slow, stop, cut, most))
        soak.start()
        # So does the measuring of DescribeTrainingJob.
        self.created_count = multiprocessing.Value("i", 0)
        results = multiprocessing.Queue()
        measure = multiprocessing.Process(target=describe_loop, daemon=True, args=(
            self.kiln.port, key["access_key_id"], key["secret_access_key"], self.created_count, stop, results))
        measure.start()
        try:
            self.create_all()
            jobs = self.wait_all(timeout)
            self.done.set()
            stop.set()
            soak.join(30)
            self.report.soak_cut_off, self.report.soak_open = cut.value, most.value
            self.report.describe_ms, self.report.describe_errors, slow = results.get(timeout=30)
            # A call in flight while the server was killed and started again measures the restart,
            # not the server: those are counted apart.
            for at, ms in slow:
                if any(at <= up and at + ms / 1000 >= down for down, up in zip(self.downs, self.starts[1:])):
                    self.report.describe_ms.remove(next(x for x in self.report.describe_ms if round(x) == ms))
                    self.report.spanning_restart += 1
                else:
                    self.report.slow_calls.append((round(at - self.started_at(at), 2), ms))
            measure.join(30)
            for th in threads:
                th.join(30)
            self.note_rss(self.kiln.proc.pid)
            self.verify(jobs)
        finally:
            self.done.set()
            stop.set()
            for p in (soak, measure):
                if p.is_alive():
                    p.terminate()
            self.kiln.stop()
        self.report.seconds = time.monotonic() - t
        return self.report


def signed_head(port, key_id, secret, body):
    """Request line and headers of a signed ListTrainingJobs carrying `body`."""
    req = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.ListTrainingJobs"})
    SigV4Auth(Credentials(key_id, secret), "sagemaker", "us-east-1").add_auth(req)
    headers = dict(req.headers.items(), Host=f"127.0.0.1:{port}", **{"Content-Length": str(len(body))})
    return ("POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


def describe_loop(port, key_id, secret, created, stop, results):
    """DescribeTrainingJob of a random created job every 50 ms until `stop`; puts (latencies in ms,
    calls refused, [(monotonic time, ms) of calls over 100 ms]) on `results`."""
    import boto3
    from botocore.config import Config
    sm = boto3.client("sagemaker", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id=key_id, aws_secret_access_key=secret,
                      config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))
    rng = random.Random(1)
    latencies, errors, slow = [], 0, []
    while not stop.wait(0.05):
        if created.value == 0:
            continue
        name = f"chaos-{rng.randrange(created.value):04d}"
        t = time.monotonic()
        try:
            sm.describe_training_job(TrainingJobName=name)
        except Exception:  # noqa: BLE001 - counted: the server is down for a moment
            errors += 1
            continue
        ms = (time.monotonic() - t) * 1000
        latencies.append(ms)
        if ms > 100:
            slow.append((t, round(ms)))
    results.put((latencies, errors, slow))


def soak_loop(port, key_id, secret, idle, slow, stop, cut, most):
    """Holds `idle` silent connections, `slow` connections trickling headers and `slow` trickling a
    signed body (10 bytes every 0.25 s), reopening each one the server cuts off (or answers);
    counts those in `cut` and the most open at once in `most`."""
    body = b"{" + b" " * 100_000 + b'"MaxResults": 1}'
    head = signed_head(port, key_id, secret, body)
    kinds = ["idle"] * idle + ["header"] * slow + ["body"] * slow
    conns = [None] * len(kinds)
    sent = [0] * len(kinds)
    while not stop.wait(0.25):
        for i, kind in enumerate(kinds):
            s = conns[i]
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", port), timeout=1)
                    s.setblocking(False)
                    conns[i], sent[i] = s, 0
                    if kind == "header":
                        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
                    elif kind == "body":
                        s.sendall(head)
                    continue
                try:
                    s.recv(4096)
                    raise ConnectionResetError  # closed, or answered (an error): done with it
                except BlockingIOError:
                    pass
                if kind == "header":
                    s.sendall(b"X-Slow: 1\r\n")
                elif kind == "body":
                    s.sendall(body[sent[i]:sent[i] + 10])
                    sent[i] += 10
            except OSError:
                if s is not None:
                    s.close()
                    cut.value += 1
                conns[i] = None
        most.value = max(most.value, sum(c is not None for c in conns))
    for s in conns:
        if s is not None:
            s.close()


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    c = Chaos(n, server_kill_every=3.0, agent_kill_every=0.5, idle=300, slow=20, seed=7)
    try:
        report = c.run(timeout=1800)
    finally:
        if c.kiln is not None and os.environ.get("KILN_KEEP_TEST_DIRS") != "1":
            import shutil
            shutil.rmtree(c.kiln.data_dir, ignore_errors=True)
    print(report.summary())
    print(json.dumps({"describe_p99_ms": percentile(report.describe_ms, 99), "peak_rss_mb": report.peak_rss_mb,
                      "lost": report.lost}))
    sys.exit(1 if report.lost else 0)
