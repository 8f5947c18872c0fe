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
