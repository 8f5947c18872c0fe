"""Shared helpers for the built-in XGBoost tests: run `$KILN_BIN algo xgboost ...` on job
directories laid out like SageMaker's /opt/ml, and load the shared data sets."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("KILN_SHARED", REPO.parent / "shared"))


def kiln_bin():
    b = Path(os.environ.get("KILN_BIN", "target/debug/kiln"))
    return b if b.is_absolute() else REPO / b


def load_csv(path):
    """Label-first headerless CSV as float32 (empty field = NaN), like pandas reads it."""
    import pandas as pd

    a = pd.read_csv(path, header=None, dtype=np.float32).values
    return a[:, 1:], a[:, 0]


def write_csv(path, X, y=None, w=None):
    cols = []
    if y is not None:
        cols.append(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    if w is not None:
        cols.append(np.asarray(w, dtype=np.float64).reshape(-1, 1))
    cols.append(np.asarray(X, dtype=np.float32).astype(np.float64))
    M = np.hstack(cols)
    with open(path, "w") as f:
        for row in M:
            f.write(",".join("" if v != v else repr(float(np.float32(v))) for v in row) + "\n")


class Job:
    def __init__(self, root):
        self.root = Path(root)
        self.proc = None

    @property
    def model(self):
        return self.root / "model" / "xgboost-model"

    @property
    def failure(self):
        p = self.root / "output" / "failure"
        return p.read_text() if p.exists() else None

    def lines(self):
        return [l for l in self.proc.stdout.splitlines() if l.startswith("[")]


def make_job(root, hyperparameters, channels, content_type="text/csv", config=None):
    """channels: name -> file path or text; lays out input/config and input/data."""
    root = Path(root)
    (root / "input" / "config").mkdir(parents=True, exist_ok=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    cfg = config if config is not None else {}
    for name, src in channels.items():
        d = root / "input" / "data" / name
        d.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            (d / src.name).write_bytes(src.read_bytes())
        else:
            (d / "data.csv").write_text(src)
        if config is None:
            entry = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
            if content_type is not None:
                entry["ContentType"] = content_type
            cfg[name] = entry
    (root / "input" / "config" / "inputdataconfig.json").write_text(json.dumps(cfg))
    return Job(root)


def run_train(job, env=None, timeout=300):
    e = dict(os.environ)
    e.update(env or {})
    job.proc = subprocess.run(
        [str(kiln_bin()), "algo", "xgboost", "train", "--ml-root", str(job.root)],
        capture_output=True, text=True, env=e, timeout=timeout)
    return job


def kiln_predict(model, data, *extra):
    p = subprocess.run(
        [str(kiln_bin()), "algo", "xgboost", "predict", "--model", str(model), "--data", str(data), *extra],
        capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return np.array([[float(v) for v in l.split(",")] for l in p.stdout.splitlines()])


def xgb_load(path):
    import warnings

    import xgboost as xgb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xgb.Booster(model_file=str(path))


@pytest.fixture(scope="session", autouse=True)
def _check_binary():
    if not kiln_bin().exists():
        pytest.fail(f"kiln binary not found at {kiln_bin()} (set KILN_BIN)")
