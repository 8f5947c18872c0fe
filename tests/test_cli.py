"""The human-facing commands: `kiln train` and `kiln tune` against a real server."""
import subprocess

from kilntest import ROOT, SHARED, kiln_bin

TITANIC = SHARED / "data" / "titanic"


def run(kiln, *args, timeout=300):
    return subprocess.run([kiln_bin(), *args], env=kiln.env(), capture_output=True, text=True, timeout=timeout)


def test_kiln_train_wait_prints_log_metrics_and_model(runner):
    p = run(runner, "train", "--image", "xgboost", "--name", "cli-train", "--train", str(TITANIC / "train.csv"),
            "--validation", str(TITANIC / "test.csv"), "--hp", "objective=binary:logistic", "--hp", "num_round=15",
            "--hp", "eval_metric=auc", "--wait")
    assert p.returncode == 0, p.stderr + p.stdout
    assert "Completed: Training job completed" in p.stdout
    assert "[14]\ttrain-auc:" in p.stdout
    assert "validation:auc" in p.stdout and "model: s3://kiln-" in p.stdout
    d = runner.client().describe_training_job(TrainingJobName="cli-train")
    assert d["TrainingJobStatus"] == "Completed"
    assert d["InputDataConfig"][0]["ContentType"] == "text/csv"


def test_kiln_train_failure_exit_code(runner):
    p = run(runner, "train", "--image", "xgboost", "--name", "cli-bad", "--train", str(TITANIC / "train.csv"),
            "--hp", "num_round=5", "--hp", "eta=7", "--wait")
    assert p.returncode == 1
    assert "Failed: AlgorithmError:" in p.stdout and "eta" in p.stdout


def test_kiln_tune_wait_prints_leaderboard(runner, tmp_path):
    spec = (ROOT / "examples" / "tune-xgboost.yaml").read_text().replace("MaxNumberOfTrainingJobs: 12", "MaxNumberOfTrainingJobs: 4")
    (tmp_path / "spec.yaml").write_text(spec)
    p = run(runner, "tune", "--spec", str(tmp_path / "spec.yaml"), "--name", "cli-tune",
            "--train", str(TITANIC / "train.csv"), "--validation", str(TITANIC / "test.csv"), "--wait")
    assert p.returncode == 0, p.stderr + p.stdout
    assert "4/4 done (4 completed" in p.stdout
    lines = [line for line in p.stdout.splitlines() if line.startswith(("1 ", "2 ", "3 ", "4 "))]
    assert len(lines) == 4 and all("cli-tune-00" in line for line in lines)
    best = runner.client().describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="cli-tune")["BestTrainingJob"]
    assert best["TrainingJobName"] in lines[0]


FOLLOW_PY = """
import time
for i in range(5):
    print(f"tick {i}", flush=True)
    time.sleep(1)
"""


def test_kiln_logs_follow_and_jobs_watch(runner):
    from test_jobs import bundle, script_job
    s3 = runner.client("s3")
    try:
        s3.create_bucket(Bucket="jobs")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    src = bundle(s3, "code/cli-follow/sourcedir.tar.gz", {"train.py": FOLLOW_PY})
    runner.client().create_training_job(**script_job("cli-follow", src))
    popen = lambda *args: subprocess.Popen([kiln_bin(), *args], env=runner.env(), stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
    follower = popen("logs", "cli-follow", "-f")
    watcher = popen("jobs", "watch", "--name-contains", "cli-follow", "--interval", "0.5", "--until-done")
    out, err = follower.communicate(timeout=180)
    assert follower.returncode == 0, err
    ticks = [line for line in out.splitlines() if line.startswith("tick ")]
    assert ticks == [f"tick {i}" for i in range(5)], out
    # The follower ended with the job, not before it.
    d = runner.client().describe_training_job(TrainingJobName="cli-follow")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    tables = [t for t in out.split("\n\n") if t.strip()]
    assert len(tables) >= 2, out
    assert tables[0].splitlines()[0].split() == ["NAME", "STATUS", "SECONDARY", "CREATED", "(UTC)", "DURATION"]
    assert "InProgress" in tables[0] and "cli-follow" in tables[0], tables[0]
    assert tables[-1].splitlines()[1].split()[:3] == ["cli-follow", "Completed", "Completed"], tables[-1]
    # Without -f: what is there, once; an unknown job is an error.
    p = run(runner, "logs", "cli-follow")
    assert p.returncode == 0 and [l for l in p.stdout.splitlines() if l.startswith("tick ")] == ticks
    p = run(runner, "logs", "no-such-job")
    assert p.returncode == 1 and "no-such-job" not in p.stdout and p.stderr.strip(), p.stderr


def test_kiln_train_shows_an_upload_progress_bar_on_a_terminal(runner, tmp_path):
    import os
    import pty
    data = tmp_path / "big.csv"
    row = b"1,0.5,0.25,0.125\n"
    data.write_bytes(row * (48 * 1024 * 1024 // len(row)))
    main, sub = pty.openpty()
    env = dict(runner.env(), TERM="xterm")
    p = subprocess.run([kiln_bin(), "train", "--image", "xgboost", "--name", "cli-progress", "--train", str(data),
                        "--hp", "num_round=1"], env=env, stdout=subprocess.PIPE, stderr=sub, timeout=300)
    os.close(sub)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    text = seen.decode(errors="replace")
    assert p.returncode == 0, text
    # The bar (bytes so far / total, rate) was drawn on the terminal, then the summary line.
    assert "/48.00 MiB" in text or "/ 48.00 MiB" in text, text[-2000:]
    assert "kiln: uploaded " in text and "(1 file, 48.00 MiB)" in text, text[-2000:]
